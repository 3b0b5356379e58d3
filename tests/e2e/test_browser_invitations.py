"""Invitations in a real browser (SPEC 13), against stacks started as ``make run`` starts them.

A platform administrator creates a user who chooses a password through the mailed link and logs in at the
local Auth0; a delegated administrator invites a new person and an existing user of another account with
identical answers, and each accepts in the browser; an expired link offers a new one; a person who signs
up at the local Auth0 and whose ``UserRegistered`` event is sent twice exists once and can call ``/me``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import LocalStackInfo, SeedLogin, request, running_stack
from tests.e2e.test_browser import (  # the browser fixtures and helpers of the link pages
    chromium,
    heading,
    open_link,
    page,
    shown,
    submit,
    wait_for_link,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
__all__ = ["chromium", "page"]  # fixtures used by name

INVITED_SUBJECT = "You are invited"
PASSWORD = "Invite-Browser-Pass9"
SHORT_TTL = 4
USERS = {
    "root": SeedLogin("root", "rory.root@invite.example", "Root-Invite-Pass1", "Rory", "Root"),
    "dele": SeedLogin("dele", "dell.dele@hooli.example", "Dele-Invite-Pass1", "Dell", "Dele"),
    "other": SeedLogin("other", "otto.other@umbrella.example", "Other-Invite-Pass1", "Otto", "Other"),
}
SEED = {
    "accounts": [{"id": "hooli", "name": "Hooli"}, {"id": "umbrella", "name": "Umbrella"}],
    "users": [
        {
            "email": USERS["root"].email,
            "password": USERS["root"].password,
            "firstName": "Rory",
            "lastName": "Root",
            "profile": "administrator",
        },
        {
            "email": USERS["dele"].email,
            "password": USERS["dele"].password,
            "firstName": "Dell",
            "lastName": "Dele",
            "memberships": [{"accountId": "hooli", "roles": ["Administrator"]}],
            "defaultAccountId": "hooli",
        },
        {
            "email": USERS["other"].email,
            "password": USERS["other"].password,
            "firstName": "Otto",
            "lastName": "Other",
            "memberships": [{"accountId": "umbrella", "roles": ["Buyer"]}],
            "defaultAccountId": "umbrella",
        },
    ],
}


@pytest.fixture(scope="module")
def invite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("invite-stack"), SEED, USERS, {}) as info:
        yield info


@pytest.fixture(scope="module")
def short_invite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    env = {"INVITE_LINK_TTL_SECONDS": str(SHORT_TTL)}
    with running_stack(tmp_path_factory.mktemp("invite-stack-short"), SEED, USERS, env) as info:
        yield info


def set_password(page: Page, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(password)


def accept_in_browser(page: Page, link: str, password: str | None) -> None:
    response = open_link(page, link)
    assert response.status == 200, shown(page, response)
    assert heading(page) == "You are invited", shown(page, response)
    assert response.headers.get("cache-control") == "no-store", response.headers
    if password is None:
        response = submit(page, "Accept the invitation")
    else:
        set_password(page, password)
        response = submit(page, "Set password")
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Invitation accepted", shown(page, response)


def comparable(headers: dict[str, str] | Any) -> dict[str, str]:
    """The headers a caller could compare: without the date, the per-request ids and the length (which
    follows the masked address the caller typed)."""
    skip = ("date", "content-length")
    return {k: v for k, v in dict(headers).items() if k not in skip and "id" not in k and "trace" not in k}


def test_a_created_user_sets_a_password_in_the_browser_and_logs_in(
    invite_stack: LocalStackInfo, page: Page
) -> None:
    admin = invite_stack.login(USERS["root"].email, USERS["root"].password)
    email = "cleo.created@invite.example"
    body = {"email": email, "firstName": "Cleo", "lastName": "Created"}
    created = invite_stack.api("POST", "/users", token=admin, json=body)
    assert created.status == 201, created
    assert created.json()["status"] == "INVITED"
    link = wait_for_link(invite_stack, email, INVITED_SUBJECT, "/invitations/")
    assert invite_stack.token_response(email, PASSWORD).status == 403  # no usable password yet
    accept_in_browser(page, link, PASSWORD)
    token = invite_stack.login(email, PASSWORD)
    me = invite_stack.api("GET", "/me", token=token)
    assert me.status == 200, me
    assert (me.json()["status"], me.json()["emailVerified"], me.json()["id"]) == (
        "ACTIVE",
        True,
        created.json()["id"],
    )


def test_a_delegated_administrator_invites_a_new_person_and_an_existing_user(
    invite_stack: LocalStackInfo, page: Page
) -> None:
    dele = invite_stack.login(USERS["dele"].email, USERS["dele"].password)
    new_email = "nia.new@invite.example"
    answers = []
    for email in (new_email, USERS["other"].email):
        body = {"email": email, "firstName": "Some", "lastName": "One", "roles": ["Buyer"]}
        answers.append(invite_stack.api("POST", "/accounts/hooli/invitations", token=dele, json=body))
    new, existing = answers
    assert new.status == existing.status == 202, answers
    assert comparable(new.headers) == comparable(existing.headers)
    assert sorted(new.json()) == sorted(existing.json()) == ["email", "expiresAt", "invitationId"]
    # the new person chooses a password and logs in
    accept_in_browser(
        page, wait_for_link(invite_stack, new_email, INVITED_SUBJECT, "/invitations/"), PASSWORD
    )
    me = invite_stack.api("GET", "/me", token=invite_stack.login(new_email, PASSWORD)).json()
    assert me["status"] == "ACTIVE"
    assert me["memberships"] == [{"accountId": "hooli", "roles": ["Buyer"]}]
    # the existing user accepts and gains the membership, keeping their password
    other = USERS["other"]
    accept_in_browser(page, wait_for_link(invite_stack, other.email, INVITED_SUBJECT, "/invitations/"), None)
    me = invite_stack.api("GET", "/me", token=invite_stack.login(other.email, other.password)).json()
    assert {m["accountId"] for m in me["memberships"]} == {"umbrella", "hooli"}
    assert invite_stack.api("GET", "/accounts/hooli/invitations", token=dele).json() == {"items": []}


def test_an_expired_invitation_link_offers_a_new_one(short_invite_stack: LocalStackInfo, page: Page) -> None:
    stack = short_invite_stack
    dele = stack.login(USERS["dele"].email, USERS["dele"].password)
    email = "exa.expired@invite.example"
    body = {"email": email, "firstName": "Exa", "lastName": "Expired", "roles": ["Buyer"]}
    assert stack.api("POST", "/accounts/hooli/invitations", token=dele, json=body).status == 202
    issued_by = time.time()  # the link was issued before the answer came back
    first = wait_for_link(stack, email, INVITED_SUBJECT, "/invitations/")
    time.sleep(max(0.0, issued_by + SHORT_TTL + 0.5 - time.time()))
    response = open_link(page, first)
    assert response.status == 410, shown(page, response)
    assert "expired" in page.locator("main").inner_text(), shown(page, response)
    response = submit(page, "Send a new link")
    assert response.status == 202, shown(page, response)
    fresh = wait_for_link(stack, email, INVITED_SUBJECT, "/invitations/", not_in=frozenset({first}))
    assert fresh != first
    response = open_link(page, fresh)
    assert response.status == 200, shown(page, response)


def test_a_storefront_sign_up_exists_once_and_can_call_me(invite_stack: LocalStackInfo) -> None:
    email = "sam.shopper@invite.example"
    signup = request(
        "POST",
        f"{invite_stack.auth0_url}/dbconnections/signup",
        json={
            "client_id": invite_stack.client_id,
            "email": email,
            "password": PASSWORD,
            "connection": "Username-Password-Authentication",
            "given_name": "Sam",
            "family_name": "Shopper",
        },
    )
    assert signup.status == 200, signup
    user_id = "auth0|" + signup.json()["_id"]
    for _ in range(2):
        entry = {"Source": "storefront", "DetailType": "UserRegistered", "Detail": {"userId": user_id}}
        assert invite_stack.api("POST", "/_local/events", json=entry).status == 200
    me = invite_stack.api("GET", "/me", token=invite_stack.login(email, PASSWORD))
    assert me.status == 200, me
    body = me.json()
    assert (body["id"], body["status"], body["profile"], body["memberships"]) == (
        user_id,
        "ACTIVE",
        "customer",
        [],
    )
    assert body["version"] == 1  # the second delivery changed nothing


def test_resend_and_revoke_through_the_gateway(invite_stack: LocalStackInfo) -> None:
    dele = invite_stack.login(USERS["dele"].email, USERS["dele"].password)
    email = "rex.revoked@invite.example"
    body = {"email": email, "firstName": "Rex", "lastName": "Revoked", "roles": ["Buyer"]}
    sent = invite_stack.api("POST", "/accounts/hooli/invitations", token=dele, json=body)
    assert sent.status == 202, sent
    invitation_id = sent.json()["invitationId"]
    first = wait_for_link(invite_stack, email, INVITED_SUBJECT, "/invitations/")
    resent = invite_stack.api("POST", f"/invitations/{invitation_id}/resend", token=dele)
    assert resent.status == 202, resent
    second = wait_for_link(invite_stack, email, INVITED_SUBJECT, "/invitations/", not_in=frozenset({first}))
    assert request("GET", first).json()["code"] == "link_superseded"
    assert request("GET", second).status == 200
    assert invite_stack.api("DELETE", f"/invitations/{invitation_id}", token=dele).status == 204
    assert request("GET", second).json()["code"] == "link_invalid"
    again = invite_stack.api("DELETE", f"/invitations/{invitation_id}", token=dele)
    assert again.status == 404 and again.json()["code"] == "invitation_not_found"
    root = invite_stack.login(USERS["root"].email, USERS["root"].password)
    assert invite_stack.api("POST", "/users", token=root, json={**body, "roles": None}).status == 422
