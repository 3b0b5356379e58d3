"""How long ``POST /password-reset`` takes to answer for a known, an unknown and a suspended address.

Starts its own stack (``python -m local`` as ``make run`` does, on free loopback ports, with three seeded
users), then sends ``--rounds`` rounds of requests, one per address kind per round in a shuffled order
(so load drift affects every kind alike), each from its own source address (``X-Forwarded-For``: the
per-IP limit is not what is measured). Reports the median and p90 answer time per kind and each
median over the unknown address's (target: within 5 %). The account's work (limit, lookups, link,
email) runs after the answer, in public-requests (security notes M4).

Usage: ``make bench BENCH_ARGS="public [--rounds N]"``; results in ``bench/results/public_timing.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from local.launch import launched_stack

ROOT = Path(__file__).resolve().parents[1]
AUDIENCE = "https://api.bench.local"
LOGIN_CLIENT = "bench-login-client"
PASSWORD = "Bench-Timing-Pass1"  # noqa: S105 - local seeded users only
ADDRESSES = {
    "known": "kim.known@acme.example",
    "unknown": "nobody.here@acme.example",
    "suspended": "sam.suspended@acme.example",
}
SEED = {
    "accounts": [{"id": "acme", "name": "Acme"}],
    "users": [
        {
            "email": ADDRESSES["known"],
            "password": PASSWORD,
            "firstName": "Kim",
            "lastName": "Known",
            "memberships": [{"accountId": "acme", "roles": ["Buyer"]}],
            "defaultAccountId": "acme",
        },
        {
            "email": ADDRESSES["suspended"],
            "password": PASSWORD,
            "firstName": "Sam",
            "lastName": "Suspended",
            "memberships": [{"accountId": "acme", "roles": ["Buyer"]}],
            "defaultAccountId": "acme",
            "status": "SUSPENDED",
        },
    ],
}


def reset(api: str, email: str, ip: str) -> float:
    body = json.dumps({"email": email}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{api}/password-reset",
        data=body,
        method="POST",
        headers={"content-type": "application/json", "x-forwarded-for": ip},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback only
        answer.read()
        status = answer.status
    elapsed = time.perf_counter() - started
    assert status == 202, status
    return elapsed


def run(rounds: int) -> dict[str, Any]:
    env = {"RESET_LIMIT_PER_IP": "100000", "LOCAL_LOG_LEVEL": "WARNING"}
    times: dict[str, list[float]] = {kind: [] for kind in ADDRESSES}
    with (
        tempfile.TemporaryDirectory(prefix="bench-public-") as tmp,
        launched_stack(Path(tmp), SEED, audience=AUDIENCE, client_id=LOGIN_CLIENT, env=env) as stack,
    ):
        kinds = list(ADDRESSES)
        for warm in range(5):  # every kind once per warm-up round, not measured
            for kind in kinds:
                reset(stack.api_url, ADDRESSES[kind], f"192.0.2.{warm}")
        rng = random.Random(20261202)
        for n in range(rounds):
            rng.shuffle(kinds)
            for kind in kinds:
                ip = f"10.{n // 250 % 250}.{n % 250}.{kinds.index(kind) + 1}"
                times[kind].append(reset(stack.api_url, ADDRESSES[kind], ip))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    return {
        "rounds": rounds,
        "median_ms": {kind: round(1000 * m, 2) for kind, m in medians.items()},
        "p90_ms": {
            kind: round(1000 * statistics.quantiles(values, n=10)[-1], 2) for kind, values in times.items()
        },
        "median_over_unknown": {kind: round(m / medians["unknown"], 3) for kind, m in medians.items()},
        "target": "each median within 5 % of the others",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.public_timing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    result = run(args.rounds)
    out = ROOT / "bench" / "results" / "public_timing.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
