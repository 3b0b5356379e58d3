"""A bulk suspend job on the local stack against single suspends from one client, over HTTP.

Starts its own stack (``python -m local`` as ``make run`` does, on free loopback ports, with 2N + 1 seeded
users), then:

1. one client suspends N users one ``POST /users/{userId}/suspend`` at a time;
2. one ``POST /bulk-jobs`` suspends the other N users (the template's SQS mapping feeds bulk-worker),
   polled until it has finished.

During both, and for ten seconds before them (idle), a reader times ``GET /users/{userId}`` ten times a
second: interactive latency while a job runs. The stack's CPU time (its process and Lambda workers) is
read from ``/proc`` around each phase: on a machine with few cores the stack is CPU-bound, and CPU per
item says how much work an item costs where wall time only says how it was shared out.

Auth0 calls are counted from the local Auth0's request log (Management API and token endpoint).
DynamoDB calls per item are measured in process by ``bench/bulk.py`` (this stack's moto server does not
count them). Usage: ``make bench BENCH_ARGS="bulk [--users N]"``; results in
``bench/results/bulk_stack.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local.launch import Launched, launched_stack, password_login

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


READ_EVERY = 0.1  # an administrator's console, not a load test: the reader must not slow the job itself


def read_latencies(api: str, token: str, target: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = call(api, "GET", f"/users/{quote(target, safe='')}", token)
        if status == 200:
            out.append(time.perf_counter() - started)
        stop.wait(max(0.0, READ_EVERY - (time.perf_counter() - started)))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) so far of ``pid`` and its live descendants (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(p, 0.0) for p in tree)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values, default=0.0)


@dataclass
class Phase:
    """One way of suspending N users: wall and stack CPU seconds, Auth0 calls, reads timed meanwhile."""

    seconds: float
    cpu: float
    auth0_calls: int
    reads: list[float]

    def report(self, n: int) -> dict[str, Any]:
        return {
            "ms_per_item": round(1000 * self.seconds / n, 2),
            "stack_cpu_ms_per_item": round(1000 * self.cpu / n, 2),
            "auth0_calls_per_item": round(self.auth0_calls / n, 3),
            "read_p95_ms": round(1000 * p95(self.reads), 1),
            "reads": len(self.reads),
        }


def phase(stack: Launched, reader_target: str, token: str, work: Callable[[], None]) -> Phase:
    """Run ``work`` while a reader times ``GET /users/{userId}`` ten times a second (same load each way)."""
    clear_auth0_log(stack.auth0_url)
    reads: list[float] = []
    stop = threading.Event()
    reader = threading.Thread(target=read_latencies, args=(stack.api_url, token, reader_target, stop, reads))
    cpu_started = cpu_seconds(stack.pid)
    started = time.perf_counter()
    reader.start()
    try:
        work()
    finally:
        stop.set()
        reader.join()
    seconds = time.perf_counter() - started
    return Phase(seconds, cpu_seconds(stack.pid) - cpu_started, auth0_calls(stack.auth0_url), reads)


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

        def suspend_one_by_one() -> None:
            for uid in singles:
                status, body = call(api, "POST", f"/users/{quote(uid, safe='')}/suspend", token)
                assert status == 200, (status, body)

        def suspend_in_one_job() -> None:
            status, job = call(
                api,
                "POST",
                "/bulk-jobs",
                token,
                {"action": "suspend", "userIds": bulk},
                {"Idempotency-Key": f"bench-{time.time()}"},
            )
            assert status == 202, (status, job)
            while True:
                status, view = call(api, "GET", f"/bulk-jobs/{job['id']}", token)
                assert status == 200, (status, view)
                if view["status"] not in ("queued", "running"):
                    break
                time.sleep(0.5)
            assert view["status"] == "succeeded" and view["counts"]["succeeded"] == n, view

        single = phase(stack, reader_target, token, suspend_one_by_one)
        job = phase(stack, reader_target, token, suspend_in_one_job)
    return {
        "users": n,
        "cores": os.cpu_count(),
        "single": single.report(n),
        "bulk": job.report(n),
        "wall_ratio_bulk_over_single": round(job.seconds / single.seconds, 3),
        "stack_cpu_ratio_bulk_over_single": round(job.cpu / single.cpu, 3),
        "read_p95_ms_idle": round(1000 * p95(idle), 1),
        "read_p95_ratio_during_job_over_idle": round(p95(job.reads) / p95(idle), 2),
        "read_p95_ratio_during_job_over_singles": round(p95(job.reads) / p95(single.reads), 2),
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
