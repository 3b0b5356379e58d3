"""What cleanup-links reads from DynamoDB: the same for a small and a large table (a script, not a test).

cleanup-links finds work through the sparse ExpiryIndex (``expPk = "EXP" AND expAt < cutoff``), so its
read cost should follow the number of expired links, not the size of the table. This script builds
the table from template.yaml in moto (in-process), seeds ``--expired`` expired links next to
``--small`` and then ``--big`` live items (half live links, which sit in the same index partition,
half user records, which are not in the index), runs one cleanup pass over each and compares what
the Query calls read.

What is measured, from botocore events on the store's own client:

- ``query_items_read``: the sum of ``ScannedCount`` over the Query calls, i.e. the index entries
  DynamoDB read (it bills for those; with a key condition and no filter, ScannedCount = Count).
  This is the number compared.
- ``query_rcu_estimate``: read capacity those Query calls would cost on DynamoDB, from the size of
  the entries read (KEYS_ONLY projection + 100 bytes index overhead each, rounded up to 4 KB per
  call, 0.5 RCU per 4 KB for an eventually consistent read).
- ``query_consumed_capacity_moto``: the sum of ``ConsumedCapacity`` with
  ``ReturnConsumedCapacity="TOTAL"``. moto reports it, but as a constant per call (it does not
  look at the data), so it only counts calls; it is shown, not compared.
- the other calls a pass makes (GetItem, DeleteItem, ...), which follow the expired links too.

Run: ``PYTHONPATH=layers/shared:. .venv/bin/python -m bench.cleanup_cost`` (options: --help). Prints
a JSON result and writes it to bench/results/cleanup.json.
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

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILE = ROOT / "bench" / "results" / "cleanup.json"
TABLE = "usermgmt-bench"
REGION = "eu-central-1"
NOW = 1_800_000_000
BATCH = 25  # BatchWriteItem's maximum
INDEX_ENTRY_OVERHEAD = 100  # bytes DynamoDB adds to each index entry
RCU_BLOCK = 4096
TARGET = 0.10  # the two costs should be within 10 %


@dataclass
class Meter:
    """Counts what the DynamoDB client is asked and answers, per operation."""

    calls: Counter[str] = field(default_factory=Counter)
    query_items_read: int = 0
    query_items_returned: int = 0
    query_bytes: int = 0
    query_rcu_estimate: float = 0.0
    query_consumed_capacity_moto: float = 0.0
    recording: bool = False

    def ask_for_capacity(self, params: dict[str, Any], **_: Any) -> None:
        if self.recording:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.recording:
            return
        self.calls[model.name] += 1
        if model.name != "Query":
            return
        items = parsed.get("Items", [])
        self.query_items_read += int(parsed.get("ScannedCount", len(items)))
        self.query_items_returned += int(parsed.get("Count", len(items)))
        size = sum(item_size(item) + INDEX_ENTRY_OVERHEAD for item in items)
        self.query_bytes += size
        self.query_rcu_estimate += max(1, math.ceil(size / RCU_BLOCK)) * 0.5
        capacity = parsed.get("ConsumedCapacity") or {}
        self.query_consumed_capacity_moto += float(capacity.get("CapacityUnits", 0))


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size rule: attribute name bytes + value bytes (numbers ~ 1 byte per 2 digits + 1)."""
    size = 0
    for name, value in item.items():
        ((kind, raw),) = value.items()
        size += len(name.encode())
        if kind == "S":
            size += len(str(raw).encode())
        elif kind == "N":
            size += math.ceil(len(str(raw).lstrip("-").replace(".", "")) / 2) + 1
        else:
            size += len(json.dumps(raw).encode())
    return size


def table_definition() -> dict[str, Any]:
    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    (table,) = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    return dict(table["Properties"])


def create_table(client: Any) -> None:
    props = table_definition()
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )


def link_item(store: Any, n: int, expires_at: int) -> dict[str, Any]:
    """A link item exactly as the store writes it (``PutLink``), without the put's condition."""
    from usermgmt.store import Link, PutLink

    link = Link(
        token_hash=f"{n:064x}",
        purpose="reset",
        user_id=f"auth0|bench{n % 1000:06d}",
        expires_at=expires_at,
        created_at=expires_at - 1800,
    )
    item: dict[str, Any] = store.write_request(PutLink(link, ttl=expires_at + 30 * 86400))["Put"]["Item"]
    return item


def user_item(n: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"USER#auth0|bench{n:08d}"},
        "sk": {"S": "PROFILE"},
        "email": {"S": f"user{n}@bench.example"},
        "version": {"N": "1"},
    }


