"""Over HTTP against the stack of ``make run`` with short link lifetimes: the email-change edge cases a
person clicking links meets (cancel, expiry, superseded, address taken meanwhile), password-reset
enumeration and limits, storefront events through ``/_local/events`` and cleanup through its schedule.

Each test has its own seeded users and its own source address (the stack trusts ``X-Forwarded-For``
here), so per-IP counters and test order never interfere."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import LocalStackInfo, SeedLogin, request, running_stack, seed_of

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Links-Pass1"
# Short enough to wait for, long enough for a few requests: each of the stack's execution environments
# pays its own first-request set-up (clients, Auth0 token), which takes seconds on a loaded machine.
TTL = 8
NAMES = ["admin", "cora", "exa", "sup", "tia", "tom", "enu", "sus", "gone", "lim", "evt", "ver"]
USERS = {n: SeedLogin(n, f"{n}.links@initech.example", PASSWORD, n.title(), "Links") for n in NAMES}
SEED = seed_of(
    USERS, {"initech": "Initech"}, extra=lambda n: {"status": "SUSPENDED" if n == "sus" else "ACTIVE"}
)
ENV = {
    "VERIFY_LINK_TTL_SECONDS": str(TTL),
    "RESET_LINK_TTL_SECONDS": str(TTL),
    "CLEANUP_GRACE_SECONDS": "0",
    "RESET_LIMIT_PER_ADDRESS": "3",
    "RESET_LIMIT_PER_IP": "5",
    "LOCAL_TRUST_X_FORWARDED_FOR": "true",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("links"), SEED, USERS, ENV) as info:
        yield info


def token_of(stack: LocalStackInfo, key: str) -> str:
    return stack.login(USERS[key].email, PASSWORD)


def mails(stack: LocalStackInfo, to: str) -> list[dict[str, Any]]:
    stack.settle_queues()  # public requests are mailed after their answer
    return [m for m in stack.api("GET", "/_local/outbox").json() if to in m["to"]]


def link(stack: LocalStackInfo, to: str, path: str) -> str:
    for message in reversed(mails(stack, to)):
        match = re.search(r"https?://[^\s\"<>]+" + re.escape(path) + r"[^\s\"<>]*", message["text"])
        if match:
            return match.group(0)
    raise AssertionError(f"no {path} link sent to {to}")


def change_email(stack: LocalStackInfo, key: str, new: str) -> str:
    response = stack.api("PATCH", "/me", token=token_of(stack, key), json={"email": new})
    assert response.status == 200 and response.json()["pendingEmail"] == new, response
    return link(stack, new, "/email-verification/")


def me(stack: LocalStackInfo, key: str) -> dict[str, Any]:
    body: dict[str, Any] = stack.api("GET", "/me", token=token_of(stack, key)).json()
    return body


def test_cancel_from_the_old_address(stack: LocalStackInfo) -> None:
    verify = change_email(stack, "cora", "cora.new@initech.example")
    cancel = link(stack, USERS["cora"].email, "/email-change/")
    page = request("GET", cancel, headers={"Accept": "text/html"})
    assert page.status == 200 and "no-store" in page.headers["cache-control"]
    assert me(stack, "cora")["pendingEmail"] == "cora.new@initech.example"  # the GET changed nothing
    done = request("POST", cancel, json={})
    assert done.status == 200 and done.json() == {"result": "email_change_cancelled"}
    assert me(stack, "cora")["pendingEmail"] is None
    assert request("POST", verify, json={}).status == 410


def test_expired_link_offers_a_fresh_one_and_cleanup_ends_the_change(stack: LocalStackInfo) -> None:
    verify = change_email(stack, "exa", "exa.new@initech.example")
    time.sleep(TTL + 1.2)
    gone = request("POST", verify, json={})
    assert gone.status == 410 and gone.json()["code"] == "link_expired"
    page = request("GET", verify, headers={"Accept": "text/html"})
    assert page.status == 410 and "/renew" in page.text
    assert me(stack, "exa")["pendingEmail"] == "exa.new@initech.example"
    assert stack.api("POST", "/_local/schedules/CleanupLinksFunction").status == 200
    assert me(stack, "exa")["pendingEmail"] is None
    assert me(stack, "exa")["email"] == USERS["exa"].email


def test_a_newer_change_supersedes_the_older_link(stack: LocalStackInfo) -> None:
    first = change_email(stack, "sup", "sup.first@initech.example")
    second = change_email(stack, "sup", "sup.second@initech.example")
    old = request("POST", first, json={})
    assert old.status == 410 and old.json()["code"] == "link_superseded"
    assert request("POST", second, json={}).status == 200
    token = stack.login("sup.second@initech.example", PASSWORD)  # the new address is the login now
    assert stack.api("GET", "/me", token=token).json()["email"] == "sup.second@initech.example"


def test_address_taken_meanwhile_is_409_and_changes_nothing(stack: LocalStackInfo) -> None:
    wanted = "shared.address@initech.example"
    tia_link = change_email(stack, "tia", wanted)
    tom_link = change_email(stack, "tom", wanted)
    assert request("POST", tom_link, json={}).status == 200
    taken = request("POST", tia_link, json={})
    assert taken.status == 409 and taken.json()["code"] == "email_taken"
    tia = me(stack, "tia")
    assert tia["email"] == USERS["tia"].email and tia["pendingEmail"] == wanted


def _reset(stack: LocalStackInfo, email: str, ip: str) -> Any:
    return stack.api("POST", "/password-reset", json={"email": email}, headers={"X-Forwarded-For": ip})


def test_public_reset_answers_alike_for_every_kind_of_address(stack: LocalStackInfo) -> None:
    admin = token_of(stack, "admin")
    gone = USERS["gone"]
    assert stack.api("DELETE", "/users/" + quote(gone.user_id, safe=""), token=admin).status == 204
    answers = [
        _reset(stack, email, f"198.51.100.{i}")
        for i, email in enumerate(
            [USERS["enu"].email, "nobody@initech.example", USERS["sus"].email, gone.email]
        )
    ]
    shapes = {
        (r.status, r.text, tuple(sorted(k for k in r.headers if k not in ("date", "apigw-requestid"))))
        for r in answers
    }
    assert len(shapes) == 1, shapes
    assert answers[0].status == 202
    assert len(mails(stack, USERS["enu"].email)) == 1
    # no reset link to a suspended or deleted user (the deleted one was told of the deletion: L18)
    assert not mails(stack, USERS["sus"].email)
    assert [m["subject"] for m in mails(stack, gone.email)] == ["Your account was deleted"]


def test_per_address_and_per_ip_limits(stack: LocalStackInfo) -> None:
    email = USERS["lim"].email
    answers = [_reset(stack, email, f"203.0.113.{i}") for i in range(5)]
    assert {r.status for r in answers} == {202}
    assert len(mails(stack, email)) == 3  # RESET_LIMIT_PER_ADDRESS: the rest answered alike, sent nothing
    from_one_ip = [_reset(stack, f"x{i}@nowhere.example", "192.0.2.77") for i in range(6)]
    assert [r.status for r in from_one_ip[:5]] == [202] * 5
    assert from_one_ip[5].status == 429 and from_one_ip[5].json()["code"] == "rate_limited"
    assert int(from_one_ip[5].headers["retry-after"]) > 0


def _event(stack: LocalStackInfo, detail_type: str, detail: Any, event_id: str | None = None) -> Any:
    entry: dict[str, Any] = {"Source": "storefront", "DetailType": detail_type, "Detail": detail}
    if event_id:
        entry["Id"] = event_id
    response = stack.api("POST", "/_local/events", json=entry)
    assert response.status == 200, response
    return response.json()


def test_storefront_events_are_idempotent_and_malformed_ones_dead_letter_once(stack: LocalStackInfo) -> None:
    email = USERS["evt"].email
    for _ in range(3):
        _event(stack, "PasswordResetRequested", {"email": email}, "6a1c1f4e-3f0e-4a53-9d9e-000000000001")
    assert len(mails(stack, email)) == 1
    before = len(stack.api("GET", "/_local/dlq").json())
    result = _event(stack, "PasswordResetRequested", {"email": 42})
    assert "deadLettered" in str(result)
    assert len(stack.api("GET", "/_local/dlq").json()) == before + 1


def test_verification_email_requested_event(stack: LocalStackInfo) -> None:
    new = "ver.new@initech.example"
    change_email(stack, "ver", new)
    _event(stack, "VerificationEmailRequested", {"userId": USERS["ver"].user_id})
    assert len(mails(stack, new)) == 2
    assert request("POST", link(stack, new, "/email-verification/"), json={}).status == 200
