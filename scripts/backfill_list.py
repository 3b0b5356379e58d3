"""Bring the users list in step with the users' records (a one-off for operators).

``python -m scripts.backfill_list [--dry-run] [--segment-size N]``, for a table written before the
users list existed (user items without list attributes, no membership items, no counts), or after a
restore or a manual edit. One pass over the table, ``--segment-size`` items at a time (never the whole
table in memory): every user whose list entries are missing or out of step gets them written as the
application writes them, membership entries of accounts a user is no longer in are removed, each user
in one transaction conditional on the version read (a user the application changed meanwhile is
skipped and listed in ``skipped``: its own change put it in step, and a re-run checks it). Then it
recounts every account whose entries it changed or whose counts differ from the records it read.
Idempotent: a second run writes nothing; an interrupted run is finished by running it again.
``--dry-run`` reads and reports, writes nothing (``accountsRecounted`` then names the accounts it
would recount, with ``null``).

Run it where the application's settings are (``TABLE_NAME``, credentials allowed to Scan, Query,
BatchGetItem, TransactWriteItems and PutItem on the table). Prints a line per segment on stderr and
the summary as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from usermgmt import container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dry-run", action="store_true", help="report what would be written, write nothing")
    parser.add_argument(
        "--segment-size", type=int, default=500, metavar="N", help="table items read per segment (1-1000)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.segment_size <= 1000:
        parser.error("--segment-size must be from 1 to 1000")

    def progress(line: dict[str, Any]) -> None:
        print(json.dumps(line), file=sys.stderr, flush=True)

    summary = container.get().lists.backfill(args.segment_size, dry_run=args.dry_run, progress=progress)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
