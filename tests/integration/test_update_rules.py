"""The editing rules of SPEC section 5 that a client meets: memberships and roles per caller kind, the
default account, field rules, the locked email policy, access-change notices, the audit trail's pages,
and sync-identity run twice at once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import Env
from usermgmt.models import User

FN = "update-user"


@pytest.fixture
def cast(env: Env) -> dict[str, User]:
    return {
        "admin": env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator"),
        "dana": env.add_user(
            "dana@acme.example", first="Dana", last="Delegate", memberships={"acme": ["Administrator"]}
        ),
        "carol": env.add_user(
            "carol@example.com",
            first="Carol",
            last="Both",
            memberships={"acme": ["Buyer"], "globex": ["Approver"]},
        ),
    }


def patch(env: Env, caller: User, target: User, body: dict[str, Any]) -> Any:
    return env.call(FN, "PATCH", f"/users/{target.id}", as_user=caller, body=body)


def fields(r: Any) -> set[str]:
    return {e["field"] for e in r.json()["errors"]}


def test_platform_admin_replaces_memberships_and_default(env: Env, cast: dict[str, User]) -> None:
    carol = cast["carol"]
    body = {
        "memberships": [{"accountId": "globex", "roles": ["Buyer", "Approver"]}],
        "defaultAccountId": "globex",
    }
    r = patch(env, cast["admin"], carol, body)
    assert r.status == 200, r
    assert r.json()["memberships"] == [{"accountId": "globex", "roles": ["Buyer", "Approver"]}]
    assert r.json()["defaultAccountId"] == "globex"
    notice = env.mailer.to("carol@example.com")
    assert len(notice) == 1 and notice[0].subject == "Your account access has changed"
    assert "globex: Buyer, Approver" in notice[0].text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"memberships": [{"accountId": "initech", "roles": ["Buyer"]}], "defaultAccountId": "initech"},
            "memberships.0.accountId",
        ),
        ({"memberships": [{"accountId": "globex", "roles": ["Buyer"]}]}, "defaultAccountId"),
        ({"defaultAccountId": "initech"}, "defaultAccountId"),
        ({"memberships": [{"accountId": "acme", "roles": []}]}, "memberships.0.roles"),
        ({"memberships": [{"accountId": "acme", "roles": ["Boss"]}]}, "memberships.0.roles.0"),
        (
            {
                "memberships": [
                    {"accountId": "acme", "roles": ["Buyer"]},
                    {"accountId": "acme", "roles": ["Buyer"]},
                ]
            },
            "memberships.1.accountId",
        ),
        ({"firstName": ""}, "firstName"),
        ({"firstName": "x" * 101}, "firstName"),
        ({"lastName": "Bad\u0000Name"}, "lastName"),
        ({"lastName": None}, "lastName"),
        ({"accountNumber": "has space"}, "accountNumber"),
        ({"profile": "root"}, "profile"),
        ({"email": "not-an-address"}, "email"),
    ],
)
def test_invalid_platform_patches_are_422_naming_the_field_and_change_nothing(
    env: Env, cast: dict[str, User], body: dict[str, Any], field: str
) -> None:
    carol = env.user(cast["carol"].id)
    r = patch(env, cast["admin"], carol, body)
    assert r.status == 422, r
    assert field in fields(r)
    assert env.user(carol.id) == carol
    assert not env.mailer.sent


def test_nullable_fields_clear_and_names_are_trimmed(env: Env, cast: dict[str, User]) -> None:
    carol = cast["carol"]
    r = patch(env, cast["admin"], carol, {"accountNumber": "C-1", "firstName": "  Caro  "})
    assert r.json()["accountNumber"] == "C-1" and r.json()["firstName"] == "Caro"
    assert patch(env, cast["admin"], carol, {"accountNumber": None}).json()["accountNumber"] is None


def test_delegated_admin_changes_only_roles_in_own_accounts(env: Env, cast: dict[str, User]) -> None:
    carol = cast["carol"]
    r = patch(
        env, cast["dana"], carol, {"memberships": [{"accountId": "acme", "roles": ["Buyer", "Approver"]}]}
    )
    assert r.status == 200, r
    stored = env.user(carol.id)
    assert {m.account_id: m.roles for m in stored.memberships} == {
        "acme": ("Buyer", "Approver"),
        "globex": ("Approver",),  # not listed, not theirs: unchanged
    }
    assert [m["accountId"] for m in r.json()["memberships"]] == ["acme"]  # globex stays hidden
    outside = patch(env, cast["dana"], carol, {"memberships": [{"accountId": "globex", "roles": ["Buyer"]}]})
    assert outside.status == 422 and "memberships.0.accountId" in fields(outside)
    for forbidden in (
        {"defaultAccountId": "acme"},
        {"accountNumber": "X"},
        {"profile": "partner"},
        {"email": "c@x.io"},
    ):
        refused = patch(env, cast["dana"], carol, forbidden)
        assert refused.status == 422 and fields(refused) == set(forbidden), refused


def test_delegated_admin_cannot_remove_own_administrator_role(env: Env, cast: dict[str, User]) -> None:
    dana = cast["dana"]
    r = patch(env, dana, dana, {"memberships": [{"accountId": "acme", "roles": ["Buyer"]}]})
    assert r.status == 403 and r.json()["code"] == "forbidden"
    assert env.user(dana.id).memberships == dana.memberships


def test_locked_email_policy_refuses_any_change(env: Env, cast: dict[str, User]) -> None:
    env.configure(**{"email_change_policy": "locked"})
    carol = cast["carol"]
    r = env.call(FN, "PATCH", "/me", as_user=carol, body={"email": "carol.new@example.com"})
    assert r.status == 409 and r.json()["code"] == "email_immutable"
    same = env.call(FN, "PATCH", "/me", as_user=carol, body={"email": "CAROL@example.com"})
    assert same.status == 200 and same.json()["version"] == 1  # not a change
    assert not env.mailer.sent


def test_email_taken_by_another_user_is_409(env: Env, cast: dict[str, User]) -> None:
    r = env.call(FN, "PATCH", "/me", as_user=cast["carol"], body={"email": "Dana@acme.example"})
    assert r.status == 409 and r.json()["code"] == "email_taken"
    assert env.user(cast["carol"].id).pending_email is None


def test_a_patch_that_changes_nothing_keeps_the_version_and_audits_nothing(
    env: Env, cast: dict[str, User]
) -> None:
    carol = cast["carol"]
    r = patch(env, cast["admin"], carol, {"firstName": "Carol", "lastName": "Both"})
    assert r.status == 200 and r.json()["version"] == 1 and r.headers["etag"] == '"1"'
    audit = env.call(FN, "GET", f"/users/{carol.id}/audit", as_user=cast["admin"]).json()
    assert audit == {"items": [], "nextCursor": None}
    assert not env.idp.calls_to("update_user")


def test_audit_pages_newest_first_with_an_opaque_cursor(env: Env, cast: dict[str, User]) -> None:
    carol = cast["carol"]
    for i in range(5):
        env.clock.advance(1)
        assert patch(env, cast["admin"], carol, {"lastName": f"Name{i}"}).status == 200
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = env.call(FN, "GET", f"/users/{carol.id}/audit", as_user=cast["admin"], query=query).json()
        pages += 1
        assert len(page["items"]) <= 2
        seen += [item["changes"][0]["to"] for item in page["items"]]
        assert all(item["actor"] == cast["admin"].id and item["requestId"] for item in page["items"])
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == ["Name4", "Name3", "Name2", "Name1", "Name0"] and pages == 3
    bad = env.call(FN, "GET", f"/users/{carol.id}/audit", as_user=cast["admin"], query={"cursor": "bm9wZQ"})
    assert bad.status == 400 and bad.json()["code"] == "invalid_cursor"
    too_many = env.call(FN, "GET", f"/users/{carol.id}/audit", as_user=cast["admin"], query={"limit": "101"})
    assert too_many.status == 422 and fields(too_many) == {"limit"}


def test_two_sync_runs_at_once_push_each_user_once(env: Env, cast: dict[str, User]) -> None:
    from usermgmt.errors import IdpUnavailable

    users = [env.add_user(f"u{i}@acme.example", memberships={"acme": ["Buyer"]}) for i in range(6)]
    env.idp.fail_next(6, IdpUnavailable("down"))
    for user in users:
        assert (
            env.call(FN, "PATCH", "/me", as_user=user, body={"lastName": "Synced"}).json()["idpSync"]
            == "pending"
        )
    env.idp.calls.clear()
    # the two runs interleave; each DynamoDB request is atomic (tests/conftest.py makes moto lock as
    # DynamoDB does), so only the lease keeps them from pushing one user twice
    results: list[dict[str, int]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(env.run_sync())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["synced"] for r in results) == 6
    pushed = [c.user_id for c in env.idp.calls_to("update_user")]
    assert sorted(pushed) == sorted(u.id for u in users)  # each user exactly once
    assert all(env.idp.users[u.id].family_name == "Synced" for u in users)
