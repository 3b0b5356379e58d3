"""create-user through lambda_handler, over moto, with fake Auth0/SES and an injected clock (SPEC 13)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Env, Response, add_cast, storefront_event
from usermgmt import container as container_module
from usermgmt.errors import IdpUnavailable
from usermgmt.models import User
from usermgmt.service.invitations import UnknownIdpUser, slot_of
from usermgmt.store import Invitation, PutInvitation

FN = "create-user"
LINK = re.compile(r"https://users\.example\.com/invitations/([A-Za-z0-9_-]+)")
INVITED_SUBJECT = "You are invited"
STRONG = "N3w-Secret!pass"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    return add_cast(env)


def invitations_to(env: Env, address: str) -> list[str]:
    return [LINK.findall(e.text)[0] for e in env.mailer.to(address) if e.subject == INVITED_SUBJECT]


def create(env: Env, admin: User, body: dict[str, Any]) -> Response:
    return env.call(FN, "POST", "/users", as_user=admin, body=body)


def invite(env: Env, caller: User, account: str, email: str, roles: list[str] | None = None) -> Response:
    body = {"email": email, "firstName": "Nina", "lastName": "New", "roles": roles or ["Buyer"]}
    return env.call(FN, "POST", f"/accounts/{account}/invitations", as_user=caller, body=body)


def link_get(env: Env, token: str, *, html: bool = False) -> Response:
    return env.call(FN, "GET", f"/invitations/{token}", headers=HTML if html else None)


def accept(env: Env, token: str, body: dict[str, Any] | None = None) -> Response:
    return env.call(FN, "POST", f"/invitations/{token}", body=body if body is not None else {})


def audit(env: Env, user_id: str) -> list[dict[str, Any]]:
    return env.store.audit_page(user_id, 100, None).items


# ------------------------------------------------------------------------------------------------ POST /users
def test_platform_admin_creates_an_invited_user_who_accepts_and_is_active(
    env: Env, people: dict[str, User]
) -> None:
    # Given a platform administrator
    admin = people["admin"]
    # When they create a user
    r = create(
        env,
        admin,
        {
            "email": "New.Hire@Acme.example",
            "firstName": "New",
            "lastName": "Hire",
            "memberships": [{"accountId": "acme", "roles": ["Buyer"]}],
        },
    )
    # Then the user is INVITED, unverified, at version 1, with Location and ETag
    assert r.status == 201, r
    user = r.json()
    assert (user["status"], user["emailVerified"], user["version"]) == ("INVITED", False, 1)
    assert user["email"] == "new.hire@acme.example"
    assert user["defaultAccountId"] == "acme"
    assert r.headers["location"] == "/users/" + quote(user["id"], safe="")
    assert r.headers["etag"] == '"1"'
    # and Auth0 has the user under the same id, unverified, synced inline
    idp_user = env.idp.users[user["id"]]
    assert idp_user.email == "new.hire@acme.example" and idp_user.email_verified is False
    assert user["id"] not in env.idp.passwords  # nobody knows its password
    assert user["idpSync"] == "synced"
    assert [e["action"] for e in audit(env, user["id"])] == ["user.created"]
    # and the person got a link to choose a password
    (token,) = invitations_to(env, "new.hire@acme.example")
    # When they open it: a set-password form, nothing changes
    before = env.scan()
    page = link_get(env, token, html=True)
    assert page.status == 200 and 'name="confirmPassword"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert link_get(env, token).json() == {
        "purpose": "invitation",
        "newUser": True,
        "accountId": None,
        "email": "n***@acme.example",
    }
    assert env.scan() == before
    # A weak password is 400 and the link stays usable
    weak = accept(env, token, {"newPassword": "weakpass"})
    assert weak.status == 400 and weak.json()["code"] == "password_too_weak"
    # A good one: ACTIVE, verified, the password is in Auth0
    done = accept(env, token, {"newPassword": STRONG})
    assert done.status == 200 and done.json() == {"result": "invitation_accepted"}
    after = env.user(user["id"])
    assert after is not None and (after.status, after.email_verified) == ("ACTIVE", True)
    assert env.idp.passwords[user["id"]] == STRONG
    assert env.idp.users[user["id"]].email_verified is True
    # and the link is spent
    again = accept(env, token, {"newPassword": STRONG})
    assert again.status == 410 and again.json()["code"] == "link_used"


def test_creation_answers(env: Env, people: dict[str, User]) -> None:
    admin, dana = people["admin"], people["dana"]
    body = {"email": "bob@acme.example", "firstName": "B", "lastName": "B"}
    taken = create(env, admin, body)
    assert taken.status == 409 and taken.json()["code"] == "email_taken"
    assert create(env, dana, {**body, "email": "x@acme.example"}).json()["code"] == "forbidden"
    unknown = create(env, admin, {**body, "email": "x@acme.example", "status": "ACTIVE"})
    assert unknown.status == 422 and unknown.json()["errors"][0]["field"] == "status"
    no_account = create(
        env,
        admin,
        {**body, "email": "x@acme.example", "memberships": [{"accountId": "nope", "roles": ["Buyer"]}]},
    )
    assert no_account.status == 422
    assert env.store.user_id_for_email("x@acme.example") is None
    assert env.mailer.sent == []


def test_a_retried_creation_never_makes_two_auth0_users(env: Env, people: dict[str, User]) -> None:
    # Given Auth0 creates the user but the answer is lost (a timeout)
    env.idp.fail_next(1, IdpUnavailable("timeout"), method="create_user", after_apply=True)
    r = create(env, people["admin"], {"email": "t@acme.example", "firstName": "T", "lastName": "T"})
    assert r.status == 201 and r.json()["idpSync"] == "pending"
    # When sync-identity retries
    env.clock.advance(120)
    env.run_sync()
    # Then there is one Auth0 user for the address, and the record says synced
    assert [u.user_id for u in env.idp.users.values() if u.email == "t@acme.example"] == [r.json()["id"]]
    assert len(env.idp.calls_to("create_user")) == 2
    user = env.user(r.json()["id"])
    assert user is not None and user.idp_sync == "synced"


# ------------------------------------------------------------------------------------------------ invitations
class CountingStore:
    """The store with every call counted by method name (what a request does in DynamoDB)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "transact":
                self.calls.append(f"items:{len(args[0])}")
            return attr(*args, **kwargs)

        return counted


