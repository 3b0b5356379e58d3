"""Link pages in a real browser: Debian's headless Chromium, driven by Playwright, against the local stack.

A person gets an email, opens its link, fills in the page and submits it; afterwards they log in at the
local Auth0 with what they chose. The links come from the gateway's ``/_local/outbox`` (moto's SES).

The stacks are started exactly as ``make run`` starts them (``python -m local`` on free ports), with this
module's own seed: every test has its own user, so no test depends on another or on their order, and the
shared ``local_stack`` of the other e2e tests keeps its users untouched. The expiry test needs a short
``RESET_LINK_TTL_SECONDS`` and gets a second stack of its own.

Chromium is ``/usr/bin/chromium`` (``make browser-deps`` installs it; ``make test`` depends on that). When it
is missing these tests fail with a message saying what to install: they never skip. Playwright never
downloads a browser here; it launches that binary (``executable_path``) with a fresh temporary profile.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Response, sync_playwright

from tests.e2e.conftest import (
    ROOT,
    LocalStackInfo,
    SeedLogin,
    request,
    running_stack,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
# As the machine's docs start it: no sandbox (root), no GPU, and no background traffic to Google's hosts
# (the closed network refuses it). Playwright adds --headless and a fresh --user-data-dir itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 20_000
EMAIL_TIMEOUT = 10.0
SHORT_RESET_TTL = 8  # seconds: long enough to open a fresh link (first requests of a function pay its
# environment's set-up, seconds on a loaded machine), short enough to wait for its expiry

RESET_SUBJECT = "Reset your password"
CHANGED_SUBJECT = "Your password was changed"
VERIFY_SUBJECT = "Confirm your email address"
STRONG_PASSWORD = "Fresh-Browser-Pass9"
WEAK_PASSWORD = "abcdefgh"  # 8 characters (the form's minlength) of one kind only: Auth0's "fair" refuses it

# One user per test (see the module docstring); both stacks are seeded from this file.
USERS = {
    "reset": SeedLogin("reset", "rhea.reset@browser.example", "Old-Reset-Pass1", "Rhea", "Reset"),
    "weak": SeedLogin("weak", "wes.weak@browser.example", "Old-Weak-Pass1", "Wes", "Weak"),
    "verify": SeedLogin("verify", "vera.verify@browser.example", "Old-Verify-Pass1", "Vera", "Verify"),
    "expired": SeedLogin("expired", "ezra.expired@browser.example", "Old-Expiry-Pass1", "Ezra", "Expired"),
    "cors": SeedLogin("cors", "cora.cors@browser.example", "Old-Cors-Pass1", "Cora", "Cors"),
}
SEED = {
    "accounts": [{"id": "hooli", "name": "Hooli"}],
    "users": [
        {
            "email": user.email,
            "password": user.password,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "memberships": [{"accountId": "hooli", "roles": ["Buyer"]}],
            "defaultAccountId": "hooli",
        }
        for user in USERS.values()
    ],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ stacks
def stack_for(workdir: Path, extra_env: Mapping[str, str]) -> AbstractContextManager[LocalStackInfo]:
    """``python -m local`` as ``make run`` starts it, on free ports, seeded from SEED."""
    return running_stack(workdir, SEED, USERS, extra_env)


@pytest.fixture(scope="module")
def link_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    """The stack with the default link lifetimes."""
    with stack_for(tmp_path_factory.mktemp("browser-stack"), {}) as info:
        yield info


@pytest.fixture(scope="module")
def short_ttl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    """A second stack whose reset links expire after SHORT_RESET_TTL seconds."""
    env = {"RESET_LINK_TTL_SECONDS": str(SHORT_RESET_TTL)}
    with stack_for(tmp_path_factory.mktemp("browser-stack-short-ttl"), env) as info:
        yield info


# ------------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Chromium for every browser test; always closed, also when a test fails."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}, and it is not there: run `make browser-deps` "
            "(as root it installs Debian's chromium and chromium-driver), or install them yourself: "
            "apt-get install -y --no-install-recommends chromium chromium-driver",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies, no cache) per test."""
    context = chromium.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


# ------------------------------------------------------------------------------------------------ helpers
def shown(page: Page, response: Response | None = None) -> str:
    """What the person sees, for assertion messages: status, title and the page's text."""
    status = response.status if response is not None else "?"
    return f"[{status}] {page.url}\n{page.title()!r}\n{page.locator('body').inner_text()[:1500]}"


def open_link(page: Page, url: str) -> Response:
    response = page.goto(url)
    assert response is not None, f"no response for {url}"
    return response


