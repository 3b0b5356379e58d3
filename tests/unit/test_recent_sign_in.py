"""Recent sign-in and signing out everywhere (SPEC section 17, RFC 9470)."""

from __future__ import annotations

import pytest

from tests.conftest import Env, Response
from usermgmt.models import User

UPDATE, SESSIONS = "update-user", "suspend-user"
MAX_AGE = 900


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user("bob@acme.example", first="Bob", memberships={"acme": ["Buyer"]})


@pytest.fixture
def ada(env: Env) -> User:
    return env.add_user("ada@example.com", first="Ada", profile="administrator")


def assert_reauth(r: Response) -> None:
    assert r.status == 401, r
    body = r.json()
    assert body["code"] == "reauthentication_required" and body["maxAge"] == MAX_AGE, body
    assert r.headers["www-authenticate"] == (
        f'Bearer error="insufficient_user_authentication", max_age={MAX_AGE}'
    )
    assert r.headers["content-type"] == "application/problem+json"


def test_an_email_change_with_an_old_sign_in_gets_the_rfc_9470_answer_and_changes_nothing(
    env: Env, bob: User
) -> None:
    now = env.clock.now()
    r = env.call(
        UPDATE, "PATCH", "/me", as_user=bob, auth_time=now - MAX_AGE - 1, body={"email": "n@x.example"}
    )
    assert_reauth(r)
    assert env.user(bob.id) == bob and env.mailer.sent == []
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, auth_time="absent", body={"email": "n@x.example"})
    assert_reauth(r)
    # after a fresh sign-in it works
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, auth_time=now - MAX_AGE, body={"email": "n@x.example"})
    assert r.status == 200 and r.json()["pendingEmail"] == "n@x.example", r


def test_other_changes_and_administrators_need_no_recent_sign_in(env: Env, bob: User, ada: User) -> None:
    old = env.clock.now() - 10 * MAX_AGE
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, auth_time=old, body={"firstName": "Robert"})
    assert r.status == 200, r
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, auth_time=old, body={"email": bob.email})
    assert r.status == 200, r  # the current address: no change
    r = env.call(
        UPDATE, "PATCH", f"/users/{bob.id}", as_user=ada, auth_time=old, body={"email": "b2@x.example"}
    )
    assert r.status == 200, r


def test_zero_turns_the_check_off(env: Env, bob: User) -> None:
    env.configure(reauth_max_age_seconds=0)
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, auth_time="absent", body={"email": "n@x.example"})
    assert r.status == 200, r


def test_signing_out_everywhere_refuses_every_older_token_the_callers_too(env: Env, bob: User) -> None:
    issued = env.clock.now()
    assert_reauth(
        env.call(SESSIONS, "POST", "/me/sessions/revoke", as_user=bob, auth_time=issued - MAX_AGE - 5)
    )
    assert env.call(UPDATE, "GET", "/me", as_user=bob).status == 200  # nothing happened
    r = env.call(SESSIONS, "POST", "/me/sessions/revoke", as_user=bob)
    assert r.status == 200 and r.json()["id"] == bob.id and r.headers["etag"], r
    # a token issued in the same second is refused too (the next whole second)
    r = env.call(UPDATE, "GET", "/me", as_user=bob, iat=issued)
    assert r.status == 401 and r.json()["code"] == "token_revoked", r
    env.clock.advance(1)
    assert env.call(UPDATE, "GET", "/me", as_user=bob).status == 200  # a new sign-in


@pytest.mark.parametrize("revoke", [True, False])
def test_an_administrator_signs_a_user_out_and_auth0_sessions_end_where_enabled(
    env: Env, bob: User, ada: User, revoke: bool
) -> None:
    env.configure(auth0_revoke_sessions=revoke)
    old = env.clock.now() - 10 * MAX_AGE
    r = env.call(SESSIONS, "POST", f"/users/{bob.id}/sessions/revoke", as_user=ada, auth_time=old)
    assert r.status == 200 and r.json()["id"] == bob.id, r
    assert env.call(UPDATE, "GET", "/me", as_user=bob).json()["code"] == "token_revoked"
    assert len(env.idp.calls_to("revoke_sessions")) == (1 if revoke else 0)
    audit = env.call(UPDATE, "GET", f"/users/{bob.id}/audit", as_user=ada).json()["items"]
    assert audit[0]["action"] == "user.sessions_revoked" and audit[0]["actor"] == ada.id


def test_out_of_scope_sign_outs_are_404_and_change_nothing(env: Env, bob: User) -> None:
    gus = env.add_user("gus@globex.example", memberships={"globex": ["Buyer"]})
    dana = env.add_user("dana@acme.example", memberships={"acme": ["Administrator"]})
    for caller in (gus, dana):
        target = gus if caller is dana else bob
        r = env.call(SESSIONS, "POST", f"/users/{target.id}/sessions/revoke", as_user=caller)
        assert r.status == 404 and r.json()["code"] == "user_not_found", r
    assert env.user(gus.id) == gus and env.user(bob.id) == bob
    # a delegated administrator in scope may
    assert env.call(SESSIONS, "POST", f"/users/{bob.id}/sessions/revoke", as_user=dana).status == 200