def test_an_invitation_answers_the_same_whoever_holds_the_address(env: Env, people: dict[str, User]) -> None:
    """No enumeration: a new address, a user in the caller's account and a user elsewhere get the same
    status, body shape and headers, from the same store calls, one email and no Auth0 call."""
    counting = CountingStore(env.store)
    c = env.container
    env.container = container_module.Container(
        c.settings, store=counting, idp=env.idp, mailer=env.mailer, clock=env.clock
    )
    container_module.override(env.container)
    answers = []
    for address in ("nobody@new.example", "bob@acme.example", "gus@globex.example"):
        counting.calls.clear()
        env.idp.calls.clear()
        sent_before = len(env.mailer.sent)
        r = invite(env, people["dana"], "acme", address)
        answers.append((r, list(counting.calls), len(env.mailer.sent) - sent_before, list(env.idp.calls)))
    (first, calls, mails, idp_calls) = answers[0]
    assert first.status == 202
    for r, other_calls, other_mails, other_idp in answers[1:]:
        assert r.status == first.status
        assert r.headers == first.headers
        assert sorted(r.json()) == sorted(first.json()) == ["email", "expiresAt", "invitationId"]
        assert r.json()["expiresAt"] == first.json()["expiresAt"]
        assert other_calls == calls
        assert other_mails == mails == 1
        assert other_idp == idp_calls == []
    assert [a[0].json()["email"] for a in answers] == [
        "n***@new.example",
        "b***@acme.example",
        "g***@globex.example",
    ]


