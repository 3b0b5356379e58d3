"""A bulk suspend job on the local stack against single suspends from one client, over HTTP.

Starts its own stack (``python -m local`` as ``make run`` does, on free loopback ports, with 2N + 1 seeded
users), then:

1. one client suspends N users one ``POST /users/{userId}/suspend`` at a time;
2. one ``POST /bulk-jobs`` suspends the other N users (the template's SQS mapping feeds bulk-worker),
   polled until it has finished; meanwhile a reader times ``GET /users/{userId}``, and again once the
   job is done (interactive latency during a job over idle).

Auth0 calls are counted from the local Auth0's request log (Management API and token endpoint).
DynamoDB calls per item are measured in process by ``bench/bulk.py`` (this stack's moto server does not
count them). Usage: ``make bench BENCH_ARGS="bulk [--users N]"``; results in
``bench/results/bulk_stack.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local.launch import launched_stack, password_login

ROOT = Path(__file__).resolve().parents[1]
AUDIENCE = "https://api.bench.local"
LOGIN_CLIENT = "bench-login-client"
PASSWORD = "Bench-Bulk-Pass1"  # noqa: S105 - local seeded users only
ADMIN = "ada.bench@example.com"


def user_id(email: str) -> str:
    return "auth0|" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]


def seed(n: int) -> dict[str, Any]:
    users: list[dict[str, Any]] = [
        {
            "email": ADMIN,
            "password": PASSWORD,
            "firstName": "Ada",
            "lastName": "Admin",
            "profile": "administrator",
        }
    ]
    for group in ("s", "b"):
        users += [
            {
                "email": f"{group}{i:05d}@acme.example",
                "password": PASSWORD,
                "firstName": "Bench",
                "lastName": f"{group}{i:05d}",
                "memberships": [{"accountId": "acme", "roles": ["Buyer"]}],
                "defaultAccountId": "acme",
            }
            for i in range(n)
        ]
    return {"accounts": [{"id": "acme", "name": "Acme"}], "users": users}


def call(
    api: str, method: str, path: str, token: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api + path, data=data, method=method)  # noqa: S310 - loopback only
    request.add_header("authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback only
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as failed:
        raw = failed.read()
        return failed.code, json.loads(raw) if raw else None


def auth0_calls(auth0: str) -> int:
    with urllib.request.urlopen(f"{auth0}/_knobs/requests", timeout=10) as answer:  # noqa: S310
        entries = json.loads(answer.read())
    return sum(1 for e in entries if str(e.get("path", "")).startswith(("/api/v2/", "/oauth/token")))


def clear_auth0_log(auth0: str) -> None:
    request = urllib.request.Request(f"{auth0}/_knobs/requests", method="DELETE")  # noqa: S310
    urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback only


def read_latencies(api: str, token: str, target: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = call(api, "GET", f"/users/{quote(target, safe='')}", token)
        if status == 200:
            out.append(time.perf_counter() - started)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=0.0)


def run(n: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp,
        launched_stack(
            Path(tmp), seed(n), audience=AUDIENCE, client_id=LOGIN_CLIENT, startup_timeout=900
        ) as stack,
    ):
        api, auth0 = stack.api_url, stack.auth0_url
        token = password_login(auth0, ADMIN, PASSWORD, audience=AUDIENCE, client_id=LOGIN_CLIENT)
        singles = [user_id(f"s{i:05d}@acme.example") for i in range(n)]
        bulk = [user_id(f"b{i:05d}@acme.example") for i in range(n)]
        reader_target = singles[0]

        idle: list[float] = []
        stop = threading.Event()
        threading.Timer(10.0, stop.set).start()
        read_latencies(api, token, reader_target, stop, idle)

        clear_auth0_log(auth0)
        started = time.perf_counter()
        for uid in singles:
            status, body = call(api, "POST", f"/users/{quote(uid, safe='')}/suspend", token)
            assert status == 200, (status, body)
        single_seconds = time.perf_counter() - started
        single_auth0 = auth0_calls(auth0)

        clear_auth0_log(auth0)
        during: list[float] = []
        stop = threading.Event()
        reader = threading.Thread(target=read_latencies, args=(api, token, reader_target, stop, during))
        started = time.perf_counter()
        status, job = call(
            api,
            "POST",
            "/bulk-jobs",
            token,
            {"action": "suspend", "userIds": bulk},
            {"Idempotency-Key": f"bench-{time.time()}"},
        )
        assert status == 202, (status, job)
        reader.start()
        while True:
            status, view = call(api, "GET", f"/bulk-jobs/{job['id']}", token)
            assert status == 200, (status, view)
            if view["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        bulk_seconds = time.perf_counter() - started
        stop.set()
        reader.join()
        assert view["status"] == "succeeded" and view["counts"]["succeeded"] == n, view
        bulk_auth0 = auth0_calls(auth0)
    return {
        "users": n,
        "single": {
            "ms_per_suspend": round(1000 * single_seconds / n, 2),
            "auth0_calls_per_suspend": round(single_auth0 / n, 3),
        },
        "bulk": {
            "ms_per_item": round(1000 * bulk_seconds / n, 2),
            "auth0_calls_per_item": round(bulk_auth0 / n, 3),
        },
        "wall_ratio_bulk_over_single": round(bulk_seconds / single_seconds, 3),
        "read_p95_ms_idle": round(1000 * p95(idle), 1),
        "read_p95_ms_during_job": round(1000 * p95(during), 1),
        "read_p95_ratio_during_over_idle": round(p95(during) / p95(idle), 2) if idle else None,
        "reads_during_job": len(during),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_stack", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args(argv)
    result = run(args.users)
    out = ROOT / "bench" / "results" / "bulk_stack.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
