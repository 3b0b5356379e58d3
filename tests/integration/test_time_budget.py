"""An HTTP function answers before it is cut off (security notes L11; usermgmt/budget.py).

The invocation's remaining time is injected through the Lambda context and counted down on the test's
clock; slow dependencies advance that clock. No sleeps, no timings: what is checked is what a caller
and an operator see: problem+json 503 with nothing changed before the commit, the change kept and
``idpSync: "pending"`` after it, and an answer while the invocation still had time.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Env, LambdaContext, add_cast
from usermgmt import budget
from usermgmt.errors import ConditionFailed, IdpUnavailable
from usermgmt.models import User
from usermgmt.ports import Email, MailUnavailable
from usermgmt.service.writes import MAX_CONFLICT_RETRIES

LIMIT = 15.0  # the HTTP functions' timeout (template.yaml Globals)


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    env.time_limit = LIMIT
    return add_cast(env)


def slow(env: Env, obj: Any, name: str, seconds: float, *, fail: Exception | None = None) -> list[int]:
    """Make ``obj.name`` take ``seconds`` of the test clock (and raise ``fail`` after, if given)."""
    original = getattr(obj, name)
    calls: list[int] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        result = original(*args, **kwargs) if fail is None else None
        env.clock.advance(seconds)
        if fail is not None:
            raise fail
        return result

    setattr(obj, name, wrapped)
    return calls


def rename(env: Env, people: dict[str, User]) -> Any:
    bob, admin = people["bob"], people["admin"]
    return env.call("update-user", "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Robert"})


def answered_in_time(env: Env, started: float) -> bool:
    return env.clock.now() - started <= LIMIT - budget.ANSWER_RESERVE_SECONDS


def test_a_request_whose_read_ran_long_is_503_before_the_commit_and_changes_nothing(
    env: Env, people: dict[str, User]
) -> None:
    bob = env.user(people["bob"].id)
    started = env.clock.now()
    slow(env, env.store, "get_users", 8)  # left: 15 - 8 - 1 < one table call's worst case

    r = rename(env, people)

    assert r.status == 503 and r.headers["content-type"] == "application/problem+json", r
    assert r.json()["code"] == "dependency_unavailable"
    assert env.user(bob.id) == bob and env.idp.users[bob.id].given_name == "Bob"
    assert [e["action"] for e in env.store.audit_page(bob.id, 10, None).items] == []
    assert answered_in_time(env, started)


def test_conflicts_that_use_up_the_time_end_in_503_not_in_a_timeout(
    env: Env, people: dict[str, User]
) -> None:
    bob = env.user(people["bob"].id)
    started = env.clock.now()
    commits = slow(env, env.store, "transact", 3, fail=ConditionFailed("user"))  # someone always wins

    r = rename(env, people)

    assert r.status == 503 and r.json()["code"] == "dependency_unavailable", r
    assert 1 < len(commits) < MAX_CONFLICT_RETRIES  # retried while the time allowed, not five times
    assert env.user(bob.id) == bob
    assert answered_in_time(env, started)


def test_a_commit_that_ran_long_answers_pending_and_sync_identity_pushes_the_change(
    env: Env, people: dict[str, User]
) -> None:
    bob = people["bob"]
    started = env.clock.now()
    slow(env, env.store, "transact", 6)  # committed, but no time left for an Auth0 call and its settling

    r = rename(env, people)

    assert r.status == 200 and r.json()["idpSync"] == "pending", r
    assert env.user(bob.id).first_name == "Robert"
    assert env.idp.calls_to("update_user") == [] and env.idp.users[bob.id].given_name == "Bob"
    assert answered_in_time(env, started)
    env.store.transact = type(env.store).transact.__get__(env.store)  # the table is fast again
    env.clock.advance(env.container.settings.sync_lease_seconds + 1)  # the request's lease lapsed

    assert env.run_sync()["synced"] == 1

    assert env.idp.users[bob.id].given_name == "Robert" and env.user(bob.id).idp_sync == "synced"


def test_with_time_enough_the_same_request_pushes_inline(env: Env, people: dict[str, User]) -> None:
    slow(env, env.store, "transact", 1)

    r = rename(env, people)

    assert r.status == 200 and r.json()["idpSync"] == "synced", r


# ------------------------------------------------------------------------------ the adapters
class Remaining:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


def test_auth0_calls_do_not_start_when_they_could_outlive_the_invocation() -> None:
    from usermgmt.adapters.auth0 import Auth0Config, Auth0IdentityProvider

    config = Auth0Config(
        base_url="https://tenant.example",
        client_id="c",
        mgmt_audience="a",
        connection="db",
        timeout_seconds=3,
    )
    sent: list[str] = []

    class Users:
        def get(self, id: str) -> dict[str, Any]:
            sent.append(id)
            return {"user_id": id, "email": None}

    class Client:
        users = Users()

    idp = Auth0IdentityProvider(config, lambda: "token", client=Client())  # type: ignore[arg-type]
    enough = int((2 * 3 + budget.AWS_CALL_SECONDS + budget.ANSWER_RESERVE_SECONDS) * 1000)
    with budget.invocation(Remaining(enough)):
        assert idp.get_user("auth0|1") is not None
    with budget.invocation(Remaining(enough - 1)), pytest.raises(IdpUnavailable):
        idp.get_user("auth0|2")
    assert sent == ["auth0|1"]


def test_an_email_is_not_started_when_it_could_outlive_the_invocation() -> None:
    from usermgmt.adapters.ses import SesMailer

    sent: list[dict[str, Any]] = []

    class Ses:
        def send_email(self, **kwargs: Any) -> None:
            sent.append(kwargs)

    mailer = SesMailer(Ses, "no-reply@example.com", "")
    email = Email(to="x@example.com", subject="s", text="t", html="<p>t</p>")
    enough = int((budget.AWS_CALL_SECONDS + budget.ANSWER_RESERVE_SECONDS) * 1000)
    with budget.invocation(Remaining(enough)):
        mailer.send(email)
    with budget.invocation(Remaining(enough - 1)), pytest.raises(MailUnavailable):
        mailer.send(email)
    assert len(sent) == 1


def test_outside_an_invocation_there_is_no_limit() -> None:
    assert budget.allows(10**9)
    with budget.invocation(LambdaContext("x")):
        assert not budget.allows(15)
    assert budget.allows(10**9)


def test_the_auth0_secret_is_read_only_when_the_read_still_fits() -> None:
    from moto import mock_aws

    from usermgmt.adapters.secrets import CachedSecret, SecretOutOfTime

    now = [0.0]
    then = 7.0  # what follows the read (token fetch, Management API call, settling)
    enough = int((budget.AWS_CALL_SECONDS + then + budget.ANSWER_RESERVE_SECONDS) * 1000)
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="eu-central-1")
        arn = client.create_secret(Name="auth0-client", SecretString="s3cret")["ARN"]
        reads: list[str] = []
        client.meta.events.register(
            "before-call.secrets-manager.GetSecretValue", lambda **_: reads.append("read")
        )
        secret = CachedSecret(arn, lambda: client, then_seconds=then, clock=lambda: now[0])
        with budget.invocation(Remaining(enough - 1)), pytest.raises(SecretOutOfTime):
            secret()  # a cold read that could outlive the invocation is not started
        assert reads == []
        with budget.invocation(Remaining(enough)):
            assert secret() == "s3cret"
        with budget.invocation(Remaining(1)):
            assert secret() == "s3cret"  # cached: no read, so no time needed
        now[0] += 301  # the cache ends (a rotated secret is read again)
        with budget.invocation(Remaining(enough - 1)), pytest.raises(SecretOutOfTime):
            secret()
        assert reads == ["read"]
