"""``scripts.backfill_list`` on a table written before the users list existed (README, Operations).

The table is seeded through the store, then taken back to what a table from before the list holds:
user items without their list attributes, no membership items, no counts; plus a membership entry of
an account its user is not in and one of a user that does not exist (a restore, a manual edit). The
backfill must make ``GET /users`` (through the handler) list everyone exactly once with the right
counts, change nothing when run again, and never write a user the application changed meanwhile.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import TABLE, Env, add_cast
from usermgmt.models import User

LIST_ATTRIBUTES = ("lp", "lps", "le", "ln", "lf", "lc", "lu")


def seed(env: Env) -> dict[str, User]:
    people = add_cast(env)
    people["ivy"] = env.add_user(
        "ivy@acme.example", first="Ivy", last="Idle", memberships={"acme": ["Buyer"]}, status="SUSPENDED"
    )
    people["nora"] = env.add_user("nora@example.com", first="Nora", last="Nobody")  # in no account
    return people


def as_before_the_list(env: Env, people: dict[str, User]) -> None:
    """Strip what the list added; keep a stale entry (gus in acme) and an orphan (a gone user)."""
    db = env.dynamodb
    items = env.scan()
    template = next(i for i in items if i["sk"]["S"] == f"MEMBER#{people['gus'].id}")
    stale = {**template, "pk": {"S": "ACCOUNT#acme"}, "lp": {"S": "ACC#acme"}}
    orphan = {**template, "sk": {"S": "MEMBER#auth0|gone"}, "userId": {"S": "auth0|gone"}}
    for item in items:
        key = {"pk": item["pk"], "sk": item["sk"]}
        if item["sk"]["S"] == "PROFILE" and item["pk"]["S"].startswith("USER#"):
            db.update_item(TableName=TABLE, Key=key, UpdateExpression="REMOVE " + ", ".join(LIST_ATTRIBUTES))
        elif item["sk"]["S"].startswith("MEMBER#") or item["sk"]["S"] == "COUNTS":
            db.delete_item(TableName=TABLE, Key=key)
    for item in (stale, orphan):
        db.put_item(TableName=TABLE, Item=item)


def backfill(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    from scripts.backfill_list import main

    capsys.readouterr()
    assert main(list(args)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary: dict[str, Any] = json.loads(out[-1])
    return summary


def walk(env: Env, caller: User, path: str = "/users", **query: str) -> list[dict[str, Any]]:
    """Every page (2 items each) of a list, as a client walks it."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        params = {"limit": "2", **query, **({"cursor": cursor} if cursor else {})}
        r = env.call("list-users", "GET", path, as_user=caller, query=params)
        assert r.status == 200, r
        items += r.json()["items"]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk did not end")


def counts(env: Env, caller: User, account_id: str) -> dict[str, int]:
    r = env.call("list-users", "GET", f"/accounts/{account_id}", as_user=caller)
    assert r.status == 200, r
    result: dict[str, int] = r.json()["counts"]
    return result


def expected_counts(people: dict[str, User], account_id: str, *, with_admins: bool) -> dict[str, int]:
    found = dict.fromkeys(("INVITED", "ACTIVE", "SUSPENDED"), 0)
    for u in people.values():
        if account_id in u.account_ids and (with_admins or not u.is_platform_admin):
            found[u.status] += 1
    return found


def test_the_backfill_lists_everyone_once_with_counts_and_a_second_run_changes_nothing(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    people = seed(env)
    admin, dana = people["admin"], people["dana"]
    as_before_the_list(env, people)
    assert walk(env, admin) == []  # the gap: nobody is listed
    assert counts(env, admin, "acme") == {"INVITED": 0, "ACTIVE": 0, "SUSPENDED": 0}

    summary = backfill(capsys, "--segment-size", "3")
    assert summary["usersRead"] == len(people) and summary["usersWritten"] == len(people)
    assert summary["staleEntriesRemoved"] == 2 and summary["skipped"] == []
    assert sorted(summary["accountsRecounted"]) == ["acme", "globex"]

    everyone = sorted(people.values(), key=lambda u: u.email)
    for order in ({}, {"sort": "lastName"}, {"sort": "-createdAt"}, {"status": "SUSPENDED"}):
        listed = walk(env, admin, **order)
        wanted = [u for u in everyone if "status" not in order or u.status == order["status"]]
        assert sorted(i["id"] for i in listed) == sorted(u.id for u in wanted), order
    assert [i["email"] for i in walk(env, admin)] == [u.email for u in everyone]
    acme = [u for u in everyone if "acme" in u.account_ids]
    assert [i["id"] for i in walk(env, admin, "/accounts/acme/users")] == [u.id for u in acme]
    assert [i["id"] for i in walk(env, dana)] == [u.id for u in acme if not u.is_platform_admin]
    for account_id in ("acme", "globex"):
        assert counts(env, admin, account_id) == expected_counts(people, account_id, with_admins=True)
    assert counts(env, dana, "acme") == expected_counts(people, "acme", with_admins=False)

    table = env.scan()
    again = backfill(capsys, "--segment-size", "4")
    assert (again["usersRead"], again["usersInStep"]) == (len(people), len(people))
    assert (again["usersWritten"], again["staleEntriesRemoved"], again["skipped"]) == (0, 0, [])
    assert again["accountsRecounted"] == {}
    assert env.scan() == table


def test_a_dry_run_reports_and_writes_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    people = seed(env)
    as_before_the_list(env, people)
    table = env.scan()
    summary = backfill(capsys, "--dry-run")
    assert summary["dryRun"] and summary["usersWritten"] == len(people)
    assert summary["staleEntriesRemoved"] == 2
    assert summary["accountsRecounted"] == {"acme": None, "globex": None}
    assert env.scan() == table


def test_a_user_changed_between_read_and_write_is_skipped_and_keeps_the_change(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    people = seed(env)
    admin, bob = people["admin"], people["bob"]
    as_before_the_list(env, people)
    store = env.store
    read = store.list_pass
    edited: list[int] = []

    def list_pass(limit: int, cursor: str | None) -> Any:
        segment = read(limit, cursor)
        if not edited and any(p.user.id == bob.id for p in segment.users):
            r = env.call(
                "update-user",
                "PATCH",
                f"/users/{quote(bob.id, safe='')}",
                as_user=admin,
                body={"lastName": "Zed"},
            )
            assert r.status == 200, r
            edited.append(r.json()["version"])
        return segment

    store.list_pass = list_pass  # the application writes bob after the backfill read him
    try:
        summary = backfill(capsys, "--segment-size", "2")
    finally:
        del store.list_pass
    assert summary["skipped"] == [bob.id]
    assert summary["usersWritten"] == len(people) - 1
    record = env.call("update-user", "GET", f"/users/{quote(bob.id, safe='')}", as_user=admin).json()
    assert (record["lastName"], record["version"]) == ("Zed", edited[0])  # not overwritten with the old
    by_name = walk(env, admin, sort="lastName")
    assert [i["lastName"] for i in by_name if i["id"] == bob.id] == ["Zed"]
    assert len(by_name) == len(people)
    assert counts(env, admin, "acme") == expected_counts(people, "acme", with_admins=True)

    again = backfill(capsys)
    assert (again["usersWritten"], again["staleEntriesRemoved"], again["skipped"]) == (0, 0, [])
