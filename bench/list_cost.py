"""What a page of the users list reads from DynamoDB: the same for a small and a large table (a script).

The list reads one Query per stream from a list GSI (a key condition, never a Scan or a filter
expression) and then the page's records in one strongly consistent BatchGetItem, so the read cost of
a page should follow the page size, not the number of users. This script builds the table from
template.yaml in moto (in-process), loads ``--small`` and then ``--big`` users (items exactly as the
store writes them: user items, membership items, counts), and measures, for a platform administrator
and a page of ``--limit`` (50): the unfiltered list, ``status=SUSPENDED``, one account,
``emailPrefix`` and ``namePrefix``; then the cost of walking every page of the whole list (limit
200); and, on the small table, what the list's items add to the transaction of an edit.

What is measured, from botocore events on the store's own client:

- ``index_entries_read``: ScannedCount of the Query calls (the index entries DynamoDB bills for);
- ``records_read``: items returned by BatchGetItem / GetItem (the page's records and the caller);
- ``rcu_estimate``: Query: size of the entries read (the GSI projection + 100 bytes overhead each)
  rounded up to 4 KB per call, 0.5 RCU per 4 KB (eventually consistent); BatchGetItem/GetItem:
  1 RCU per item per started 4 KB (strongly consistent). moto's ConsumedCapacity is a constant per
  call and is not used.

Users are loaded straight into moto's in-process table (``insert_items``: the same item objects a
put stores; ``check_direct_load`` compares both ways item by item on every run; ``--api-load`` loads
through BatchWriteItem instead, about four times slower). moto's own Query is linear in the table (it
sorts the whole partition and steps over every entry before the position on every call), so a full
walk is quadratic in moto, not in DynamoDB: tables up to ``--walk-max`` users are walked page by
page; a bigger one is measured on pages of the walk taken at five positions spread over the list
(each asked with the cursor the walk holds there), and a table of ``--walk-max`` users is walked in
full next to it. moto also copies the whole table for every item of a transaction, so the edit is
measured on the small table only.

Run: ``PYTHONPATH=layers/shared:. .venv/bin/python -m bench.list_cost --big 100000`` (options:
--help). Prints a JSON result and writes it to bench/results/list.json.
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
WALK_LIMIT = 200  # the walk reads the largest pages
WALK_SAMPLES = (0.0, 0.25, 0.5, 0.75, 1.0)  # where the sampled walk pages start (share of the list)
MOTO_ITEM_LIMIT = 405_000  # what moto's own put accepts (DynamoDB: 400 KB)
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


def moto_table(client: Any) -> Any:
    """moto's in-process table behind ``client`` (the bench's own mock, never a real table)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID][client.meta.region_name].get_table(TABLE)


def insert_items(client: Any, items: list[dict[str, Any]]) -> None:
    """Store ``items`` as moto's BatchWriteItem stores them, without the round trip through boto3.

    moto's put builds each item's attribute dict one attribute at a time, summing the size of the
    whole item at every step, and boto3 serialises, validates and parses every batch: 100,000 users
    (233,000 items) took 219 s that way on the shared machine, about 50 s here. Here each item gets
    the same validation (types, key sizes, the 400 KB limit) and the same ``Item`` object in the same
    ``table.items[hash][range]`` slot that ``Table.put_item`` creates; ``check_direct_load`` compares
    both ways item by item. moto keeps no GSI structures: a Query of a GSI reads ``table.items``, so
    the indexes are exactly those of a put.
    """

    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    table = moto_table(client)
    for attrs in items:
        table._validate_item_types(attrs)
        table._validate_key_sizes(attrs)
        item = Item.__new__(Item)
        item.hash_key = DynamoType(attrs[table.hash_key_attr])
        item.range_key = DynamoType(attrs[table.range_key_attr])
        item.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        for name, value in attrs.items():
            dict.__setitem__(item.attrs, name, DynamoType(value))
        if item.size() > MOTO_ITEM_LIMIT:
            raise ValueError(f"item over 400 KB: {attrs[table.hash_key_attr]}")
        table.items[item.hash_key][item.range_key] = item


