"""suspend-user, enable-user, delete-user (and sync-identity finishing them) end to end over moto.

Each test drives ``lambda_handler`` of the function with fake Auth0/SES and an injected clock, and
checks what a user or an operator would notice: who is refused, what Auth0 holds, what is left in
the table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ROOT, Env, LambdaContext, Response, add_cast
from usermgmt.auth import RequestCtx
from usermgmt.errors import IdpAccessDenied, IdpRejected, IdpUnavailable, StoreUnavailable
from usermgmt.links import hash_token
from usermgmt.models import SUSPENDED, User

ROUTES: dict[str, tuple[str, str, str]] = {
    # name -> (function folder, method, path template)
    "suspend": ("suspend-user", "POST", "/users/{id}/suspend"),
    "enable": ("enable-user", "POST", "/users/{id}/enable"),
    "delete": ("delete-user", "DELETE", "/users/{id}"),
}
FUNCTIONS = {"suspend": "SuspendUserFunction", "enable": "EnableUserFunction", "delete": "DeleteUserFunction"}
GHOST = "auth0|000000000000000000000000"
TOMBSTONE_AUDIT_FIELDS = {"pk", "sk", "at", "actor", "action", "requestId", "changes", "tombstone"}
TOMBSTONE_FIELDS = {
    "pk",
    "sk",
    "deletedAt",
    "idpSync",
    "syncPk",
    "syncDue",
    "syncVersion",
    "syncFields",
    "syncAttempts",
    "leaseOwner",
    "leaseUntil",
}


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def people(env: Env) -> dict[str, User]:
    return {
        **add_cast(env),
        "sam": env.add_user(
            "sam@example.com", first="Sam", last="Suspended", profile="administrator", status=SUSPENDED
        ),
    }


def path_id(user_id: str) -> str:
    return user_id.replace("|", "%7C")


def call(env: Env, route: str, target_id: str, as_user: User | str | None, **kwargs: Any) -> Response:
    function, method, template = ROUTES[route]
    return env.call(function, method, template.format(id=path_id(target_id)), as_user=as_user, **kwargs)


def record(env: Env, user_id: str) -> User:
    user = env.user(user_id)
    assert user is not None, "the user is gone"
    return user


def partition(env: Env, user_id: str) -> list[dict[str, Any]]:
    return [i for i in env.scan() if i["pk"]["S"] == f"USER#{user_id}"]


def items_mentioning(env: Env, *values: str) -> list[dict[str, Any]]:
    """Every item whose attributes contain one of ``values`` (case-insensitive)."""
    needles = [v.lower() for v in values]
    return [i for i in env.scan() if any(n in json.dumps(i).lower() for n in needles)]


def audit_actions(env: Env, user_id: str) -> list[str]:
    return [i["action"]["S"] for i in partition(env, user_id) if i["sk"]["S"].startswith("AUDIT#")]


def mutating_idp_calls(env: Env) -> list[Any]:
    return [c for c in env.idp.calls if c.method != "get_user"]


def run_sync(env: Env) -> dict[str, Any]:
    return env.run_sync()


# ------------------------------------------------------------------------------------------ authorization
# (route, caller, target, status, code). "self" rows call /users/{ownId}; "nobody" is an id no user has.
MATRIX: list[tuple[str, str, str, int, str | None]] = [
    # platform administrator
    ("suspend", "admin", "bob", 200, None),
    ("suspend", "admin", "gus", 200, None),
    ("suspend", "admin", "admin", 403, "forbidden"),
    ("suspend", "admin", "nobody", 404, "user_not_found"),
    ("enable", "admin", "bob", 200, None),
    ("enable", "admin", "admin", 200, None),  # already active: a no-op
    ("enable", "admin", "nobody", 404, "user_not_found"),
    ("delete", "admin", "bob", 204, None),
    ("delete", "admin", "gus", 204, None),
    ("delete", "admin", "admin", 403, "forbidden"),
    ("delete", "admin", "nobody", 404, "user_not_found"),
    # delegated administrator of acme
    ("suspend", "dana", "bob", 200, None),
    ("suspend", "dana", "carol", 200, None),
    ("suspend", "dana", "gus", 404, "user_not_found"),
    ("suspend", "dana", "admin", 404, "user_not_found"),
    ("suspend", "dana", "dana", 403, "forbidden"),
    ("enable", "dana", "bob", 200, None),
    ("enable", "dana", "gus", 404, "user_not_found"),
    ("enable", "dana", "admin", 404, "user_not_found"),
    ("enable", "dana", "sam", 404, "user_not_found"),
    ("enable", "dana", "dana", 200, None),  # already active: a no-op
    ("delete", "dana", "bob", 403, "forbidden"),
    ("delete", "dana", "gus", 404, "user_not_found"),
    ("delete", "dana", "admin", 404, "user_not_found"),
    ("delete", "dana", "dana", 403, "forbidden"),
    # a user who administers nothing, also on their own id
    ("suspend", "bob", "carol", 404, "user_not_found"),
    ("suspend", "bob", "bob", 404, "user_not_found"),
    ("enable", "bob", "carol", 404, "user_not_found"),
    ("enable", "bob", "bob", 404, "user_not_found"),
    ("delete", "bob", "carol", 404, "user_not_found"),
    ("delete", "bob", "bob", 404, "user_not_found"),
    # suspended, unknown and anonymous callers
    ("suspend", "sam", "bob", 401, "token_revoked"),
    ("enable", "sam", "bob", 401, "token_revoked"),
    ("delete", "sam", "bob", 401, "token_revoked"),
    ("suspend", "ghost", "bob", 401, "token_revoked"),
    ("enable", "ghost", "bob", 401, "token_revoked"),
    ("delete", "ghost", "bob", 401, "token_revoked"),
    ("suspend", "anonymous", "bob", 401, "unauthenticated"),
    ("enable", "anonymous", "bob", 401, "unauthenticated"),
    ("delete", "anonymous", "bob", 401, "unauthenticated"),
]


def _resolve(people: dict[str, User], name: str) -> User | str | None:
    return {"ghost": GHOST, "nobody": GHOST, "anonymous": None}.get(name, people.get(name))


@pytest.mark.parametrize(("route", "caller", "target", "status", "code"), MATRIX)
def test_authorization_matrix(
    env: Env, people: dict[str, User], route: str, caller: str, target: str, status: int, code: str | None
) -> None:
    target_user = people.get(target)
    target_id = target_user.id if target_user else GHOST
    if route == "enable" and target_user is not None and target != caller:
        # Given a suspended target, so that a 200 is a real change and a refusal visibly changes nothing
        env.store.put_user(target_user.evolve(status=SUSPENDED))
        env.idp.users[target_id] = dataclasses.replace(env.idp.users[target_id], blocked=True)
    before = env.scan()

    r = call(env, route, target_id, _resolve(people, caller))

    assert r.status == status, r
    if code is not None:
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code
        assert env.scan() == before, "a refused request changed the table"
        assert mutating_idp_calls(env) == [], "a refused request reached Auth0"
        return
    stored = env.user(target_id)
    if route == "delete":
        assert stored is None and target_id not in env.idp.users
    elif caller == target:
        assert env.scan() == before  # the no-op rows
    else:
        assert stored is not None
        assert stored.status == ("SUSPENDED" if route == "suspend" else "ACTIVE")
        assert env.idp.users[target_id].blocked is (route == "suspend")


def test_matrix_covers_every_route_of_the_three_functions() -> None:
    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    for name, logical_id in FUNCTIONS.items():
        events = resources[logical_id]["Properties"]["Events"].values()
        routes = {
            (e["Properties"]["Method"], e["Properties"]["Path"]) for e in events if e["Type"] == "HttpApi"
        }
        _, method, template = ROUTES[name]
        own = (method, template.replace("{id}", "{userId}"))
        # suspend-user also serves signing out everywhere (tests/unit/test_recent_sign_in.py)
        sessions = {("POST", "/users/{userId}/sessions/revoke"), ("POST", "/me/sessions/revoke")}
        extra = sessions if logical_id == "SuspendUserFunction" else set()
        assert own in routes and routes - {own} <= extra
        # every caller kind appears for every route
        assert {row[1] for row in MATRIX if row[0] == name} == {
            "admin",
            "dana",
            "bob",
            "sam",
            "ghost",
            "anonymous",
        }


# ------------------------------------------------------------------------------------------------ suspend
def test_suspend_ends_access_blocks_auth0_and_audits(env: Env, people: dict[str, User]) -> None:
    bob, admin = people["bob"], people["admin"]
    token_iat = env.clock.now() - 600  # issued ten minutes ago, still valid for the authorizer
    assert env.call("update-user", "GET", "/me", as_user=bob, iat=token_iat).status == 200

    r = call(env, "suspend", bob.id, admin)

    assert r.status == 200, r
    assert r.json()["status"] == "SUSPENDED" and r.json()["idpSync"] == "synced"
    assert r.headers["etag"] == '"2"' and r.json()["version"] == 2
    assert env.idp.users[bob.id].blocked is True
    for method, body in (("GET", None), ("PATCH", {"firstName": "Sneaky"})):
        refused = env.call("update-user", method, "/me", as_user=bob, iat=token_iat, body=body)
        assert refused.status == 401 and refused.json()["code"] == "token_revoked", refused
    assert record(env, bob.id).first_name == "Bob"
    audit = env.call("update-user", "GET", f"/users/{path_id(bob.id)}/audit", as_user=admin).json()
    entry = audit["items"][0]
    assert entry["action"] == "user.suspended" and entry["actor"] == admin.id
    assert entry["changes"] == [{"field": "status", "from": "ACTIVE", "to": "SUSPENDED"}]


def test_suspend_kills_every_outstanding_link(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    assert (
        env.call("update-user", "PATCH", "/me", as_user=bob, body={"email": "bob@new.example"}).status == 200
    )
    token = env.mailer.to("bob@new.example")[0].text.split("/email-verification/")[1].split()[0]
    assert hash_token(token) in record(env, bob.id).links.values()

    assert call(env, "suspend", bob.id, people["admin"]).status == 200

    assert record(env, bob.id).links == {}


@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.999])
def test_token_of_the_suspension_second_stays_refused_after_enable(
    env: Env, people: dict[str, User], fraction: float
) -> None:
    bob, admin = people["bob"], people["admin"]
    env.clock.advance(fraction)
    suspended_at = env.clock.now()
    assert call(env, "suspend", bob.id, admin).status == 200
    env.clock.advance(30)
    assert call(env, "enable", bob.id, admin).status == 200

    same_second = env.call("update-user", "GET", "/me", as_user=bob, iat=math.floor(suspended_at))
    older = env.call("update-user", "GET", "/me", as_user=bob, iat=suspended_at - 3600)
    newer = env.call("update-user", "GET", "/me", as_user=bob, iat=math.floor(suspended_at) + 1)

    assert same_second.status == 401 and same_second.json()["code"] == "token_revoked"
    assert older.status == 401 and older.json()["code"] == "token_revoked"
    assert newer.status == 200, newer


def test_suspending_a_suspended_user_is_a_no_op(env: Env, people: dict[str, User]) -> None:
    bob, admin = people["bob"], people["admin"]
    assert call(env, "suspend", bob.id, admin).status == 200
    before, calls = env.scan(), len(env.idp.calls)

    r = call(env, "suspend", bob.id, admin)

    assert r.status == 200 and r.json()["status"] == "SUSPENDED" and r.headers["etag"] == '"2"'
    assert env.scan() == before and len(env.idp.calls) == calls
    assert audit_actions(env, bob.id) == ["user.suspended"]


def test_suspend_revokes_auth0_sessions_only_where_configured(env: Env, people: dict[str, User]) -> None:
    bob, carol, admin = people["bob"], people["carol"], people["admin"]
    assert call(env, "suspend", bob.id, admin).status == 200
    assert env.idp.calls_to("revoke_sessions") == []

    env.configure(**{"auth0_revoke_sessions": True})
    assert call(env, "suspend", carol.id, admin).status == 200

    assert [c.user_id for c in env.idp.calls_to("revoke_sessions")] == [carol.id]
    assert env.idp.revocations[carol.id] == 1


def test_auth0_down_during_suspend_refuses_at_once_and_sync_finishes(
    env: Env, people: dict[str, User]
) -> None:
    bob = people["bob"]
    env.idp.fail_next(1, IdpUnavailable("x"))

    r = call(env, "suspend", bob.id, people["admin"])

    assert r.status == 200 and r.json()["status"] == "SUSPENDED" and r.json()["idpSync"] == "pending"
    assert record(env, bob.id).status == SUSPENDED
    refused = env.call("update-user", "GET", "/me", as_user=bob, iat=env.clock.now() - 60)
    assert refused.status == 401 and refused.json()["code"] == "token_revoked"
    assert env.idp.users[bob.id].blocked is False

    assert run_sync(env)["synced"] == 1

    assert env.idp.users[bob.id].blocked is True
    assert record(env, bob.id).idp_sync == "synced"


# ------------------------------------------------------------------------------------------------ enable
def test_enable_unblocks_auth0_keeps_tokens_valid_after_and_audits(env: Env, people: dict[str, User]) -> None:
    bob, dana = people["bob"], people["dana"]
    assert call(env, "suspend", bob.id, dana).status == 200
    revoked_until = record(env, bob.id).tokens_valid_after
    env.clock.advance(60)

    r = call(env, "enable", bob.id, dana)

    assert r.status == 200 and r.json()["status"] == "ACTIVE" and r.headers["etag"] == '"3"'
    assert env.idp.users[bob.id].blocked is False
    assert record(env, bob.id).tokens_valid_after == revoked_until
    assert audit_actions(env, bob.id) == ["user.suspended", "user.enabled"]
    assert env.call("update-user", "GET", "/me", as_user=bob).status == 200  # a fresh token works


def test_enabling_an_active_user_is_a_no_op(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    before = env.scan()

    r = call(env, "enable", bob.id, people["admin"])

    assert r.status == 200 and r.json()["status"] == "ACTIVE" and r.headers["etag"] == '"1"'
    assert env.scan() == before and mutating_idp_calls(env) == []


def test_each_action_emits_its_metric(
    env: Env, people: dict[str, User], capsys: pytest.CaptureFixture[str]
) -> None:
    bob, admin = people["bob"], people["admin"]
    capsys.readouterr()
    for route, metric in (("suspend", "UserSuspended"), ("enable", "UserEnabled"), ("delete", "UserDeleted")):
        call(env, route, bob.id, admin)
        names = set()
        for line in capsys.readouterr().out.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
                names |= {m["Name"] for m in directive["Metrics"]}
        assert metric in names, (route, names)


def test_refusals_are_logged_as_owasp_security_events(
    env: Env, people: dict[str, User], log_canary: Any
) -> None:
    bob, dana = people["bob"], people["dana"]
    log_canary.lines.clear()
    assert call(env, "delete", bob.id, dana).status == 403  # a delegated administrator may not delete
    assert call(env, "suspend", dana.id, dana).status == 403  # nor suspend themselves
    patched = env.call("update-user", "PATCH", f"/users/{bob.id}", as_user=dana, body={"firstName": 7})
    assert patched.status == 422
    assert call(env, "suspend", bob.id, dana).status == 200  # allowed: no security event
    events = []
    for line in dict.fromkeys(log_canary.lines):  # the log records as Powertools formats them, once each
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "security_event" in record:  # "<event>:<caller>,<route key>"
            event, _, route = record["security_event"].partition(",")
            events.append((event, route.split(" ")[0]))
    assert events == [
        (f"authz_fail:{dana.id}", "DELETE"),
        (f"authz_fail:{dana.id}", "POST"),
        (f"input_validation_fail:{dana.id}", "PATCH"),
    ]


# ------------------------------------------------------------------------------------------------ delete
@pytest.fixture
def bart(env: Env, people: dict[str, User]) -> User:
    """A user with distinctive personal data, an audit history holding it, and outstanding links."""
    user = env.add_user(
        "bart@acme.example",
        first="Bartholomew",
        last="Quintavalle",
        memberships={"acme": ["Buyer"]},
        account_number="C-77123",
    )
    assert env.call("update-user", "PATCH", "/me", as_user=user, body={"firstName": "Bartolo"}).status == 200
    assert (
        env.call("update-user", "PATCH", "/me", as_user=user, body={"email": "bart@new.example"}).status
        == 200
    )
    assert items_mentioning(env, "Quintavalle", "Bartolo", "bart@new.example")
    assert record(env, user.id).links
    return user


PERSONAL = ("bart@acme.example", "bart@new.example", "Bartholomew", "Bartolo", "Quintavalle", "C-77123")


def assert_only_tombstone_audit_left(env: Env, user: User, actor: User) -> None:
    (entry,) = partition(env, user.id)
    assert set(entry) <= TOMBSTONE_AUDIT_FIELDS, set(entry) - TOMBSTONE_AUDIT_FIELDS
    assert entry["action"]["S"] == "user.deleted" and entry["actor"]["S"] == actor.id
    assert entry["changes"] == {"L": []}
    assert entry["sk"]["S"].startswith("AUDIT#")


def test_delete_removes_the_user_erases_personal_data_and_deletes_in_auth0(
    env: Env, people: dict[str, User], bart: User
) -> None:
    admin = people["admin"]
    links = set(record(env, bart.id).links.values())

    r = call(env, "delete", bart.id, admin)

    assert r.status == 204 and r.text == "", r
    assert env.call("update-user", "GET", f"/users/{path_id(bart.id)}", as_user=admin).status == 404
    assert bart.id not in env.idp.users
    assert items_mentioning(env, *PERSONAL) == []
    assert_only_tombstone_audit_left(env, bart, admin)
    assert not [i for i in env.scan() if i["pk"]["S"] in {f"LINK#{h}" for h in links}]
    refused = env.call("update-user", "GET", "/me", as_user=bart, iat=env.clock.now() - 60)
    assert refused.status == 401 and refused.json()["code"] == "token_revoked"


def test_deleted_users_email_is_free_again(env: Env, people: dict[str, User], bart: User) -> None:
    carol = people["carol"]
    taken = env.call("update-user", "PATCH", "/me", as_user=carol, body={"email": "bart@acme.example"})
    assert taken.status == 409 and taken.json()["code"] == "email_taken"

    assert call(env, "delete", bart.id, people["admin"]).status == 204

    r = env.call("update-user", "PATCH", "/me", as_user=carol, body={"email": "bart@acme.example"})
    assert r.status == 200, r
    assert r.json()["pendingEmail"] == "bart@acme.example"


def test_deleting_twice_is_safe(env: Env, people: dict[str, User], bart: User) -> None:
    admin = people["admin"]
    assert call(env, "delete", bart.id, admin).status == 204

    r = call(env, "delete", bart.id, admin)

    assert r.status == 404 and r.json()["code"] == "user_not_found"
    assert len(env.idp.calls_to("delete_user")) == 1
    assert_only_tombstone_audit_left(env, bart, admin)


def test_auth0_down_during_delete_is_202_and_sync_identity_finishes(
    env: Env, people: dict[str, User], bart: User
) -> None:
    admin = people["admin"]
    env.idp.fail_next(1, IdpUnavailable("x"))

    r = call(env, "delete", bart.id, admin)

    assert r.status == 202, r
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"id": bart.id, "status": "deletion_pending"}
    assert env.call("update-user", "GET", f"/users/{path_id(bart.id)}", as_user=admin).status == 404
    assert bart.id in env.idp.users
    # erased already; only the tombstone (no personal data) waits for Auth0
    assert items_mentioning(env, *PERSONAL) == []
    tombstone = next(i for i in partition(env, bart.id) if i["sk"]["S"] == "TOMBSTONE")
    assert set(tombstone) <= TOMBSTONE_FIELDS

    assert run_sync(env)["synced"] == 1

    assert bart.id not in env.idp.users
    assert_only_tombstone_audit_left(env, bart, admin)
    assert run_sync(env) == {"synced": 0, "pending": 0, "failed": 0, "skipped": 0, "claims": 0, "errors": 0}


class LambdaTimedOut(BaseException):
    """The Lambda runtime ends the invocation: nothing in the function can catch it."""


def test_crash_after_the_delete_transaction_is_finished_by_sync_identity(
    env: Env, people: dict[str, User], bart: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = people["admin"]

    def lambda_dies(*_args: Any, **_kwargs: Any) -> str:
        raise LambdaTimedOut

    # Given the Lambda dies right after the transaction, before erasure and Auth0
    monkeypatch.setattr(env.container.sync, "finish", lambda_dies)
    with pytest.raises(LambdaTimedOut):
        call(env, "delete", bart.id, admin)
    monkeypatch.undo()
    assert env.user(bart.id) is None
    assert bart.id in env.idp.users
    assert items_mentioning(env, "Quintavalle", "Bartolo"), "old audit entries still hold personal data"

    # the dead request's lease holds sync-identity off until it lapses
    assert run_sync(env)["skipped"] == 1 and bart.id in env.idp.users
    env.clock.advance(env.container.settings.sync_lease_seconds + 1)
    assert run_sync(env)["synced"] == 1

    assert bart.id not in env.idp.users
    assert items_mentioning(env, *PERSONAL) == []
    assert_only_tombstone_audit_left(env, bart, admin)


# ------------------------------------------------------------------------------------------------ If-Match
@pytest.mark.parametrize("route", ["suspend", "enable", "delete"])
def test_stale_if_match_is_412_and_changes_nothing(env: Env, people: dict[str, User], route: str) -> None:
    bob = people["bob"]
    if route == "enable":
        env.store.put_user(bob.evolve(status=SUSPENDED, version=4))
    else:
        env.store.put_user(bob.evolve(version=4))
    before = env.scan()

    r = call(env, route, bob.id, people["admin"], headers={"If-Match": '"3"'})

    assert r.status == 412 and r.json()["code"] == "version_mismatch"
    assert env.scan() == before and mutating_idp_calls(env) == []
    ok = call(env, route, bob.id, people["admin"], headers={"If-Match": '"4"'})
    assert ok.status in (200, 204), ok


# ------------------------------------------------------------------------------------------------ races
def interleave(env: Env, monkeypatch: pytest.MonkeyPatch, other: Callable[[], None]) -> list[int]:
    """Run ``other`` to completion right after the next read of caller + target; return read count."""
    store = env.store
    original = store.get_users
    reads: list[int] = []

    def get_users(ids: Any) -> dict[str, User]:
        found = original(ids)
        reads.append(1)
        if len(reads) == 1:
            other()
        return found

    monkeypatch.setattr(store, "get_users", get_users)
    return reads


def admin_ctx(admin: User, env: Env) -> RequestCtx:
    return RequestCtx(sub=admin.id, iat=int(env.clock.now()), request_id="concurrent-request")


def test_a_patch_committing_during_a_suspend_is_kept(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob, admin = people["bob"], people["admin"]

    def patch() -> None:
        env.container.users.patch(admin_ctx(admin, env), bob.id, {"firstName": "Roberto"}, None)

    # Given the suspend reads version 1, then a PATCH commits version 2 before the suspend writes
    reads = interleave(env, monkeypatch, patch)
    r = call(env, "suspend", bob.id, admin)

    assert r.status == 200, r
    assert len(reads) >= 3  # suspend read, PATCH read, suspend read again after the conflict
    stored = record(env, bob.id)
    assert stored.status == SUSPENDED and stored.first_name == "Roberto" and stored.version == 3
    assert audit_actions(env, bob.id) == ["user.updated", "user.suspended"]
    assert env.idp.users[bob.id].blocked is True and env.idp.users[bob.id].given_name == "Roberto"


def test_a_suspend_committing_during_an_admin_patch_is_kept(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob, admin = people["bob"], people["admin"]

    def suspend() -> None:
        env.container.lifecycle.suspend(admin_ctx(admin, env), bob.id, None)

    # Given the PATCH reads version 1, then a suspend commits version 2 before the PATCH writes
    interleave(env, monkeypatch, suspend)
    r = env.call(
        "update-user", "PATCH", f"/users/{path_id(bob.id)}", as_user=admin, body={"firstName": "Roberto"}
    )

    assert r.status == 200, r
    assert r.json()["status"] == "SUSPENDED" and r.json()["version"] == 3
    stored = record(env, bob.id)
    assert stored.status == SUSPENDED and stored.first_name == "Roberto" and stored.links == {}
    assert stored.tokens_valid_after > 0
    assert env.idp.users[bob.id].blocked is True and env.idp.users[bob.id].given_name == "Roberto"


def test_a_users_own_patch_in_flight_when_suspended_is_refused(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob, admin = people["bob"], people["admin"]

    def suspend() -> None:
        env.container.lifecycle.suspend(admin_ctx(admin, env), bob.id, None)

    interleave(env, monkeypatch, suspend)
    r = env.call("update-user", "PATCH", "/me", as_user=bob, body={"firstName": "Sneaky"})

    assert r.status == 401 and r.json()["code"] == "token_revoked"
    stored = record(env, bob.id)
    assert stored.status == SUSPENDED and stored.first_name == "Bob" and stored.version == 2


# ------------------------------------------------------------------------------------------------ failures
def test_auth0_refusing_a_deletion_for_good_is_202_failed_erased_and_blocked(
    env: Env, people: dict[str, User], bart: User
) -> None:
    env.idp.fail_next(1, IdpRejected(400, "operation_not_supported"), method="delete_user")

    r = call(env, "delete", bart.id, people["admin"])

    assert r.status == 202 and r.json() == {"id": bart.id, "status": "deletion_failed"}
    assert env.user(bart.id) is None and items_mentioning(env, *PERSONAL) == []
    assert env.idp.users[bart.id].blocked is True  # blocked before the deletion: no working login
    tombstone = next(i for i in partition(env, bart.id) if i["sk"]["S"] == "TOMBSTONE")
    assert tombstone["idpSync"]["S"] == "failed" and tombstone["syncPk"]["S"] == "FAILED"
    assert run_sync(env)["synced"] == 0 and bart.id in env.idp.users  # not retried by itself

    # an operator re-drives it once Auth0 is fixed
    redriven = env.handler("sync-identity").lambda_handler(
        {"redrive": "failed"}, LambdaContext("sync-identity")
    )
    assert redriven == {"redriven": 1}
    assert run_sync(env)["synced"] == 1 and bart.id not in env.idp.users
    assert not [i for i in partition(env, bart.id) if i["sk"]["S"] == "TOMBSTONE"]


@pytest.mark.parametrize("status", [401, 403])
def test_auth0_refusing_our_credentials_leaves_the_deletion_pending_until_fixed(
    env: Env, people: dict[str, User], bart: User, status: int
) -> None:
    # a rotated secret (401) or a removed grant (403): an operator's mistake, never "failed"
    env.idp.fail_next(-1, IdpAccessDenied(f"status {status}"), method="delete_user")

    r = call(env, "delete", bart.id, people["admin"])

    assert r.status == 202 and r.json() == {"id": bart.id, "status": "deletion_pending"}
    assert env.idp.users[bart.id].blocked is True
    for _ in range(3):
        env.clock.advance(env.container.settings.sync_max_delay_seconds + 1)
        assert run_sync(env)["pending"] == 1
    env.idp.clear_failures()
    env.clock.advance(env.container.settings.sync_max_delay_seconds + 1)
    assert run_sync(env)["synced"] == 1 and bart.id not in env.idp.users


def test_table_failing_during_erasure_is_202_and_sync_identity_finishes(
    env: Env, people: dict[str, User], bart: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = env.store.erase_deleted_user

    def throttled(_user_id: str) -> int:
        raise StoreUnavailable("ProvisionedThroughputExceededException")

    monkeypatch.setattr(env.store, "erase_deleted_user", throttled)
    r = call(env, "delete", bart.id, people["admin"])
    monkeypatch.setattr(env.store, "erase_deleted_user", original)

    assert r.status == 202 and r.json()["status"] == "deletion_pending", r
    assert env.user(bart.id) is None and bart.id in env.idp.users
    env.clock.advance(env.container.settings.sync_lease_seconds + 1)
    assert run_sync(env)["synced"] == 1
    assert bart.id not in env.idp.users and items_mentioning(env, *PERSONAL) == []
    assert_only_tombstone_audit_left(env, bart, people["admin"])


@pytest.mark.parametrize("pending", [True, False])
def test_sync_identity_handler_finishes_due_work_and_returns_counts(
    env: Env, people: dict[str, User], bart: User, pending: bool
) -> None:
    if pending:
        env.idp.fail_next(1, IdpUnavailable("x"))
        assert call(env, "delete", bart.id, people["admin"]).status == 202
    event = json.loads((ROOT / "events" / "schedule.json").read_text())

    result = env.handler("sync-identity").lambda_handler(event, LambdaContext("sync-identity"))

    assert result == {
        "synced": int(pending),
        "pending": 0,
        "failed": 0,
        "skipped": 0,
        "claims": 0,
        "errors": 0,
    }
    assert (bart.id in env.idp.users) is not pending
