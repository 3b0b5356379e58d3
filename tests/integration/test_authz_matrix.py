"""The authorization matrix: caller kind x route x relation to the target -> status (SPEC section 3).

Every HttpApi route of template.yaml must be either in MATRIX or in PUBLIC_ROUTES:
``test_every_route_is_in_the_matrix`` fails when a route is added without its rows.
A refused row must also have changed nothing: the whole table (every item, every attribute) is the
same before and after, and no Auth0 call or email was made (security notes T1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from usermgmt.models import User

ROOT = Path(__file__).resolve().parents[2]

PUBLIC_ROUTES = {
    ("POST", "/password-reset"),
    ("GET", "/password-reset/{token}"),
    ("POST", "/password-reset/{token}"),
    ("POST", "/password-reset/{token}/renew"),
    ("GET", "/email-verification/{token}"),
    ("POST", "/email-verification/{token}"),
    ("POST", "/email-verification/{token}/renew"),
    ("GET", "/email-change/{token}/cancel"),
    ("POST", "/email-change/{token}/cancel"),
    ("GET", "/invitations/{invitation}"),
    ("POST", "/invitations/{invitation}"),
    ("POST", "/invitations/{invitation}/renew"),
}


@dataclass(frozen=True)
class Route:
    function: str
    method: str
    path: str
    body: Any = None
    headers: dict[str, str] | None = None


ROUTES = {
    "get_user": Route("update-user", "GET", "/users/{userId}"),
    "patch_user": Route("update-user", "PATCH", "/users/{userId}", {"firstName": "Changed"}),
    "audit": Route("update-user", "GET", "/users/{userId}/audit"),
    "suspend": Route("suspend-user", "POST", "/users/{userId}/suspend"),
    "enable": Route("enable-user", "POST", "/users/{userId}/enable"),
    "delete": Route("delete-user", "DELETE", "/users/{userId}"),
    "reset": Route("reset-password", "POST", "/users/{userId}/password-reset"),
    "verify": Route("verify-email", "POST", "/users/{userId}/verification-email"),
    "get_me": Route("update-user", "GET", "/me"),
    "patch_me": Route("update-user", "PATCH", "/me", {"firstName": "Changed"}),
    "reset_me": Route("reset-password", "POST", "/me/password-reset"),
    "verify_me": Route("verify-email", "POST", "/me/verification-email"),
    "list_users": Route("list-users", "GET", "/users"),
    "list_account_users": Route("list-users", "GET", "/accounts/{accountId}/users"),
    "list_accounts": Route("list-users", "GET", "/accounts"),
    "get_account": Route("list-users", "GET", "/accounts/{accountId}"),
    "revoke": Route("suspend-user", "POST", "/users/{userId}/sessions/revoke"),
    "revoke_me": Route("suspend-user", "POST", "/me/sessions/revoke"),
    "export": Route("export-user", "GET", "/users/{userId}/export"),
    "export_me": Route("export-user", "GET", "/me/export"),
    "bulk_start": Route(
        "bulk-jobs",
        "POST",
        "/bulk-jobs",
        {"action": "enable", "userIds": ["auth0|ffffffffffffffffffffffff"]},
        {"Idempotency-Key": "matrix"},
    ),
    "bulk_list": Route("bulk-jobs", "GET", "/bulk-jobs"),
    "bulk_get": Route("bulk-jobs", "GET", "/bulk-jobs/{jobId}"),
    "bulk_items": Route("bulk-jobs", "GET", "/bulk-jobs/{jobId}/items"),
    "bulk_cancel": Route("bulk-jobs", "POST", "/bulk-jobs/{jobId}/cancel"),
}
# List routes: relation "all" (no target), or the account in the path: "in" = acme (the delegated
# administrator's), "out" = globex.
ACCOUNT_OF = {"in": "acme", "out": "globex"}

# Relations of the target to the caller on /users/{userId} routes.
#   in: a user in an account the caller administers; out: a user only in another account;
#   admin: another platform administrator; self: the caller's own id.
# Callers: platform (profile administrator), delegated (Administrator of acme), user (administers nothing).
# "verify" targets are verified, so an allowed call answers 409 nothing_to_verify.
MATRIX: dict[str, dict[tuple[str, str], int]] = {
    "get_user": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 200,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "patch_user": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 200,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "audit": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 403,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 403,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "suspend": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 403,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 403,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "enable": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 200,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "delete": {
        ("platform", "in"): 204,
        ("platform", "out"): 204,
        ("platform", "admin"): 204,
        ("platform", "self"): 403,
        ("delegated", "in"): 403,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 403,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "reset": {
        ("platform", "in"): 202,
        ("platform", "out"): 202,
        ("platform", "admin"): 202,
        ("platform", "self"): 202,
        ("delegated", "in"): 202,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 202,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "verify": {
        ("platform", "in"): 409,
        ("platform", "out"): 409,
        ("platform", "admin"): 409,
        ("platform", "self"): 409,
        ("delegated", "in"): 409,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 409,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "revoke": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 200,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    "export": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("platform", "admin"): 200,
        ("platform", "self"): 200,
        ("delegated", "in"): 403,
        ("delegated", "out"): 404,
        ("delegated", "admin"): 404,
        ("delegated", "self"): 403,
        ("user", "in"): 404,
        ("user", "out"): 404,
        ("user", "admin"): 404,
        ("user", "self"): 404,
    },
    # /me routes: relation is always "me"
    "get_me": {("platform", "me"): 200, ("delegated", "me"): 200, ("user", "me"): 200},
    "patch_me": {("platform", "me"): 200, ("delegated", "me"): 200, ("user", "me"): 200},
    "reset_me": {("platform", "me"): 202, ("delegated", "me"): 202, ("user", "me"): 202},
    "verify_me": {("platform", "me"): 409, ("delegated", "me"): 409, ("user", "me"): 409},
    "list_users": {("platform", "all"): 200, ("delegated", "all"): 200, ("user", "all"): 403},
    "list_accounts": {("platform", "all"): 200, ("delegated", "all"): 200, ("user", "all"): 403},
    "list_account_users": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("user", "in"): 404,
        ("user", "out"): 404,
    },
    "get_account": {
        ("platform", "in"): 200,
        ("platform", "out"): 200,
        ("delegated", "in"): 200,
        ("delegated", "out"): 404,
        ("user", "in"): 404,
        ("user", "out"): 404,
    },
    "revoke_me": {("platform", "me"): 200, ("delegated", "me"): 200, ("user", "me"): 200},
    "export_me": {("platform", "me"): 200, ("delegated", "me"): 200, ("user", "me"): 200},
    # bulk jobs: administrators only (someone who administers nothing: 403); a job that is not the
    # caller's (here: none exists) is 404 job_not_found
    "bulk_start": {("platform", "me"): 202, ("delegated", "me"): 202, ("user", "me"): 403},
    "bulk_list": {("platform", "me"): 200, ("delegated", "me"): 200, ("user", "me"): 403},
    "bulk_get": {("platform", "me"): 404, ("delegated", "me"): 404, ("user", "me"): 403},
    "bulk_items": {("platform", "me"): 404, ("delegated", "me"): 404, ("user", "me"): 403},
    "bulk_cancel": {("platform", "me"): 404, ("delegated", "me"): 404, ("user", "me"): 403},
}
# Callers that are refused before any rule applies, on every authenticated route.
REFUSED_CALLERS = ("suspended", "stale_token", "unknown")

ROWS = [(r, c, rel, s) for r, rows in MATRIX.items() for (c, rel), s in rows.items()]


@pytest.fixture
def cast(env: Env) -> dict[str, User]:
    return {
        "platform": env.add_user(
            "ada@example.com",
            first="Ada",
            last="Admin",
            profile="administrator",
            memberships={"acme": ["Administrator"]},
        ),
        # in acme too: only the platform-administrator guard keeps a delegated administrator of acme
        # away from him (security notes T1)
        "admin2": env.add_user(
            "alan@example.com",
            first="Alan",
            last="Admin",
            profile="administrator",
            memberships={"acme": ["Buyer"]},
        ),
        "delegated": env.add_user(
            "dana@acme.example",
            first="Dana",
            last="Delegate",
            memberships={"acme": ["Administrator", "Buyer"]},
        ),
        "user": env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]}),
        "in": env.add_user(
            "ivy@acme.example",
            first="Ivy",
            last="Inside",
            memberships={"acme": ["Buyer"], "globex": ["Buyer"]},
        ),
        "out": env.add_user(
            "gus@globex.example", first="Gus", last="Globex", memberships={"globex": ["Buyer"]}
        ),
        "suspended": env.add_user(
            "sam@acme.example",
            first="Sam",
            last="Suspended",
            memberships={"acme": ["Administrator"]},
            status="SUSPENDED",
        ),
    }


def _target(cast: dict[str, User], caller: str, relation: str) -> User:
    if relation == "self":
        return cast[caller]
    if relation == "admin":
        return cast["admin2"]
    return cast[relation]


def _path(route: Route, target: User | None, relation: str = "in") -> str:
    path = route.path.replace("{accountId}", ACCOUNT_OF.get(relation, "acme"))
    path = path.replace("{jobId}", "no-such-job")
    return path.replace("{userId}", target.id.replace("|", "%7C")) if target else path


def _snapshot(env: Env) -> tuple[list[dict[str, Any]], int, int]:
    """The whole table, item by item, and the Auth0 calls and emails made so far."""
    return env.scan(), len(env.idp.calls), len(env.mailer.sent)


@pytest.mark.parametrize(
    ("route_name", "caller", "relation", "expected"), ROWS, ids=[f"{r}-{c}-{rel}" for r, c, rel, _ in ROWS]
)
def test_matrix(
    env: Env, cast: dict[str, User], route_name: str, caller: str, relation: str, expected: int
) -> None:
    route = ROUTES[route_name]
    target = (
        None if relation in ("me", "all") or "{userId}" not in route.path else _target(cast, caller, relation)
    )
    before = _snapshot(env)
    r = env.call(
        route.function,
        route.method,
        _path(route, target, relation),
        as_user=cast[caller],
        body=route.body,
        headers=route.headers,
    )
    assert r.status == expected, r
    if expected in (403, 404):
        not_found = (
            "account_not_found"
            if "{accountId}" in route.path
            else "job_not_found"
            if "{jobId}" in route.path
            else "user_not_found"
        )
        assert r.json()["code"] == ("forbidden" if expected == 403 else not_found)
        assert _snapshot(env) == before, "a refused request changed something"


@pytest.mark.parametrize("route_name", sorted(ROUTES))
@pytest.mark.parametrize("caller", REFUSED_CALLERS)
def test_refused_callers(env: Env, cast: dict[str, User], route_name: str, caller: str) -> None:
    route = ROUTES[route_name]
    who: User | str
    iat = None
    if caller == "suspended":
        who = cast["suspended"]
    elif caller == "unknown":
        who = "auth0|ffffffffffffffffffffffff"
    else:
        who = cast["platform"]
        env.store.put_user(cast["platform"].evolve(tokens_valid_after=int(env.clock.now()) + 1))
        iat = env.clock.now()
    before = _snapshot(env)
    r = env.call(
        route.function,
        route.method,
        _path(route, cast["in"]),
        as_user=who,
        iat=iat,
        body=route.body,
        headers=route.headers,
    )
    assert r.status == 401, r
    assert r.json()["code"] == "token_revoked"
    assert _snapshot(env) == before


def _template_routes() -> set[tuple[str, str]]:
    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    routes = set()
    for resource in resources.values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                routes.add((event["Properties"]["Method"].upper(), event["Properties"]["Path"]))
    return routes


def test_every_route_is_in_the_matrix() -> None:
    covered = {(r.method, r.path) for r in ROUTES.values()} | {
        (r.method, r.path) for r in CREATE_ROUTES.values()
    }
    missing = _template_routes() - covered - PUBLIC_ROUTES
    assert not missing, f"routes without authorization-matrix rows: {sorted(missing)}"
    assert set(MATRIX) == set(ROUTES)


def test_every_route_of_the_matrix_and_the_public_list_is_deployed() -> None:
    # A route the handler serves but the template does not route is unreachable in AWS.
    deployed = {(r.method, r.path) for r in (*ROUTES.values(), *CREATE_ROUTES.values())}
    absent = (PUBLIC_ROUTES | deployed) - _template_routes()
    assert not absent, f"routes missing from template.yaml: {sorted(absent)}"


# ------------------------------------------------------------------------------------------------
# create-user (SPEC 13): the relation is the account (acme: the delegated caller administers it;
# globex: they do not). Nothing about a user is revealed, so refusals name the account or invitation.
# ------------------------------------------------------------------------------------------------
INVITE_BODY = {"email": "new@new.example", "firstName": "New", "lastName": "Person", "roles": ["Buyer"]}
CREATE_ROUTES = {
    "create_user": Route(
        "create-user", "POST", "/users", {"email": "new@new.example", "firstName": "N", "lastName": "P"}
    ),
    "invite": Route("create-user", "POST", "/accounts/{accountId}/invitations", INVITE_BODY),
    "list_invitations": Route("create-user", "GET", "/accounts/{accountId}/invitations"),
    "resend": Route("create-user", "POST", "/invitations/{invitation}/resend"),
    "revoke": Route("create-user", "DELETE", "/invitations/{invitation}"),
}
CREATE_MATRIX: dict[str, dict[tuple[str, str], int]] = {
    "create_user": {("platform", "-"): 201, ("delegated", "-"): 403, ("user", "-"): 403},
    **{
        name: {
            ("platform", "acme"): ok,
            ("platform", "globex"): ok,
            ("delegated", "acme"): ok,
            ("delegated", "globex"): 404,
            ("user", "acme"): 404,
            ("user", "globex"): 404,
        }
        for name, ok in (("invite", 202), ("list_invitations", 200), ("resend", 202), ("revoke", 204))
    },
}
CREATE_ROWS = [(r, c, rel, s) for r, rows in CREATE_MATRIX.items() for (c, rel), s in rows.items()]
REFUSAL_CODES = {
    "create_user": "forbidden",
    "invite": "account_not_found",
    "list_invitations": "account_not_found",
    "resend": "invitation_not_found",
    "revoke": "invitation_not_found",
}


def _create_path(env: Env, cast: dict[str, User], route: Route, account: str) -> str:
    if "{accountId}" in route.path:
        return route.path.replace("{accountId}", account)
    if "{invitation}" in route.path:
        body = {**INVITE_BODY, "email": f"invitee@{account}.example"}
        sent = env.call(
            "create-user", "POST", f"/accounts/{account}/invitations", as_user=cast["platform"], body=body
        )
        assert sent.status == 202, sent
        return route.path.replace("{invitation}", sent.json()["invitationId"])
    return route.path


@pytest.mark.parametrize(
    ("route_name", "caller", "relation", "expected"),
    CREATE_ROWS,
    ids=[f"{r}-{c}-{rel}" for r, c, rel, _ in CREATE_ROWS],
)
def test_create_matrix(
    env: Env, cast: dict[str, User], route_name: str, caller: str, relation: str, expected: int
) -> None:
    route = CREATE_ROUTES[route_name]
    path = _create_path(env, cast, route, relation)
    before = _snapshot(env)
    r = env.call(route.function, route.method, path, as_user=cast[caller], body=route.body)
    assert r.status == expected, r
    if expected in (403, 404):
        assert r.json()["code"] == REFUSAL_CODES[route_name]
        assert _snapshot(env) == before, "a refused request changed something"


@pytest.mark.parametrize("route_name", sorted(CREATE_ROUTES))
@pytest.mark.parametrize("caller", REFUSED_CALLERS)
def test_create_routes_refuse_callers(env: Env, cast: dict[str, User], route_name: str, caller: str) -> None:
    route = CREATE_ROUTES[route_name]
    path = _create_path(env, cast, route, "acme")
    who: User | str
    iat = None
    if caller == "suspended":
        who = cast["suspended"]
    elif caller == "unknown":
        who = "auth0|ffffffffffffffffffffffff"
    else:
        who = cast["platform"]
        env.store.put_user(cast["platform"].evolve(tokens_valid_after=int(env.clock.now()) + 1))
        iat = env.clock.now()
    before = _snapshot(env)
    r = env.call(route.function, route.method, path, as_user=who, iat=iat, body=route.body)
    assert r.status == 401 and r.json()["code"] == "token_revoked", r
    assert _snapshot(env) == before


# Machine callers (SPEC section 3): a client-credentials token acts with platform-administrator reach
# limited by its scopes; /me routes refuse it; a client id not in MACHINE_CLIENT_IDS is refused.
# route -> (the scope it needs, status with that scope on the "in" user)
MACHINE_CLIENT = "m2m-script"
MACHINE_MATRIX: dict[str, tuple[str | None, int]] = {
    "get_user": ("read:users", 200),
    "patch_user": ("update:users", 200),
    "audit": ("read:users", 200),
    "suspend": ("suspend:users", 200),
    "enable": ("suspend:users", 200),
    "delete": ("delete:users", 204),
    "reset": ("update:users", 202),
    "verify": ("update:users", 409),
    "get_me": (None, 403),
    "patch_me": (None, 403),
    "reset_me": (None, 403),
    "verify_me": (None, 403),
    "list_users": ("read:users", 200),
    "list_account_users": ("read:users", 200),
    "list_accounts": ("read:users", 200),
    "get_account": ("read:users", 200),
    "revoke": ("update:users", 200),
    "revoke_me": (None, 403),
    "export": ("read:users", 200),
    "export_me": (None, 403),
    "bulk_start": (None, 202),  # bulk:users and the action's scope: tests/integration/test_bulk_jobs.py
    "bulk_list": ("bulk:users", 200),
    "bulk_get": ("bulk:users", 404),
    "bulk_items": ("bulk:users", 404),
    "bulk_cancel": ("bulk:users", 404),
}
ALL_SCOPES = "read:users update:users suspend:users delete:users create:users bulk:users"


def machine_claims(scope: str, client_id: str = MACHINE_CLIENT) -> dict[str, str]:
    return {"gty": "client-credentials", "scope": scope, "azp": client_id}


def test_every_route_has_a_machine_row() -> None:
    assert set(MACHINE_MATRIX) == set(ROUTES)


@pytest.mark.parametrize("route_name", sorted(MACHINE_MATRIX))
def test_machine_with_the_scope(env: Env, cast: dict[str, User], route_name: str) -> None:
    env.configure(machine_client_ids=f"other,{MACHINE_CLIENT}")
    route = ROUTES[route_name]
    scope, expected = MACHINE_MATRIX[route_name]
    target = None if route.path.startswith("/me") else cast["in"]
    before = _snapshot(env)
    r = env.call(
        route.function,
        route.method,
        _path(route, target),
        as_user=f"{MACHINE_CLIENT}@clients",
        body=route.body,
        headers=route.headers,
        claims=machine_claims(scope or ALL_SCOPES),
    )
    assert r.status == expected, r
    if expected == 403:
        assert r.json()["code"] == "forbidden"
        assert _snapshot(env) == before


@pytest.mark.parametrize("route_name", sorted(n for n, (s, _) in MACHINE_MATRIX.items() if s))
def test_machine_without_the_scope(env: Env, cast: dict[str, User], route_name: str) -> None:
    env.configure(machine_client_ids=MACHINE_CLIENT)
    route = ROUTES[route_name]
    needed, _ = MACHINE_MATRIX[route_name]
    others = " ".join(s for s in ALL_SCOPES.split() if s != needed)
    before = _snapshot(env)
    r = env.call(
        route.function,
        route.method,
        _path(route, cast["in"]),
        as_user=f"{MACHINE_CLIENT}@clients",
        body=route.body,
        headers=route.headers,
        claims=machine_claims(others),
    )
    assert r.status == 403, r
    assert r.json()["code"] == "insufficient_scope"
    assert _snapshot(env) == before


@pytest.mark.parametrize("allowed", ["", "someone-else"])
def test_machine_not_allowed_is_refused(env: Env, cast: dict[str, User], allowed: str) -> None:
    env.configure(machine_client_ids=allowed)
    before = _snapshot(env)
    r = env.call(
        "suspend-user",
        "POST",
        _path(ROUTES["suspend"], cast["in"]),
        as_user=f"{MACHINE_CLIENT}@clients",
        claims=machine_claims(ALL_SCOPES),
    )
    assert r.status == 401, r
    assert r.json()["code"] == "token_revoked"
    assert _snapshot(env) == before


def test_machine_is_audited_and_evented_as_a_client(env: Env, cast: dict[str, User]) -> None:
    env.configure(machine_client_ids=MACHINE_CLIENT)
    r = env.call(
        "suspend-user",
        "POST",
        _path(ROUTES["suspend"], cast["in"]),
        as_user=f"{MACHINE_CLIENT}@clients",
        claims=machine_claims("suspend:users"),
    )
    assert r.status == 200, r
    audit = env.call(
        "update-user", "GET", _path(ROUTES["audit"], cast["in"]), as_user=cast["platform"]
    ).json()["items"]
    assert audit[0]["action"] == "user.suspended"
    assert audit[0]["actor"] == MACHINE_CLIENT
    env.publish()
    (event,) = [e for e in env.bus.of(cast["in"].id) if e["type"] == "user.suspended"]
    assert event["data"]["actor"] == {"type": "client", "id": MACHINE_CLIENT}


def test_a_machine_gets_404_for_a_user_that_does_not_exist(env: Env, cast: dict[str, User]) -> None:
    env.configure(machine_client_ids=MACHINE_CLIENT)
    r = env.call(
        "suspend-user",
        "POST",
        "/users/auth0%7Cffffffffffffffffffffffff/suspend",
        as_user=f"{MACHINE_CLIENT}@clients",
        claims=machine_claims("suspend:users"),
    )
    assert r.status == 404
    assert r.json()["code"] == "user_not_found"


# the create-user routes (SPEC section 13) for a machine: create:users creates and invites, read:users lists
MACHINE_CREATE: dict[str, tuple[str, int]] = {
    "create_user": ("create:users", 201),
    "invite": ("create:users", 202),
    "list_invitations": ("read:users", 200),
    "resend": ("create:users", 202),
    "revoke": ("create:users", 204),
}


def test_every_create_route_has_a_machine_row() -> None:
    assert set(MACHINE_CREATE) == set(CREATE_ROUTES)


@pytest.mark.parametrize("with_scope", [True, False])
@pytest.mark.parametrize("route_name", sorted(MACHINE_CREATE))
def test_machine_on_create_routes(env: Env, cast: dict[str, User], route_name: str, with_scope: bool) -> None:
    env.configure(machine_client_ids=MACHINE_CLIENT)
    route = CREATE_ROUTES[route_name]
    needed, expected = MACHINE_CREATE[route_name]
    path = _create_path(env, cast, route, "globex")
    scope = needed if with_scope else " ".join(s for s in ALL_SCOPES.split() if s != needed)
    before = _snapshot(env)
    r = env.call(
        route.function,
        route.method,
        path,
        as_user=f"{MACHINE_CLIENT}@clients",
        body=route.body,
        claims=machine_claims(scope),
    )
    if with_scope:
        assert r.status == expected, r
    else:
        assert (r.status, r.json()["code"]) == (403, "insufficient_scope"), r
        assert _snapshot(env) == before
