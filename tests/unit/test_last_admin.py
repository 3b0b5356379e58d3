"""The last ACTIVE platform administrator (SPEC section 3): suspend, delete and demotion refuse with 409
``last_administrator``, also when two administrators act on each other at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Env, Response
from usermgmt.auth import RequestCtx
from usermgmt.errors import LastAdministrator
from usermgmt.models import User

UPDATE, SUSPEND, DELETE, ENABLE = "update-user", "suspend-user", "delete-user", "enable-user"


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


def admin(env: Env, name: str) -> User:
    return env.add_user(f"{name}@example.com", first=name.title(), profile="administrator")


def demote(env: Env, caller: User, target: User) -> Response:
    return env.call(UPDATE, "PATCH", f"/users/{target.id}", as_user=caller, body={"profile": "customer"})


def suspend(env: Env, caller: User, target: User) -> Response:
    return env.call(SUSPEND, "POST", f"/users/{target.id}/suspend", as_user=caller)


def delete(env: Env, caller: User, target: User) -> Response:
    return env.call(DELETE, "DELETE", f"/users/{target.id}", as_user=caller)


def active_admins(env: Env, *users: User) -> list[str]:
    now = [env.user(u.id) for u in users]
    return [u.id for u in now if u is not None and u.is_platform_admin and u.status == "ACTIVE"]


def test_the_last_administrator_cannot_demote_themselves(env: Env) -> None:
    ada = admin(env, "ada")
    r = demote(env, ada, ada)
    assert r.status == 409 and r.json()["code"] == "last_administrator", r
    assert env.user(ada.id) == ada


@pytest.mark.parametrize("action", [demote, suspend, delete])
def test_an_administrator_goes_while_another_active_one_stays_and_not_after(
    env: Env, action: Callable[[Env, User, User], Response]
) -> None:
    ada, ben = admin(env, "ada"), admin(env, "ben")
    assert action(env, ada, ben).status in (200, 202, 204)
    assert active_admins(env, ada, ben) == [ada.id]
    # the only one left: demoting themselves is refused (suspend/delete of oneself are 403 anyway)
    r = demote(env, ada, ada)
    assert r.status == 409 and r.json()["code"] == "last_administrator", r
    assert active_admins(env, ada) == [ada.id]


def test_a_suspended_administrator_does_not_count_and_counts_again_once_enabled(env: Env) -> None:
    ada, ben = admin(env, "ada"), admin(env, "ben")
    assert suspend(env, ada, ben).status == 200
    assert demote(env, ada, ada).status == 409
    assert env.call(ENABLE, "POST", f"/users/{ben.id}/enable", as_user=ada).status == 200
    assert demote(env, ada, ada).status == 200
    assert active_admins(env, ada, ben) == [ben.id]


def test_a_suspended_administrator_can_be_deleted_or_demoted(env: Env) -> None:
    ada, ben, cy = admin(env, "ada"), admin(env, "ben"), admin(env, "cy")
    assert suspend(env, ada, ben).status == 200
    assert suspend(env, ada, cy).status == 200
    assert demote(env, ada, ben).status == 200
    assert delete(env, ada, cy).status in (202, 204)
    assert active_admins(env, ada, ben) == [ada.id]


def svc_demote(env: Env, caller: User, target: User) -> Any:
    return env.container.users.patch(ctx(env, caller), target.id, {"profile": "customer"}, None)


def svc_suspend(env: Env, caller: User, target: User) -> Any:
    return env.container.lifecycle.suspend(ctx(env, caller), target.id, None)


def svc_delete(env: Env, caller: User, target: User) -> Any:
    return env.container.lifecycle.delete(ctx(env, caller), target.id, None)


def ctx(env: Env, caller: User) -> RequestCtx:
    return RequestCtx(sub=caller.id, iat=int(env.clock.now()), request_id=f"race-{caller.id}")


def _race(env: Env, first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
    """Both use cases read the state before either commits (a barrier in the store's read).

    The services are called directly: a handler module's resolver holds the current event in a
    global, so one Lambda container serves one request at a time, as in AWS.
    """
    store = env.store
    barrier = threading.Barrier(2, timeout=30)
    read = store.get_users
    calls = {"n": 0}
    lock = threading.Lock()

    def get_users(ids: Any) -> Any:
        result = read(ids)
        with lock:
            calls["n"] += 1
            first_reads = calls["n"] <= 2
        if first_reads:
            barrier.wait()  # the first read of each request: both have read before either writes
        return result

    store.get_users = get_users  # type: ignore[method-assign]
    out: list[Any] = []

    def run(f: Callable[[], Any]) -> None:
        try:
            out.append(f())
        except Exception as exc:  # the refusal, as the handler would render it
            out.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in (first, second)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        store.get_users = read  # type: ignore[method-assign]
    return out


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (svc_demote, svc_demote),
        (svc_suspend, svc_suspend),
        (svc_delete, svc_delete),
        (svc_demote, svc_suspend),
    ],
)
def test_two_administrators_removing_each_other_at_once_leave_exactly_one(
    env: Env, one: Callable[[Env, User, User], Any], other: Callable[[Env, User, User], Any]
) -> None:
    ada, ben = admin(env, "ada"), admin(env, "ben")
    answers = _race(env, lambda: one(env, ada, ben), lambda: other(env, ben, ada))
    assert len(answers) == 2
    assert len(active_admins(env, ada, ben)) == 1, answers
    refused = [a for a in answers if isinstance(a, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], LastAdministrator), answers


def test_the_person_is_told_of_a_suspension_and_a_deletion(env: Env) -> None:
    """Security notes L18: suspension and deletion are notified to the person (AUTH-21)."""
    ada = admin(env, "ada")
    bob = env.add_user("bob@acme.example", first="Bob", memberships={"acme": ["Buyer"]})
    assert suspend(env, ada, bob).status == 200
    (suspended,) = env.mailer.to(bob.email)
    assert suspended.subject == "Your account was suspended" and "Hello Bob," in suspended.text
    assert delete(env, ada, bob).status in (202, 204)
    subjects = [m.subject for m in env.mailer.to(bob.email)]
    assert subjects == ["Your account was suspended", "Your account was deleted"]
