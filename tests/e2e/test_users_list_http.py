"""The users list over HTTP against the local stack of ``make run``: paging, scopes, counts, bad cursors."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.e2e.conftest import LocalStackInfo

pytestmark = pytest.mark.e2e


def _walk(stack: LocalStackInfo, token: str, path: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = {**params, "limit": "1", **({"cursor": cursor} if cursor else {})}
        r = stack.api("GET", f"{path}?{urlencode(query)}", token=token)
        assert r.status == 200, r
        items += r.json()["items"]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return items
    raise AssertionError("the walk did not end")


def test_an_administrator_pages_through_every_user_once(
    local_stack: LocalStackInfo, admin_token: str
) -> None:
    items = _walk(local_stack, admin_token, "/users")
    emails = [i["email"] for i in items]
    assert emails == sorted(emails) and len(set(emails)) == len(emails)
    assert {u.email for u in local_stack.users.values()} <= set(emails)
    by_last = _walk(local_stack, admin_token, "/users", sort="lastName")
    assert sorted(i["id"] for i in by_last) == sorted(i["id"] for i in items)
    suspended = _walk(local_stack, admin_token, "/users", status="SUSPENDED")
    assert local_stack.users["suspended"].email in {i["email"] for i in suspended}
    assert {i["status"] for i in suspended} == {"SUSPENDED"}
    named = _walk(local_stack, admin_token, "/users", namePrefix="VI")
    assert [i["email"] for i in named] == [local_stack.users["buyer"].email]


def test_a_delegated_administrator_sees_only_their_accounts(local_stack: LocalStackInfo) -> None:
    dora = local_stack.users["delegate"]
    token = local_stack.login(dora.email, dora.password)
    items = _walk(local_stack, token, "/users")
    assert local_stack.users["admin"].email not in {i["email"] for i in items}
    for item in items:
        assert {m["accountId"] for m in item["memberships"]} <= {"initech"}
        assert item["defaultAccountId"] in (None, "initech")
        got = local_stack.api("GET", f"/users/{quote(item['id'], safe='')}", token=token)
        assert got.json() == item
    assert local_stack.api("GET", "/accounts/umbrella/users", token=token).status == 404
    accounts = local_stack.api("GET", "/accounts", token=token).json()["items"]
    assert [a["id"] for a in accounts] == ["initech"]


def test_counts_match_the_users_and_bad_cursors_are_400(
    local_stack: LocalStackInfo, admin_token: str
) -> None:
    members = _walk(local_stack, admin_token, "/accounts/initech/users")
    account = local_stack.api("GET", "/accounts/initech", token=admin_token).json()
    assert account["counts"] == {
        "INVITED": 0,
        "ACTIVE": 0,
        "SUSPENDED": 0,
        **Counter(i["status"] for i in members),
    }
    first = local_stack.api("GET", "/users?limit=1", token=admin_token).json()
    cursor = first["nextCursor"]
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for query in (f"cursor={tampered}", f"cursor={cursor}&sort=lastName"):
        r = local_stack.api("GET", f"/users?limit=1&{query}", token=admin_token)
        assert (r.status, r.json()["code"]) == (400, "invalid_cursor")
    r = local_stack.api("GET", "/users?colour=blue", token=admin_token)
    assert (r.status, r.json()["code"]) == (400, "invalid_filter")