def submit(page: Page, button: str) -> Response:
    """Click a form's submit button and wait for the page the POST answers with."""
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name=button).click()
    response = navigation.value
    assert response is not None, f"no response after clicking {button!r}"
    assert response.request.method == "POST", response.request.method
    return response


def heading(page: Page) -> str:
    return page.locator("h1").inner_text().strip()


def outbox(stack: LocalStackInfo) -> list[dict[str, Any]]:
    response = stack.api("GET", "/_local/outbox")
    assert response.status == 200, response
    entries = response.json()
    assert isinstance(entries, list), entries
    return entries


def link_in(email: dict[str, Any], route: str) -> str:
    """The one link to ``route`` (e.g. ``/password-reset/``) in an email's text, also present in its HTML."""
    links = re.findall(rf"https?://\S+{re.escape(route)}[A-Za-z0-9_-]+", email.get("text") or "")
    assert len(set(links)) == 1, f"expected one {route} link in {email!r}"
    assert links[0] in (email.get("html") or ""), "the HTML part lacks the link of the text part"
    return links[0]


def wait_for_link(
    stack: LocalStackInfo, to: str, subject: str, route: str, *, not_in: frozenset[str] = frozenset()
) -> str:
    """The newest link to ``route`` emailed to ``to`` with ``subject`` that is not one of ``not_in``."""
    deadline = time.monotonic() + EMAIL_TIMEOUT
    while True:
        entries = [e for e in outbox(stack) if e.get("to") == to and e.get("subject") == subject]
        links = [link_in(e, route) for e in entries]
        fresh = [link for link in links if link not in not_in]
        if fresh:
            return fresh[-1]
        if time.monotonic() > deadline:
            sent = [(e.get("to"), e.get("subject")) for e in outbox(stack)]
            pytest.fail(f"no new {subject!r} email to {to} within {EMAIL_TIMEOUT:.0f}s; outbox: {sent}")
        time.sleep(0.2)


def request_reset(stack: LocalStackInfo, email: str) -> None:
    response = stack.api("POST", "/password-reset", json={"email": email})
    assert response.status == 202, response


def fill_passwords(page: Page, password: str, confirmation: str | None = None) -> None:
    page.get_by_label("New password", exact=True).fill(password)
    page.get_by_label("New password again").fill(password if confirmation is None else confirmation)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"


# ------------------------------------------------------------------------------------------------ reset
def test_password_reset_in_the_browser(link_stack: LocalStackInfo, page: Page, tmp_path: Path) -> None:
    user = link_stack.users["reset"]
    request_reset(link_stack, user.email)
    link = wait_for_link(link_stack, user.email, RESET_SUBJECT, "/password-reset/")
    assert link.startswith(f"{link_stack.api_url}/password-reset/"), link

    response = open_link(page, link)
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Choose a new password", shown(page, response)
    assert response.headers.get("cache-control") == "no-store", response.headers
    assert response.headers.get("referrer-policy") == "no-referrer", response.headers
    screenshot = tmp_path / "reset-form.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert_png(screenshot)

    fill_passwords(page, STRONG_PASSWORD)
    response = submit(page, "Set new password")
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Password changed", shown(page, response)
    assert "You can sign in with it now" in page.locator("main").inner_text()

    assert link_stack.token_response(user.email, STRONG_PASSWORD).status == 200
    old = link_stack.token_response(user.email, user.password)
    assert old.status == 403, old
    assert old.json()["error"] == "invalid_grant", old
    assert any(e["to"] == user.email and e["subject"] == CHANGED_SUBJECT for e in outbox(link_stack))

    # The link works once.
    again = open_link(page, link)
    assert again.status == 410, shown(page, again)
    assert heading(page) == "This link cannot be used", shown(page, again)


def test_a_weak_password_shows_the_error_and_the_link_still_works(
    link_stack: LocalStackInfo, page: Page
) -> None:
    user = link_stack.users["weak"]
    request_reset(link_stack, user.email)
    link = wait_for_link(link_stack, user.email, RESET_SUBJECT, "/password-reset/")

    response = open_link(page, link)
    assert response.status == 200, shown(page, response)
    fill_passwords(page, WEAK_PASSWORD)
    response = submit(page, "Set new password")
    assert response.status == 400, shown(page, response)
    error = page.locator(".error")
    assert error.count() == 1, shown(page, response)
    assert error.inner_text().strip(), shown(page, response)
    assert link_stack.token_response(user.email, user.password).status == 200  # nothing changed
    assert link_stack.token_response(user.email, WEAK_PASSWORD).status == 403

    # The link is still usable: it opens the form again, and the form takes a strong password.
    response = open_link(page, link)
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Choose a new password", shown(page, response)
    fill_passwords(page, STRONG_PASSWORD)
    response = submit(page, "Set new password")
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Password changed", shown(page, response)
    assert link_stack.token_response(user.email, STRONG_PASSWORD).status == 200
    assert link_stack.token_response(user.email, user.password).status == 403