def test_invited_people_accept_new_and_existing(env: Env, people: dict[str, User]) -> None:
    dana, gus = people["dana"], people["gus"]
    new = invite(env, dana, "acme", "nina@new.example", ["Buyer", "Approver"])
    existing = invite(env, dana, "acme", "gus@globex.example", ["Buyer"])
    assert new.status == existing.status == 202
    # the new person exists at once, INVITED, in the account
    nina_id = env.store.user_id_for_email("nina@new.example")
    nina = env.user(nina_id)
    assert nina is not None and nina.status == "INVITED" and nina.default_account_id == "acme"
    assert [(m.account_id, m.roles) for m in nina.memberships] == [("acme", ("Buyer", "Approver"))]
    # Gus is not in acme until he accepts
    assert "acme" not in env.user(gus.id).account_ids  # type: ignore[union-attr]
    listed = env.call(FN, "GET", "/accounts/acme/invitations", as_user=dana).json()["items"]
    assert {i["invitationId"] for i in listed} == {
        new.json()["invitationId"],
        existing.json()["invitationId"],
    }
    assert {i["status"] for i in listed} == {"pending"}
    # Nina sets a password (created in Auth0 on the way if the sync has not yet)
    (nina_token,) = invitations_to(env, "nina@new.example")
    assert accept(env, nina_token, {"newPassword": STRONG}).status == 200
    nina = env.user(nina_id)
    assert nina is not None and nina.status == "ACTIVE" and nina.email_verified
    assert env.idp.passwords[nina_id] == STRONG
    # Gus sees an accept page, then gains the membership
    (gus_token,) = invitations_to(env, "gus@globex.example")
    info = link_get(env, gus_token).json()
    assert info["newUser"] is False and info["accountId"] == "acme"
    assert "Accept the invitation" in link_get(env, gus_token, html=True).text
    assert accept(env, gus_token).status == 200
    gus_now = env.user(gus.id)
    assert gus_now is not None and dict((m.account_id, m.roles) for m in gus_now.memberships) == {
        "globex": ("Buyer",),
        "acme": ("Buyer",),
    }
    assert gus_now.status == "ACTIVE" and env.idp.passwords[gus.id] == "Passw0rd!x"
    assert audit(env, gus.id)[0]["action"] == "user.invitation_accepted"
    assert env.call(FN, "GET", "/accounts/acme/invitations", as_user=dana).json()["items"] == []


def test_who_may_invite_and_list(env: Env, people: dict[str, User]) -> None:
    dana, bob, admin = people["dana"], people["bob"], people["admin"]
    assert invite(env, dana, "globex", "x@new.example").json()["code"] == "account_not_found"
    assert invite(env, bob, "acme", "x@new.example").status == 404
    assert invite(env, admin, "nope", "x@new.example").json()["code"] == "account_not_found"
    assert env.call(FN, "GET", "/accounts/globex/invitations", as_user=dana).status == 404
    assert invite(env, admin, "globex", "x@new.example").status == 202
    sent = invite(env, admin, "globex", "y@new.example").json()["invitationId"]
    assert (
        env.call(FN, "POST", f"/invitations/{sent}/resend", as_user=dana).json()["code"]
        == "invitation_not_found"
    )
    assert env.call(FN, "DELETE", f"/invitations/{sent}", as_user=dana).status == 404
    assert env.store.user_id_for_email("y@new.example") is not None  # nothing happened


