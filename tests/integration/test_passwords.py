"""reset-password end to end through lambda_handler, over moto, with fake Auth0/SES and an injected clock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env, Response, add_cast
from tests.conftest import storefront_event as make_storefront_event
from usermgmt.errors import IdpUnavailable
from usermgmt.events import MalformedEvent
from usermgmt.links import RESET, hash_token
from usermgmt.models import SUSPENDED, User
from usermgmt.ratelimit import RateLimiter, counter_digest
from usermgmt.service.passwords import DeliveryFailed, PasswordService

FN = "reset-password"
ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"https://users\.example\.com/password-reset/([A-Za-z0-9_-]+)")
RESET_SUBJECT = "Reset your password"
CHANGED_SUBJECT = "Your password was changed"
STRONG = "N3w-Secret!pass"
HTML = {"Accept": "text/html,application/xhtml+xml"}
FORM = {"content-type": "application/x-www-form-urlencoded", **HTML}


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    return {
        **add_cast(env),
        "sue": env.add_user(
            "sue@acme.example",
            first="Sue",
            last="Suspended",
            memberships={"acme": ["Buyer"]},
            status=SUSPENDED,
        ),
    }


# ----------------------------------------------------------------------------------------- helpers
def resets(env: Env, address: str) -> list[str]:
    """The tokens of the reset emails sent to ``address``, oldest first."""
    return [LINK.findall(e.text)[0] for e in env.mailer.to(address) if e.subject == RESET_SUBJECT]


def public(env: Env, body: Any = None, *, ip: str = "198.51.100.7", **kwargs: Any) -> Response:
    return env.call(FN, "POST", "/password-reset", body=body, source_ip=ip, **kwargs)


def submit(
    env: Env, token: str, password: str = STRONG, confirm: str | None = None, *, form: bool = False
) -> Response:
    if form:
        from urllib.parse import urlencode

        raw = urlencode(
            {"newPassword": password, "confirmPassword": password if confirm is None else confirm}
        )
        return env.call(FN, "POST", f"/password-reset/{token}", raw_body=raw, headers=FORM)
    body: dict[str, str] = {"newPassword": password}
    if confirm is not None:
        body["confirmPassword"] = confirm
    return env.call(FN, "POST", f"/password-reset/{token}", body=body)


def storefront_event(detail: Any, event_id: str = "7d0c3a4e-0000-4000-8000-000000000001") -> dict[str, Any]:
    return make_storefront_event("PasswordResetRequested", detail, event_id)


def send_event(env: Env, event: dict[str, Any]) -> Any:
    return env.send_event(FN, event)


def link_status(env: Env, token: str) -> str:
    link = env.store.get_link(hash_token(token))
    assert link is not None
    return link.status


def assert_link_headers(r: Response) -> None:
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"


# ----------------------------------------------------------------------------------- authorization
MATRIX = [
    # caller, route target (None: /me), expected status
    ("admin", "bob", 202),
    ("admin", "admin", 202),  # a platform administrator may reset their own through /users/{id}
    ("dana", "bob", 202),  # delegated administrator, target in one of their accounts
    ("dana", "carol", 202),  # target also in an account outside their scope: still in scope
    ("dana", "gus", 404),  # outside their accounts
    ("dana", "admin", 404),  # a platform administrator is never in a delegated scope
    ("bob", "carol", 404),  # administers nothing
    ("bob", "bob", 404),  # /users/{own id} applies administrator rules
    ("admin", "sue", 409),  # suspended target: no link ever
    ("dana", "sue", 409),
    ("admin", "auth0|nobody", 404),
    ("bob", None, 202),  # /me
    ("sue", None, 401),  # a suspended caller is refused
]


@pytest.mark.parametrize(("caller", "target", "expected"), MATRIX)
def test_authorization_matrix(
    env: Env, people: dict[str, User], caller: str, target: str | None, expected: int
) -> None:
    target_user = people.get(target) if target else people[caller]
    path = (
        "/me/password-reset"
        if target is None
        else f"/users/{(target_user.id if target_user else target)}/password-reset"
    )
    path = path.replace("|", "%7C")
    before = {u.id: env.user(u.id) for u in people.values()}
    r = env.call(FN, "POST", path, as_user=people[caller])
    assert r.status == expected, r
    assert_link_headers(r)
    if expected == 202:
        assert target_user is not None
        local, _, domain = target_user.email.partition("@")
        assert r.json() == {"sentTo": f"{local[0]}***@{domain}"}
        assert len(resets(env, target_user.email)) == 1
        assert "password-reset/" not in r.text and resets(env, target_user.email)[0] not in r.text
        assert env.user(target_user.id).links[RESET] == hash_token(resets(env, target_user.email)[0])
    else:
        assert r.headers["content-type"] == "application/problem+json"
        code = {404: "user_not_found", 409: "user_suspended", 401: "token_revoked"}[expected]
        assert r.json()["code"] == code
        assert env.mailer.sent == []
        assert {u.id: env.user(u.id) for u in people.values()} == before


def test_unauthenticated_admin_route_is_401(env: Env, people: dict[str, User]) -> None:
    r = env.call(FN, "POST", f"/users/{people['bob'].id}/password-reset")
    assert r.status == 401 and r.json()["code"] == "unauthenticated"
    assert env.mailer.sent == []


def test_admin_reset_is_audited_without_link_or_token(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    assert env.call(FN, "POST", f"/users/{bob.id}/password-reset", as_user=people["admin"]).status == 202
    token = resets(env, bob.email)[0]
    audit = env.call("update-user", "GET", f"/users/{bob.id}/audit", as_user=people["admin"])
    assert audit.status == 200, audit
    entry = audit.json()["items"][0]
    assert entry["action"] == "user.password_reset_requested" and entry["actor"] == people["admin"].id
    assert (
        token not in audit.text
        and hash_token(token) not in audit.text
        and "password-reset/" not in audit.text
    )
    # the request changed nothing about the account but the link
    after = env.user(bob.id)
    assert after.status == "ACTIVE" and after.tokens_valid_after == bob.tokens_valid_after
    assert env.idp.calls_to("set_password") == [] and env.idp.calls_to("update_user") == []


def test_admin_route_answers_503_when_the_email_cannot_be_sent(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    assert env.call(FN, "POST", "/me/password-reset", as_user=bob).status == 202
    (earlier,) = resets(env, bob.email)
    env.mailer.failing = True
    for r in (
        env.call(FN, "POST", "/me/password-reset", as_user=bob),
        env.call(FN, "POST", f"/users/{bob.id}/password-reset", as_user=people["admin"]),
    ):
        assert r.status == 503 and r.json()["code"] == "dependency_unavailable" and "retry-after" in r.headers
    # the link bob already has still works: the ones that never reached him did not end it (L22)
    assert env.call(FN, "GET", f"/password-reset/{earlier}").status == 200


# ------------------------------------------------------------------------------------ public route
def _fingerprint(r: Response) -> tuple[int, str, list[str], dict[str, str]]:
    return r.status, r.text, sorted(r.headers), r.headers


def test_public_route_answers_the_same_for_every_kind_of_address(env: Env, people: dict[str, User]) -> None:
    gone = env.add_user("gone@acme.example", first="Gone", memberships={"acme": ["Buyer"]})
    # a deleted user: no record, no login-email reservation
    for key in (
        {"pk": {"S": f"USER#{gone.id}"}, "sk": {"S": "PROFILE"}},
        {"pk": {"S": f"EMAIL#{gone.email}"}, "sk": {"S": "EMAIL"}},
    ):
        env.dynamodb.delete_item(TableName=env.store._table, Key=key)
    answers = {
        "known": public(env, {"email": "Bob@ACME.example "}),
        "unknown": public(env, {"email": "nobody@acme.example"}),
        "suspended": public(env, {"email": "sue@acme.example"}),
        "deleted": public(env, {"email": "gone@acme.example"}),
        "invalid": public(env, {"email": "not an email"}),
        "not a string": public(env, {"email": ["bob@acme.example"]}),
        "no email": public(env, {}),
        "an array": public(env, ["bob@acme.example"]),
        "null": public(env, raw_body="null", headers={"content-type": "application/json"}),
    }
    expected = _fingerprint(answers["known"])
    assert expected[0] == 202 and json.loads(expected[1]) == {"status": "accepted"}
    for name, r in answers.items():
        assert _fingerprint(r) == expected, name
    assert_link_headers(answers["known"])
    assert [e.to for e in env.mailer.sent] == ["bob@acme.example"]


def test_public_route_request_errors_are_about_the_request(env: Env, people: dict[str, User]) -> None:
    r = public(env, raw_body="email=bob@acme.example", headers={"content-type": "text/plain"})
    assert r.status == 415 and r.json()["code"] == "unsupported_media_type"
    r = public(env, raw_body="{not json", headers={"content-type": "application/json"})
    assert r.status == 400 and r.json()["code"] == "invalid_json"
    r = public(
        env, raw_body=json.dumps({"email": "x" * 20_000}), headers={"content-type": "application/json"}
    )
    assert r.status == 413 and r.json()["code"] == "payload_too_large"
    assert env.mailer.sent == []


def test_public_route_degrades_gracefully_when_mail_fails(env: Env, people: dict[str, User]) -> None:
    reference = public(env, {"email": "nobody@acme.example"})
    env.mailer.failing = True
    r = public(env, {"email": "bob@acme.example"})
    assert _fingerprint(r) == _fingerprint(reference)
    # after the answer the request was tried five times, then dead-lettered; re-driven, it is mailed
    assert len(env.public_queue.dead) == 1 and resets(env, "bob@acme.example") == []
    env.mailer.failing = False
    env.public_queue.messages, env.public_queue.dead = env.public_queue.dead, []
    env.drain_public()
    assert len(resets(env, "bob@acme.example")) == 1


def test_per_address_limit_counts_every_anonymous_entry_point(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    send_event(env, storefront_event({"email": bob.email}, "e-1"))
    answers = [public(env, {"email": bob.email}) for _ in range(4)]
    assert len(resets(env, bob.email)) == 5
    assert {_fingerprint(r)[1] for r in answers} == {'{"status":"accepted"}'}
    # the 6th in the window: the same 202 and nothing sent
    sixth = public(env, {"email": bob.email})
    assert _fingerprint(sixth) == _fingerprint(answers[0])
    send_event(env, storefront_event({"email": bob.email}, "e-2"))
    assert len(resets(env, bob.email)) == 5
    # a sliding window: an hour later half of the last hour's hits still count; two hours later none
    env.clock.advance(7200)
    assert public(env, {"email": bob.email}).status == 202
    assert len(resets(env, bob.email)) == 6


def test_anonymous_requests_cannot_lock_a_person_out_of_their_own_reset(
    env: Env, people: dict[str, User]
) -> None:
    """Security notes L4: administrators and the user have a budget anonymous requests cannot spend."""
    bob = people["bob"]
    answers = [public(env, {"email": bob.email}) for _ in range(6)]
    assert all(_fingerprint(r) == _fingerprint(answers[0]) for r in answers)
    assert len(resets(env, bob.email)) == 5
    assert env.call(FN, "POST", "/me/password-reset", as_user=bob).status == 202
    r = env.call(FN, "POST", f"/users/{bob.id}/password-reset", as_user=people["admin"])
    assert r.status == 202, r
    assert len(resets(env, bob.email)) == 7


def test_the_authenticated_budget_answers_429_with_retry_after(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    for _ in range(3):
        assert env.call(FN, "POST", "/me/password-reset", as_user=bob).status == 202
    for _ in range(2):
        assert env.call(FN, "POST", f"/users/{bob.id}/password-reset", as_user=people["admin"]).status == 202
    for r in (
        env.call(FN, "POST", f"/users/{bob.id}/password-reset", as_user=people["admin"]),
        env.call(FN, "POST", "/me/password-reset", as_user=bob),
    ):
        assert r.status == 429 and r.json()["code"] == "rate_limited", r
        assert 1 <= int(r.headers["retry-after"]) <= 7200
    assert len(resets(env, bob.email)) == 5
    # another address is not affected; the anonymous budget is not spent by these
    assert env.call(FN, "POST", "/me/password-reset", as_user=people["carol"]).status == 202
    assert public(env, {"email": bob.email}).status == 202
    assert len(resets(env, bob.email)) == 6
    env.clock.advance(7200)
    assert env.call(FN, "POST", "/me/password-reset", as_user=bob).status == 202


def test_per_ip_limit_counts_an_ipv6_client_by_its_64(env: Env, people: dict[str, User]) -> None:
    # one subscriber holds a whole /64 and can pick a new address for every request
    for i in range(30):
        assert public(env, {"email": f"nobody{i}@acme.example"}, ip=f"2001:db8:1:2::{i + 1:x}").status == 202
    r = public(env, {"email": "bob@acme.example"}, ip="2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert r.status == 429 and r.json()["code"] == "rate_limited"
    # the next /64 is someone else; an IPv4 client written as IPv6 is that IPv4 client
    assert public(env, {"email": "bob@acme.example"}, ip="2001:db8:1:3::1").status == 202
    for i in range(30):
        assert public(env, {"email": f"v4{i}@acme.example"}, ip="192.0.2.80").status == 202
    assert public(env, {"email": "bob@acme.example"}, ip="::ffff:192.0.2.80").status == 429


def test_per_ip_limit_across_public_and_renew(env: Env, people: dict[str, User]) -> None:
    ip = "192.0.2.44"
    for i in range(29):
        assert public(env, {"email": f"nobody{i}@acme.example"}, ip=ip).status == 202
    assert env.call(FN, "POST", "/password-reset/" + "a" * 43 + "/renew", source_ip=ip).status == 202
    r = public(env, {"email": "bob@acme.example"}, ip=ip)
    assert r.status == 429 and r.json()["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 7200
    assert_link_headers(r)
    r = env.call(FN, "POST", "/password-reset/" + "a" * 43 + "/renew", source_ip=ip, headers=HTML)
    assert (
        r.status == 429 and "retry-after" in r.headers and r.headers["content-type"].startswith("text/html")
    )
    assert env.mailer.sent == []
    # other addresses are not limited, and the (sliding) window moves on
    assert public(env, {"email": "bob@acme.example"}, ip="192.0.2.45").status == 202
    env.clock.advance(7200)
    assert public(env, {"email": "carol@example.com"}, ip=ip).status == 202


def test_rate_counters_never_store_the_raw_key(env: Env, people: dict[str, User]) -> None:
    public(env, {"email": "bob@acme.example"}, ip="192.0.2.99")
    counters = [i for i in env.scan() if i["pk"]["S"].startswith("RATE#")]
    assert len(counters) == 2
    dump = json.dumps(counters)
    assert "bob@acme.example" not in dump and "192.0.2.99" not in dump
    assert counter_digest("reset-address", "bob@acme.example") in dump
    assert all("ttl" in i for i in counters)


def test_rate_limiter_slides_its_window() -> None:
    class Counters:
        def __init__(self) -> None:
            self.hits: dict[str, int] = {}
            self.ttls: dict[str, int] = {}

        def incr_counter(self, counter_key: str, ttl: int) -> int:
            self.hits[counter_key] = self.hits.get(counter_key, 0) + 1
            self.ttls.setdefault(counter_key, ttl)
            return self.hits[counter_key]

        def read_counter(self, counter_key: str) -> int:
            return self.hits.get(counter_key, 0)

    store = Counters()
    limiter = RateLimiter(store, 60)
    assert limiter.take("s", "Key", 2, 1018)[0]  # window 960..1020
    assert limiter.take("s", "key ", 2, 1019)[0]  # the same key, normalised
    assert limiter.take("s", "key", 2, 1019.5) == (False, 41)  # 3 > 2; one more fits at 1060
    # a fixed window would allow two more right after the boundary; the sliding one counts the
    # previous window's 3 hits by the share of it still within the last 60 s
    assert limiter.take("s", "key", 2, 1021)[0] is False  # 3 * 59/60 + 1 > 2
    assert limiter.take("s", "key", 2, 1070)[0] is False  # 3 * 10/60 + 2 > 2
    assert limiter.take("s", "key", 2, 1140)[0]  # 2 * 0 + 1: the next window but one
    assert limiter.take("other", "key", 2, 1001)[0]  # scopes are apart
    assert set(store.ttls.values()) == {960 + 180, 1020 + 180, 1140 + 180}  # two windows after its end


def test_counter_names_are_keyed_with_the_pepper() -> None:
    assert counter_digest("s", "bob@x.example", "pepper") != counter_digest("s", "bob@x.example")
    assert counter_digest("s", "Bob@X.example ", "pepper") == counter_digest("s", "bob@x.example", "pepper")


# ---------------------------------------------------------------------------------------- the link
def test_get_shows_an_accessible_form_and_changes_nothing(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    before = env.user(bob.id)
    page = env.call(FN, "GET", f"/password-reset/{token}", headers=HTML)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert_link_headers(page)
    html = page.text
    assert f'<form method="post" action="{token}">' in html
    for field in ("newPassword", "confirmPassword"):
        assert f'<label for="{field}">' in html and f'id="{field}" name="{field}" type="password"' in html
    assert html.count('autocomplete="new-password"') == 2
    assert "<script" not in html and "src=" not in html and "<link" not in html and "http" not in html
    again = env.call(FN, "GET", f"/password-reset/{token}")
    assert again.status == 200 and again.json() == {"purpose": "password_reset"}
    assert_link_headers(again)
    assert env.user(bob.id) == before and link_status(env, token) == "active"
    assert env.idp.calls_to("set_password") == []


def test_post_sets_the_password_once(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    r = submit(env, token, form=True)
    assert r.status == 200 and r.headers["content-type"].startswith("text/html"), r
    assert_link_headers(r)
    assert env.idp.passwords[bob.id] == STRONG
    assert link_status(env, token) == "used"
    user = env.user(bob.id)
    assert RESET not in user.links and user.status == "ACTIVE"
    notices = [e for e in env.mailer.to(bob.email) if e.subject == CHANGED_SUBJECT]
    assert len(notices) == 1 and STRONG not in notices[0].text and "password-reset/" not in notices[0].text
    second = submit(env, token, "An0ther!pass")
    assert second.status == 410 and second.json()["code"] == "link_used"
    assert_link_headers(second)
    assert env.idp.passwords[bob.id] == STRONG and len(env.idp.calls_to("set_password")) == 1
    audit = env.call("update-user", "GET", f"/users/{bob.id}/audit", as_user=people["admin"]).json()
    assert audit["items"][0]["action"] == "user.password_changed" and audit["items"][0]["changes"] == []
    assert STRONG not in json.dumps(audit)


def test_json_post_answers_result(env: Env, people: dict[str, User]) -> None:
    env.call(FN, "POST", "/me/password-reset", as_user=people["bob"])
    (token,) = resets(env, "bob@acme.example")
    r = submit(env, token)
    assert r.status == 200 and r.json() == {"result": "password_changed"}
    assert_link_headers(r)


def test_mismatched_confirmation_is_422_and_keeps_the_link(env: Env, people: dict[str, User]) -> None:
    env.call(FN, "POST", "/me/password-reset", as_user=people["bob"])
    (token,) = resets(env, "bob@acme.example")
    r = submit(env, token, confirm="Different!1x", form=True)
    assert r.status == 422 and r.headers["content-type"].startswith("text/html")
    assert 'name="newPassword"' in r.text  # the form again
    r = submit(env, token, confirm="Different!1x")
    assert r.status == 422 and r.json()["errors"] == [
        {"field": "confirmPassword", "message": "must match the new password"}
    ]
    r = env.call(FN, "POST", f"/password-reset/{token}", body={})
    assert r.status == 422 and r.json()["errors"][0]["field"] == "newPassword"
    assert env.idp.calls_to("set_password") == [] and link_status(env, token) == "active"
    assert submit(env, token).status == 200


def test_weak_password_is_400_and_the_link_still_works(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    env.call(FN, "POST", "/me/password-reset", as_user=bob)
    (token,) = resets(env, bob.email)
    r = submit(env, token, "weakpass")
    assert r.status == 400 and r.json()["code"] == "password_too_weak"
    assert "weakpass" not in r.text
    page = submit(env, token, "weakpass", form=True)
    assert page.status == 400 and 'name="newPassword"' in page.text
    assert env.idp.passwords[bob.id] == "Passw0rd!x" and link_status(env, token) == "active"
    assert env.user(bob.id).tokens_valid_after == bob.tokens_valid_after
    assert submit(env, token).status == 200 and env.idp.passwords[bob.id] == STRONG


def test_auth0_outage_is_503_and_the_link_still_works(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    env.call(FN, "POST", "/me/password-reset", as_user=bob)
    (token,) = resets(env, bob.email)
    env.idp.fail_next(1, IdpUnavailable("http 503", retry_after=7), method="set_password")
    r = submit(env, token)
    assert (
        r.status == 503 and r.json()["code"] == "dependency_unavailable" and r.headers["retry-after"] == "7"
    )
    assert link_status(env, token) == "active"
    assert submit(env, token).status == 200


def test_a_request_in_flight_holds_the_link(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Double submit: the second request finds the link held by the first and answers link_used."""
    bob = people["bob"]
    env.call(FN, "POST", "/me/password-reset", as_user=bob)
    (token,) = resets(env, bob.email)
    monkeypatch.setattr(PasswordService, "claim_wait_seconds", 0.0)
    now = int(env.clock.now())
    assert env.store.claim_link(hash_token(token), "first-request", now, now + 60)
    r = submit(env, token)
    assert r.status == 410 and r.json()["code"] == "link_used"
    assert env.idp.calls_to("set_password") == []
    # the first one failed: it gives the link back, usable again
    assert env.store.release_link_claim(hash_token(token), "first-request")
    assert submit(env, token).status == 200
    # a claim left behind by a request that died expires with its lease
    env.call(FN, "POST", "/me/password-reset", as_user=bob, iat=env.clock.now() + 1)
    env.clock.advance(2)
    token2 = resets(env, bob.email)[-1]
    now = int(env.clock.now())
    assert env.store.claim_link(hash_token(token2), "dead-request", now, now + 60)
    env.clock.advance(61)
    assert submit(env, token2).status == 200


