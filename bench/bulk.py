"""A bulk suspend job against single suspends: DynamoDB and Auth0 calls per item, wall time per item.

In process: DynamoDB on moto, Auth0 as the tests' fake (counting calls), the handlers as Lambda runs
them (``suspend-user`` for single calls, ``bulk-jobs`` then ``bulk-worker`` fed with the job's queue
messages in batches of 10, as the event source mapping delivers them). DynamoDB calls are counted from
botocore's ``before-call`` events of the store's client. ``python -m bench.bulk [N]`` (default 1000)
writes bench/results/bulk.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(n: int) -> dict[str, Any]:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "POWERTOOLS_SERVICE_NAME": "usermgmt",
            "POWERTOOLS_METRICS_NAMESPACE": "UserManagementBench",
        }
    )
    import boto3
    from moto import mock_aws

    from tests.conftest import TABLE, Env, create_table, make_dynamodb_atomic, wired_env
    from usermgmt.adapters.dynamo import DynamoStore

    make_dynamodb_atomic()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-central-1")
        create_table(client, TABLE)
        calls: Counter[str] = Counter()
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.update([model.name]))
        with wired_env(DynamoStore(client, TABLE), client) as env:
            admin = env.add_user("ada@example.com", profile="administrator")
            singles = [
                env.add_user(f"s{i:05d}@acme.example", memberships={"acme": ["Buyer"]}) for i in range(n)
            ]
            bulk = [env.add_user(f"b{i:05d}@acme.example", memberships={"acme": ["Buyer"]}) for i in range(n)]
            env.handler("suspend-user")
            env.handler("bulk-jobs")
            env.handler("bulk-worker")

            calls.clear()
            idp_before = len(env.idp.calls)
            started = time.perf_counter()
            for user in singles:
                r = env.call("suspend-user", "POST", f"/users/{user.id}/suspend", as_user=admin)
                assert r.status == 200, r
            single_seconds = time.perf_counter() - started
            single_dynamo = sum(calls.values())
            single_ops = dict(calls)
            single_idp = len(env.idp.calls) - idp_before

            calls.clear()
            idp_before = len(env.idp.calls)
            started = time.perf_counter()
            r = env.call(
                "bulk-jobs",
                "POST",
                "/bulk-jobs",
                as_user=admin,
                body={"action": "suspend", "userIds": [u.id for u in bulk]},
                headers={"idempotency-key": "bench"},
            )
            assert r.status == 202, r
            env.drain_bulk()
            bulk_seconds = time.perf_counter() - started
            bulk_dynamo = sum(calls.values())
            bulk_ops = dict(calls)
            bulk_idp = len(env.idp.calls) - idp_before
            view = env.call("bulk-jobs", "GET", f"/bulk-jobs/{r.json()['id']}", as_user=admin).json()
            assert view["status"] == "succeeded" and view["counts"]["succeeded"] == n, view
            assert all((u2 := env.user(u.id)) is not None and u2.status == "SUSPENDED" for u in bulk)
            _ = Env  # the wiring of the tests
    per_single = single_dynamo / n
    per_item = bulk_dynamo / n
    return {
        "users": n,
        "single": {
            "dynamodb_calls_per_suspend": round(per_single, 3),
            "dynamodb_calls": single_ops,
            "auth0_calls_per_suspend": round(single_idp / n, 3),
            "ms_per_suspend": round(1000 * single_seconds / n, 2),
        },
        "bulk": {
            "dynamodb_calls_per_item": round(per_item, 3),
            "dynamodb_calls": bulk_ops,
            "auth0_calls_per_item": round(bulk_idp / n, 3),
            "ms_per_item": round(1000 * bulk_seconds / n, 2),
        },
        "dynamodb_ratio_bulk_over_single": round(per_item / per_single, 3),
        "wall_ratio_bulk_over_single": round(bulk_seconds / single_seconds, 3),
    }


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 1000
    result = run(n)
    out = ROOT / "bench" / "results" / "bulk.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