def load(store: Any, client: Any, users: int, direct: bool = True) -> Any:
    """The accounts, a platform administrator (through the store), ``users`` users with their
    membership items (``direct``: ``insert_items``; else BatchWriteItem) and the counts (UpdateItem)."""
    from usermgmt.store import AdjustCounts, CreateUser, PutMember, count_buckets

    put = insert_items if direct else batch_put
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
            put(client, items)
            items = []
    put(client, items)
    for account_id, c in counts.items():
        client.update_item(
            **store.write_request(AdjustCounts(account_id, tuple(sorted(c.items()))))["Update"]
        )
    return admin


def check_direct_load(users: int) -> dict[str, Any]:
    """Load ``users`` through BatchWriteItem and through ``insert_items`` into two fresh tables and
    compare them item by item (keys and every attribute)."""
    from moto import mock_aws

    from usermgmt.container import Container
    from usermgmt.settings import Settings

    tables = []
    for direct in (False, True):
        with mock_aws():
            container = Container(Settings(table_name=TABLE))
            client = container.store._client  # type: ignore[attr-defined]
            create_table(client)
            load(container.store, client, users, direct=direct)
            tables.append(
                {(i.hash_key.value, i.range_key.value): i.to_json() for i in moto_table(client).all_items()}
            )
    through_api, direct_items = tables
    return {"users": users, "items": len(through_api), "identical": through_api == direct_items}