def batch_put(client: Any, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), BATCH):
        request: dict[str, Any] = {TABLE: [{"PutRequest": {"Item": i}} for i in items[start : start + BATCH]]}
        while request:
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def count_index(client: Any, cutoff: int | None) -> int:
    """Entries in the ExpiryIndex (those before ``cutoff`` if given), page by page (not metered)."""
    condition = "expPk = :exp" if cutoff is None else "expPk = :exp AND expAt < :cutoff"
    values: dict[str, Any] = {":exp": {"S": "EXP"}}
    if cutoff is not None:
        values[":cutoff"] = {"N": str(cutoff)}
    kwargs: dict[str, Any] = {
        "TableName": TABLE,
        "IndexName": "ExpiryIndex",
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": values,
        "Select": "COUNT",
    }
    total = 0
    while True:
        resp = client.query(**kwargs)
        total += int(resp["Count"])
        if not resp.get("LastEvaluatedKey"):
            return total
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def measure(live: int, expired: int) -> dict[str, Any]:
    """A fresh moto table with ``live`` live items and ``expired`` expired links; one cleanup pass."""
    from moto import mock_aws

    from usermgmt.container import Container
    from usermgmt.settings import Settings

    class FixedClock:
        def now(self) -> float:
            return float(NOW)

    with mock_aws():
        settings = Settings(table_name=TABLE)
        container = Container(settings, clock=FixedClock())
        from usermgmt.adapters.dynamo import DynamoStore

        store = container.store
        assert isinstance(store, DynamoStore)
        client = store._client
        create_table(client)

        started = time.perf_counter()
        live_links = live // 2
        cutoff = NOW - settings.cleanup_grace_seconds
        items = [link_item(store, n, NOW + 3600 + n % 86400) for n in range(live_links)]
        items += [user_item(n) for n in range(live - live_links)]
        items += [link_item(store, 10**9 + n, cutoff - 1 - n) for n in range(expired)]
        batch_put(client, items)
        seeded = time.perf_counter() - started

        meter = Meter()
        client.meta.events.register("provide-client-params.dynamodb.Query", meter.ask_for_capacity)
        client.meta.events.register("after-call.dynamodb", meter.after_call)
        meter.recording = True
        started = time.perf_counter()
        result = container.cleanup.run(max_items=max(settings.cleanup_max_items, expired))
        took = time.perf_counter() - started
        meter.recording = False

        expired_left = count_index(client, cutoff)
        index_left = count_index(client, None)

    return {
        "live_items": live,
        "live_links_in_index": live_links,
        "expired_links": expired,
        "links_deleted": result.links_deleted,
        "complete": result.complete,
        "expired_links_left": expired_left,
        "index_entries_left": index_left,
        "query_calls": meter.calls["Query"],
        "query_items_read": meter.query_items_read,
        "query_items_returned": meter.query_items_returned,
        "query_bytes_estimate": meter.query_bytes,
        "query_rcu_estimate": meter.query_rcu_estimate,
        "query_consumed_capacity_moto": meter.query_consumed_capacity_moto,
        "calls": dict(sorted(meter.calls.items())),
        "seed_seconds": round(seeded, 2),
        "cleanup_seconds": round(took, 2),
    }


def ratio(big: float, small: float) -> float | None:
    return round(big / small, 4) if small else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--expired", type=int, default=100, help="expired links in each table")
    parser.add_argument("--small", type=int, default=100, help="live items in the small table")
    parser.add_argument("--big", type=int, default=100_000, help="live items in the big table")
    parser.add_argument("--out", type=Path, default=RESULT_FILE, help="where to write the JSON result")
    args = parser.parse_args(argv)

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", REGION),
    ):
        os.environ.setdefault(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    from usermgmt.observability import logger

    logger.setLevel(logging.WARNING)  # the run's own log line would mix with the JSON printed here

    small = measure(args.small, args.expired)
    print(f"small table measured: {small['cleanup_seconds']} s", file=sys.stderr)
    big = measure(args.big, args.expired)
    print(f"big table measured: {big['cleanup_seconds']} s", file=sys.stderr)
    read_ratio = ratio(big["query_items_read"], small["query_items_read"])
    result = {
        "benchmark": "cleanup_cost",
        "metric": (
            "query_items_read = sum of ScannedCount over cleanup's Query calls on the ExpiryIndex (index "
            "entries read; what DynamoDB bills for). query_rcu_estimate = RCU those calls would cost "
            "(entry sizes + 100 B index overhead, 4 KB blocks, 0.5 RCU each, eventually consistent). "
            "query_consumed_capacity_moto = ConsumedCapacity with ReturnConsumedCapacity=TOTAL as moto "
            "reports it: a constant per call, so it counts calls and is not compared."
        ),
        "moto": _version("moto"),
        "small": small,
        "big": big,
        "ratio_big_to_small": {
            "query_items_read": read_ratio,
            "query_rcu_estimate": ratio(big["query_rcu_estimate"], small["query_rcu_estimate"]),
            "query_calls": ratio(big["query_calls"], small["query_calls"]),
            "all_calls": ratio(sum(big["calls"].values()), sum(small["calls"].values())),
        },
        "target": f"query_items_read within {TARGET:.0%} (ratio between {1 - TARGET} and {1 + TARGET})",
        "within_target": read_ratio is not None and abs(read_ratio - 1) <= TARGET,
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())