def test_expired_link_offers_renew(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    env.call(FN, "POST", "/me/password-reset", as_user=bob)
    (token,) = resets(env, bob.email)
    env.clock.advance(env.container.settings.reset_link_ttl_seconds + 1)
    r = env.call(FN, "GET", f"/password-reset/{token}")
    assert r.status == 410 and r.json()["code"] == "link_expired"
    assert_link_headers(r)
    page = env.call(FN, "GET", f"/password-reset/{token}", headers=HTML)
    assert page.status == 410 and f'action="{token}/renew"' in page.text
    assert submit(env, token).json()["code"] == "link_expired"
    renew = env.call(FN, "POST", f"/password-reset/{token}/renew", headers=HTML)
    assert renew.status == 202 and renew.headers["content-type"].startswith("text/html")
    assert_link_headers(renew)
    assert len(resets(env, bob.email)) == 2
    fresh = resets(env, bob.email)[-1]
    assert env.call(FN, "GET", f"/password-reset/{token}").json()["code"] in (
        "link_expired",
        "link_superseded",
    )
    assert submit(env, fresh).status == 200


def test_expiry_with_a_short_ttl(env: Env, people: dict[str, User]) -> None:
    env.configure(**{"reset_link_ttl_seconds": 60})
    env.call(FN, "POST", "/me/password-reset", as_user=people["bob"])
    (token,) = resets(env, "bob@acme.example")
    assert "expires in 1 minutes" in env.mailer.sent[-1].text
    env.clock.advance(59)
    assert env.call(FN, "GET", f"/password-reset/{token}").status == 200
    env.clock.advance(1)
    assert env.call(FN, "GET", f"/password-reset/{token}").json()["code"] == "link_expired"


def test_superseded_link(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    public(env, {"email": bob.email})
    first, second = resets(env, bob.email)
    r = env.call(FN, "GET", f"/password-reset/{first}")
    assert r.status == 410 and r.json()["code"] == "link_superseded"
    assert submit(env, first).json()["code"] == "link_superseded"
    assert submit(env, second).status == 200


def test_renew_sends_only_for_a_dead_link_of_an_active_user(env: Env, people: dict[str, User]) -> None:
    bob, carol = people["bob"], people["carol"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    generic = env.call(FN, "POST", f"/password-reset/{token}/renew")
    assert generic.status == 202 and generic.json() == {"status": "accepted"}
    assert len(resets(env, bob.email)) == 1  # still valid: nothing to renew
    for unknown in ("x" * 43, "short", hash_token("nothing")[:43]):
        assert _fingerprint(env.call(FN, "POST", f"/password-reset/{unknown}/renew")) == _fingerprint(generic)
    # a used link is not renewed
    assert submit(env, token).status == 200
    assert _fingerprint(env.call(FN, "POST", f"/password-reset/{token}/renew")) == _fingerprint(generic)
    assert len(resets(env, bob.email)) == 1
    # a superseded one is, to the address on file
    public(env, {"email": carol.email})
    public(env, {"email": carol.email})
    old = resets(env, carol.email)[0]
    assert _fingerprint(env.call(FN, "POST", f"/password-reset/{old}/renew")) == _fingerprint(generic)
    assert len(resets(env, carol.email)) == 3


def test_renew_respects_the_per_address_limit_and_suspension(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    env.clock.advance(env.container.settings.reset_link_ttl_seconds + 1)
    for _ in range(4):
        public(env, {"email": "someone-else@acme.example"})
    for _ in range(6):
        env.call(FN, "POST", f"/password-reset/{token}/renew")
    assert len(resets(env, bob.email)) == 5
    # a suspended user's old link is never renewed
    env.clock.advance(3600)
    sue_link = resets(env, bob.email)[-1]
    env.store.put_user(env.user(bob.id).evolve(status=SUSPENDED, links={}))
    env.call(FN, "POST", f"/password-reset/{sue_link}/renew")
    assert len(resets(env, bob.email)) == 5


def test_password_change_revokes_older_tokens(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    issued = env.clock.now()
    assert env.call("update-user", "GET", "/me", as_user=bob, iat=issued).status == 200
    env.call(FN, "POST", "/me/password-reset", as_user=bob, iat=issued)
    (token,) = resets(env, bob.email)
    assert submit(env, token).status == 200
    r = env.call("update-user", "GET", "/me", as_user=bob, iat=issued)
    assert r.status == 401 and r.json()["code"] == "token_revoked"
    env.clock.advance(1)
    assert env.call("update-user", "GET", "/me", as_user=bob).status == 200
    assert env.user(bob.id).tokens_valid_after == int(issued) + 1


def test_password_change_kills_every_reset_link(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    links_before = env.user(bob.id).links
    assert submit(env, token).status == 200
    assert RESET in links_before and RESET not in env.user(bob.id).links


def test_a_suspension_during_the_change_is_reasserted(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Auth0 lifts admin blocks when it sets a password: a user suspended meanwhile stays blocked."""
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    real = env.idp.set_password

    def suspended_meanwhile(user_id: str, password: str) -> None:
        user = env.user(user_id)
        env.store.put_user(user.evolve(status=SUSPENDED, links={}, version=user.version + 1))
        env.idp.users[user_id] = env.idp.users[user_id].__class__(
            **{**env.idp.users[user_id].__dict__, "blocked": True}
        )
        real(user_id, password)  # the fake, like Auth0, unblocks here

    monkeypatch.setattr(env.idp, "set_password", suspended_meanwhile)
    r = submit(env, token)
    assert r.status == 200, r
    assert env.idp.users[bob.id].blocked is True
    user = env.user(bob.id)
    assert user.status == SUSPENDED and user.idp_sync == "synced" and not user.sync_fields
    assert link_status(env, token) == "used"


def test_a_reasserted_block_survives_an_auth0_outage(
    env: Env, people: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = people["bob"]
    public(env, {"email": bob.email})
    (token,) = resets(env, bob.email)
    real = env.idp.set_password

    def suspended_meanwhile(user_id: str, password: str) -> None:
        user = env.user(user_id)
        env.store.put_user(user.evolve(status=SUSPENDED, links={}, version=user.version + 1))
        real(user_id, password)

    monkeypatch.setattr(env.idp, "set_password", suspended_meanwhile)
    env.idp.fail_next(1, IdpUnavailable("http 503"), method="update_user")
    assert submit(env, token).status == 200
    assert env.idp.users[bob.id].blocked is False
    assert env.user(bob.id).idp_sync == "pending" and "blocked" in env.user(bob.id).sync_fields

    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].blocked is True


def test_link_routes_never_leak_the_token(env: Env, people: dict[str, User]) -> None:
    public(env, {"email": "bob@acme.example"})
    (token,) = resets(env, "bob@acme.example")
    for r in (
        env.call(FN, "GET", f"/password-reset/{token}"),
        submit(env, token, "weak"),
        submit(env, token),
        submit(env, token),
    ):
        assert token not in r.text and hash_token(token) not in r.text
        assert_link_headers(r)


def test_unknown_link_is_410_invalid(env: Env, people: dict[str, User]) -> None:
    for token in ("x" * 43, "bad token!"):
        r = env.call(FN, "GET", f"/password-reset/{token}")
        assert r.status == 410 and r.json()["code"] == "link_invalid"
        assert_link_headers(r)
    page = env.call(FN, "GET", "/password-reset/" + "x" * 43, headers=HTML)
    assert page.status == 410 and "/renew" not in page.text


# ------------------------------------------------------------------------------------------ events
def test_event_for_a_known_address_sends_one_link_once(env: Env, people: dict[str, User]) -> None:
    event = storefront_event({"email": "Bob@Acme.example"})
    assert send_event(env, event) == {"result": "accepted"}
    assert send_event(env, event) == {"result": "accepted"}  # EventBridge delivers at least once
    assert len(resets(env, "bob@acme.example")) == 1
    send_event(env, storefront_event({"email": "bob@acme.example"}, "another-id"))
    assert len(resets(env, "bob@acme.example")) == 2
    # an anonymous request changes nothing anyone sees: no new version, no audit entry (L1)
    bob = env.user(people["bob"].id)
    assert bob is not None and bob.version == people["bob"].version
    audit = env.call("update-user", "GET", f"/users/{bob.id}/audit", as_user=people["admin"]).json()
    assert audit["items"] == []


def test_event_never_sends_to_unknown_or_suspended(env: Env, people: dict[str, User]) -> None:
    assert send_event(env, storefront_event({"email": "nobody@acme.example"}, "a")) == {"result": "accepted"}
    assert send_event(env, storefront_event({"email": "sue@acme.example"}, "b")) == {"result": "accepted"}
    assert env.mailer.sent == []


def test_idempotency_records_hold_no_personal_data(env: Env, people: dict[str, User]) -> None:
    send_event(env, storefront_event({"email": "bob@acme.example"}, "evt-123"))
    records = [i for i in env.scan() if i["pk"]["S"].startswith("idempotency#")]
    assert len(records) == 1
    dump = json.dumps(records)
    assert "bob@acme.example" not in dump and "evt-123" not in dump and people["bob"].id not in dump
    assert "ttl" in records[0]


@pytest.mark.parametrize(
    "event",
    [
        storefront_event({}),
        storefront_event({"email": None}),
        storefront_event({"email": "not-an-address"}),
        storefront_event("bob@acme.example"),
        storefront_event(None),
        {**storefront_event({"email": "bob@acme.example"}), "id": ""},
        {**storefront_event({"email": "bob@acme.example"}), "detail-type": "SomethingElse"},
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
    event = storefront_event({"email": "bob@acme.example"}, "retry-me")
    env.mailer.failing = True
    with pytest.raises(DeliveryFailed):
        send_event(env, event)
    env.mailer.failing = False
    assert send_event(env, event) == {"result": "accepted"}
    assert len(resets(env, "bob@acme.example")) == 1


def test_neither_http_nor_eventbridge_is_malformed(env: Env) -> None:
    with pytest.raises(MalformedEvent):
        send_event(env, {"hello": "world"})


# ---------------------------------------------------------------------------------------- template
def test_template_wires_the_function_events_and_dead_letters() -> None:
    from local.template import load_template

    template = load_template(ROOT / "template.yaml")
    params, resources = template["Parameters"], template["Resources"]
    assert params["StorefrontBusName"]["Default"] == "storefront"
    assert params["StorefrontSource"]["Default"] == "storefront"
    fn = resources["ResetPasswordFunction"]
    props = fn["Properties"]
    assert fn["Metadata"] == resources["UpdateUserFunction"]["Metadata"]
    assert (
        props["Handler"] == "reset_password.lambda_handler"
        and props["CodeUri"] == "functions/reset-password/"
    )
    assert resources[props["LoggingConfig"]["LogGroup"]["Ref"]]["Type"] == "AWS::Logs::LogGroup"
    routes = {
        (e["Properties"]["Method"], e["Properties"]["Path"]): e["Properties"]
        .get("Auth", {})
        .get("Authorizer")
        for e in props["Events"].values()
        if e["Type"] == "HttpApi"
    }
    assert routes == {
        ("POST", "/users/{userId}/password-reset"): None,
        ("POST", "/me/password-reset"): None,
        ("POST", "/password-reset"): "NONE",
        ("GET", "/password-reset/{token}"): "NONE",
        ("POST", "/password-reset/{token}"): "NONE",
        ("POST", "/password-reset/{token}/renew"): "NONE",
    }
    (rule,) = [e["Properties"] for e in props["Events"].values() if e["Type"] == "EventBridgeRule"]
    assert rule["EventBusName"] == {"Ref": "StorefrontBusName"}
    assert rule["Pattern"] == {
        # one account's events only (security notes L19): StorefrontAccountId, or this stack's
        "account": [
            {"Fn::If": ["HasStorefrontAccount", {"Ref": "StorefrontAccountId"}, {"Ref": "AWS::AccountId"}]}
        ],
        "source": [{"Ref": "StorefrontSource"}],
        "detail-type": ["PasswordResetRequested"],
    }
    assert rule["RetryPolicy"] == {"MaximumRetryAttempts": 4, "MaximumEventAgeInSeconds": 3600}
    dlq_arn = {"Fn::GetAtt": ["StorefrontEventsDlq", "Arn"]}
    assert rule["DeadLetterConfig"] == {"Arn": dlq_arn}
    invoke = props["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": dlq_arn}
    queue = resources["StorefrontEventsDlq"]["Properties"]
    assert (
        queue["MessageRetentionPeriod"] == 4 * 86400 and queue["SqsManagedSseEnabled"] is True
    )  # a reset request names an address (L15)
    alarm = resources["StorefrontEventsDlqAlarm"]["Properties"]
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible" and alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    policy = resources["StorefrontEventsDlqPolicy"]["Properties"]
    assert policy["PolicyDocument"]["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}
    statements = props["Policies"][0]["Statement"]
    actions = {a for s in statements if "Action" in s for a in s["Action"]}  # not the conditional KMS grant
    assert actions == {
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "secretsmanager:GetSecretValue",
        "ses:SendEmail",
        "ses:SendRawEmail",
        "sqs:SendMessage",
    }
    assert all("*" not in json.dumps(s["Resource"]) for s in statements if "Resource" in s)


# --------------------------------------------------------------------- the same work in every request (M4)
def _request_work(env: Env, send: Any) -> tuple[list[str], list[list[str]]]:
    """The DynamoDB operations and the shapes of the queued messages of one request, nothing delivered."""
    env.public_auto = False
    calls: list[str] = []
    record = lambda model, **_: calls.append(model.name)  # noqa: E731
    env.dynamodb.meta.events.register("before-call.dynamodb.*", record)
    try:
        before = len(env.public_queue.messages)
        r = send()
        assert r.status == 202, r
    finally:
        env.dynamodb.meta.events.unregister("before-call.dynamodb.*", record)
    queued = [sorted(json.loads(m["body"])) for m in env.public_queue.messages[before:]]
    return calls, queued


def test_public_reset_does_the_same_work_in_the_request_for_every_address(
    env: Env, people: dict[str, User]
) -> None:
    invited = env.add_user("ivy@acme.example", first="Ivy", memberships={"acme": ["Buyer"]}, status="INVITED")
    addresses = {
        "active": "bob@acme.example",
        "unknown": "nobody@acme.example",
        "suspended": "sue@acme.example",
        "invited": invited.email,
    }
    work = {
        name: _request_work(env, lambda a=address, n=i: public(env, {"email": a}, ip=f"198.51.100.{n}"))
        for i, (name, address) in enumerate(addresses.items())
    }
    # the per-IP counter (this window's, then the previous one's) and one queued message
    assert work["active"] == (["UpdateItem", "GetItem"], [["email", "kind", "requestId"]])
    assert all(w == work["active"] for w in work.values()), work
    assert env.mailer.sent == []  # nothing done for any address yet: it happens after the answer
    assert env.drain_public() == 4
    assert sorted(e.to for e in env.mailer.sent) == ["bob@acme.example", invited.email]


def test_renew_does_the_same_work_in_the_request_for_any_token(env: Env, people: dict[str, User]) -> None:
    bob = people["bob"]
    env.call(FN, "POST", "/me/password-reset", as_user=bob)
    (token,) = resets(env, bob.email)
    env.clock.advance(env.container.settings.reset_link_ttl_seconds + 1)
    tokens = {"expired": token, "unknown": "A" * 43, "implausible": "x"}
    work = {
        name: _request_work(env, lambda t=t: env.call(FN, "POST", f"/password-reset/{t}/renew"))
        for name, t in tokens.items()
    }
    assert all(w == work["expired"] for w in work.values()), work
    assert work["expired"][1] == [["kind", "purpose", "requestId", "token"]]
    env.drain_public()
    assert len(resets(env, bob.email)) == 2  # only the expired link of a real user was renewed


def test_a_queue_outage_leaves_the_public_answer_alike(env: Env, people: dict[str, User]) -> None:
    reference = public(env, {"email": "nobody@acme.example"})
    env.public_queue.down = True
    r = public(env, {"email": "bob@acme.example"})
    assert _fingerprint(r) == _fingerprint(reference)
    assert resets(env, "bob@acme.example") == []


def test_anonymous_requests_leave_the_version_an_administrator_holds(
    env: Env, people: dict[str, User]
) -> None:
    """L1: a stranger's reset request or a storefront event must not turn an administrator's If-Match
    stale; the link they issue still works, and a later administrator change keeps it."""
    bob, admin = people["bob"], people["admin"]
    seen = env.call("update-user", "GET", f"/users/{bob.id}", as_user=admin)
    etag = seen.headers["etag"]
    public(env, {"email": bob.email})
    send_event(env, storefront_event({"email": bob.email}, "evt-l1"))
    assert env.call("update-user", "GET", f"/users/{bob.id}", as_user=admin).headers["etag"] == etag
    patched = env.call(
        "update-user",
        "PATCH",
        f"/users/{bob.id}",
        as_user=admin,
        body={"lastName": "Kept"},
        headers={"if-match": etag},
    )
    assert patched.status == 200, patched
    token = resets(env, bob.email)[-1]  # the newest link, issued before the change, still works
    assert submit(env, token).status == 200