def measure(users: int, limit: int, *, walk: str, edit: bool, direct: bool = True) -> dict[str, Any]:
    """One fresh table of ``users`` users: the scenarios' pages; ``walk`` ``all`` (every page),
    ``sample`` (WALK_SAMPLES pages of the walk, from positions spread over the list) or ``none``;
    ``edit``: what the list adds to an edit's transaction."""
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
        admin = load(store, client, users, direct=direct)
        seeded = time.perf_counter() - started
        meter = Meter()
        client.meta.events.register("provide-client-params.dynamodb", meter.before_call)
        client.meta.events.register("after-call.dynamodb", meter.after_call)
        ctx = RequestCtx(sub=admin.id, iat=NOW, request_id="bench")
        result: dict[str, Any] = {"users": users, "seconds_to_load": round(seeded, 1), "pages": {}}
        started = time.perf_counter()
        for name, params in SCENARIOS.items():
            meter.__init__()  # type: ignore[misc]
            meter.recording = True
            page = container.lists.list_users(ctx, {**params, "limit": str(limit)})
            meter.recording = False
            result["pages"][name] = {"items": len(page["items"]), **meter.snapshot()}
        result["seconds_for_pages"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        if walk == "all":
            meter.__init__()  # type: ignore[misc]
            meter.recording = True
            pages, seen, cursor = 0, 0, None
            while True:
                query = {"limit": str(WALK_LIMIT), **({"cursor": cursor} if cursor else {})}
                page = container.lists.list_users(ctx, query)
                pages, seen, cursor = pages + 1, seen + len(page["items"]), page["nextCursor"]
                if cursor is None:
                    break
            meter.recording = False
            result["walk_all"] = {"pages": pages, "users_seen": seen, **meter.snapshot()}
            result["walk_all"]["rcu_per_user"] = round(meter.rcu_estimate / max(1, seen), 3)
            result["walk_all"]["seconds"] = round(time.perf_counter() - started, 1)
        elif walk == "sample":
            result["walk_sampled"] = walk_sample(container, ctx, admin, users, meter)
            result["walk_sampled"]["seconds"] = round(time.perf_counter() - started, 1)
        if edit:
            result["edit"] = edit_cost(container, meter)
        return result


def walk_sample(container: Any, ctx: Any, admin: Any, users: int, meter: Meter) -> dict[str, Any]:
    """Pages of the walk (limit WALK_LIMIT, email order) continued from positions spread over the list.

    Each page is asked with the cursor the walk would hold there (the key of the entry before it,
    encoded by the list service as its previous page does), so it is the walk's page at that place.
    """
    from usermgmt.service.lists import parse_user_query
    from usermgmt.store import list_keys

    keys = sorted([list_keys(make_user(n))["email"] for n in range(users)] + [list_keys(admin)["email"]])
    digest = parse_user_query({"limit": str(WALK_LIMIT)}, None).digest("users")
    lists = container.lists
    sampled = []
    for fraction in WALK_SAMPLES:
        rank = int(fraction * (len(keys) - WALK_LIMIT))
        query = {"limit": str(WALK_LIMIT)}
        if rank:
            query["cursor"] = lists._cursor(admin.id, digest, float(NOW), float(NOW), keys[rank - 1])
        meter.__init__()  # type: ignore[misc]
        meter.recording = True
        page = lists.list_users(ctx, query)
        meter.recording = False
        sampled.append({"from_rank": rank, "items": len(page["items"]), **meter.snapshot()})
    items = sum(p["items"] for p in sampled)
    rcu = sum(p["rcu_estimate"] for p in sampled)
    per_user = rcu / max(1, items)
    return {
        "pages": sampled,
        "rcu_per_user": round(per_user, 3),
        "walk_pages": math.ceil(len(keys) / WALK_LIMIT),
        "walk_rcu_estimate": round(per_user * len(keys)),
    }


def edit_cost(container: Any, meter: Meter) -> dict[str, Any]:
    """Items in the transaction of an edit, with and without the list's derived items."""
    from usermgmt.auth import Actor
    from usermgmt.service.lists import ListIndex
    from usermgmt.service.writes import Plan, Writer

    # every derived writer of the application (the outbox event, ...) but the list's, then with it
    others = [d for d in container.writer.derived if not isinstance(d, ListIndex)]
    plain = Writer(container.deps, container.sync, others)
    with_list = Writer(container.deps, container.sync, [*others, ListIndex()])
    out: dict[str, Any] = {}
    cases = {
        "rename, 1 membership": (1, {"first_name": "Renamed"}),
        "rename, 2 memberships": (3, {"first_name": "Renamed"}),
        "suspend, 1 membership": (2, {"status": "SUSPENDED"}),
        "suspend, 2 memberships": (6, {"status": "SUSPENDED"}),
    }
    for name, (n, changes) in cases.items():
        sizes = []
        for writer in (plain, with_list):
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
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument(
        "--walk-max",
        type=int,
        default=20_000,
        help="walk every page of tables up to this many users; a bigger --big is also measured at this "
        "size with a full walk, and its own walk is sampled (moto's Query is linear in the table)",
    )
    parser.add_argument("--no-walk", action="store_true", help="skip walking the list")
    parser.add_argument("--check-load", type=int, default=300, help="users loaded both ways and compared")
    parser.add_argument(
        "--api-load", action="store_true", help="load through BatchWriteItem instead (slower, same items)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")
    logging.disable(logging.WARNING)
    began = time.perf_counter()
    check = check_direct_load(args.check_load)
    progress(f"direct load checked: {check}")
    if not check["identical"]:
        print(json.dumps({"direct_load_check": check}))
        return 1

    def walk_of(users: int) -> str:
        return "none" if args.no_walk else "all" if users <= args.walk_max else "sample"

    direct = not args.api_load
    small = measure(args.small, args.limit, walk=walk_of(args.small), edit=True, direct=direct)
    progress(f"{args.small} users measured")
    middle = None
    if walk_of(args.big) == "sample" and args.small < args.walk_max:
        middle = measure(args.walk_max, args.limit, walk="all", edit=False, direct=direct)
        progress(f"{args.walk_max} users measured")
    big = measure(args.big, args.limit, walk=walk_of(args.big), edit=False, direct=direct)
    progress(f"{args.big} users measured")
    comparison = {}
    ok = True
    for name in SCENARIOS:
        a, b = small["pages"][name]["rcu_estimate"], big["pages"][name]["rcu_estimate"]
        ratio = b / a if a else float("inf")
        within = abs(ratio - 1) <= TARGET
        ok &= within
        comparison[name] = {"small": a, "big": b, "ratio": round(ratio, 3), "within_10_percent": within}
    walks = {
        str(r["users"]): (r.get("walk_all") or r.get("walk_sampled") or {}).get("rcu_per_user")
        for r in (small, middle, big)
        if r is not None and not args.no_walk
    }
    result = {
        "moto": _version("moto"),
        "limit": args.limit,
        "loaded": "BatchWriteItem" if args.api_load else "directly into moto's table",
        "direct_load_check": check,
        "small": small,
        **({"middle": middle} if middle else {}),
        "big": big,
        "comparison": comparison,
        "walk_rcu_per_user": walks,
        "target_met": ok,
        "seconds": round(time.perf_counter() - began, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    RESULT_FILE.write_text(text + "\n")
    return 0 if ok else 1


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    sys.exit(main())
