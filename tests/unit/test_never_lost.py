"""The "never lost" promises of the write path and the Auth0 sync, on the in-memory store (no sockets).

Each test breaks something after a commit, or makes Auth0 apply a change and lose the answer, and checks
what a user would notice: the answer does not claim that nothing changed, the change's emails go out, and
Auth0 ends up matching the record once the sync has run.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import Env, Response
from usermgmt.errors import IdpAccessDenied, IdpRejected, IdpUnavailable, StoreUnavailable
from usermgmt.links import hash_token
from usermgmt.models import User
from usermgmt.ports import IdpUserUpdate
from usermgmt.service.passwords import CLAIM_SECONDS, PasswordService

UPDATE, RESET = "update-user", "reset-password"
STRONG = "N3w-Passw0rd!"
LINK = re.compile(r"/password-reset/([A-Za-z0-9_-]{20,})")


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]})


@pytest.fixture
def admin(env: Env) -> User:
    return env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator")


def reset_token(env: Env, user: User) -> str:
    assert env.call(RESET, "POST", "/me/password-reset", as_user=user).status == 202
    return str(LINK.findall(env.mailer.to(user.email)[-1].text)[0])


def submit(env: Env, token: str) -> Response:
    return env.call(RESET, "POST", f"/password-reset/{token}", body={"newPassword": STRONG})


def audit_actions(env: Env, admin: User, user: User) -> list[str]:
    r = env.call(UPDATE, "GET", f"/users/{user.id}/audit", as_user=admin)
    return [i["action"] for i in r.json()["items"]]


# ------------------------------------------------------------------------------ after the commit
def test_a_store_failure_after_the_commit_answers_200_pending_and_sends_the_emails(
    env: Env, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(*_: Any, **__: Any) -> bool:
        raise StoreUnavailable("ProvisionedThroughputExceededException")

    monkeypatch.setattr(env.store, "settle_sync", throttled)
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"firstName": "Rob", "email": "rob@new.example"})

    # the change is committed: the answer says so, with the push still pending
    assert r.status == 200, r
    assert (r.json()["firstName"], r.json()["pendingEmail"], r.json()["idpSync"]) == (
        "Rob",
        "rob@new.example",
        "pending",
    )
    # the emails of the change went out all the same: the link to the new address, the notice to the old
    assert [e.to for e in env.mailer.sent] == ["rob@new.example", "bob@acme.example"]
    monkeypatch.undo()
    env.clock.advance(env.container.settings.sync_lease_seconds + 1)
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].given_name == "Rob" and env.user(bob.id).idp_sync == "synced"


def test_a_bug_in_the_mailer_after_a_commit_is_not_a_500(
    env: Env, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_email: Any) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(env.mailer, "send", broken)
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "rob@new.example"})
    assert r.status == 200 and r.json()["pendingEmail"] == "rob@new.example"
    assert env.metric_count("EmailFailed") == 0  # flushed by the handler; the record is what counts
    assert env.user(bob.id).pending_email == "rob@new.example"


def test_auth0_applied_the_change_then_the_answer_was_lost(env: Env, bob: User) -> None:
    env.idp.fail_next(1, IdpUnavailable("timeout"), method="update_user", after_apply=True)
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"lastName": "Builder"})
    assert r.status == 200 and r.json()["idpSync"] == "pending"
    assert env.idp.users[bob.id].family_name == "Builder"  # Auth0 has it; we could not know
    assert env.run_sync()["synced"] == 1  # pushing absolute values again is harmless
    assert env.user(bob.id).idp_sync == "synced" and env.idp.users[bob.id].family_name == "Builder"


@pytest.mark.parametrize("error", [IdpAccessDenied("token status 401"), IdpAccessDenied("status 403")])
def test_auth0_refusing_our_credentials_is_pending_and_alarmed_then_healed(
    env: Env, admin: User, bob: User, error: IdpAccessDenied
) -> None:
    env.idp.fail_next(-1, error)
    r = env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin)
    assert r.status == 200 and r.json()["idpSync"] == "pending"
    for _ in range(env.container.settings.sync_max_attempts + 2):
        env.clock.advance(env.container.settings.sync_max_delay_seconds + 1)
        assert env.run_sync()["pending"] == 1
    assert env.metric_count("IdpAccessDenied") >= 1 and env.metric_count("IdpSyncStuck") >= 1
    assert env.user(bob.id).idp_sync == "pending" and env.idp.users[bob.id].blocked is False
    env.idp.clear_failures()  # the operator fixed the secret or the grant
    env.clock.advance(env.container.settings.sync_max_delay_seconds + 1)
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].blocked is True and env.user(bob.id).idp_sync == "synced"


# ------------------------------------------------------------------------------ the sync run
def test_one_user_whose_push_raises_does_not_stop_the_run(
    env: Env, admin: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    carol = env.add_user("carol@acme.example", first="Carol", memberships={"acme": ["Buyer"]})
    env.idp.fail_next(2, IdpUnavailable("status 503"))
    for user, name in ((bob, "Poison"), (carol, "Fine")):
        assert (
            env.call(UPDATE, "PATCH", f"/users/{user.id}", as_user=admin, body={"lastName": name}).status
            == 200
        )
    original = env.idp.update_user

    def poisoned(user_id: str, update: IdpUserUpdate) -> None:
        if user_id == bob.id:
            raise RuntimeError("a value the SDK cannot encode")
        original(user_id, update)

    monkeypatch.setattr(env.idp, "update_user", poisoned)
    outcome = env.run_sync()
    assert (outcome["errors"], outcome["synced"]) == (1, 1)
    assert env.idp.users[carol.id].family_name == "Fine"
    assert env.user(bob.id).idp_sync == "pending"  # still queued, deferred with backoff like an outage
    settings = env.container.settings
    runs = 1
    while env.metric_count("IdpSyncStuck") == 0 and runs < 3 * settings.sync_max_attempts:
        env.clock.advance(settings.sync_max_delay_seconds + 1)
        assert env.run_sync()["errors"] == 1
        runs += 1
    # each failure counts as an attempt, so a user that keeps failing alarms as stuck
    assert env.metric_count("IdpSyncStuck") >= 1 and runs <= settings.sync_max_attempts
    # and waits its backoff: it is not due again when its lease lapses, ahead of everyone behind it
    due = env.store.due_work(env.clock.now() + settings.sync_lease_seconds + 1, 100)
    assert all(work.key != bob.id for work in due)
    monkeypatch.undo()
    env.clock.advance(settings.sync_max_delay_seconds + 1)
    assert env.run_sync()["synced"] == 1 and env.idp.users[bob.id].family_name == "Poison"


def test_a_push_never_starts_a_call_its_lease_cannot_cover(
    env: Env, admin: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.configure(auth0_revoke_sessions=True)
    env.idp.fail_next(1, IdpUnavailable("status 503"))
    assert env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin).status == 200
    lease = env.container.settings.sync_lease_seconds
    budget = 4 * env.container.settings.auth0_timeout_seconds
    started: list[float] = []
    originals = {name: getattr(env.idp, name) for name in ("update_user", "revoke_sessions")}

    def slow(name: str) -> Any:
        def call(*args: Any) -> None:
            started.append(env.clock.now())
            env.clock.advance(lease - budget / 2)  # Auth0 answers slowly
            originals[name](*args)

        return call

    for name in originals:
        monkeypatch.setattr(env.idp, name, slow(name))
    run_at = env.clock.now()
    outcome = env.run_sync()
    assert outcome["pending"] == 1, outcome  # the revoke did not fit in the lease: given back
    assert started == [run_at]  # the block went out; the revoke never started late
    assert all(t + budget < run_at + lease for t in started)
    assert env.idp.users[bob.id].blocked is True and env.idp.revocations.get(bob.id, 0) == 0
    monkeypatch.undo()  # Auth0 answers at its usual speed again
    assert env.run_sync()["synced"] == 1  # the next run pushes what was left
    assert env.idp.revocations[bob.id] == 1


def test_a_value_refused_for_good_is_failed_and_does_not_poison_later_syncs(
    env: Env, admin: User, bob: User
) -> None:
    env.idp.fail_next(1, IdpRejected(400, "invalid_body"), method="update_user")
    r = env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Rejected"})
    assert (
        r.json()["idpSync"] == "failed" and env.metric_count("IdpSyncFailed") == 0
    )  # flushed by the handler
    assert env.store.failed_syncs(10) == [bob.id]
    calls = len(env.idp.calls)
    # the email of another user's failure is not re-pushed with the next name change, and that one lands
    r = env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Robert"})
    assert r.json()["idpSync"] == "synced"  # the profile (the failed field) was pushed again and taken
    assert env.idp.users[bob.id].given_name == "Robert"
    assert [c.method for c in env.idp.calls[calls:]] == ["update_user"]
    assert env.store.failed_syncs(10) == []


def test_a_refused_name_never_costs_the_block(env: Env, admin: User, bob: User) -> None:
    env.idp.fail_next(1, IdpRejected(400, "invalid_body"), method="update_user")
    r = env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin)
    assert r.status == 200
    assert env.idp.users[bob.id].blocked is True  # retried with blocked alone
    assert env.user(bob.id).sync_failed == {"profile"}


# ------------------------------------------------------------------------------ password reset
def test_a_reset_reads_the_link_once(env: Env, bob: User, monkeypatch: pytest.MonkeyPatch) -> None:
    token = reset_token(env, bob)
    reads: list[str] = []
    for name in ("get_user", "get_users", "get_link", "user_id_for_email"):
        original = getattr(env.store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            reads.append(_name)
            return _original(*args)

        monkeypatch.setattr(env.store, name, counted)
    assert submit(env, token).status == 200
    assert sorted(reads) == ["get_link", "get_user"]


def test_the_table_failing_after_auth0_set_the_password_is_finished_by_the_sync(
    env: Env, admin: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = reset_token(env, bob)
    old_token_iat = env.clock.now()

    def down(_ops: Any) -> None:
        raise StoreUnavailable("ProvisionedThroughputExceededException")

    monkeypatch.setattr(env.store, "transact", down)
    r = submit(env, token)
    monkeypatch.undo()
    # Auth0 holds the new password: that is what the person is told
    assert r.status == 200 and r.json() == {"result": "password_changed"}
    assert env.idp.passwords[bob.id] == STRONG
    assert env.user(bob.id).tokens_valid_after == 0  # not yet ...
    env.clock.advance(CLAIM_SECONDS + 1)
    assert env.run_sync()["claims"] == 1  # ... until the claim (the durable marker) lapses
    after = env.user(bob.id)
    assert after.tokens_valid_after > old_token_iat and "reset" not in after.links
    assert env.store.get_link(hash_token(token)).status == "used"
    assert env.call(UPDATE, "GET", "/me", as_user=bob, iat=old_token_iat).status == 401
    assert any("password was changed" in e.subject for e in env.mailer.to(bob.email))
    assert audit_actions(env, admin, bob)[0] == "user.password_changed"
    assert env.run_sync()["claims"] == 0  # finished once


def test_an_auth0_timeout_on_the_password_is_an_unknown_outcome(
    env: Env, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = reset_token(env, bob)
    env.idp.fail_next(1, IdpUnavailable("timeout"), method="set_password", after_apply=True)
    r = submit(env, token)
    assert r.status == 503 and r.json()["code"] == "dependency_unavailable"
    assert "nothing was changed" not in r.json()["title"]  # it may well have been
    monkeypatch.setattr(PasswordService, "claim_wait_seconds", 0.0)
    assert submit(env, token).json()["code"] == "link_used"  # held while its outcome is unknown
    env.clock.advance(CLAIM_SECONDS + 1)
    assert env.run_sync()["claims"] == 1
    assert env.user(bob.id).tokens_valid_after > 0 and "reset" not in env.user(bob.id).links


def test_a_password_change_signs_out_everywhere_where_the_tenant_allows(env: Env, bob: User) -> None:
    env.configure(auth0_revoke_sessions=True)
    token = reset_token(env, bob)
    assert submit(env, token).status == 200
    assert env.idp.revocations[bob.id] == 1 and env.user(bob.id).idp_sync == "synced"