def test_resend_revoke_expire_and_renew(env: Env, people: dict[str, User]) -> None:
    dana, gus = people["dana"], people["gus"]
    new_id = invite(env, dana, "acme", "nina@new.example").json()["invitationId"]
    gus_inv = invite(env, dana, "acme", "gus@globex.example").json()["invitationId"]
    # resend: a fresh link; the older one is superseded
    assert env.call(FN, "POST", f"/invitations/{new_id}/resend", as_user=dana).status == 202
    old, fresh = invitations_to(env, "nina@new.example")
    assert link_get(env, old).json()["code"] == "link_superseded"
    assert link_get(env, fresh).status == 200
    # expiry: 410 link_expired with a way to a new link; renew mails one
    env.clock.advance(env.container.settings.invite_link_ttl_seconds + 1)
    gone = link_get(env, fresh, html=True)
    assert gone.status == 410 and "Send a new link" in gone.text
    assert (
        env.call(FN, "GET", "/accounts/acme/invitations", as_user=dana).json()["items"][0]["status"]
        == "expired"
    )
    renewed = env.call(FN, "POST", f"/invitations/{fresh}/renew")
    assert renewed.status == 202 and renewed.json() == {"status": "accepted"}
    assert len(invitations_to(env, "nina@new.example")) == 3
    assert link_get(env, invitations_to(env, "nina@new.example")[-1]).status == 200
    # revoking the new person's invitation deletes the INVITED user it created
    nina_id = env.store.user_id_for_email("nina@new.example")
    assert env.call(FN, "DELETE", f"/invitations/{new_id}", as_user=dana).status == 204
    assert env.user(nina_id) is None and env.store.user_id_for_email("nina@new.example") is None
    # revoking Gus's invitation leaves Gus as he was; his link dies
    (gus_token,) = invitations_to(env, "gus@globex.example")
    assert env.call(FN, "DELETE", f"/invitations/{gus_inv}", as_user=dana).status == 204
    assert link_get(env, gus_token).json()["code"] == "link_invalid"
    assert env.user(gus.id) is not None
    assert env.call(FN, "DELETE", f"/invitations/{gus_inv}", as_user=dana).status == 404


def test_a_resend_to_an_address_ses_reported_is_409_and_changes_nothing(
    env: Env, people: dict[str, User]
) -> None:
    """SPEC 16: an administrator's or machine's resend is a route whose purpose is an email."""
    dana = people["dana"]
    nina_inv = invite(env, dana, "acme", "nina@new.example").json()["invitationId"]
    gus_inv = invite(env, dana, "acme", "gus@globex.example").json()["invitationId"]
    (nina_token,) = invitations_to(env, "nina@new.example")
    for address in ("nina@new.example", "gus@globex.example"):
        assert env.container.deliverability.record("bounced", (address,), f"ses-{address}") == 1
    env.configure(machine_client_ids="ops")
    machine = {"gty": "client-credentials", "scope": "create:users", "azp": "ops"}
    before, sent = env.scan(), len(env.mailer.sent)
    callers = ((nina_inv, dana, None), (gus_inv, dana, None), (nina_inv, "ops@clients", machine))
    for inv, caller, claims in callers:
        r = env.call(FN, "POST", f"/invitations/{inv}/resend", as_user=caller, claims=claims)
        assert r.status == 409 and r.json()["code"] == "email_undeliverable", r
    # nothing changed: no new link, no audit entry, no email; the link sent before still works
    assert env.scan() == before and len(env.mailer.sent) == sent
    assert link_get(env, nina_token).status == 200
    # the public renew of an expired link keeps its generic answer and issues and sends nothing either
    # (it takes the address's slot of the renew limit, as for any address)
    env.clock.advance(env.container.settings.invite_link_ttl_seconds + 1)

    def kept() -> list[dict[str, Any]]:
        return [i for i in env.scan() if not i["pk"]["S"].startswith("RATE#")]

    before = kept()
    renewed = env.call(FN, "POST", f"/invitations/{nina_token}/renew")
    assert renewed.status == 202 and renewed.json() == {"status": "accepted"}
    assert kept() == before and len(env.mailer.sent) == sent


def test_a_resend_answers_503_when_the_email_cannot_be_sent(env: Env, people: dict[str, User]) -> None:
    dana = people["dana"]
    inv = invite(env, dana, "acme", "nina@new.example").json()["invitationId"]
    (first,) = invitations_to(env, "nina@new.example")
    env.mailer.failing = True
    r = env.call(FN, "POST", f"/invitations/{inv}/resend", as_user=dana)
    assert r.status == 503 and r.json()["code"] == "dependency_unavailable" and "retry-after" in r.headers
    # the link nina already has still works: the one that never reached her did not end it (L22)
    assert link_get(env, first).status == 200
    env.mailer.failing = False
    assert env.call(FN, "POST", f"/invitations/{inv}/resend", as_user=dana).status == 202
    assert len(invitations_to(env, "nina@new.example")) == 2


