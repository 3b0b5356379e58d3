"""`make bench`: every benchmark, results in bench/results/ (see bench/README.md).

`python -m bench` runs cold start and calls per operation (a few minutes); add `cleanup` to also run
the cleanup-cost benchmark, which seeds a 100,000-item table (about 3 more minutes), and `list` for the
users-list cost (bench/list_cost.py; sizes with its own --small/--big).
"""

from __future__ import annotations

import sys

from bench import calls, coldstart


def main(argv: list[str]) -> None:
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
