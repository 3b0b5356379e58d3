"""verify-email end to end through lambda_handler, over moto, with fake Auth0/SES and an injected clock."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from tests.conftest import Env, Response
from tests.conftest import storefront_event as make_storefront_event
from usermgmt.errors import IdpUnavailable
from usermgmt.events import MalformedEvent
from usermgmt.links import hash_token
from usermgmt.models import User
from usermgmt.service.verification import VerificationNotSent
from usermgmt.store import ClaimEmail, ReleaseEmail, UseLink

FN = "verify-email"
HTML = {"Accept": "text/html"}
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
VERIFY_LINK = re.compile(r"/email-verification/([A-Za-z0-9_-]{20,})")
CANCEL_LINK = re.compile(r"/email-change/([A-Za-z0-9_-]{20,})/cancel")
NEW = "rob@new.example"


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    people = {
        "admin": env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator"),
        "dana": env.add_user(
            "dana@acme.example", first="Dana", last="Delegate", memberships={"acme": ["Administrator"]}
        ),
        "bob": env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]}),
        "carol": env.add_user(
            "carol@acme.example", first="Carol", last="Cart", memberships={"acme": ["Buyer"]}
        ),
        "gus": env.add_user(
            "gus@globex.example", first="Gus", last="Globex", memberships={"globex": ["Buyer"]}
        ),
        "sue": env.add_user(
            "sue@acme.example",
            first="Sue",
            last="Suspended",
            memberships={"acme": ["Buyer"]},
            status="SUSPENDED",
        ),
    }
    uma = env.add_user("uma@acme.example", first="Uma", last="Unverified", memberships={"acme": ["Buyer"]})
    people["uma"] = unverify(env, uma)
    return people


def unverify(env: Env, user: User) -> User:
    user = user.evolve(email_verified=False)
    env.store.put_user(user)
    env.idp.users[user.id] = dataclasses.replace(env.idp.users[user.id], email_verified=False)
    return user


def path_id(user: User) -> str:
    return user.id.replace("|", "%7C")


def token_in(env: Env, address: str, pattern: re.Pattern[str]) -> str:
    """The token of the newest link of that kind sent to ``address``."""
    for email in reversed(env.mailer.to(address)):
        match = pattern.search(email.text)
        if match:
            return match.group(1)
    raise AssertionError(f"no such link was sent to {address}")


def start_change(env: Env, user: User, new: str = NEW) -> tuple[str, str]:
    """PATCH /me email: the verify link (to the new address) and the cancel link (to the old one)."""
    r = env.call("update-user", "PATCH", "/me", as_user=user, body={"email": new})
    assert r.status == 200 and r.json()["pendingEmail"] == new, r
    return token_in(env, new, VERIFY_LINK), token_in(env, user.email, CANCEL_LINK)


def confirm(env: Env, token: str, **kwargs: Any) -> Response:
    return env.call(FN, "POST", f"/email-verification/{token}", **kwargs)


def audit(env: Env, user: User) -> list[dict[str, Any]]:
    return env.store.audit_page(user.id, 100, None).items


def assert_link_headers(r: Response) -> None:
    assert r.headers["cache-control"] == "no-store", r
    assert r.headers["referrer-policy"] == "no-referrer", r


def storefront_event(detail: Any, event_id: str = "0f3c1a2e-0000-4000-8000-0000000000aa") -> dict[str, Any]:
    return make_storefront_event("VerificationEmailRequested", detail, event_id)


def send_event(env: Env, event: dict[str, Any]) -> Any:
    return env.send_event(FN, event)


def use_settings(env: Env, **changes: Any) -> None:
    env.configure(**changes)


# ------------------------------------------------------------------------------------------------ confirm
def test_change_confirmed_end_to_end(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, cancel = start_change(env, bob)
    pending = env.user(bob.id)

    shown = env.call(FN, "GET", f"/email-verification/{verify}")
    assert shown.status == 200, shown
    assert shown.json() == {"purpose": "email_verification", "email": "r***@new.example"}
    assert env.user(bob.id) == pending  # the GET changed nothing

    r = confirm(env, verify)
    assert r.status == 200, r
    assert r.json() == {"result": "email_verified"}
    me = env.call("update-user", "GET", "/me", as_user=bob).json()
    assert me["email"] == NEW and me["emailVerified"] is True and me["pendingEmail"] is None
    assert me["idpSync"] == "synced" and me["version"] == pending.version + 1
    assert env.idp.users[bob.id].email == NEW and env.idp.users[bob.id].email_verified is True
    # uniqueness items follow the login email
    assert env.store.user_id_for_email(NEW) == bob.id
    assert env.store.user_id_for_email("bob@acme.example") is None
    # audited with the values, by the user through the link
    entry = audit(env, bob)[0]
    assert entry["action"] == "user.email_changed" and entry["actor"] == bob.id
    assert {"field": "email", "from": "bob@acme.example", "to": NEW} in entry["changes"]
    assert {"field": "pendingEmail", "from": NEW, "to": None} in entry["changes"]
    # a notice to the old address, without links
    (notice,) = [e for e in env.mailer.to("bob@acme.example") if "was changed" in e.subject]
    assert "r***@new.example" in notice.text and "http" not in notice.text
    # every outstanding link of the old address died
    assert env.user(bob.id).links == {}
    assert env.call(FN, "GET", f"/email-change/{cancel}/cancel").json()["code"] == "link_superseded"


def test_a_confirmed_change_kills_a_reset_link_sent_to_the_old_address(
    env: Env, people: dict[str, User]
) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    assert env.call("reset-password", "POST", "/me/password-reset", as_user=bob).status == 202
    reset = token_in(env, "bob@acme.example", re.compile(r"/password-reset/([A-Za-z0-9_-]{20,})"))
    assert env.call("reset-password", "GET", f"/password-reset/{reset}").status == 200
    assert confirm(env, verify).status == 200
    assert env.call("reset-password", "GET", f"/password-reset/{reset}").status == 410


def test_verifying_the_current_address_keeps_a_reset_link(env: Env, people: dict[str, User]) -> None:
    uma = people["uma"]
    assert env.call("reset-password", "POST", "/me/password-reset", as_user=uma).status == 202
    reset = token_in(env, "uma@acme.example", re.compile(r"/password-reset/([A-Za-z0-9_-]{20,})"))
    assert env.call(FN, "POST", "/me/verification-email", as_user=uma).status == 202
    assert confirm(env, token_in(env, "uma@acme.example", VERIFY_LINK)).status == 200
    assert env.call("reset-password", "GET", f"/password-reset/{reset}").status == 200


def test_a_confirmed_change_frees_the_old_address_for_others(env: Env, people: dict[str, User]) -> None:
    bob, carol = people["bob"], people["carol"]
    verify, _ = start_change(env, bob)
    assert confirm(env, verify).status == 200
    verify2, _ = start_change(env, carol, "bob@acme.example")
    assert confirm(env, verify2).status == 200
    assert env.store.user_id_for_email("bob@acme.example") == carol.id


def test_get_is_scanner_safe(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, cancel = start_change(env, bob)
    before, items, calls = env.user(bob.id), env.scan(), len(env.idp.calls)
    for headers in ({}, HTML, {"Accept": "*/*"}):
        assert env.call(FN, "GET", f"/email-verification/{verify}", headers=headers).status == 200
        assert env.call(FN, "GET", f"/email-change/{cancel}/cancel", headers=headers).status == 200
    assert env.user(bob.id) == before and env.scan() == items and len(env.idp.calls) == calls
    assert env.store.get_link(hash_token(verify)).status == "active"
    assert confirm(env, verify).status == 200  # still usable after any number of GETs


def test_pages_for_browsers(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    page = env.call(FN, "GET", f"/email-verification/{verify}", headers=HTML)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and f'action="{verify}"' in page.text
    assert "r***@new.example" in page.text and NEW not in page.text
    assert (
        page.headers["x-frame-options"] == "DENY"
        and "default-src 'none'" in page.headers["content-security-policy"]
    )
    done = confirm(env, verify, raw_body="", headers=FORM)
    assert done.status == 200 and done.headers["content-type"].startswith("text/html"), done
    assert "confirmed" in done.text
    assert env.user(bob.id).email == NEW


def test_verifies_an_unverified_current_address(env: Env, people: dict[str, User]) -> None:
    uma = people["uma"]
    r = env.call(FN, "POST", "/me/verification-email", as_user=uma)
    assert r.status == 202 and r.json() == {"sentTo": "u***@acme.example"}, r
    token = token_in(env, "uma@acme.example", VERIFY_LINK)
    assert env.call(FN, "GET", f"/email-verification/{token}").json()["email"] == "u***@acme.example"
    assert confirm(env, token).json() == {"result": "email_verified"}
    after = env.user(uma.id)
    assert after.email == "uma@acme.example" and after.email_verified is True and after.idp_sync == "synced"
    assert env.idp.users[uma.id].email_verified is True
    assert env.store.user_id_for_email("uma@acme.example") == uma.id
    entry = audit(env, uma)[0]
    assert entry["action"] == "user.email_verified"
    assert entry["changes"] == [{"field": "emailVerified", "from": False, "to": True}]
    assert not [e for e in env.mailer.sent if "was changed" in e.subject]


def test_used_twice_is_410_link_used(env: Env, people: dict[str, User]) -> None:
    verify, _ = start_change(env, people["bob"])
    assert confirm(env, verify).status == 200
    again = confirm(env, verify)
    assert again.status == 410 and again.json()["code"] == "link_used"
    assert again.headers["content-type"] == "application/problem+json"
    assert len(audit(env, people["bob"])) == 2  # the change request and one confirmation


def test_two_confirms_at_once_exactly_one_wins(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    store = env.store
    real = store.transact
    first: list[Response] = []

    def racing(ops: Any) -> None:
        if not first:  # the other submit commits between this one's checks and its commit
            first.append(Response({"statusCode": 0}))
            first[0] = confirm(env, verify)
        real(ops)

    monkeypatch.setattr(store, "transact", racing)
    loser = confirm(env, verify)
    assert first[0].status == 200
    assert loser.status == 410 and loser.json()["code"] == "link_used", loser
    assert [e["action"] for e in audit(env, bob)].count("user.email_changed") == 1
    assert len([e for e in env.mailer.sent if "was changed" in e.subject]) == 1


def test_the_link_is_consumed_in_the_same_transaction(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submit whose link is consumed by someone else right before its commit (record unchanged)
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    before = env.user(bob.id)
    store = env.store
    real = store.transact
    raced: list[bool] = []

    def racing(ops: Any) -> None:
        if not raced:
            raced.append(True)
            real([UseLink(hash_token(verify), int(env.clock.now()))])
        real(ops)

    monkeypatch.setattr(store, "transact", racing)
    r = confirm(env, verify)
    # Then the conditional consume refuses the whole transaction
    assert r.status == 410 and r.json()["code"] == "link_used"
    assert env.user(bob.id) == before and env.store.user_id_for_email(NEW) is None
    assert not env.idp.calls_to("update_user")


def test_address_taken_meanwhile_is_409_and_nothing_changes(env: Env, people: dict[str, User]) -> None:
    bob, carol = people["bob"], people["carol"]
    verify_bob, _ = start_change(env, bob)
    verify_carol, _ = start_change(env, carol)  # another user's pending address does not count
    assert confirm(env, verify_carol).status == 200
    before = env.user(bob.id)
    r = confirm(env, verify_bob)
    assert r.status == 409 and r.json()["code"] == "email_taken", r
    assert_link_headers(r)
    assert env.user(bob.id) == before
    assert env.store.user_id_for_email(NEW) == carol.id
    assert env.store.user_id_for_email("bob@acme.example") == bob.id
    assert env.store.get_link(hash_token(verify_bob)).status == "active"  # still usable
    assert env.idp.users[bob.id].email == "bob@acme.example"


def test_directly_occupied_address_is_409_and_the_link_stays_usable(
    env: Env, people: dict[str, User]
) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    env.store.transact([ClaimEmail(NEW, "auth0|someone-else")])
    before = env.user(bob.id)
    page = confirm(env, verify, raw_body="", headers=FORM)
    assert page.status == 409 and page.headers["content-type"].startswith("text/html")
    assert env.user(bob.id) == before
    env.store.transact([ReleaseEmail(NEW, "auth0|someone-else")])
    assert confirm(env, verify).status == 200
    assert env.user(bob.id).email == NEW


def test_auth0_down_during_confirm_is_synced_later(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    env.idp.fail_next(1, IdpUnavailable("http 503"))
    r = confirm(env, verify)
    assert r.status == 200 and r.json() == {"result": "email_verified"}
    stored = env.user(bob.id)
    assert stored.email == NEW and stored.idp_sync == "pending"
    assert env.idp.users[bob.id].email == "bob@acme.example"
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].email == NEW and env.idp.users[bob.id].email_verified is True
    assert env.user(bob.id).idp_sync == "synced"


# ------------------------------------------------------------------------------------------------ dead links
def test_expired_link_is_410_and_offers_renew_to_browsers(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    env.clock.advance(env.container.settings.verify_link_ttl_seconds + 1)
    before = env.user(bob.id)
    for method in ("GET", "POST"):
        r = env.call(FN, method, f"/email-verification/{verify}")
        assert r.status == 410 and r.json()["code"] == "link_expired", r
        page = env.call(FN, method, f"/email-verification/{verify}", headers=HTML)
        assert page.status == 410 and page.headers["content-type"].startswith("text/html")
        assert f'action="{verify}/renew"' in page.text
    assert env.user(bob.id) == before


def test_just_before_expiry_the_link_still_works(env: Env, people: dict[str, User]) -> None:
    verify, _ = start_change(env, people["bob"])
    env.clock.advance(env.container.settings.verify_link_ttl_seconds - 1)
    assert confirm(env, verify).status == 200


def test_superseded_link_is_410_without_renew(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    first, _ = start_change(env, bob, "first@new.example")
    second, _ = start_change(env, bob, "second@new.example")
    r = confirm(env, first)
    assert r.status == 410 and r.json()["code"] == "link_superseded"
    page = env.call(FN, "GET", f"/email-verification/{first}", headers=HTML)
    assert page.status == 410 and "/renew" not in page.text
    assert confirm(env, second).status == 200
    assert env.user(bob.id).email == "second@new.example"


def test_cancel_ends_the_change(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, cancel = start_change(env, bob)
    shown = env.call(FN, "GET", f"/email-change/{cancel}/cancel")
    assert shown.json() == {"purpose": "email_change_cancel", "email": "r***@new.example"}
    page = env.call(FN, "GET", f"/email-change/{cancel}/cancel", headers=HTML)
    assert '<form method="post" action="cancel">' in page.text
    r = env.call(FN, "POST", f"/email-change/{cancel}/cancel")
    assert r.status == 200 and r.json() == {"result": "email_change_cancelled"}, r
    after = env.user(bob.id)
    assert after.pending_email is None and after.email == "bob@acme.example" and after.email_verified
    assert "verify" not in after.links and "cancel" not in after.links
    entry = audit(env, bob)[0]
    assert entry["action"] == "user.email_change_cancelled" and entry["actor"] == bob.id
    assert entry["changes"] == [{"field": "pendingEmail", "from": NEW, "to": None}]
    assert confirm(env, verify).json()["code"] == "link_superseded"
    again = env.call(FN, "POST", f"/email-change/{cancel}/cancel")
    assert again.status == 410 and again.json()["code"] == "link_used"
    assert not env.idp.calls_to("update_user")


def test_cancel_page_for_browsers(env: Env, people: dict[str, User]) -> None:
    _, cancel = start_change(env, people["bob"])
    page = env.call(FN, "POST", f"/email-change/{cancel}/cancel", raw_body="", headers=FORM)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "cancelled" in page.text
    assert env.user(people["bob"].id).pending_email is None


def test_link_of_a_suspended_user_is_410(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, cancel = start_change(env, bob)
    env.store.put_user(env.user(bob.id).evolve(status="SUSPENDED"))  # links kept: the status alone refuses
    before = env.user(bob.id)
    for method in ("GET", "POST"):
        r = env.call(FN, method, f"/email-verification/{verify}")
        assert r.status == 410 and r.json()["code"] == "link_invalid"
        r = env.call(FN, method, f"/email-change/{cancel}/cancel")
        assert r.status == 410 and r.json()["code"] == "link_invalid"
    assert env.user(bob.id) == before


def test_unknown_and_wrong_purpose_links_are_invalid(env: Env, people: dict[str, User]) -> None:
    verify, cancel = start_change(env, people["bob"])
    for path in (
        "/email-verification/" + "A" * 43,
        "/email-verification/short",
        f"/email-verification/{cancel}",  # a cancel token on the verify route
        f"/email-change/{verify}/cancel",
    ):
        for method in ("GET", "POST"):
            r = env.call(FN, method, path)
            assert r.status == 410 and r.json()["code"] == "link_invalid", (method, path, r)


def test_confirm_refuses_other_media_types_and_keeps_the_link(env: Env, people: dict[str, User]) -> None:
    verify, _ = start_change(env, people["bob"])
    r = confirm(env, verify, raw_body="hello", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and r.json()["code"] == "unsupported_media_type"
    assert_link_headers(r)
    assert confirm(env, verify, body={}).status == 200


# ------------------------------------------------------------------------------------------------ resend
def test_resend_for_me_goes_to_the_pending_address_and_supersedes(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    first, cancel = start_change(env, bob)
    r = env.call(FN, "POST", "/me/verification-email", as_user=bob)
    assert r.status == 202 and r.json() == {"sentTo": "r***@new.example"}, r
    assert r.headers["cache-control"] == "no-store"
    second = token_in(env, NEW, VERIFY_LINK)
    assert second != first
    assert len(env.mailer.to(NEW)) == 2 and len(env.mailer.to("bob@acme.example")) == 1  # no new notice
    assert confirm(env, first).json()["code"] == "link_superseded"
    assert env.call(FN, "GET", f"/email-change/{cancel}/cancel").status == 200  # the cancel link lives on
    entry = audit(env, bob)[0]
    assert entry["action"] == "user.verification_email_sent" and entry["actor"] == bob.id
    assert "http" not in json.dumps(entry) and second not in json.dumps(entry)
    assert confirm(env, second).status == 200


@pytest.mark.parametrize(
    ("caller", "target", "expected", "code"),
    [
        ("admin", "uma", 202, None),
        ("dana", "uma", 202, None),  # delegated administrator, target in their account
        ("dana", "gus", 404, "user_not_found"),  # outside their accounts
        ("bob", "uma", 404, "user_not_found"),  # administers nothing
        ("admin", "bob", 409, "nothing_to_verify"),
        ("admin", "sue", 409, "user_suspended"),
        ("admin", "auth0|nobody", 404, "user_not_found"),
    ],
)
def test_resend_by_administrators(
    env: Env, people: dict[str, User], caller: str, target: str, expected: int, code: str | None
) -> None:
    if target == "sue":  # something to verify, so only the suspension refuses
        unverify(env, people["sue"])
    who = people.get(target)
    path = f"/users/{path_id(who) if who else target}/verification-email"
    items = len(env.scan())
    r = env.call(FN, "POST", path, as_user=people[caller])
    assert r.status == expected, r
    if code is None:
        assert r.json() == {"sentTo": "u***@acme.example"}
        assert len(env.mailer.to("uma@acme.example")) == 1
        assert audit(env, people["uma"])[0]["actor"] == people[caller].id
    else:
        assert r.json()["code"] == code and r.headers["content-type"] == "application/problem+json"
        assert env.mailer.sent == [] and len(env.scan()) == items


def test_resend_answers_503_when_the_email_cannot_be_sent(env: Env, people: dict[str, User]) -> None:
    uma = people["uma"]
    assert env.call(FN, "POST", "/me/verification-email", as_user=uma).status == 202
    earlier = token_in(env, uma.email, VERIFY_LINK)
    env.mailer.failing = True
    r = env.call(FN, "POST", "/me/verification-email", as_user=uma)
    assert r.status == 503 and r.json()["code"] == "dependency_unavailable" and "retry-after" in r.headers
    # the link uma already has still works (L22)
    assert env.call(FN, "GET", f"/email-verification/{earlier}").status == 200


def test_resend_without_a_token_is_401(env: Env, people: dict[str, User]) -> None:
    r = env.call(FN, "POST", "/me/verification-email")
    assert r.status == 401 and r.json()["code"] == "unauthenticated"


def test_locked_policy_still_verifies_the_current_address(env: Env, people: dict[str, User]) -> None:
    use_settings(env, email_change_policy="locked")
    uma = people["uma"]
    locked = env.call("update-user", "PATCH", "/me", as_user=uma, body={"email": "other@acme.example"})
    assert locked.status == 409 and locked.json()["code"] == "email_immutable"
    assert env.call(FN, "POST", "/me/verification-email", as_user=uma).status == 202
    assert confirm(env, token_in(env, "uma@acme.example", VERIFY_LINK)).status == 200
    assert env.user(uma.id).email_verified is True


def test_locked_policy_refuses_to_confirm_a_change_started_before(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    use_settings(env, email_change_policy="locked")
    before = env.user(bob.id)
    r = confirm(env, verify)
    assert r.status == 409 and r.json()["code"] == "email_immutable"
    assert env.user(bob.id) == before


# ------------------------------------------------------------------------------------------------ renew
def test_renew_sends_a_fresh_link_for_an_expired_one(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    env.clock.advance(env.container.settings.verify_link_ttl_seconds + 1)
    r = env.call(FN, "POST", f"/email-verification/{verify}/renew")
    assert r.status == 202 and r.json() == {"status": "accepted"}, r
    assert_link_headers(r)
    fresh = token_in(env, NEW, VERIFY_LINK)
    assert fresh != verify and len(env.mailer.to(NEW)) == 2
    assert audit(env, bob)[0]["actor"] == bob.id  # the renewal is no change of the user (L1)
    assert confirm(env, fresh).status == 200
    assert env.user(bob.id).email == NEW


def test_renew_answers_the_same_whatever_happened(env: Env, people: dict[str, User]) -> None:
    bob, carol, uma = people["bob"], people["carol"], people["uma"]
    expired, _ = start_change(env, bob)
    valid, _ = start_change(env, carol)
    env.call(FN, "POST", "/me/verification-email", as_user=uma)
    used = token_in(env, "uma@acme.example", VERIFY_LINK)
    assert confirm(env, used).status == 200
    env.clock.advance(env.container.settings.verify_link_ttl_seconds + 1)
    valid2, _ = start_change(env, carol, "carol2@new.example")  # carol's first link: another address now
    sent_before = len(env.mailer.sent)
    answers = []
    for token in (expired, valid2, used, valid, "x" * 43, "bad"):
        r = env.call(FN, "POST", f"/email-verification/{token}/renew")
        answers.append((r.status, r.text, sorted(r.headers)))
    assert len(set(map(str, answers))) == 1 and answers[0][0] == 202
    # only the expired link of a change still waiting got a new one
    assert len(env.mailer.sent) == sent_before + 1 and env.mailer.sent[-1].to == NEW


def test_renew_page_for_browsers(env: Env, people: dict[str, User]) -> None:
    r = env.call(FN, "POST", "/email-verification/" + "x" * 43 + "/renew", raw_body="", headers=FORM)
    assert r.status == 202 and r.headers["content-type"].startswith("text/html")
    assert_link_headers(r)


def test_renew_of_a_suspended_user_sends_nothing(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    verify, _ = start_change(env, bob)
    env.clock.advance(env.container.settings.verify_link_ttl_seconds + 1)
    env.store.put_user(env.user(bob.id).evolve(status="SUSPENDED"))
    sent = len(env.mailer.sent)
    assert env.call(FN, "POST", f"/email-verification/{verify}/renew").status == 202
    assert len(env.mailer.sent) == sent


def test_renew_is_limited_per_source_ip(env: Env, people: dict[str, User]) -> None:
    use_settings(env, reset_limit_per_ip=2)
    path = "/email-verification/" + "x" * 43 + "/renew"
    assert env.call(FN, "POST", path, source_ip="198.51.100.7").status == 202
    assert env.call(FN, "POST", path, source_ip="198.51.100.7").status == 202
    r = env.call(FN, "POST", path, source_ip="198.51.100.7")
    assert r.status == 429 and r.json()["code"] == "rate_limited", r
    assert int(r.headers["retry-after"]) >= 1
    assert_link_headers(r)
    page = env.call(FN, "POST", path, source_ip="198.51.100.7", headers=HTML)
    assert page.status == 429 and page.headers["content-type"].startswith("text/html")
    assert "retry-after" in page.headers
    assert env.call(FN, "POST", path, source_ip="198.51.100.8").status == 202
    env.clock.advance(2 * env.container.settings.rate_limit_window_seconds)  # a sliding window
    assert env.call(FN, "POST", path, source_ip="198.51.100.7").status == 202
    assert not [i for i in env.scan() if "198.51.100.7" in json.dumps(i)]  # never stored in clear


# ------------------------------------------------------------------------------------------------ headers
def test_every_link_route_answer_carries_no_store_and_no_referrer(env: Env, people: dict[str, User]) -> None:
    verify, cancel = start_change(env, people["bob"])
    answers: list[Response] = []
    for headers in ({}, HTML):
        answers += [
            env.call(FN, "GET", f"/email-verification/{verify}", headers=headers),
            env.call(FN, "GET", f"/email-change/{cancel}/cancel", headers=headers),
            env.call(FN, "GET", "/email-verification/" + "x" * 43, headers=headers),
            env.call(FN, "POST", "/email-verification/" + "x" * 43, headers=headers),
            env.call(FN, "GET", "/email-change/" + "x" * 43 + "/cancel", headers=headers),
            env.call(FN, "POST", "/email-change/" + "x" * 43 + "/cancel", headers=headers),
            env.call(FN, "POST", "/email-verification/" + "x" * 43 + "/renew", headers=headers),
        ]
    answers.append(env.call(FN, "POST", f"/email-change/{cancel}/cancel"))
    answers.append(env.call(FN, "POST", f"/email-verification/{verify}", headers=HTML))
    answers.append(confirm(env, "y" * 43, raw_body="{", headers={"Content-Type": "application/json"}))
    assert {a.status for a in answers} >= {200, 202, 400, 410}
    for answer in answers:
        assert_link_headers(answer)
        if not answer.headers["content-type"].startswith("text/html"):  # a page posts to its own URL
            assert verify not in answer.text and cancel not in answer.text


# ------------------------------------------------------------------------------------------------ events
def test_event_by_user_id_sends_to_the_pending_address_once(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    start_change(env, bob)
    event = storefront_event({"userId": bob.id})
    assert send_event(env, event) == {"result": "accepted"}
    assert send_event(env, event) == {"result": "accepted"}  # EventBridge delivers at least once
    assert len(env.mailer.to(NEW)) == 2  # the change's link and one from the event
    entry = audit(env, bob)[0]  # the change's own entry: the storefront's request changed no version (L1)
    assert entry["action"] != "user.verification_email_sent" and entry["actor"] == bob.id
    send_event(env, storefront_event({"userId": bob.id}, "another-id"))
    assert len(env.mailer.to(NEW)) == 3
    assert confirm(env, token_in(env, NEW, VERIFY_LINK)).status == 200


def test_event_by_email_verifies_the_current_address(env: Env, people: dict[str, User]) -> None:
    assert send_event(env, storefront_event({"email": " Uma@Acme.example "})) == {"result": "accepted"}
    token = token_in(env, "uma@acme.example", VERIFY_LINK)
    assert confirm(env, token).status == 200
    assert env.user(people["uma"].id).email_verified is True


@pytest.mark.parametrize(
    "detail",
    [
        {"userId": "auth0|nobody"},
        {"email": "nobody@acme.example"},
        {"email": "bob@acme.example"},  # verified, nothing pending: nothing to verify
        {"email": "sue@acme.example"},  # suspended
        {"email": NEW},  # only a pending address: events name users by their login email
    ],
)
def test_event_with_nothing_to_do_does_nothing(
    env: Env, people: dict[str, User], detail: dict[str, Any]
) -> None:
    unverify(env, people["sue"])
    if detail.get("email") == NEW:
        start_change(env, people["carol"])
    items = [i for i in env.scan() if not i["pk"]["S"].startswith("idempotency#")]
    sent = len(env.mailer.sent)
    assert send_event(env, storefront_event(detail)) == {"result": "accepted"}
    assert len(env.mailer.sent) == sent
    assert [i for i in env.scan() if not i["pk"]["S"].startswith("idempotency#")] == items


def test_idempotency_records_hold_no_personal_data(env: Env, people: dict[str, User]) -> None:
    send_event(env, storefront_event({"email": "uma@acme.example"}, "evt-verify-1"))
    send_event(env, storefront_event({"userId": people["uma"].id}, "evt-verify-2"))
    records = [i for i in env.scan() if i["pk"]["S"].startswith("idempotency#")]
    assert len(records) == 2
    dump = json.dumps(records)
    assert "uma@acme.example" not in dump and people["uma"].id not in dump and "evt-verify" not in dump
    assert all("ttl" in r for r in records)


@pytest.mark.parametrize(
    "event",
    [
        storefront_event("uma@acme.example"),
        storefront_event(None),
        storefront_event([]),
        storefront_event({}),
        storefront_event({"other": "x"}),
        storefront_event({"userId": 7}),
        storefront_event({"userId": ""}),
        storefront_event({"userId": "auth0|x\n"}),
        storefront_event({"userId": None}),
        storefront_event({"email": 7}),
        storefront_event({"email": "not-an-address"}),
        storefront_event({"userId": "auth0|x", "email": "uma@acme.example"}),
        {**storefront_event({"email": "uma@acme.example"}), "id": ""},
        {k: v for k, v in storefront_event({"email": "uma@acme.example"}).items() if k != "id"},
        {**storefront_event({"email": "uma@acme.example"}), "detail-type": "PasswordResetRequested"},
    ],
)
def test_malformed_event_raises_and_writes_nothing(
    env: Env, people: dict[str, User], event: dict[str, Any]
) -> None:
    before = env.scan()
    with pytest.raises(MalformedEvent):
        send_event(env, event)
    with pytest.raises(MalformedEvent):  # a retry fails the same way: it ends in the DLQ once
        send_event(env, event)
    assert env.scan() == before and env.mailer.sent == []


def test_event_mail_failure_raises_and_the_retry_sends(env: Env, people: dict[str, User]) -> None:
    event = storefront_event({"email": "uma@acme.example"}, "retry-me")
    env.mailer.failing = True
    with pytest.raises(VerificationNotSent):
        send_event(env, event)
    env.mailer.failing = False
    assert send_event(env, event) == {"result": "accepted"}
    assert len(env.mailer.to("uma@acme.example")) == 1


def test_neither_http_nor_eventbridge_is_malformed(env: Env) -> None:
    with pytest.raises(MalformedEvent):
        send_event(env, {"hello": "world"})


# ------------------------------------------------------------------------------------------------ template
def test_template_wires_the_function() -> None:
    from local.template import load_template
    from tests.conftest import ROOT

    resources = load_template(ROOT / "template.yaml")["Resources"]
    fn = resources["VerifyEmailFunction"]
    props = fn["Properties"]
    assert fn["Metadata"] == resources["UpdateUserFunction"]["Metadata"]
    assert props["Handler"] == "verify_email.lambda_handler" and props["CodeUri"] == "functions/verify-email/"
    assert resources[props["LoggingConfig"]["LogGroup"]["Ref"]]["Type"] == "AWS::Logs::LogGroup"
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"]): e["Properties"]
        .get("Auth", {})
        .get("Authorizer")
        for e in props["Events"].values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {
        ("POST", "/users/{userId}/verification-email"): None,
        ("POST", "/me/verification-email"): None,
        ("GET", "/email-verification/{token}"): "NONE",
        ("POST", "/email-verification/{token}"): "NONE",
        ("POST", "/email-verification/{token}/renew"): "NONE",
        ("GET", "/email-change/{token}/cancel"): "NONE",
        ("POST", "/email-change/{token}/cancel"): "NONE",
    }
    (rule,) = [e["Properties"] for e in props["Events"].values() if e["Type"] == "EventBridgeRule"]
    assert rule["EventBusName"] == {"Ref": "StorefrontBusName"}
    assert rule["Pattern"] == {
        # one account's events only (security notes L19): StorefrontAccountId, or this stack's
        "account": [
            {"Fn::If": ["HasStorefrontAccount", {"Ref": "StorefrontAccountId"}, {"Ref": "AWS::AccountId"}]}
        ],
        "source": [{"Ref": "StorefrontSource"}],
        "detail-type": ["VerificationEmailRequested"],
    }
    assert rule["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600}
    dlq_arn = {"Fn::GetAtt": ["StorefrontEventsDlq", "Arn"]}
    assert rule["DeadLetterConfig"] == {"Arn": dlq_arn}
    assert props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS",
        "Destination": dlq_arn,
    }

    def statements(logical_id: str) -> list[dict[str, Any]]:
        return [s for p in resources[logical_id]["Properties"]["Policies"] for s in p["Statement"]]

    arn = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}"
    ses = {
        "Effect": "Allow",
        "Action": ["ses:SendEmail", "ses:SendRawEmail"],
        "Resource": [
            {"Fn::Sub": arn + ":identity/${SenderIdentity}"},
            {"Fn::Sub": arn + ":configuration-set/${SesConfigurationSet}"},
        ],
    }
    for logical_id in ("VerifyEmailFunction", "UpdateUserFunction"):
        assert ses in statements(logical_id), logical_id
    own = statements("VerifyEmailFunction")
    secret = [x for x in own if x.get("Action") == ["secretsmanager:GetSecretValue"]]
    # the ARN as given and with Secrets Manager's suffix (tests/unit/test_template.py checks the match)
    assert len(secret) == 1 and {"Ref": "Auth0ClientSecretArn"} in secret[0]["Resource"]
    assert all(s.get("Resource") != "*" for s in own)


def test_events_beyond_the_send_budget_send_nothing_and_fail_nothing(
    env: Env, people: dict[str, User]
) -> None:
    """Security notes H1: the storefront event is limited like the routes, silently."""
    bob = people["bob"]
    start_change(env, bob)
    for i in range(4):
        send_event(env, storefront_event({"userId": bob.id}, f"0f3c1a2e-0000-4000-8000-00000000010{i}"))
    assert len(env.mailer.to(NEW)) == 3  # the change's own email and two resends
