"""Commit-to-bus latency of lifecycle events on the local stack (SPEC section 15: within 2 s locally).

Starts a local stack (as `make run` does, loopback only), makes ``--changes`` renames round robin over
the seeded users, and watches ``/_local/bus`` every 50 ms from another thread. An event's latency is the
time it was first seen on the bus minus its commit time (the CloudEvents ``time``, set in the
committing transaction); both are this machine's clock. Also checks that every change arrived exactly
once and in order per user. Bounded: at most ``--changes`` requests and 5 minutes.

    PYTHONPATH=layers/shared:. .venv/bin/python -m bench.events_latency --changes 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.load import USERS, call, local_stack, login, user_id

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.05
LIMIT_SECONDS = 300


def measure(changes: int) -> dict[str, Any]:
    with local_stack(concurrency=4) as stack:
        admin = login(stack, "admin@bench.example")
        seen: dict[str, float] = {}
        events: dict[str, dict[str, Any]] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                status, body = call("GET", f"{stack.api}/_local/bus")
                now = time.time()
                if status == 200:
                    for event in body:
                        detail = event["detail"]
                        if detail["id"] not in seen:
                            seen[detail["id"]] = now
                            events[detail["id"]] = detail
                time.sleep(POLL)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        users = [user_id(f"user{i}@bench.example") for i in range(USERS)]
        for n in range(changes):
            who = users[n % len(users)]
            status, _ = call(
                "PATCH", f"{stack.api}/users/{quote(who, safe='')}", admin, {"lastName": f"L{n}"}
            )
            if status != 200:
                raise RuntimeError(f"PATCH {n} answered {status}")
            if time.monotonic() - started > LIMIT_SECONDS:
                raise RuntimeError("over the time limit")
        deadline = time.monotonic() + 30
        while len(events) < changes and time.monotonic() < deadline:
            time.sleep(POLL)
        stop.set()
        watcher.join(timeout=5)

    latencies = sorted(
        seen[i] - datetime.fromisoformat(d["time"].replace("Z", "+00:00")).timestamp()
        for i, d in events.items()
    )
    per_user: dict[str, list[int]] = {}
    for detail in sorted(events.values(), key=lambda d: seen[d["id"]]):
        per_user.setdefault(detail["subject"], []).append(int(detail["sequence"]))
    in_order = all(seq == sorted(seq) and len(seq) == len(set(seq)) for seq in per_user.values())
    return {
        "changes": changes,
        "events_seen": len(events),
        "in_order_per_user": in_order,
        "median_ms": round(statistics.median(latencies) * 1000),
        "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000),
        "max_ms": round(latencies[-1] * 1000),
        "poll_ms": int(POLL * 1000),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args(argv)
    result = measure(min(args.changes, 1000))
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "events_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
