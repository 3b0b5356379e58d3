"""`make bench`: every benchmark, results in bench/results/ (see bench/README.md).

`python -m bench` runs cold start and calls per operation (a few minutes); add `cleanup` to also run
the cleanup-cost benchmark, which seeds a 100,000-item table (about 3 more minutes). `python -m bench
load [options]` runs only the load run against a local stack it starts (see bench/load.py), and
`python -m bench events [--changes N]` only the commit-to-bus latency of lifecycle events
(bench/events_latency.py), `python -m bench bulk [--users N]` only a bulk job against single calls on a
local stack (bench/bulk_stack.py), `python -m bench public [--rounds N]` only the public reset's answer
time per kind of address (bench/public_timing.py); `cleanup` and `list` (bench/list_cost.py;
sizes with its own --small/--big) add those cost benchmarks.
"""

from __future__ import annotations

import sys

from bench import calls, coldstart


def main(argv: list[str]) -> None:
    if argv[:1] == ["events"]:
        from bench import events_latency

        print("## Lifecycle events: commit to bus\n")
        events_latency.main(argv[1:])
        return
    if argv[:1] == ["public"]:
        from bench import public_timing

        print("## Public reset: answer time per kind of address\n")
        public_timing.main(argv[1:])
        return
    if argv[:1] == ["bulk"]:
        from bench import bulk_stack

        print("## Bulk job on the local stack\n")
        bulk_stack.main(argv[1:])
        return
    if argv[:1] == ["load"]:
        from bench import load

        print("## Load\n")
        load.main(argv[1:])
        return
    print("## Calls per operation\n")
    calls.main()
    print("\n## Cold start\n")
    coldstart.main()
    if "cleanup" in argv:
        from bench import cleanup_cost

        print("\n## Cleanup cost\n")
        cleanup_cost.main([])
    if "list" in argv:
        from bench import list_cost

        print("\n## Users list cost\n")
        list_cost.main([])


if __name__ == "__main__":
    main(sys.argv[1:])