def test_a_renew_whose_email_fails_is_retried_after_the_answer(env: Env, people: dict[str, User]) -> None:
    invite(env, people["dana"], "acme", "nina@new.example")
    (token,) = invitations_to(env, "nina@new.example")
    env.clock.advance(env.container.settings.invite_link_ttl_seconds + 1)
    env.mailer.failing = True
    r = env.call(FN, "POST", f"/invitations/{token}/renew")
    assert r.status == 202 and r.json() == {"status": "accepted"}
    # the queued request failed five times and waits in the dead-letter queue; re-driven, it is mailed
    assert len(env.public_queue.dead) == 1 and len(invitations_to(env, "nina@new.example")) == 1
    env.mailer.failing = False
    env.public_queue.messages, env.public_queue.dead = env.public_queue.dead, []
    env.drain_public()
    assert len(invitations_to(env, "nina@new.example")) == 2
    assert link_get(env, invitations_to(env, "nina@new.example")[-1]).status == 200


def many_invitations(
    env: Env, count: int, shown_if: Callable[[int], bool] = lambda n: n % 3 != 2
) -> list[str]:
    """``count`` invitations into acme written through the store (cheap), oldest first; every tenth has
    a deleted user, and those not ``shown_if`` a user whose link for them ended (suspended): neither is
    listed. Returns the ids the list shows, in order."""
    nina = env.add_user("nina@new.example", first="Nina", memberships={"acme": ["Buyer"]}, status="INVITED")
    now = int(env.clock.now())
    ops, slots, shown = [], {}, []
    for n in range(count):
        inv = Invitation(
            id=f"acme~{now - count + n:010d}{n:032x}",
            account_id="acme",
            user_id="auth0|deleted" if n % 10 == 9 else nina.id,
            roles=("Buyer",),
            created_at=now - count + n,
            expires_at=now + 3600,
            token_hash=f"{n:064x}",
            invited_by="auth0|someone",
        )
        ops.append(PutInvitation(inv, ttl=now + 86400))
        if n % 10 != 9 and shown_if(n):
            slots[slot_of(inv.id)] = inv.token_hash
            shown.append(inv.id)
    for i in range(0, len(ops), 25):
        env.store.transact(ops[i : i + 25])
    env.store.put_user(nina.evolve(links=slots))
    return shown


def walk(env: Env, caller: User, query: dict[str, str]) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        q = {**query, **({"cursor": cursor} if cursor else {})}
        r = env.call(FN, "GET", "/accounts/acme/invitations", as_user=caller, query=q)
        assert r.status == 200, r
        pages.append(r.json())
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the walk never ends"


def test_the_invitations_list_pages_past_100_and_leaves_out_ended_ones(
    env: Env, people: dict[str, User]
) -> None:
    shown = many_invitations(env, 260)
    assert len(shown) > 150
    for query, size in (({}, 50), ({"limit": "100"}, 100), ({"limit": "7"}, 7)):
        pages = walk(env, people["dana"], query)
        listed = [i["invitationId"] for p in pages for i in p["items"]]
        assert listed == shown  # each once, oldest first, the hidden ones left out
        assert all(len(p["items"]) == size for p in pages[:-1]) and 0 < len(pages[-1]["items"]) <= size
    first = env.call(FN, "GET", "/accounts/acme/invitations", as_user=people["dana"]).json()["items"][0]
    assert first == {
        "invitationId": shown[0],
        "accountId": "acme",
        "email": "n***@new.example",
        "roles": ["Buyer"],
        "createdAt": first["createdAt"],
        "expiresAt": first["expiresAt"],
        "status": "pending",
    }
    assert "tokenHash" not in str(first) and "0" * 60 not in str(first)