# ------------------------------------------------------------------------------------------------ verify
def test_email_change_is_confirmed_in_the_browser(link_stack: LocalStackInfo, page: Page) -> None:
    user = link_stack.users["verify"]
    new_address = "vera.new@browser.example"
    token = link_stack.login(user.email, user.password)
    patched = link_stack.api("PATCH", "/me", token=token, json={"email": new_address})
    assert patched.status == 200, patched
    assert (patched.json()["email"], patched.json()["pendingEmail"]) == (user.email, new_address), patched
    link = wait_for_link(link_stack, new_address, VERIFY_SUBJECT, "/email-verification/")
    assert link.startswith(f"{link_stack.api_url}/email-verification/"), link

    response = open_link(page, link)
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Confirm your email address", shown(page, response)
    assert response.headers.get("cache-control") == "no-store", response.headers
    # Opening the page changed nothing (link scanners open links too).
    me = link_stack.api("GET", "/me", token=token)
    assert me.status == 200, me
    assert (me.json()["email"], me.json()["pendingEmail"]) == (user.email, new_address), me
    assert link_stack.token_response(user.email, user.password).status == 200

    response = submit(page, "Confirm email address")
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Email address confirmed", shown(page, response)

    new_token = link_stack.login(new_address, user.password)
    me = link_stack.api("GET", "/me", token=new_token)
    assert me.status == 200, me
    body = me.json()
    assert (body["id"], body["email"], body["pendingEmail"], body["emailVerified"]) == (
        user.user_id,
        new_address,
        None,
        True,
    ), me
    old = link_stack.token_response(user.email, user.password)
    assert old.status == 403, old
    assert old.json()["error"] == "invalid_grant", old


# ------------------------------------------------------------------------------------------------ expiry
def test_an_expired_reset_link_offers_a_new_one(
    short_ttl_stack: LocalStackInfo, page: Page, tmp_path: Path
) -> None:
    user = short_ttl_stack.users["expired"]
    request_reset(short_ttl_stack, user.email)
    first = wait_for_link(short_ttl_stack, user.email, RESET_SUBJECT, "/password-reset/")
    issued_by = time.time()  # the link is issued after the answer, before its email arrives
    time.sleep(max(0.0, issued_by + SHORT_RESET_TTL + 0.5 - time.time()))

    response = open_link(page, first)
    assert response.status == 410, shown(page, response)
    assert "expired" in page.locator("main").inner_text(), shown(page, response)
    assert response.headers.get("cache-control") == "no-store", response.headers
    screenshot = tmp_path / "expired-link.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert_png(screenshot)

    response = submit(page, "Send a new link")
    assert response.status == 202, shown(page, response)
    assert heading(page) == "Check your email", shown(page, response)

    second = wait_for_link(
        short_ttl_stack, user.email, RESET_SUBJECT, "/password-reset/", not_in=frozenset({first})
    )
    assert second != first
    response = open_link(page, second)
    assert response.status == 200, shown(page, response)
    assert heading(page) == "Choose a new password", shown(page, response)
    assert page.get_by_label("New password again").is_visible()


