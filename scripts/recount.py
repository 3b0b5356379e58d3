"""Recount an account (the repair path of the users list's counts): ``python -m scripts.recount <accountId>``.

The counts of ``GET /accounts/{accountId}`` move in the same transaction as every change, so they
only need this after something wrote the table outside the application (a restore, a manual edit).
It reads the account's membership items and their users' records (strongly consistent) and sets the
counts to what they hold. Run it where the application's settings are (``TABLE_NAME``, AWS
credentials allowed to Query and BatchGetItem the table and PutItem the counts); it is idempotent.
A change committed while it runs can be overwritten: run it again once the account is quiet.
Prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

from usermgmt import container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("account_ids", nargs="+", metavar="accountId")
    args = parser.parse_args(argv)
    lists = container.get().lists
    from usermgmt.errors import AccountNotFound

    status = 0
    for account_id in args.account_ids:
        try:
            counts = lists.recount(account_id)
        except AccountNotFound:
            print(json.dumps({"accountId": account_id, "error": "account_not_found"}), file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"accountId": account_id, "counts": counts}))
    return status


if __name__ == "__main__":
    sys.exit(main())