def test_an_invitations_page_that_reads_only_hidden_ones_is_short_and_the_walk_goes_on(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = many_invitations(env, 120, lambda n: n in (0, 1, 118))
    monkeypatch.setattr("usermgmt.service.invitations.READ_BUDGET", 30)  # reads of 25 per call: 2
    pages = walk(env, people["admin"], {"limit": "2"})
    assert [i["invitationId"] for p in pages for i in p["items"]] == shown
    # 0-1 fill the first page; 2-51 and 52-101 are read by two calls that find nothing to show
    assert [len(p["items"]) for p in pages] == [2, 0, 0, 1]


def test_a_bad_invitations_cursor_or_limit_is_400(env: Env, people: dict[str, User]) -> None:
    many_invitations(env, 30)
    dana, admin = people["dana"], people["admin"]

    def get(caller: User, account: str, query: dict[str, str]) -> Response:
        return env.call(FN, "GET", f"/accounts/{account}/invitations", as_user=caller, query=query)

    cursor = get(dana, "acme", {"limit": "2"}).json()["nextCursor"]
    assert cursor and get(dana, "acme", {"cursor": cursor}).status == 200
    env.store.put_account("globex", "Globex")
    for caller, account, bad in (
        (dana, "acme", "not-a-cursor"),
        (dana, "acme", cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")),  # tampered
        (admin, "acme", cursor),  # another caller's
        (admin, "globex", get(admin, "acme", {"limit": "2"}).json()["nextCursor"]),  # another account's
    ):
        r = get(caller, account, {"cursor": bad})
        assert r.status == 400 and r.json()["code"] == "invalid_cursor", r
    env.clock.advance(env.container.settings.list_cursor_ttl_seconds + 1)
    expired = get(dana, "acme", {"cursor": cursor})
    assert expired.status == 400 and expired.json()["code"] == "invalid_cursor"
    for limit in ("0", "101", "ten"):
        r = get(dana, "acme", {"limit": limit})
        assert r.status == 422 and r.json()["code"] == "validation_failed", r


# ------------------------------------------------------------------------------------ INVITED elsewhere
def test_invited_users_in_the_rest_of_the_lifecycle(env: Env, people: dict[str, User]) -> None:
    admin = people["admin"]
    created = create(env, admin, {"email": "i@acme.example", "firstName": "In", "lastName": "Vited"}).json()
    uid = created["id"]
    (first_link,) = invitations_to(env, "i@acme.example")
    # a password reset sends a fresh invitation instead
    reset = env.call("reset-password", "POST", f"/users/{quote(uid, safe='')}/password-reset", as_user=admin)
    assert reset.status == 202 and reset.json() == {"sentTo": "i***@acme.example"}
    assert len(invitations_to(env, "i@acme.example")) == 2
    assert link_get(env, first_link).json()["code"] == "link_superseded"
    public = env.call("reset-password", "POST", "/password-reset", body={"email": "i@acme.example"})
    assert public.status == 202 and len(invitations_to(env, "i@acme.example")) == 3
    # edits work
    patched = env.call(
        "update-user", "PATCH", f"/users/{quote(uid, safe='')}", as_user=admin, body={"firstName": "Ina"}
    )
    assert patched.status == 200 and patched.json()["status"] == "INVITED"
    # enable of an INVITED user changes nothing
    enabled = env.call("enable-user", "POST", f"/users/{quote(uid, safe='')}/enable", as_user=admin)
    assert enabled.status == 200 and enabled.json()["status"] == "INVITED"
    # suspend ends the links
    latest = invitations_to(env, "i@acme.example")[-1]
    suspended = env.call("suspend-user", "POST", f"/users/{quote(uid, safe='')}/suspend", as_user=admin)
    assert suspended.status == 200 and suspended.json()["status"] == "SUSPENDED"
    assert link_get(env, latest).json()["code"] == "link_invalid"
    # enabling gives the invitation state back (no password was ever set), not ACTIVE; the user is
    # unblocked in Auth0 like anyone enabled, and a reset sends a fresh invitation again
    enabled = env.call("enable-user", "POST", f"/users/{quote(uid, safe='')}/enable", as_user=admin)
    assert enabled.status == 200 and enabled.json()["status"] == "INVITED"
    assert env.user(uid).status == "INVITED" and env.idp.users[uid].blocked is False
    reset = env.call("reset-password", "POST", f"/users/{quote(uid, safe='')}/password-reset", as_user=admin)
    assert reset.status == 202 and len(invitations_to(env, "i@acme.example")) == 4
    # delete works
    deleted = env.call("delete-user", "DELETE", f"/users/{quote(uid, safe='')}", as_user=admin)
    assert deleted.status in (202, 204)
    assert env.user(uid) is None


def test_cleanup_keeps_an_invited_user_whose_invitations_expired(env: Env, people: dict[str, User]) -> None:
    invite(env, people["dana"], "acme", "late@new.example")
    uid = env.store.user_id_for_email("late@new.example")
    env.clock.advance(
        env.container.settings.invite_link_ttl_seconds + env.container.settings.cleanup_grace_seconds + 10
    )
    result = env.container.cleanup.run()
    assert result.links_deleted == 1
    user = env.user(uid)
    assert user is not None and user.status == "INVITED"
    read = env.call("update-user", "GET", f"/users/{quote(uid, safe='')}", as_user=people["admin"])
    assert read.json()["status"] == "INVITED"


# ------------------------------------------------------------------------------------------------ storefront
def test_storefront_sign_up_exists_once(env: Env, people: dict[str, User]) -> None:
    env.idp.add_user(
        "auth0|5f0c1aa0000000000000beef",
        "Shopper@Example.com",
        given_name="Sho",
        family_name="Pper",
        email_verified=False,
    )
    detail = {"userId": "auth0|5f0c1aa0000000000000beef"}
    for event_id in ("e-1", "e-1", "e-2"):
        assert env.send_event(FN, storefront_event("UserRegistered", detail, event_id)) == {
            "result": "accepted"
        }
    user = env.user("auth0|5f0c1aa0000000000000beef")
    assert user is not None
    assert (user.status, user.profile, user.memberships, user.email) == (
        "ACTIVE",
        "customer",
        (),
        "shopper@example.com",
    )
    assert (user.first_name, user.last_name, user.email_verified, user.version) == ("Sho", "Pper", False, 1)
    assert [e["actor"] for e in audit(env, user.id)] == ["storefront"]
    me = env.call("update-user", "GET", "/me", as_user=user)
    assert me.status == 200 and me.json()["status"] == "ACTIVE"


def test_storefront_sign_up_of_an_id_auth0_does_not_know_fails(env: Env, people: dict[str, User]) -> None:
    with pytest.raises(UnknownIdpUser):
        env.send_event(FN, storefront_event("UserRegistered", {"userId": "auth0|nobody"}, "e-9"))
    assert env.user("auth0|nobody") is None


def test_an_invitation_into_an_account_id_no_invitation_can_carry_is_404(env: Env) -> None:
    """An account id an invitation's id cannot hold (conformance found a 500): no such account."""
    admin = env.add_user("ada.odd@example.com", profile="administrator")
    body = {"email": "new@odd.example", "firstName": "N", "lastName": "P", "roles": ["Buyer"]}
    for account in ("a~b", "ç", "x" * 250):
        r = env.call(FN, "POST", f"/accounts/{account}/invitations", as_user=admin, body=body)
        assert r.status == 404 and r.json()["code"] == "account_not_found", (account, r)


# ------------------------------------------------------------------------------------ Idempotency-Key
def create_keyed(env: Env, admin: User, body: dict[str, Any], key: str) -> Response:
    return env.call(FN, "POST", "/users", as_user=admin, body=body, headers={"Idempotency-Key": key})


def test_a_retried_create_with_its_key_answers_the_same_user(env: Env, people: dict[str, User]) -> None:
    admin = people["admin"]
    body = {"email": "kim@new.example", "firstName": "Kim", "lastName": "Keyed"}
    first = create_keyed(env, admin, body, "script-run-1")
    again = create_keyed(env, admin, body, "script-run-1")
    assert first.status == again.status == 201
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert len(invitations_to(env, "kim@new.example")) == 1  # nothing created or sent twice
    assert len(audit(env, first.json()["id"])) == 1
    # the same key with another body: refused, nothing created
    other = create_keyed(env, admin, {**body, "email": "kit@new.example"}, "script-run-1")
    assert other.status == 409 and other.json()["code"] == "idempotency_key_reused"
    assert env.store.user_id_for_email("kit@new.example") is None
    # without a key a retry is a new request, as before
    assert create(env, admin, body).json()["code"] == "email_taken"
    # another caller's key is theirs alone
    assert create_keyed(env, people["carol"], body, "script-run-1").status in (403, 404)
    # a key answers for a day; then it is free, and the request is a new one
    env.clock.advance(86400 + 1)
    late = create_keyed(env, admin, body, "script-run-1")
    assert late.status == 409 and late.json()["code"] == "email_taken"


def test_two_creates_with_one_key_at_once_make_one_user(env: Env, people: dict[str, User]) -> None:
    admin = people["admin"]
    body = {"email": "duo@new.example", "firstName": "Duo", "lastName": "Racer"}
    store = env.store
    original = store.transact
    answers: list[Response] = []
    fired: list[bool] = []

    def transact(ops: Any, *args: Any, **kwargs: Any) -> None:
        if not fired:  # the duplicate commits first, between this request's checks and its commit
            fired.append(True)
            answers.append(create_keyed(env, admin, body, "same-moment"))
        original(ops, *args, **kwargs)

    store.transact = transact  # type: ignore[method-assign]
    first = create_keyed(env, admin, body, "same-moment")
    store.transact = original  # type: ignore[method-assign]
    assert answers[0].status == first.status == 201, (answers[0], first)
    assert answers[0].json()["id"] == first.json()["id"]
    assert len(invitations_to(env, "duo@new.example")) == 1


def test_a_bad_idempotency_key_is_422(env: Env, people: dict[str, User]) -> None:
    body = {"email": "bad@new.example", "firstName": "B", "lastName": "Key"}
    r = create_keyed(env, people["admin"], body, "x" * 256)
    assert r.status == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
    assert env.store.user_id_for_email("bad@new.example") is None


def test_a_retried_invitation_with_its_key_answers_the_same_invitation(
    env: Env, people: dict[str, User]
) -> None:
    dana = people["dana"]
    body = {"email": "ivy@new.example", "firstName": "Ivy", "lastName": "Invited", "roles": ["Buyer"]}

    def invite_keyed(payload: dict[str, Any], key: str, account: str = "acme") -> Response:
        path = f"/accounts/{account}/invitations"
        return env.call(FN, "POST", path, as_user=dana, body=payload, headers={"Idempotency-Key": key})

    first = invite_keyed(body, "inv-1")
    again = invite_keyed(body, "inv-1")
    assert first.status == again.status == 202 and again.json() == first.json()
    assert len(invitations_to(env, "ivy@new.example")) == 1  # one invitation, one email
    listed = env.call(FN, "GET", "/accounts/acme/invitations", as_user=dana).json()["items"]
    assert [i["invitationId"] for i in listed] == [first.json()["invitationId"]]
    other = invite_keyed({**body, "roles": ["Administrator"]}, "inv-1")
    assert other.status == 409 and other.json()["code"] == "idempotency_key_reused"
    # revoked since: the retry does not invite again, it says the invitation is gone
    invitation = first.json()["invitationId"]
    assert env.call(FN, "DELETE", f"/invitations/{invitation}", as_user=dana).status == 204
    assert invite_keyed(body, "inv-1").json()["code"] == "invitation_not_found"
    assert len(invitations_to(env, "ivy@new.example")) == 1