def test_the_api_reference_renders_offline(link_stack: LocalStackInfo, page: Page, tmp_path: Path) -> None:
    """/_local/docs shows every operation of the document, with nothing fetched from another host."""
    elsewhere: list[str] = []

    def only_the_stack(route: Any) -> None:
        url = route.request.url
        if url.startswith(link_stack.api_url + "/"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    page.route("**/*", only_the_stack)
    response = page.goto(f"{link_stack.api_url}/_local/docs")
    assert response is not None and response.status == 200
    page.wait_for_selector(".opblock-summary-path", timeout=PAGE_TIMEOUT_MS)
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    operations = sum(len(item) for item in document["paths"].values())
    shown_paths = page.locator(".opblock-summary-path").all_inner_texts()
    page.screenshot(path=str(tmp_path / "api-reference.png"), full_page=True)
    assert len(shown_paths) == operations, shown_paths
    assert {p.replace("\u200b", "") for p in shown_paths} == set(document["paths"])
    assert "usermgmt: user lifecycle API" in page.locator(".info .title").inner_text()
    assert elsewhere == []


# ------------------------------------------------------------------------------------------------ CORS
# A front end served from its own origin (another port of 127.0.0.1) calling the API with fetch and a
# bearer token, as an admin console or storefront does. The browser sends a preflight (Authorization,
# If-Match and a JSON body are not "simple"), then reads the ETag: both need the API's CORS headers.
FRONT_END = """<!doctype html><html lang=en><head><meta charset=utf-8><title>Front end</title></head>
<body><h1>Front end</h1><script>
async function editMe(api, token) {
  const auth = {"Authorization": "Bearer " + token};
  try {
    const read = await fetch(api + "/me", {headers: auth});
    const me = await read.json();
    const etag = read.headers.get("ETag");
    const edit = await fetch(api + "/me", {
      method: "PATCH",
      headers: {...auth, "Content-Type": "application/json", "If-Match": etag},
      body: JSON.stringify({firstName: me.firstName + "x"}),
    });
    return {ok: true, readStatus: read.status, etag: etag, editStatus: edit.status,
            newEtag: edit.headers.get("ETag"), firstName: (await edit.json()).firstName};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}
</script></body></html>"""


class _FrontEnd(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = FRONT_END.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def front_ends() -> Iterator[tuple[str, str]]:
    """Two origins serving the front end: the first is allowed by the stack's CORS origins, the other not."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FrontEnd) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        allowed, other = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        yield allowed, other
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def cors_stack(
    tmp_path_factory: pytest.TempPathFactory, front_ends: tuple[str, str]
) -> Iterator[LocalStackInfo]:
    env = {"LOCAL_CORS_ORIGINS": f"http://localhost:9,{front_ends[0]}"}
    with stack_for(tmp_path_factory.mktemp("browser-stack-cors"), env) as info:
        yield info


def test_a_front_end_on_an_allowed_origin_calls_the_api_and_reads_the_etag(
    cors_stack: LocalStackInfo, front_ends: tuple[str, str], page: Page
) -> None:
    person = USERS["cors"]
    token = cors_stack.login(person.email, person.password)
    allowed, other = front_ends
    open_link(page, allowed + "/")
    result = page.evaluate("([api, token]) => editMe(api, token)", [cors_stack.api_url, token])
    assert result["ok"], result
    assert result["readStatus"] == 200 and re.fullmatch(r'"\d+"', result["etag"]), result
    assert result["editStatus"] == 200 and result["firstName"] == person.first_name + "x", result
    assert int(result["newEtag"].strip('"')) == int(result["etag"].strip('"')) + 1, result
    # a page from an origin the API does not allow cannot call it (the browser refuses the answer)
    open_link(page, other + "/")
    refused = page.evaluate("([api, token]) => editMe(api, token)", [cors_stack.api_url, token])
    assert refused == {"ok": False, "error": "TypeError: Failed to fetch"}, refused


# ------------------------------------------------------------------------------------------------ invitations
# SPEC 13 in the browser: a platform administrator creates a user who chooses a password through the
# mailed link and logs in; a delegated administrator invites a new person and an existing user of another
# account with identical answers, and each accepts; an expired link offers a new one; a person who signs
# up at the local Auth0 and whose UserRegistered event is sent twice exists once and can call /me.
# Own stacks and seed (the module's other stacks keep their users untouched).
INVITED_SUBJECT = "You are invited"
INVITE_PASSWORD = "Invite-Browser-Pass9"
INVITE_SHORT_TTL = 4
INVITE_USERS = {
    "root": SeedLogin("root", "rory.root@invite.example", "Root-Invite-Pass1", "Rory", "Root"),
    "dele": SeedLogin("dele", "dell.dele@hooli.example", "Dele-Invite-Pass1", "Dell", "Dele"),
    "other": SeedLogin("other", "otto.other@umbrella.example", "Other-Invite-Pass1", "Otto", "Other"),
}
INVITE_SEED = {
    "accounts": [{"id": "hooli", "name": "Hooli"}, {"id": "umbrella", "name": "Umbrella"}],
    "users": [
        {
            "email": INVITE_USERS["root"].email,
            "password": INVITE_USERS["root"].password,
            "firstName": "Rory",
            "lastName": "Root",
            "profile": "administrator",
        },
        {
            "email": INVITE_USERS["dele"].email,
            "password": INVITE_USERS["dele"].password,
            "firstName": "Dell",
            "lastName": "Dele",
            "memberships": [{"accountId": "hooli", "roles": ["Administrator"]}],
            "defaultAccountId": "hooli",
        },
        {
            "email": INVITE_USERS["other"].email,
            "password": INVITE_USERS["other"].password,
            "firstName": "Otto",
            "lastName": "Other",
            "memberships": [{"accountId": "umbrella", "roles": ["Buyer"]}],
            "defaultAccountId": "umbrella",
        },
    ],
}


@pytest.fixture(scope="module")
def invite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("invite-stack"), INVITE_SEED, INVITE_USERS, {}) as info:
        yield info


@pytest.fixture(scope="module")
def short_invite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    env = {"INVITE_LINK_TTL_SECONDS": str(INVITE_SHORT_TTL)}
    with running_stack(tmp_path_factory.mktemp("invite-stack-short"), INVITE_SEED, INVITE_USERS, env) as info:
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
    admin = invite_stack.login(INVITE_USERS["root"].email, INVITE_USERS["root"].password)
    email = "cleo.created@invite.example"
    body = {"email": email, "firstName": "Cleo", "lastName": "Created"}
    created = invite_stack.api("POST", "/users", token=admin, json=body)
    assert created.status == 201, created
    assert created.json()["status"] == "INVITED"
    link = wait_for_link(invite_stack, email, INVITED_SUBJECT, "/invitations/")
    assert invite_stack.token_response(email, INVITE_PASSWORD).status == 403  # no usable password yet
    accept_in_browser(page, link, INVITE_PASSWORD)
    token = invite_stack.login(email, INVITE_PASSWORD)
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
    dele = invite_stack.login(INVITE_USERS["dele"].email, INVITE_USERS["dele"].password)
    new_email = "nia.new@invite.example"
    answers = []
    for email in (new_email, INVITE_USERS["other"].email):
        body = {"email": email, "firstName": "Some", "lastName": "One", "roles": ["Buyer"]}
        answers.append(invite_stack.api("POST", "/accounts/hooli/invitations", token=dele, json=body))
    new, existing = answers
    assert new.status == existing.status == 202, answers
    assert comparable(new.headers) == comparable(existing.headers)
    assert sorted(new.json()) == sorted(existing.json()) == ["email", "expiresAt", "invitationId"]
    # the new person chooses a password and logs in
    accept_in_browser(
        page, wait_for_link(invite_stack, new_email, INVITED_SUBJECT, "/invitations/"), INVITE_PASSWORD
    )
    me = invite_stack.api("GET", "/me", token=invite_stack.login(new_email, INVITE_PASSWORD)).json()
    assert me["status"] == "ACTIVE"
    assert me["memberships"] == [{"accountId": "hooli", "roles": ["Buyer"]}]
    # the existing user accepts and gains the membership, keeping their password
    other = INVITE_USERS["other"]
    accept_in_browser(page, wait_for_link(invite_stack, other.email, INVITED_SUBJECT, "/invitations/"), None)
    me = invite_stack.api("GET", "/me", token=invite_stack.login(other.email, other.password)).json()
    assert {m["accountId"] for m in me["memberships"]} == {"umbrella", "hooli"}
    listed = invite_stack.api("GET", "/accounts/hooli/invitations", token=dele).json()
    assert listed == {"items": [], "nextCursor": None}


def test_an_expired_invitation_link_offers_a_new_one(short_invite_stack: LocalStackInfo, page: Page) -> None:
    stack = short_invite_stack
    dele = stack.login(INVITE_USERS["dele"].email, INVITE_USERS["dele"].password)
    email = "exa.expired@invite.example"
    body = {"email": email, "firstName": "Exa", "lastName": "Expired", "roles": ["Buyer"]}
    assert stack.api("POST", "/accounts/hooli/invitations", token=dele, json=body).status == 202
    issued_by = time.time()  # the link was issued before the answer came back
    first = wait_for_link(stack, email, INVITED_SUBJECT, "/invitations/")
    time.sleep(max(0.0, issued_by + INVITE_SHORT_TTL + 0.5 - time.time()))
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
            "password": INVITE_PASSWORD,
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
    me = invite_stack.api("GET", "/me", token=invite_stack.login(email, INVITE_PASSWORD))
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
    dele = invite_stack.login(INVITE_USERS["dele"].email, INVITE_USERS["dele"].password)
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
    root = invite_stack.login(INVITE_USERS["root"].email, INVITE_USERS["root"].password)
    assert invite_stack.api("POST", "/users", token=root, json={**body, "roles": None}).status == 422
