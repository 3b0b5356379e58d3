"""Send limits on verification emails and email-change starts (security notes H1, L5): per user and
per recipient address, 429 ``rate_limited`` with ``Retry-After`` where a caller is signed in, silence on
events and public renewals; and no free text of an account reaches an address that is not verified."""

from __future__ import annotations

import pytest

from tests.conftest import Env, Response
from usermgmt.models import User

UPDATE, VERIFY = "update-user", "verify-email"


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user("bob@acme.example", first="Bob", memberships={"acme": ["Buyer"]})


def change_email(env: Env, user: User, email: str) -> Response:
    return env.call(UPDATE, "PATCH", "/me", as_user=user, body={"email": email})


def assert_limited(r: Response) -> None:
    assert r.status == 429 and r.json()["code"] == "rate_limited", r
    assert 1 <= int(r.headers["retry-after"]) <= 2 * 3600


def test_verification_resends_stop_at_the_address_budget(env: Env, bob: User) -> None:
    assert change_email(env, bob, "new@x.example").status == 200
    for _ in range(2):
        assert env.call(VERIFY, "POST", "/me/verification-email", as_user=bob).status == 202
    assert_limited(env.call(VERIFY, "POST", "/me/verification-email", as_user=bob))
    assert len(env.mailer.to("new@x.example")) == 3
    # the sliding window moves on
    env.clock.advance(7200)
    assert env.call(VERIFY, "POST", "/me/verification-email", as_user=bob).status == 202


def test_alternating_email_changes_stop_at_the_user_budget(env: Env, bob: User) -> None:
    for i in range(5):
        assert change_email(env, bob, f"v{i}@x.example").status == 200
    sent = len(env.mailer.sent)
    assert_limited(change_email(env, bob, "v9@x.example"))
    assert len(env.mailer.sent) == sent
    assert env.user(bob.id).pending_email == "v4@x.example"  # type: ignore[union-attr]


def test_probing_for_taken_addresses_is_limited_too(env: Env, bob: User) -> None:
    for i in range(5):
        taken = env.add_user(f"t{i}@x.example")
        r = change_email(env, bob, taken.email)
        assert r.status == 409 and r.json()["code"] == "email_taken", r
    assert_limited(change_email(env, bob, env.add_user("t9@x.example").email))


def test_many_accounts_cannot_flood_one_address(env: Env) -> None:
    users = [env.add_user(f"u{i}@acme.example") for i in range(4)]
    for u in users[:3]:
        assert change_email(env, u, "victim@corp.example").status == 200
    assert_limited(change_email(env, users[3], "victim@corp.example"))
    r = env.call(
        VERIFY,
        "POST",
        f"/users/{users[0].id}/verification-email",
        as_user=env.add_user("ada@example.com", profile="administrator"),
    )
    assert_limited(r)
    assert len(env.mailer.to("victim@corp.example")) == 3


def test_no_name_reaches_an_address_that_is_not_verified(env: Env, bob: User) -> None:
    lure = "Security notice re-verify at evil.example"
    r = env.call(
        UPDATE, "PATCH", "/me", as_user=bob, body={"firstName": lure, "email": "victim@corp.example"}
    )
    assert r.status == 200, r
    (mail,) = env.mailer.to("victim@corp.example")
    assert lure not in mail.text and lure not in mail.html
    assert "evil.example" not in mail.text
    # the verified current address still gets a greeting by name
    (notice,) = env.mailer.to(bob.email)
    assert lure in notice.text
