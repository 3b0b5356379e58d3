"""A load run against the local stack: K concurrent clients for T seconds, mixed reads and writes.

Starts its own stack (``python -m local``, as ``make run`` does, on free loopback ports with its own seed),
then runs the same mix twice: with 1 client and with K clients, each for T seconds and at most
``--max-requests`` requests. The mix: GET /users/{id} (an admin reading a user), GET /me (a user
reading themselves) and PATCH /users/{id} (an admin renaming a user; every value is distinct, so every
PATCH is a real change).

It reports errors (any answer other than 200, or no answer; target 0), lost updates (target 0: for
each user the final version must have advanced by exactly the number of PATCHes answered 200, and the
user's audit trail must hold each of their values exactly once) and throughput (requests per second)
with K clients over throughput with 1 client. Nothing leaves 127.0.0.1.

Usage: ``make bench BENCH_ARGS="load [--clients K] [--seconds T] [--concurrency N]"``
(N is the stack's LOCAL_LAMBDA_CONCURRENCY); results in ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local.launch import launched_stack

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only
AUDIENCE = "https://api.bench.local"
LOGIN_CLIENT = "bench-login-client"
PASSWORD = "Bench-Load-Pass1"  # noqa: S105 - local seeded users only
USERS = 8
MIX = (("GET /users/{id}", 0.4), ("GET /me", 0.3), ("PATCH /users/{id}", 0.3))


@dataclass
class Stack:
    api: str
    auth0: str


@dataclass
class Tally:
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    patched: dict[str, list[str]] = field(default_factory=dict)  # user id -> values answered 200
    by_route: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def user_id(email: str) -> str:
    return "auth0|" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]


def call(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310 - loopback
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(errors="replace")[:200]


@contextmanager
def local_stack(concurrency: int) -> Iterator[Stack]:
    seed = {
        "accounts": [{"id": "bench", "name": "Bench"}],
        "users": [
            {
                "email": "admin@bench.example",
                "password": PASSWORD,
                "firstName": "Ada",
                "lastName": "Admin",
                "profile": "administrator",
            },
            *(
                {
                    "email": f"user{i}@bench.example",
                    "password": PASSWORD,
                    "firstName": f"User{i}",
                    "lastName": "Bench",
                    "memberships": [{"accountId": "bench", "roles": ["Buyer"]}],
                    "defaultAccountId": "bench",
                }
                for i in range(USERS)
            ),
        ],
    }
    env = {
        "LOCAL_LAMBDA_CONCURRENCY": str(concurrency),
        "LOCAL_LOG_LEVEL": "WARNING",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-load-") as tmp,
        launched_stack(Path(tmp), seed, audience=AUDIENCE, client_id=LOGIN_CLIENT, env=env) as launched,
    ):
        yield Stack(api=launched.api_url, auth0=launched.auth0_url)


def login(stack: Stack, email: str) -> str:
    status, body = call(
        "POST",
        f"{stack.auth0}/oauth/token",
        body={
            "grant_type": "password",
            "username": email,
            "password": PASSWORD,
            "audience": AUDIENCE,
            "client_id": LOGIN_CLIENT,
            "scope": "openid",
        },
    )
    if status != 200:
        raise RuntimeError(f"login of {email} failed: {status} {body}")
    return str(body["access_token"])


def run_clients(
    stack: Stack, tokens: dict[str, str], clients: int, seconds: float, cap: int, phase: str
) -> dict[str, Any]:
    """``clients`` threads issue the mix until ``seconds`` pass or ``cap`` requests were started."""
    tally = Tally()
    ids = [user_id(f"user{i}@bench.example") for i in range(USERS)]
    started = 0
    start_lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        nonlocal started
        rng = random.Random(f"{phase}-{index}")
        n = 0
        while time.monotonic() < deadline:
            with start_lock:
                if started >= cap:
                    return
                started += 1
            route = rng.choices([r for r, _ in MIX], weights=[w for _, w in MIX])[0]
            target = rng.randrange(USERS)
            try:
                if route == "GET /me":
                    status, _ = call("GET", f"{stack.api}/me", tokens[f"user{target}"])
                elif route == "GET /users/{id}":
                    status, _ = call(
                        "GET", f"{stack.api}/users/{quote(ids[target], safe='')}", tokens["admin"]
                    )
                else:
                    value = f"{phase}-{index}-{n}"
                    n += 1
                    status, _ = call(
                        "PATCH",
                        f"{stack.api}/users/{quote(ids[target], safe='')}",
                        tokens["admin"],
                        {"lastName": value},
                    )
                    if status == 200:
                        with tally.lock:
                            tally.patched.setdefault(ids[target], []).append(value)
            except OSError as exc:
                status = 0
                with tally.lock:
                    tally.errors[f"{route}: {type(exc).__name__}"] += 1
            with tally.lock:
                tally.requests += 1
                tally.by_route[route] += 1
                if status not in (0, 200):
                    tally.errors[f"{route}: {status}"] += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": tally.requests,
        "requests_per_second": round(tally.requests / elapsed, 2),
        "by_route": dict(tally.by_route),
        "errors": dict(tally.errors),
        "patched": tally.patched,
    }


def versions(stack: Stack, admin: str) -> dict[str, int]:
    out = {}
    for i in range(USERS):
        uid = user_id(f"user{i}@bench.example")
        status, body = call("GET", f"{stack.api}/users/{quote(uid, safe='')}", admin)
        if status != 200:
            raise RuntimeError(f"reading {uid}: {status}")
        out[uid] = int(body["version"])
    return out


def audit_values(stack: Stack, admin: str, uid: str) -> Counter[str]:
    values: Counter[str] = Counter()
    cursor = ""
    while True:
        status, body = call("GET", f"{stack.api}/users/{quote(uid, safe='')}/audit?limit=100{cursor}", admin)
        if status != 200:
            raise RuntimeError(f"audit of {uid}: {status}")
        for entry in body["items"]:
            for change in entry["changes"]:
                if change["field"] == "lastName":
                    values[str(change["to"])] += 1
        if not body.get("nextCursor"):
            return values
        cursor = "&cursor=" + quote(body["nextCursor"], safe="")


def lost_updates(
    stack: Stack, admin: str, before: dict[str, int], phases: list[dict[str, Any]]
) -> dict[str, Any]:
    after = versions(stack, admin)
    patched: dict[str, list[str]] = {}
    for phase in phases:
        for uid, values in phase["patched"].items():
            patched.setdefault(uid, []).extend(values)
    version_gaps = {
        uid: {
            "versions_advanced": after[uid] - before[uid],
            "patches_answered_200": len(patched.get(uid, [])),
        }
        for uid in after
        if after[uid] - before[uid] != len(patched.get(uid, []))
    }
    missing_in_audit = []
    for uid, values in patched.items():
        trail = audit_values(stack, admin, uid)
        missing_in_audit += [f"{uid}: {v} x{trail[v]}" for v in values if trail[v] != 1]
    return {
        "patches": sum(len(v) for v in patched.values()),
        "version_mismatches": version_gaps,
        "audit_mismatches": missing_in_audit,
        "lost": len(version_gaps) + len(missing_in_audit),
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4, help="the stack's LOCAL_LAMBDA_CONCURRENCY")
    parser.add_argument("--max-requests", type=int, default=5000, help="per phase")
    args = parser.parse_args(argv)
    with local_stack(args.concurrency) as stack:
        tokens = {"admin": login(stack, "admin@bench.example")}
        tokens.update({f"user{i}": login(stack, f"user{i}@bench.example") for i in range(USERS)})
        # warm-up, not measured: every function gets its execution environments (cold starts)
        run_clients(stack, tokens, args.clients, 3.0, args.clients * 6, "warmup")
        before = versions(stack, tokens["admin"])
        one = run_clients(stack, tokens, 1, args.seconds, args.max_requests, "one")
        many = run_clients(stack, tokens, args.clients, args.seconds, args.max_requests, "many")
        lost = lost_updates(stack, tokens["admin"], before, [one, many])
    result = {
        "clients": args.clients,
        "seconds": args.seconds,
        "lambda_concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "one_client": {k: v for k, v in one.items() if k != "patched"},
        "k_clients": {k: v for k, v in many.items() if k != "patched"},
        "throughput_ratio": round(many["requests_per_second"] / one["requests_per_second"], 2),
        "errors": sum(one["errors"].values()) + sum(many["errors"].values()),
        "lost_updates": lost,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    one, many = result["one_client"], result["k_clients"]

    def row(phase: dict[str, Any]) -> str:
        cells = [phase["clients"], phase["requests"], phase["seconds"], phase["requests_per_second"]]
        return "| " + " | ".join(str(c) for c in [*cells, sum(phase["errors"].values())]) + " |"

    return "\n".join(
        [
            "| clients | requests | seconds | requests/s | errors |",
            "|---|---|---|---|---|",
            row(one),
            row(many),
            "",
            f"Throughput with {many['clients']} clients / with 1 client: **{result['throughput_ratio']}x** "
            f"(LOCAL_LAMBDA_CONCURRENCY={result['lambda_concurrency']}, {result['cpus']} CPUs).",
            f"Errors: **{result['errors']}**. Lost updates: **{result['lost_updates']['lost']}** "
            f"of {result['lost_updates']['patches']} PATCHes answered 200.",
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
