"""No lost update, no lost Auth0 sync: interleaved writers, crashes, outages of any length."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Env
from usermgmt.errors import IdpUnavailable
from usermgmt.models import User
from usermgmt.schemas import READ_ONLY_FIELDS

FN = "update-user"


@pytest.fixture
def admin(env: Env) -> User:
    return env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator")


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]})


def _interleave(env: Env, interloper: Any) -> None:
    """Run ``interloper`` right before the next transaction commits (once)."""
    store = env.store
    original = store.transact
    fired = []

    def transact(ops: Any, *args: Any, **kwargs: Any) -> None:
        if not fired:
            fired.append(True)
            interloper()
        original(ops, *args, **kwargs)

    store.transact = transact


def test_two_writers_interleaved_lose_nothing(env: Env, admin: User, bob: User) -> None:
    # Given the admin's PATCH has read version 1, when Bob's own PATCH commits first,
    _interleave(env, lambda: env.call(FN, "PATCH", "/me", as_user=bob, body={"firstName": "Robert"}))
    r = env.call(FN, "PATCH", f"/users/{bob.id}", as_user=admin, body={"lastName": "Builder"})
    # then the admin's change is re-applied on top of Bob's: both survive.
    assert r.status == 200, r
    assert (r.json()["firstName"], r.json()["lastName"], r.json()["version"]) == ("Robert", "Builder", 3)
    stored = env.user(bob.id)
    assert (stored.first_name, stored.last_name) == ("Robert", "Builder")
    assert env.idp.users[bob.id].name == "Robert Builder"
    audit = env.call(FN, "GET", f"/users/{bob.id}/audit", as_user=admin).json()["items"]
    assert [a["changes"][0]["field"] for a in audit] == ["lastName", "firstName"]


def test_if_match_loses_to_an_interleaved_writer_with_412(env: Env, admin: User, bob: User) -> None:
    _interleave(env, lambda: env.call(FN, "PATCH", "/me", as_user=bob, body={"firstName": "Robert"}))
    r = env.call(
        FN,
        "PATCH",
        f"/users/{bob.id}",
        as_user=admin,
        body={"lastName": "Builder"},
        headers={"If-Match": '"1"'},
    )
    assert r.status == 412 and r.json()["code"] == "version_mismatch"
    assert env.user(bob.id).last_name == "Buyer"


def test_matching_if_match_applies(env: Env, admin: User, bob: User) -> None:
    r = env.call(
        FN, "PATCH", f"/users/{bob.id}", as_user=admin, body={"lastName": "B"}, headers={"If-Match": '"1"'}
    )
    assert r.status == 200 and r.headers["etag"] == '"2"'


class Crash(BaseException):
    """The Lambda dies (timeout, out of memory) after the commit, before Auth0 answers."""


def test_crash_between_commit_and_auth0_is_finished_by_sync(env: Env, bob: User) -> None:
    original = env.idp.update_user

    def crash(*_: Any, **__: Any) -> None:
        raise Crash

    env.idp.update_user = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        env.call(FN, "PATCH", "/me", as_user=bob, body={"lastName": "Builder"})
    env.idp.update_user = original  # type: ignore[method-assign]
    stored = env.user(bob.id)
    assert (
        stored.last_name == "Builder" and stored.idp_sync == "pending" and stored.sync_fields == {"profile"}
    )
    # the dead request's lease still holds for a moment: nobody pushes concurrently with it
    assert env.run_sync()["synced"] == 0
    env.clock.advance(env.container.settings.sync_lease_seconds + 1)
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].family_name == "Builder"
    assert env.user(bob.id).idp_sync == "synced"


def test_rate_limit_reset_is_honoured(env: Env, bob: User) -> None:
    env.idp.fail_next(1, IdpUnavailable("http 429", retry_after=120))
    assert env.call(FN, "PATCH", "/me", as_user=bob, body={"lastName": "B2"}).json()["idpSync"] == "pending"
    assert sum(env.run_sync().values()) == 0  # not due before Auth0's reset time
    env.clock.advance(121)
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].family_name == "B2"


def test_an_outage_longer_than_max_attempts_is_never_given_up(env: Env, bob: User) -> None:
    env.configure(sync_max_attempts=3)
    env.idp.fail_next(-1, IdpUnavailable("timeout"))
    assert env.call(FN, "PATCH", "/me", as_user=bob, body={"lastName": "B3"}).json()["idpSync"] == "pending"
    for _attempt in range(6):  # twice the attempts after which the old code gave up
        assert env.run_sync()["pending"] == 1
        assert sum(env.run_sync().values()) == 0  # backing off: not due yet
        env.clock.advance(env.container.settings.sync_max_delay_seconds + 1)
    assert env.metric_count("IdpSyncStuck") >= 4  # alarmed past the configured attempts ...
    assert env.user(bob.id).idp_sync == "pending"  # ... and still pending, never failed
    env.idp.clear_failures()
    assert env.run_sync()["synced"] == 1
    assert env.idp.users[bob.id].family_name == "B3"
    assert env.user(bob.id).idp_sync == "synced"


def test_newer_write_during_a_push_is_pushed_too(env: Env, admin: User, bob: User) -> None:
    # Bob's push is in flight (he holds the lease) when the admin commits a newer version.
    original = env.idp.update_user
    fired: list[bool] = []

    def slow_push(user_id: str, update: Any) -> None:
        if not fired:
            fired.append(True)
            r = env.call(FN, "PATCH", f"/users/{bob.id}", as_user=admin, body={"lastName": "Newer"})
            assert r.json()["idpSync"] == "pending"  # the lease is Bob's: the admin's request does not push
        original(user_id, update)

    env.idp.update_user = slow_push  # type: ignore[method-assign]
    r = env.call(FN, "PATCH", "/me", as_user=bob, body={"firstName": "Rob"})
    assert r.json()["idpSync"] == "synced"
    assert env.idp.users[bob.id].name == "Rob Newer"  # the lease holder pushed the newer version too
    assert env.user(bob.id).idp_sync == "synced" and not env.user(bob.id).sync_fields


PROTECTED = sorted(READ_ONLY_FIELDS | {"profile", "accountNumber", "memberships", "defaultAccountId"})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    extra=st.dictionaries(
        st.one_of(st.sampled_from(PROTECTED), st.text(min_size=1, max_size=12)).filter(
            lambda k: k not in {"firstName", "lastName", "email"}
        ),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        min_size=1,
        max_size=4,
    ),
    name=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() and s.isprintable()),
)
def test_any_extra_or_protected_key_is_422_and_changes_nothing(
    env: Env, extra: dict[str, Any], name: str
) -> None:
    user = env.user(env.add_user("hyp@acme.example", memberships={"acme": ["Buyer"]}).id)
    r = env.call(FN, "PATCH", "/me", as_user=user, body={"firstName": name, **extra})
    assert r.status == 422, r
    assert {e["field"] for e in r.json()["errors"]} >= set(extra)
    assert env.user(user.id) == user


def pending_renames(env: Env, admin: User, last_name: str, count: int = 5) -> list[User]:
    """``count`` users renamed while Auth0 was down: each waits for sync-identity, pages of 2."""
    env.configure(sync_batch_size=2)
    users = [
        env.add_user(
            f"{last_name.lower()}{i}@acme.example", first=f"Page{i}", memberships={"acme": ["Buyer"]}
        )
        for i in range(count)
    ]
    env.idp.fail_next(count, IdpUnavailable("status 503"))
    for u in users:
        r = env.call(FN, "PATCH", f"/users/{u.id}", as_user=admin, body={"lastName": last_name})
        assert r.status == 200 and r.json()["idpSync"] == "pending"
    return users


def test_a_run_reads_page_after_page_while_its_time_lasts(env: Env, admin: User) -> None:
    users = pending_renames(env, admin, "Paged")
    sync = env.container.sync
    # without the Lambda's clock: one page
    assert sync.run_due(env.container.passwords)["synced"] == 2
    # with time left: every page, in one run
    assert sync.run_due(env.container.passwords, lambda: 50_000)["synced"] == 3
    assert all(env.idp.users[u.id].family_name == "Paged" for u in users)


def test_a_run_stops_reading_pages_when_its_time_runs_out(env: Env, admin: User) -> None:
    users = pending_renames(env, admin, "Later")
    reserve = (env.container.settings.auth0_timeout_seconds * 3 + 2) * 1000

    def time_left() -> int:  # time for three pushes, then no more
        pushed = sum(env.idp.users[u.id].family_name == "Later" for u in users)
        return reserve + 1 if pushed < 3 else reserve - 1

    assert env.container.sync.run_due(env.container.passwords, time_left)["synced"] == 3
    assert sum(env.idp.users[u.id].family_name == "Later" for u in users) == 3
