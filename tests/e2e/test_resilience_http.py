"""Over HTTP against the stack of ``make run``: Auth0 outages injected through the local Auth0's knobs and
healed by a sync-identity run; email change through the outbox; suspend, enable and delete as a person
and an administrator meet them. Every test has its own seeded user, so order does not matter."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import LocalStackInfo, SeedLogin, request, running_stack, seed_of, user_path

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Resilient-1"
NAMES = [
    "admin",
    "nina",
    "rita",
    "tim",
    "pam",
    "eve",
    "sue",
    "sal",
    "dan",
    "dee",
    "fred",
    "ola",
    "kai",
    "zed",
]
# Retries without backoff and an early "stuck" alarm, so a test can outlast the attempts in seconds.
MAX_ATTEMPTS = 3
USERS = {n: SeedLogin(n, f"{n}.res@initech.example", PASSWORD, n.title(), "Resilient") for n in NAMES}
SEED = seed_of(
    USERS,
    {"initech": "Initech"},
    extra=lambda n: {"accountNumber": None if n == "admin" else f"ACC-{n.upper()}"},
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    env = {
        "AUTH0_TIMEOUT_SECONDS": "1",
        "SYNC_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "SYNC_BASE_DELAY_SECONDS": "0",
        "SYNC_MAX_DELAY_SECONDS": "0",
    }
    with running_stack(tmp_path_factory.mktemp("resilience"), SEED, USERS, env) as info:
        yield info


@pytest.fixture(scope="module")
def admin(stack: LocalStackInfo) -> str:
    return stack.login(USERS["admin"].email, PASSWORD)


def auth0_user(stack: LocalStackInfo, user: SeedLogin) -> dict[str, Any]:
    response = request("GET", f"{stack.auth0_url}/_knobs/users/{quote(user.user_id, safe='')}")
    assert response.status == 200, response
    body: dict[str, Any] = response.json()
    return body


def fault(stack: LocalStackInfo, **knobs: Any) -> None:
    assert request("POST", f"{stack.auth0_url}/_knobs/faults", json=knobs).status in (200, 201, 204)


def heal(stack: LocalStackInfo) -> None:
    assert request("DELETE", f"{stack.auth0_url}/_knobs/faults").status in (200, 204)


def run_sync(stack: LocalStackInfo) -> dict[str, Any]:
    response = stack.api("POST", "/_local/schedules/SyncIdentityFunction")
    assert response.status == 200, response
    result: dict[str, Any] = response.json()
    return result


def outbox(stack: LocalStackInfo, to: str) -> list[dict[str, Any]]:
    response = stack.api("GET", "/_local/outbox")
    assert response.status == 200
    return [m for m in response.json() if to in m["to"]]


def link_in(message: dict[str, Any], path: str) -> str:
    match = re.search(r"https?://[^\s\"<>]+" + re.escape(path) + r"[^\s\"<>]*", message["text"])
    assert match, f"no {path} link in {message['subject']!r}"
    return match.group(0)


@pytest.mark.parametrize(
    ("who", "knobs"),
    [
        ("nina", {"status": 500, "count": -1}),
        ("rita", {"status": 429, "count": -1, "ratelimit_reset_in": 1}),
        ("tim", {"status": None, "delay": 2.5, "count": -1}),
    ],
    ids=["auth0-500", "auth0-429", "auth0-timeout"],
)
def test_outage_during_an_edit_is_pending_then_healed_by_sync(
    stack: LocalStackInfo, admin: str, who: str, knobs: dict[str, Any]
) -> None:
    user = USERS[who]
    fault(stack, **knobs)
    try:
        response = stack.api("PATCH", user_path(user), token=admin, json={"lastName": "Changed"})
    finally:
        heal(stack)
    assert response.status == 200, response
    assert response.json()["idpSync"] == "pending"
    assert auth0_user(stack, user)["family_name"] == "Resilient"  # Auth0 did not get it (yet)
    # A 429's retry is due only after its x-ratelimit-reset (whole seconds): run until it is taken.
    deadline = time.monotonic() + 10
    while auth0_user(stack, user)["family_name"] != "Changed" and time.monotonic() < deadline:
        run_sync(stack)
        time.sleep(0.3)
    assert auth0_user(stack, user)["family_name"] == "Changed"
    assert stack.api("GET", user_path(user), token=admin).json()["idpSync"] == "synced"


def test_permanent_auth0_refusal_ends_failed(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["pam"]
    fault(stack, status=400, count=1)
    try:
        response = stack.api("PATCH", user_path(user), token=admin, json={"firstName": "Pamela"})
    finally:
        heal(stack)
    assert response.status == 200 and response.json()["idpSync"] == "failed"
    assert response.json()["firstName"] == "Pamela"  # the change itself is kept


def test_email_change_through_the_outbox(stack: LocalStackInfo) -> None:
    user = USERS["eve"]
    token = stack.login(user.email, PASSWORD)
    new = "eve.new@initech.example"
    response = stack.api("PATCH", "/me", token=token, json={"email": new})
    assert response.status == 200 and response.json()["pendingEmail"] == new
    verify = link_in(outbox(stack, new)[-1], "/email-verification/")
    assert "/email-change/" in outbox(stack, user.email)[-1]["text"]
    # a link scanner's GET changes nothing
    assert request("GET", verify, headers={"Accept": "text/html"}).status == 200
    assert stack.api("GET", "/me", token=token).json()["email"] == user.email
    confirmed = request("POST", verify, json={})
    assert confirmed.status == 200 and confirmed.json() == {"result": "email_verified"}
    assert request("POST", verify, json={}).status == 410  # used
    assert stack.token_response(new, PASSWORD).status == 200
    assert stack.token_response(user.email, PASSWORD).status == 403
    assert auth0_user(stack, user)["email"] == new


def test_suspend_ends_access_at_once_and_enable_restores_login(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["sue"]
    old_token = stack.login(user.email, PASSWORD)
    assert stack.api("GET", "/me", token=old_token).status == 200
    assert stack.api("POST", user_path(user) + "/suspend", token=admin).status == 200
    refused = stack.api("GET", "/me", token=old_token)
    assert refused.status == 401 and refused.json()["code"] == "token_revoked"
    login = stack.token_response(user.email, PASSWORD)
    assert login.status == 401 and login.json()["error"] == "unauthorized"
    assert stack.api("POST", user_path(user) + "/enable", token=admin).status == 200
    time.sleep(1.1)  # tokensValidAfter is whole seconds: a new token must be from a later second
    fresh = stack.login(user.email, PASSWORD)
    assert stack.api("GET", "/me", token=fresh).status == 200
    assert stack.api("GET", "/me", token=old_token).status == 401  # old tokens stay refused


def test_suspend_during_auth0_outage_refuses_at_once_and_sync_blocks(
    stack: LocalStackInfo, admin: str
) -> None:
    user = USERS["sal"]
    token = stack.login(user.email, PASSWORD)
    fault(stack, status=503, count=-1)
    try:
        response = stack.api("POST", user_path(user) + "/suspend", token=admin)
    finally:
        heal(stack)
    assert response.status == 200 and response.json()["idpSync"] == "pending"
    assert stack.api("GET", "/me", token=token).status == 401  # refused by us at once
    assert auth0_user(stack, user)["blocked"] is False
    run_sync(stack)
    assert auth0_user(stack, user)["blocked"] is True
    assert stack.token_response(user.email, PASSWORD).status == 401


def _table_items(stack: LocalStackInfo) -> list[dict[str, Any]]:
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=stack.aws_url,
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    items: list[dict[str, Any]] = []
    for table in client.list_tables()["TableNames"]:
        for page in client.get_paginator("scan").paginate(TableName=table):
            items.extend(page["Items"])
    return items


def test_delete_erases_and_frees_the_email(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["dan"]
    assert stack.api("DELETE", user_path(user), token=admin).status == 204
    assert stack.api("GET", user_path(user), token=admin).status == 404
    assert stack.token_response(user.email, PASSWORD).status == 403
    dump = repr(_table_items(stack))
    for personal in (user.email, f"ACC-{user.key.upper()}", "Dan"):
        assert personal not in dump, f"{personal!r} survived the deletion"
    other = USERS["fred"]
    response = stack.api("PATCH", "/me", token=stack.login(other.email, PASSWORD), json={"email": user.email})
    assert response.status == 200 and response.json()["pendingEmail"] == user.email
    assert stack.api("DELETE", user_path(user), token=admin).status == 404  # twice is safe


def test_delete_during_auth0_outage_is_202_then_finished(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["dee"]
    fault(stack, status=500, count=-1)
    try:
        response = stack.api("DELETE", user_path(user), token=admin)
    finally:
        heal(stack)
    assert response.status == 202, response
    assert stack.api("GET", user_path(user), token=admin).status == 404
    run_sync(stack)
    gone = request("GET", f"{stack.auth0_url}/_knobs/users/{quote(user.user_id, safe='')}")
    assert gone.status == 404


# ------------------------------------------------------------------------------ never lost, never given up
def test_an_edit_outlasting_every_attempt_is_finished_once_auth0_is_back(
    stack: LocalStackInfo, admin: str
) -> None:
    user = USERS["ola"]
    fault(stack, status=503, count=-1)
    try:
        response = stack.api("PATCH", user_path(user), token=admin, json={"firstName": "Olaf"})
        assert response.status == 200 and response.json()["idpSync"] == "pending"
        for _ in range(MAX_ATTEMPTS * 2):  # more runs than the attempts after which sync used to give up
            run_sync(stack)
        assert stack.api("GET", user_path(user), token=admin).json()["idpSync"] == "pending"  # never "failed"
    finally:
        heal(stack)
    run_sync(stack)
    assert auth0_user(stack, user)["given_name"] == "Olaf"
    assert stack.api("GET", user_path(user), token=admin).json()["idpSync"] == "synced"


def test_a_rotated_secret_delays_a_suspension_and_never_loses_it(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["kai"]
    # the cached Management API token stops working and a new one is refused: a rotated secret
    fault(stack, status=401, count=-1, path_prefix="/api/v2/")
    fault(stack, status=401, count=-1, path_prefix="/oauth/token")
    try:
        response = stack.api("POST", user_path(user) + "/suspend", token=admin)
        assert response.status == 200 and response.json()["idpSync"] == "pending"
        for _ in range(MAX_ATTEMPTS * 2):
            run_sync(stack)
        assert stack.api("GET", user_path(user), token=admin).json()["idpSync"] == "pending"
        assert auth0_user(stack, user)["blocked"] is False
    finally:
        heal(stack)  # the operator puts the right secret in place
    run_sync(stack)
    assert auth0_user(stack, user)["blocked"] is True
    assert stack.api("GET", user_path(user), token=admin).json()["idpSync"] == "synced"
    assert stack.token_response(user.email, PASSWORD).status == 401


def test_a_pending_deletion_leaves_no_working_login(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["zed"]
    assert stack.token_response(user.email, PASSWORD).status == 200
    fault(stack, status=503, count=-1, method="DELETE")  # Auth0 refuses deletions for a while
    try:
        response = stack.api("DELETE", user_path(user), token=admin)
        assert response.status == 202 and response.json() == {
            "id": user.user_id,
            "status": "deletion_pending",
        }
        login = stack.token_response(user.email, PASSWORD)
        assert login.status == 401 and login.json()["error"] == "unauthorized"  # blocked first
        for _ in range(MAX_ATTEMPTS * 2):
            run_sync(stack)
        assert auth0_user(stack, user)["blocked"] is True
    finally:
        heal(stack)
    run_sync(stack)
    gone = request("GET", f"{stack.auth0_url}/_knobs/users/{quote(user.user_id, safe='')}")
    assert gone.status == 404
