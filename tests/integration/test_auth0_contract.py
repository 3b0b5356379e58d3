"""Contract of ``IdentityProvider``: the in-memory fake and the real Auth0 adapter behave the same.

The real adapter (``usermgmt.adapters.auth0``, on auth0-python) talks over real HTTP to the local Auth0
(``local.auth0.LocalAuth0``) served on 127.0.0.1 on a free port in a background thread. The fake
(``tests.fakes.fake_idp``) is what unit tests of the service use; these checks keep it honest.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from local.auth0 import LocalAuth0, ServerHandle, serve
from tests.fakes.fake_idp import FakeIdentityProvider
from usermgmt.adapters.auth0 import Auth0Config, Auth0IdentityProvider, ClientCredentialsToken
from usermgmt.errors import (
    IdpAccessDenied,
    IdpEmailTaken,
    IdpError,
    IdpPasswordTooWeak,
    IdpRejected,
    IdpUnavailable,
    IdpUserMissing,
)
from usermgmt.ports import IdentityProvider, IdpNewUser, IdpUserUpdate

ROOT = Path(__file__).resolve().parents[2]
M2M_CLIENT = "contract-m2m"
M2M_SECRET = "contract-secret"
CONNECTION = "Username-Password-Authentication"
PASSWORD = "Initial-Passw0rd"


class BodyRecorder:
    """WSGI middleware (test only) remembering request bodies, which the local Auth0 never logs."""

    def __init__(self, app: LocalAuth0) -> None:
        self.app = app
        self.bodies: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        if environ["REQUEST_METHOD"] in ("PATCH", "POST") and environ["PATH_INFO"].startswith("/api/v2/"):
            with self._lock:
                self.bodies.append(
                    (environ["REQUEST_METHOD"], environ["PATH_INFO"], json.loads(raw or b"null"))
                )
        return self.app(environ, start_response)


@dataclass
class LocalStack:
    app: LocalAuth0
    recorder: BodyRecorder
    handle: ServerHandle
    secret_reads: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.handle.port}"

    def config(self, *, timeout: float = 2.0, connection: str = CONNECTION) -> Auth0Config:
        return Auth0Config(
            base_url=self.url,
            client_id=M2M_CLIENT,
            mgmt_audience=self.app.mgmt_audience,
            connection=connection,
            timeout_seconds=timeout,
        )

    def secret(self) -> str:
        self.secret_reads.append(time.time())
        return M2M_SECRET

    def adapter(self, *, timeout: float = 2.0, connection: str = CONNECTION) -> Auth0IdentityProvider:
        config = self.config(timeout=timeout, connection=connection)
        return Auth0IdentityProvider(config, ClientCredentialsToken(config, self.secret))

    def api_requests(self, method: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.app.request_log
            if r["path"].startswith("/api/v2/") and (method is None or r["method"] == method)
        ]


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    app = LocalAuth0(
        issuer="https://127.0.0.1:4000/",
        public_url="http://127.0.0.1:4000",
        api_audience="https://api.contract.local",
        login_client_id="contract-login",
        m2m_client_id=M2M_CLIENT,
        m2m_client_secret=M2M_SECRET,
    )
    recorder = BodyRecorder(app)
    handle = serve(recorder, "127.0.0.1", 0)
    try:
        yield LocalStack(app=app, recorder=recorder, handle=handle)
    finally:
        handle.shutdown()


# ---------------------------------------------------------------------------------------------
# Backends: one object per implementation, same operations
# ---------------------------------------------------------------------------------------------


class Backend:
    idp: IdentityProvider

    def seed(
        self, user_id: str, email: str, *, given_name: str, family_name: str, blocked: bool = False
    ) -> None:
        raise NotImplementedError

    def fail_500(self) -> None:
        raise NotImplementedError

    def fail_429(self, reset_in: float) -> None:
        raise NotImplementedError

    def slow_idp(self) -> IdentityProvider:
        """An IdentityProvider whose next call outlives its timeout."""
        raise NotImplementedError

    def revocations(self, user_id: str) -> int:
        raise NotImplementedError


class FakeBackend(Backend):
    def __init__(self) -> None:
        self.fake = FakeIdentityProvider()
        self.idp = self.fake

    def seed(
        self, user_id: str, email: str, *, given_name: str, family_name: str, blocked: bool = False
    ) -> None:
        self.fake.add_user(
            user_id, email, given_name=given_name, family_name=family_name, blocked=blocked, password=PASSWORD
        )

    def fail_500(self) -> None:
        self.fake.fail_next(1, IdpUnavailable("status 500"))

    def fail_429(self, reset_in: float) -> None:
        self.fake.fail_next(1, IdpUnavailable("status 429", retry_after=reset_in))

    def slow_idp(self) -> IdentityProvider:
        self.fake.fail_next(1, IdpUnavailable("timeout"))
        return self.fake

    def revocations(self, user_id: str) -> int:
        return self.fake.revocations.get(user_id, 0)


class RealBackend(Backend):
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.idp = stack.adapter()

    def seed(
        self, user_id: str, email: str, *, given_name: str, family_name: str, blocked: bool = False
    ) -> None:
        self.stack.app.add_user(
            user_id, email, PASSWORD, given_name=given_name, family_name=family_name, blocked=blocked
        )

    def fail_500(self) -> None:
        self.stack.app.inject_fault(500)

    def fail_429(self, reset_in: float) -> None:
        self.stack.app.inject_fault(429, ratelimit_reset_in=reset_in)

    def slow_idp(self) -> IdentityProvider:
        idp = self.stack.adapter(timeout=0.5)
        assert idp.get_user("auth0|warm-up") is None  # token fetched and SDK imported before the delay
        self.stack.app.inject_fault(None, delay=1.5)
        return idp

    def revocations(self, user_id: str) -> int:
        state = self.stack.app.get_user(user_id)
        assert state is not None
        revocations: Mapping[str, int] = state["_revocations"]
        # One revoke_sessions = sessions + refresh tokens ended.
        assert revocations["sessions"] == revocations["refresh_tokens"]
        return revocations["sessions"]


@pytest.fixture(params=["fake", "auth0"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "fake":
        be: Backend = FakeBackend()
    else:
        be = RealBackend(request.getfixturevalue("stack"))
    be.seed("auth0|alice", "Alice@Example.com", given_name="Alice", family_name="Able")
    be.seed("auth0|bob", "bob@example.com", given_name="Bob", family_name="Baker")
    return be


# ---------------------------------------------------------------------------------------------
# Contract checks (both implementations)
# ---------------------------------------------------------------------------------------------


def test_get_user(backend: Backend) -> None:
    user = backend.idp.get_user("auth0|alice")
    assert user is not None
    assert user.user_id == "auth0|alice"
    assert user.email == "alice@example.com"
    assert (user.given_name, user.family_name, user.name) == ("Alice", "Able", "Alice Able")
    assert user.email_verified is True and user.blocked is False


def test_get_unknown_user_is_none(backend: Backend) -> None:
    assert backend.idp.get_user("auth0|nobody") is None


def test_update_then_get_reflects_everything(backend: Backend) -> None:
    backend.idp.update_user(
        "auth0|alice",
        IdpUserUpdate(
            name="Alicia Zed",
            given_name="Alicia",
            family_name="Zed",
            blocked=True,
            email="Alicia@Example.org",
            email_verified=False,
        ),
    )
    user = backend.idp.get_user("auth0|alice")
    assert user is not None
    assert (user.name, user.given_name, user.family_name) == ("Alicia Zed", "Alicia", "Zed")
    assert user.blocked is True
    assert user.email == "alicia@example.org"
    assert user.email_verified is False

    backend.idp.update_user("auth0|alice", IdpUserUpdate(blocked=False))
    user = backend.idp.get_user("auth0|alice")
    assert user is not None and user.blocked is False and user.name == "Alicia Zed"


def test_empty_update_changes_nothing(backend: Backend) -> None:
    backend.idp.update_user("auth0|alice", IdpUserUpdate())
    user = backend.idp.get_user("auth0|alice")
    assert user is not None and user.name == "Alice Able"


def test_email_taken(backend: Backend) -> None:
    with pytest.raises(IdpEmailTaken) as caught:
        backend.idp.update_user("auth0|alice", IdpUserUpdate(email="BOB@example.com", given_name="Changed"))
    assert "already exists" not in str(caught.value)
    user = backend.idp.get_user("auth0|alice")
    assert user is not None
    assert user.email == "alice@example.com"
    assert user.given_name == "Alice"  # nothing changed at all


def test_name_too_long_is_rejected(backend: Backend) -> None:
    with pytest.raises(IdpRejected) as caught:
        backend.idp.update_user("auth0|alice", IdpUserUpdate(given_name="x" * 151))
    assert caught.value.status == 400
    assert caught.value.error_code == "invalid_body"


def test_update_unknown_user(backend: Backend) -> None:
    with pytest.raises(IdpUserMissing):
        backend.idp.update_user("auth0|nobody", IdpUserUpdate(name="X"))


def test_weak_password(backend: Backend) -> None:
    with pytest.raises(IdpPasswordTooWeak) as caught:
        backend.idp.set_password("auth0|alice", "weakpass")
    assert "PasswordStrengthError" not in str(caught.value)


def test_set_password_lifts_block(backend: Backend) -> None:
    """Auth0 unblocks on a password change; the service must re-assert a suspension."""
    backend.idp.update_user("auth0|alice", IdpUserUpdate(blocked=True))
    backend.idp.set_password("auth0|alice", "N3w-Passw0rd!")
    user = backend.idp.get_user("auth0|alice")
    assert user is not None and user.blocked is False


def test_set_password_unknown_user(backend: Backend) -> None:
    with pytest.raises(IdpUserMissing):
        backend.idp.set_password("auth0|nobody", "N3w-Passw0rd!")


def test_delete(backend: Backend) -> None:
    backend.idp.delete_user("auth0|nobody")  # unknown: fine
    backend.idp.delete_user("auth0|alice")
    assert backend.idp.get_user("auth0|alice") is None
    backend.idp.delete_user("auth0|alice")  # again: fine
    assert backend.idp.get_user("auth0|bob") is not None


def test_revoke_sessions(backend: Backend) -> None:
    backend.idp.revoke_sessions("auth0|alice")
    assert backend.revocations("auth0|alice") == 1
    backend.idp.revoke_sessions("auth0|nobody")  # unknown: fine


def _new(
    user_id: str = "auth0|c0ffee0000000000000000aa", email: str = "New.Person@Example.com"
) -> IdpNewUser:
    return IdpNewUser(
        user_id=user_id,
        email=email,
        email_verified=False,
        given_name="New",
        family_name="Person",
        name="New Person",
    )


def test_create_user_under_our_id_without_a_usable_password(backend: Backend) -> None:
    backend.idp.create_user(_new())
    user = backend.idp.get_user("auth0|c0ffee0000000000000000aa")
    assert user is not None
    assert user.email == "new.person@example.com"
    assert user.email_verified is False and user.blocked is False
    assert (user.given_name, user.family_name, user.name) == ("New", "Person", "New Person")
    backend.idp.set_password("auth0|c0ffee0000000000000000aa", "N3w-Passw0rd!")  # the person's own, later


def test_create_user_twice_makes_one_user(backend: Backend) -> None:
    """A retried creation (Auth0's 409 for an id that exists) is done, never a second user."""
    backend.idp.create_user(_new())
    backend.idp.create_user(_new())
    assert backend.idp.get_user("auth0|c0ffee0000000000000000aa") is not None


def test_create_user_with_a_taken_email(backend: Backend) -> None:
    with pytest.raises(IdpEmailTaken):
        backend.idp.create_user(_new(email="BOB@example.com"))
    assert backend.idp.get_user("auth0|c0ffee0000000000000000aa") is None


def test_create_user_name_too_long_is_rejected(backend: Backend) -> None:
    new = _new()
    with pytest.raises(IdpRejected) as caught:
        backend.idp.create_user(IdpNewUser(**{**new.__dict__, "given_name": "x" * 151}))
    assert caught.value.status == 400


def test_server_error_is_unavailable(backend: Backend) -> None:
    backend.fail_500()
    with pytest.raises(IdpUnavailable):
        backend.idp.get_user("auth0|alice")
    assert backend.idp.get_user("auth0|alice") is not None  # one failure only


def test_rate_limit_is_unavailable_with_retry_after(backend: Backend) -> None:
    backend.fail_429(reset_in=5)
    with pytest.raises(IdpUnavailable) as caught:
        backend.idp.update_user("auth0|alice", IdpUserUpdate(name="X"))
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 7
    user = backend.idp.get_user("auth0|alice")
    assert user is not None and user.name == "Alice Able"


def test_timeout_is_unavailable(backend: Backend) -> None:
    idp = backend.slow_idp()
    started = time.monotonic()
    with pytest.raises(IdpUnavailable):
        idp.get_user("auth0|alice")
    assert time.monotonic() - started < 1.4


# ---------------------------------------------------------------------------------------------
# The real adapter only: wire behaviour
# ---------------------------------------------------------------------------------------------


def test_name_only_update_is_one_patch(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    idp = stack.adapter()
    idp.update_user("auth0|alice", IdpUserUpdate(given_name="Alicia", blocked=True))
    patches = stack.api_requests("PATCH")
    assert [p["path"] for p in patches] == ["/api/v2/users/auth0|alice"]
    assert stack.recorder.bodies == [
        ("PATCH", "/api/v2/users/auth0|alice", {"given_name": "Alicia", "blocked": True})
    ]


def test_email_change_sends_connection_in_its_own_patch(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    idp = stack.adapter()
    idp.update_user(
        "auth0|alice", IdpUserUpdate(name="New Name", email="new@example.com", email_verified=False)
    )
    bodies = [b for (_, _, b) in stack.recorder.bodies]
    assert len(stack.api_requests("PATCH")) == 2
    assert {"email": "new@example.com", "email_verified": False, "connection": CONNECTION} in bodies
    assert {"name": "New Name"} in bodies


def test_email_change_with_wrong_connection_is_rejected(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    idp = stack.adapter(connection="Some-Other-Connection")
    with pytest.raises(IdpRejected) as caught:
        idp.update_user("auth0|alice", IdpUserUpdate(email="new@example.com"))
    assert caught.value.status == 400


def test_create_user_sends_our_id_the_connection_and_an_unknown_password(stack: LocalStack) -> None:
    idp = stack.adapter()
    idp.create_user(_new())
    ((method, path, body),) = stack.recorder.bodies
    assert (method, path) == ("POST", "/api/v2/users")
    password = body.pop("password")
    assert body == {
        "connection": CONNECTION,
        "user_id": "c0ffee0000000000000000aa",
        "email": "New.Person@Example.com",
        "email_verified": False,
        "verify_email": False,
        "given_name": "New",
        "family_name": "Person",
        "name": "New Person",
        "blocked": False,
    }
    assert len(password) >= 32
    assert stack.app.get_user("auth0|c0ffee0000000000000000aa") is not None
    # a second attempt gets Auth0's 409 and a GET: done
    idp.create_user(_new())
    assert [r["status"] for r in stack.api_requests()][-2:] == [409, 200]


def test_local_auth0_create_answers_as_auth0(stack: LocalStack) -> None:
    """The Management API answers the adapter relies on: 409 for an id or email that exists, 400 for the
    connection's rules (unknown connection, weak or missing password)."""
    idp = stack.adapter(connection="Some-Other-Connection")
    with pytest.raises(IdpRejected) as caught:
        idp.create_user(_new())
    assert caught.value.status == 400 and caught.value.error_code == "inexistent_connection"
    app = stack.app
    app.add_user("auth0|taken", "taken@example.com", PASSWORD, given_name="T", family_name="K")
    token = stack.adapter()._token()
    import httpx

    def post(body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{stack.url}/api/v2/users", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    base = {"connection": CONNECTION, "email": "x@example.com", "password": "N3w-Passw0rd!"}
    assert post({**base, "password": "weak"}).status_code == 400
    assert post({k: v for k, v in base.items() if k != "password"}).status_code == 400
    assert post({**base, "email": "TAKEN@example.com"}).json()["statusCode"] == 409
    assert post({**base, "user_id": "taken"}).status_code == 409
    created = post({**base, "user_id": "fresh"})
    assert created.status_code == 201 and created.json()["user_id"] == "auth0|fresh"


def test_local_auth0_public_signup(stack: LocalStack) -> None:
    """POST /dbconnections/signup as the storefront calls it: 200 {_id, email, email_verified}."""
    import httpx

    url = f"{stack.url}/dbconnections/signup"
    body = {"client_id": "contract-login", "email": "Shopper@Example.com", "password": "N3w-Passw0rd!"}
    body["connection"] = CONNECTION
    answer = httpx.post(url, json=body)
    assert answer.status_code == 200
    data = answer.json()
    assert data["email"] == "shopper@example.com" and data["email_verified"] is False
    assert stack.app.check_password(f"auth0|{data['_id']}", "N3w-Passw0rd!")
    again = httpx.post(url, json=body)  # the address exists: Auth0's generic refusal
    assert again.status_code == 400 and again.json()["code"] == "invalid_signup"
    weak = httpx.post(url, json={**body, "email": "other@example.com", "password": "weak"})
    assert weak.status_code == 400 and weak.json()["name"] == "PasswordStrengthError"
    wrong = httpx.post(url, json={**body, "email": "other@example.com", "connection": "Nope"})
    assert wrong.status_code == 400


def test_empty_update_makes_no_request(stack: LocalStack) -> None:
    idp = stack.adapter()
    idp.update_user("auth0|alice", IdpUserUpdate())
    assert stack.app.request_log == []
    assert stack.secret_reads == []


def test_set_password_sends_password_and_connection(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    stack.adapter().set_password("auth0|alice", "N3w-Passw0rd!")
    assert stack.recorder.bodies == [
        ("PATCH", "/api/v2/users/auth0|alice", {"password": "N3w-Passw0rd!", "connection": CONNECTION})
    ]
    assert stack.app.check_password("auth0|alice", "N3w-Passw0rd!")


def test_revoke_sessions_hits_both_endpoints(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    stack.adapter().revoke_sessions("auth0|alice")
    assert [(r["method"], r["path"], r["status"]) for r in stack.api_requests()] == [
        ("DELETE", "/api/v2/users/auth0|alice/sessions", 204),
        ("DELETE", "/api/v2/users/auth0|alice/refresh-tokens", 204),
    ]


def test_token_fetched_once_for_many_calls(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    idp = stack.adapter()
    assert stack.secret_reads == []  # nothing is fetched before it is needed
    for i in range(5):
        idp.update_user("auth0|alice", IdpUserUpdate(name=f"Name {i}"))
        assert idp.get_user("auth0|alice") is not None
    assert stack.app.tokens_issued() == 1
    assert len(stack.secret_reads) == 1
    assert [r["path"] for r in stack.app.request_log].count("/oauth/token") == 1


def test_token_fetched_once_under_concurrency(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    config = stack.config()
    token = ClientCredentialsToken(config, stack.secret)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(token())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 8
    assert stack.app.tokens_issued() == 1


def test_token_refetched_after_expiry(stack: LocalStack) -> None:
    now = [1000.0]
    token = ClientCredentialsToken(stack.config(), stack.secret, clock=lambda: now[0])
    first = token()
    now[0] += 86400 - 61
    assert token() == first
    now[0] += 2  # within the last 60 s of the token's life
    token()
    assert stack.app.tokens_issued() == 2


def test_token_endpoint_unavailable(stack: LocalStack) -> None:
    stack.app.inject_fault(503, path_prefix="/oauth/token")
    with pytest.raises(IdpUnavailable):
        stack.adapter().get_user("auth0|alice")
    stack.app.inject_fault(429, path_prefix="/oauth/token", ratelimit_reset_in=3)
    with pytest.raises(IdpUnavailable) as caught:
        stack.adapter().get_user("auth0|alice")
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


def test_token_endpoint_rejecting_our_secret_is_access_denied_not_a_refusal(stack: LocalStack) -> None:
    # a rotated secret is an operator's mistake: transient for the product, never "failed"
    config = stack.config()
    idp = Auth0IdentityProvider(config, ClientCredentialsToken(config, lambda: "wrong-secret"))
    with pytest.raises(IdpAccessDenied) as caught:
        idp.get_user("auth0|alice")
    assert isinstance(caught.value, IdpUnavailable)
    assert caught.value.reason == "token status 401"
    assert "wrong-secret" not in str(caught.value) and "Unauthorized" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "prefix"), [(401, "/oauth/token"), (403, "/oauth/token"), (403, "/api/v2/")]
)
def test_fault_knobs_rehearse_an_operators_mistake(stack: LocalStack, status: int, prefix: str) -> None:
    # the local Auth0's knobs make the token endpoint or the Management API refuse us
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="Alice", family_name="Able")
    stack.app.inject_fault(status, path_prefix=prefix, count=-1)
    with pytest.raises(IdpAccessDenied):
        stack.adapter().update_user("auth0|alice", IdpUserUpdate(name="Alice Again"))
    stack.app.clear_faults()
    stack.adapter().update_user("auth0|alice", IdpUserUpdate(name="Alice Again"))


def test_unreachable_auth0_is_unavailable(stack: LocalStack) -> None:
    config = Auth0Config(
        base_url="http://127.0.0.1:9",
        client_id=M2M_CLIENT,
        mgmt_audience="x",
        connection=CONNECTION,
        timeout_seconds=0.5,
    )
    idp = Auth0IdentityProvider(config, ClientCredentialsToken(config, stack.secret))
    with pytest.raises(IdpUnavailable) as caught:
        idp.get_user("auth0|alice")
    assert caught.value.reason in ("transport", "timeout")


def test_stale_token_is_dropped_and_refetched_once(stack: LocalStack) -> None:
    """A 401 from the API (e.g. keys rotated) costs one new token, then the call succeeds."""
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    other = LocalAuth0(
        issuer=stack.app.issuer,
        public_url="http://x",
        api_audience="a",
        login_client_id="l",
        m2m_client_id=M2M_CLIENT,
        m2m_client_secret=M2M_SECRET,
    )
    now = int(time.time())
    forged = other.sign({"iss": other.issuer, "aud": other.mgmt_audience, "iat": now, "exp": now + 3600})
    answers = [forged]

    class Answer:
        status_code = 200
        headers: Mapping[str, str] = {}

        def __init__(self, token: str) -> None:
            self.token = token

        def json(self) -> Any:
            return {"access_token": self.token, "expires_in": 3600}

    def http_post(url: str, body: Mapping[str, str], timeout: float) -> Answer:
        assert url == stack.url + "/oauth/token"
        assert body["grant_type"] == "client_credentials" and body["client_secret"] == M2M_SECRET
        if answers:
            return Answer(answers.pop())
        token = stack.app.sign(
            {
                "iss": stack.app.issuer,
                "aud": stack.app.mgmt_audience,
                "iat": now,
                "exp": now + 3600,
                "scope": "read:users",
            }
        )
        return Answer(token)

    config = stack.config()
    token = ClientCredentialsToken(config, stack.secret, http_post=http_post)
    idp = Auth0IdentityProvider(config, token)
    user = idp.get_user("auth0|alice")
    assert user is not None and user.user_id == "auth0|alice"
    statuses = [r["status"] for r in stack.api_requests("GET")]
    assert statuses == [401, 200]
    assert len(stack.secret_reads) == 2


def test_errors_carry_no_vendor_text(stack: LocalStack) -> None:
    stack.app.add_user("auth0|alice", "alice@example.com", PASSWORD, given_name="A", family_name="B")
    stack.app.add_user("auth0|bob", "bob@example.com", PASSWORD, given_name="B", family_name="C")
    idp = stack.adapter()
    stack.app.inject_fault(500)
    failures: list[IdpError] = []
    for action in (
        lambda: idp.get_user("auth0|alice"),
        lambda: idp.update_user("auth0|alice", IdpUserUpdate(email="bob@example.com")),
        lambda: idp.set_password("auth0|alice", "weak"),
        lambda: idp.update_user("auth0|alice", IdpUserUpdate(name="")),
    ):
        with pytest.raises(IdpError) as caught:
            action()
        failures.append(caught.value)
    assert [type(f) for f in failures] == [IdpUnavailable, IdpEmailTaken, IdpPasswordTooWeak, IdpRejected]
    for failure in failures:
        text = str(failure) + repr(failure)
        for vendor in ("Internal error", "already exists", "PasswordStrengthError", "Payload validation"):
            assert vendor not in text
        assert failure.__cause__ is None and failure.__suppress_context__


def test_adapter_import_does_not_import_auth0() -> None:
    code = (
        "import sys, usermgmt.adapters.auth0\n"
        "assert 'auth0' not in sys.modules, 'auth0 imported'\n"
        "assert 'httpx' not in sys.modules, 'httpx imported'\n"
    )
    # no bytecode written into layers/shared: it would invalidate sam build's layer cache
    env = {
        "PYTHONPATH": str(ROOT / "layers" / "shared"),
        "PATH": "/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# The real adapter only: classification on status codes (prebuilt client, no HTTP)
# ---------------------------------------------------------------------------------------------


class VendorError(Exception):
    """Shaped like auth0-python's ``ApiError``/``ParsingError``: status_code, headers, body."""

    def __init__(self, status_code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"vendor says {body}")
        self.status_code = status_code
        self.body = body
        self.headers = headers or {}


class StubUsers:
    def __init__(self, error: Exception | None = None, result: Any = None) -> None:
        self.error = error
        self.result = result
        self.sessions = self
        self.refresh_token = self

    def get(self, id: str) -> Any:
        if self.error is not None:
            raise self.error
        return self.result

    def update(self, id: str, **fields: Any) -> Any:
        return self.get(id)

    def delete(self, user_id: str) -> None:
        self.get(user_id)


class StubClient:
    def __init__(self, users: StubUsers) -> None:
        self.users = users


def stub_idp(error: Exception | None = None, result: Any = None) -> Auth0IdentityProvider:
    config = Auth0Config(base_url="http://unused", client_id="c", mgmt_audience="a", connection=CONNECTION)
    return Auth0IdentityProvider(config, lambda: "token", client=StubClient(StubUsers(error, result)))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (VendorError(409, {"statusCode": 409, "errorCode": "conflict"}), IdpRejected(409, "conflict")),
        (VendorError(403, {"statusCode": 403, "errorCode": "no_scope"}), IdpAccessDenied("status 403")),
        (VendorError(401, {"statusCode": 401, "errorCode": "invalid_token"}), IdpAccessDenied("status 401")),
        (VendorError(400, {"statusCode": 400, "error": "Bad Request"}), IdpRejected(400, "Bad Request")),
        (VendorError(400, "not json"), IdpRejected(400, None)),
        (VendorError(502, "bad gateway"), IdpUnavailable("status 502")),
        (VendorError(503, None, {"Retry-After": "7"}), IdpUnavailable("status 503", 7.0)),
    ],
)
def test_classification_on_status(error: Exception, expected: IdpError) -> None:
    with pytest.raises(IdpError) as caught:
        stub_idp(error).update_user("auth0|x", IdpUserUpdate(name="X"))
    assert type(caught.value) is type(expected)
    assert caught.value == expected  # dataclass equality: status/error_code or reason/retry_after


def test_parsing_error_on_2xx_counts_as_success() -> None:
    body = {
        "user_id": "auth0|x",
        "email": "x@example.com",
        "email_verified": True,
        "blocked": False,
        "name": "X",
        "given_name": None,
        "family_name": "Y",
        "created_at": "not a date",
    }
    idp = stub_idp(VendorError(200, body))
    idp.update_user("auth0|x", IdpUserUpdate(name="X"))
    user = idp.get_user("auth0|x")
    assert (
        user is not None
        and user.email == "x@example.com"
        and user.family_name == "Y"
        and user.given_name is None
    )


def test_bugs_are_not_disguised_as_idp_errors() -> None:
    with pytest.raises(TypeError):
        stub_idp(TypeError("programming error")).get_user("auth0|x")
