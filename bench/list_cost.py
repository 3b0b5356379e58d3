"""What a page of the users list reads from DynamoDB: the same for a small and a large table (a script).

The list reads one Query per stream from a list GSI (a key condition, never a Scan or a filter
expression) and then the page's records in one strongly consistent BatchGetItem, so the read cost of
a page should follow the page size, not the number of users. This script builds the table from
template.yaml in moto (in-process), loads ``--small`` and then ``--big`` users (items exactly as the
store writes them: user items, membership items, counts), and measures, for a platform administrator
and a page of ``--limit`` (50): the unfiltered list, ``status=SUSPENDED``, one account,
``emailPrefix`` and ``namePrefix``; then the cost of walking every page of the whole list (limit
200); and what the list's items add to the transaction of an edit.

What is measured, from botocore events on the store's own client:

- ``index_entries_read``: ScannedCount of the Query calls (the index entries DynamoDB bills for);
- ``records_read``: items returned by BatchGetItem / GetItem (the page's records and the caller);
- ``rcu_estimate``: Query: size of the entries read (the GSI projection + 100 bytes overhead each)
  rounded up to 4 KB per call, 0.5 RCU per 4 KB (eventually consistent); BatchGetItem/GetItem:
  1 RCU per item per started 4 KB (strongly consistent). moto's ConsumedCapacity is a constant per
  call and is not used.

Run: ``PYTHONPATH=layers/shared:. .venv/bin/python -m bench.list_cost`` (options: --help). Prints a
JSON result and writes it to bench/results/list.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cleanup_cost import INDEX_ENTRY_OVERHEAD, RCU_BLOCK, TABLE, batch_put, create_table, item_size

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "bench" / "results" / "list.json"
NOW = 1_800_000_000
ACCOUNTS = 20
TARGET = 0.10
FIRST = ("Maria", "Marco", "Anna", "Jon", "Lea", "Omar", "Zoe", "Ivan", "Mia", "Paul")
LAST = ("Martin", "Meyer", "Novak", "Smith", "Tanaka", "Garcia", "Rossi", "Khan", "Berg", "Dubois")
SCENARIOS: dict[str, dict[str, str]] = {
    "unfiltered": {},
    "status": {"status": "SUSPENDED"},
    "account": {"accountId": "acct01"},
    "emailPrefix": {"emailPrefix": "user1"},
    "namePrefix": {"namePrefix": "ma"},
}


@dataclass
class Meter:
    calls: Counter[str] = field(default_factory=Counter)
    index_entries_read: int = 0
    records_read: int = 0
    rcu_estimate: float = 0.0
    transact_items: list[int] = field(default_factory=list)
    recording: bool = False

    def before_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.recording and model.name == "TransactWriteItems":
            self.transact_items.append(len(params["TransactItems"]))

    def after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.recording:
            return
        self.calls[model.name] += 1
        if model.name == "Query":
            items = parsed.get("Items", [])
            self.index_entries_read += int(parsed.get("ScannedCount", len(items)))
            size = sum(item_size(i) + INDEX_ENTRY_OVERHEAD for i in items)
            self.rcu_estimate += max(1, math.ceil(size / RCU_BLOCK)) * 0.5
        elif model.name in ("BatchGetItem", "GetItem"):
            items = [parsed["Item"]] if parsed.get("Item") else []
            for found in parsed.get("Responses", {}).values():
                items += found
            self.records_read += len(items)
            self.rcu_estimate += sum(max(1, math.ceil(item_size(i) / RCU_BLOCK)) for i in items) or 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "index_entries_read": self.index_entries_read,
            "records_read": self.records_read,
            "rcu_estimate": round(self.rcu_estimate, 1),
            "calls": dict(self.calls),
        }


def make_user(n: int) -> Any:
    from usermgmt.models import Membership, User

    accounts = [f"acct{n % ACCOUNTS:02d}"] + ([f"acct{(n + 7) % ACCOUNTS:02d}"] if n % 3 == 0 else [])
    return User(
        id=f"auth0|bench{n:08d}",
        email=f"user{n}@bench.example",
        first_name=FIRST[n % len(FIRST)],
        last_name=LAST[(n // len(FIRST)) % len(LAST)],
        status="SUSPENDED" if n % 10 == 0 else "ACTIVE",
        email_verified=True,
        memberships=tuple(Membership(a, ("Buyer",)) for a in accounts),
        default_account_id=accounts[0],
        created_at=f"2026-01-01T00:00:00.{n % 1000:03d}Z",
        updated_at=f"2026-06-01T00:00:00.{n % 1000:03d}Z",
    )


def load(store: Any, client: Any, users: int) -> Any:
    from usermgmt.store import AdjustCounts, CreateUser, PutMember, count_buckets

    for a in range(ACCOUNTS):
        store.put_account(f"acct{a:02d}", f"Account {a}")
    admin = make_user(10**8).evolve(
        profile="administrator", status="ACTIVE", memberships=(), default_account_id=None
    )
    store.put_user(admin)
    counts: dict[str, Counter[str]] = {}
    items: list[dict[str, Any]] = []
    for n in range(users):
        user = make_user(n)
        items.append(store.write_request(CreateUser(user))["Put"]["Item"])
        for m in user.memberships:
            items.append(store.write_request(PutMember(m.account_id, user))["Put"]["Item"])
            counts.setdefault(m.account_id, Counter()).update(count_buckets(user))
        if len(items) >= 2500:
            batch_put(client, items)
            items = []
    batch_put(client, items)
    for account_id, c in counts.items():
        client.update_item(
            **store.write_request(AdjustCounts(account_id, tuple(sorted(c.items()))))["Update"]
        )
    return admin


def measure(users: int, limit: int, walk: bool) -> dict[str, Any]:
    from moto import mock_aws

    from usermgmt.auth import RequestCtx
    from usermgmt.container import Container
    from usermgmt.settings import Settings

    class FixedClock:
        def now(self) -> float:
            return float(NOW)

    with mock_aws():
        container = Container(Settings(table_name=TABLE), clock=FixedClock())
        store = container.store
        client = store._client  # type: ignore[attr-defined]
        create_table(client)
        started = time.perf_counter()
        admin = load(store, client, users)
        seeded = time.perf_counter() - started
        meter = Meter()
        client.meta.events.register("provide-client-params.dynamodb", meter.before_call)
        client.meta.events.register("after-call.dynamodb", meter.after_call)
        ctx = RequestCtx(sub=admin.id, iat=NOW, request_id="bench")
        result: dict[str, Any] = {"users": users, "seconds_to_load": round(seeded, 1), "pages": {}}
        for name, params in SCENARIOS.items():
            meter.__init__()  # type: ignore[misc]
            meter.recording = True
            page = container.lists.list_users(ctx, {**params, "limit": str(limit)})
            meter.recording = False
            result["pages"][name] = {"items": len(page["items"]), **meter.snapshot()}
        if walk:
            meter.__init__()  # type: ignore[misc]
            meter.recording = True
            pages, seen, cursor = 0, 0, None
            while True:
                query = {"limit": "200", **({"cursor": cursor} if cursor else {})}
                page = container.lists.list_users(ctx, query)
                pages, seen, cursor = pages + 1, seen + len(page["items"]), page["nextCursor"]
                if cursor is None:
                    break
            meter.recording = False
            result["walk_all"] = {"pages": pages, "users_seen": seen, **meter.snapshot()}
            result["walk_all"]["rcu_per_user"] = round(meter.rcu_estimate / max(1, seen), 3)
        result["edit"] = edit_cost(container, meter)
        return result


def edit_cost(container: Any, meter: Meter) -> dict[str, Any]:
    """Items in the transaction of an edit, with and without the list's derived items."""
    from usermgmt.auth import Actor
    from usermgmt.service.writes import Plan, Writer

    plain = Writer(container.deps, container.sync)  # no derived writers: the transaction before the list
    out: dict[str, Any] = {}
    cases = {
        "rename, 1 membership": (1, {"first_name": "Renamed"}),
        "rename, 2 memberships": (3, {"first_name": "Renamed"}),
        "suspend, 1 membership": (2, {"status": "SUSPENDED"}),
        "suspend, 2 memberships": (6, {"status": "SUSPENDED"}),
    }
    for name, (n, changes) in cases.items():
        sizes = []
        for writer in (plain, container.writer):
            before = container.store.get_user(f"auth0|bench{n:08d}")
            plan = Plan(after=before.evolve(**changes), action="user.updated", changes=[{"field": "x"}])
            meter.__init__()  # type: ignore[misc]
            meter.recording = True
            writer.commit(before, plan, float(NOW), actor=Actor("system", "bench"), request_id="bench")
            meter.recording = False
            sizes.append(meter.transact_items[0])
            if writer is plain:  # put it back in step for the second run (the plain commit left it behind)
                container.store.put_user(before.evolve(version=before.version + 1))
        out[name] = {
            "items_without_list": sizes[0],
            "items_with_list": sizes[1],
            "added": sizes[1] - sizes[0],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DynamoDB reads of a users-list page, small vs big table")
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--no-walk", action="store_true", help="skip walking every page of the big table")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")
    logging.disable(logging.WARNING)
    small = measure(args.small, args.limit, walk=True)
    big = measure(args.big, args.limit, walk=not args.no_walk)
    comparison = {}
    ok = True
    for name in SCENARIOS:
        a, b = small["pages"][name]["rcu_estimate"], big["pages"][name]["rcu_estimate"]
        ratio = b / a if a else float("inf")
        within = abs(ratio - 1) <= TARGET
        ok &= within
        comparison[name] = {"small": a, "big": b, "ratio": round(ratio, 3), "within_10_percent": within}
    result = {"limit": args.limit, "small": small, "big": big, "comparison": comparison, "target_met": ok}
    text = json.dumps(result, indent=2)
    print(text)
    RESULT_FILE.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
