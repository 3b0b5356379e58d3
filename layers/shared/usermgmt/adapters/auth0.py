"""``IdentityProvider`` on Auth0's Management API (auth0-python 6.8.0).

Design points (the Auth0 facts behind them are in ``docs/auth0.md``):

* The generated ``auth0.management.Auth0`` client is used with an explicit ``base_url`` (so the local
  stand-in over plain http works), ``max_retries=0`` (the service decides about retries; the SDK's
  default would sleep up to a minute inside a Lambda) and a finite timeout.
* The Management API token comes from ``ClientCredentialsToken``: a cached client-credentials grant,
  fetched with httpx, refreshed 60 s before it expires.
* Importing ``auth0`` costs about half a second, so neither ``auth0`` nor ``httpx`` is imported at
  module import time; only code paths that talk to Auth0 pay for it.
* Every vendor failure is classified in one place (``_classify``) on the HTTP status code, never on
  the SDK's exception class (an endpoint raises a subclass only for its own list of statuses).
  401 and 403 (on the token endpoint or the Management API: a rotated secret, a removed grant or
  scope) are ``IdpAccessDenied``: an operator's mistake, retried like an outage, never a refusal of
  the user's data.
  Exceptions leaving this module are ``usermgmt.errors.Idp*`` without vendor text and without the
  vendor exception chained.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

from usermgmt import budget
from usermgmt.errors import (
    IdpAccessDenied,
    IdpEmailTaken,
    IdpError,
    IdpPasswordTooWeak,
    IdpRejected,
    IdpUnavailable,
    IdpUserMissing,
)
from usermgmt.ports import IdpNewUser, IdpUser, IdpUserUpdate

__all__ = [
    "Auth0Config",
    "Auth0IdentityProvider",
    "ClientCredentialsToken",
    "ManagementClient",
    "TokenHttpResponse",
]

logger = logging.getLogger(__name__)

EMAIL_TAKEN_MESSAGE = "The specified new email already exists"
PASSWORD_WEAK_PREFIX = "PasswordStrengthError"  # noqa: S105 - an error message prefix, not a password
TOKEN_LEEWAY_SECONDS = 60.0

# Sent instead of the SDK's default telemetry header (which reveals the Python version).
_CLIENT_INFO_HEADER = base64.b64encode(json.dumps({"name": "usermgmt", "version": "1"}).encode()).decode()

T = TypeVar("T")


@dataclass(frozen=True)
class Auth0Config:
    """Where Auth0 is and who we are to it. The client secret is not part of it (see ``secret_provider``)."""

    base_url: str  # "https://tenant.eu.auth0.com" or "http://127.0.0.1:4000"
    client_id: str
    mgmt_audience: str  # "https://tenant.eu.auth0.com/api/v2/"
    connection: str  # the database connection, e.g. "Username-Password-Authentication"
    timeout_seconds: float = 3.0

    @property
    def mgmt_base_url(self) -> str:
        return self.base_url.rstrip("/") + "/api/v2"

    @property
    def token_url(self) -> str:
        return self.base_url.rstrip("/") + "/oauth/token"


# ---------------------------------------------------------------------------------------------
# M2M token
# ---------------------------------------------------------------------------------------------


class TokenHttpResponse(Protocol):
    """What ``ClientCredentialsToken`` needs from an HTTP response (``httpx.Response`` fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


HttpPost = Callable[[str, Mapping[str, str], float], TokenHttpResponse]
"""``http_post(url, json_body, timeout_seconds) -> response``."""


def _httpx_post(url: str, body: Mapping[str, str], timeout: float) -> TokenHttpResponse:
    import httpx  # deferred on purpose (import cost)

    return httpx.post(url, json=dict(body), timeout=timeout)


class ClientCredentialsToken:
    """A zero-argument callable returning a cached Management API access token.

    The token is fetched with a client-credentials grant and reused until ``expires_in - 60 s``. The
    client secret is asked for only when a token has to be fetched. Thread-safe: concurrent callers
    wait for one fetch. Raises ``IdpUnavailable`` (429, 5xx, timeout, transport failure, unusable
    answer) or ``IdpRejected`` (any other refusal). Neither the token nor the secret is ever logged.
    """

    def __init__(
        self,
        config: Auth0Config,
        secret_provider: Callable[[], str],
        http_post: HttpPost | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._secret_provider = secret_provider
        self._http_post: HttpPost = http_post or _httpx_post
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until = 0.0
        self.fetch_count = 0

    def __call__(self) -> str:
        with self._lock:
            if self._token is not None and self._clock() < self._valid_until:
                return self._token
            started = self._clock()
            token, expires_in = self._fetch()
            leeway = TOKEN_LEEWAY_SECONDS if expires_in > 2 * TOKEN_LEEWAY_SECONDS else expires_in / 2
            self._token = token
            self._valid_until = started + expires_in - leeway
            return token

    def invalidate(self) -> None:
        """Forget the cached token (for example after the API answered 401)."""
        with self._lock:
            self._token = None
            self._valid_until = 0.0

    def _fetch(self) -> tuple[str, float]:
        try:
            secret = self._secret_provider()
        except IdpError:
            raise
        except Exception:  # whatever the secret store raised, Auth0 cannot be reached without it
            logger.warning("auth0 token: the client secret could not be read")
            raise IdpUnavailable("client secret unavailable") from None
        body = {
            "grant_type": "client_credentials",
            "client_id": self._config.client_id,
            "client_secret": secret,
            "audience": self._config.mgmt_audience,
        }
        self.fetch_count += 1
        try:
            response = self._http_post(self._config.token_url, body, self._config.timeout_seconds)
        except IdpError:
            raise
        except Exception as exc:
            reason = _transport_reason(exc)
            if reason is None:
                raise
            logger.warning("auth0 token: request failed (%s)", reason)
            raise IdpUnavailable(reason) from None
        status = response.status_code
        if not 200 <= status < 300:
            payload = _safe_json(response)
            error_code = _error_code(payload)
            logger.warning("auth0 token: status %s (%s)", status, error_code)
            if _is_transient_status(status):
                raise IdpUnavailable(f"token status {status}", _retry_after(response.headers))
            # Any refusal of our own client credentials (401/403 access_denied, 400 invalid_client or
            # unauthorized_client): nothing about a user, an operator must fix the configuration.
            raise IdpAccessDenied(f"token status {status}")
        payload = _safe_json(response)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        expires_in = payload.get("expires_in") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            logger.warning("auth0 token: the answer carried no access token")
            raise IdpUnavailable("unusable token response")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 300.0  # Auth0 always sends it; be conservative if it does not.
        return token, float(expires_in)


# ---------------------------------------------------------------------------------------------
# Management client surface we use (satisfied by ``auth0.management.Auth0``)
# ---------------------------------------------------------------------------------------------


class _UserSubResource(Protocol):
    def delete(self, user_id: str) -> None: ...


class _UsersResource(Protocol):
    @property
    def sessions(self) -> _UserSubResource: ...

    @property
    def refresh_token(self) -> _UserSubResource: ...

    def get(self, id: str) -> Any: ...

    def update(self, id: str, **fields: Any) -> Any: ...

    def create(self, **fields: Any) -> Any: ...

    def delete(self, id: str) -> None: ...


class ManagementClient(Protocol):
    @property
    def users(self) -> _UsersResource: ...


@dataclass(frozen=True)
class _Unparsed:
    """A 2xx answer whose body the SDK could not parse into its model (``ParsingError``)."""

    body: Any


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class Auth0IdentityProvider:
    """``usermgmt.ports.IdentityProvider`` on the Auth0 Management API."""

    def __init__(
        self,
        config: Auth0Config,
        token: Callable[[], str],
        *,
        client: ManagementClient | None = None,
    ) -> None:
        """``token`` is usually a ``ClientCredentialsToken``; ``client`` a prebuilt client for tests."""
        self._config = config
        self._token = token
        self._client = client
        self._client_lock = threading.Lock()

    # -- IdentityProvider ------------------------------------------------------------------------

    def get_user(self, user_id: str) -> IdpUser | None:
        users = self._users()
        result = self._call("get_user", lambda: users.get(user_id), missing_ok=True)
        if result is None:
            return None
        source = result.body if isinstance(result, _Unparsed) else result
        found_id = _field(source, "user_id")
        return IdpUser(
            user_id=found_id if isinstance(found_id, str) else user_id,
            email=_opt_str(_field(source, "email")),
            email_verified=_field(source, "email_verified") is True,
            blocked=_field(source, "blocked") is True,
            name=_opt_str(_field(source, "name")),
            given_name=_opt_str(_field(source, "given_name")),
            family_name=_opt_str(_field(source, "family_name")),
        )

    def update_user(self, user_id: str, update: IdpUserUpdate) -> None:
        if update.is_empty():
            return
        email_fields: dict[str, Any] = {}
        if update.email is not None:
            email_fields["email"] = update.email
        if update.email_verified is not None:
            email_fields["email_verified"] = update.email_verified
        profile_fields: dict[str, Any] = {
            key: value
            for key, value in (
                ("name", update.name),
                ("given_name", update.given_name),
                ("family_name", update.family_name),
                ("blocked", update.blocked),
            )
            if value is not None
        }
        users = self._users()
        # Email first: if Auth0 refuses the address (taken), nothing at all has changed.
        if email_fields:
            connection = self._config.connection
            self._call("update_email", lambda: users.update(user_id, connection=connection, **email_fields))
        if profile_fields:
            self._call("update_profile", lambda: users.update(user_id, **profile_fields))

    def set_password(self, user_id: str, password: str) -> None:
        users = self._users()
        connection = self._config.connection
        self._call("set_password", lambda: users.update(user_id, password=password, connection=connection))

    def create_user(self, user: IdpNewUser) -> None:
        """``POST /api/v2/users`` with the id chosen here (Auth0 prefixes the strategy: ``auth0|<id>``).

        The database connection needs a password: a random one nobody ever learns (48 random bytes,
        with every character class so any password policy accepts it), never stored or logged. The
        person sets their own through the invitation link. A 409 is "the user already exists": when the
        user with this id exists, an earlier attempt created it (done); otherwise the email is taken.
        """
        provider, sep, local_id = user.user_id.partition("|")
        if not sep or provider != "auth0" or not local_id:
            raise IdpRejected(400, "invalid_user_id")
        users = self._users()
        connection = self._config.connection
        fields: dict[str, Any] = {
            "connection": connection,
            "user_id": local_id,
            "email": user.email,
            "email_verified": user.email_verified,
            "verify_email": False,
            "given_name": user.given_name,
            "family_name": user.family_name,
            "name": user.name,
            "blocked": user.blocked,
            "password": _unusable_password(),
        }
        try:
            self._call("create_user", lambda: users.create(**fields))
        except IdpRejected as exc:
            if exc.status != 409:
                raise
            if self.get_user(user.user_id) is None:
                raise IdpEmailTaken() from None

    def delete_user(self, user_id: str) -> None:
        users = self._users()
        self._call("delete_user", lambda: users.delete(user_id), missing_ok=True)

    def revoke_sessions(self, user_id: str) -> None:
        users = self._users()
        self._call("revoke_sessions", lambda: users.sessions.delete(user_id), missing_ok=True)
        self._call("revoke_refresh_tokens", lambda: users.refresh_token.delete(user_id), missing_ok=True)

    # -- plumbing --------------------------------------------------------------------------------

    def _users(self) -> _UsersResource:
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    client = self._build_client()
                    self._client = client
        return client.users

    def _build_client(self) -> ManagementClient:
        from auth0 import management  # deferred: ~0.5 s import

        client: ManagementClient = management.Auth0(
            base_url=self._config.mgmt_base_url,
            token=self._token,
            timeout=self._config.timeout_seconds,
            max_retries=0,
            headers={"Auth0-Client": _CLIENT_INFO_HEADER},
        )
        return client

    def _call(self, op: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T | _Unparsed | None:
        """Run one SDK call; translate every failure in one place.

        A 401 makes the cached token be dropped and the call be tried once more (every operation is
        idempotent). With ``missing_ok`` a 404 returns ``None``.
        """
        retried = False
        while True:
            # never start a call (token fetch and request, each up to the timeout) that could outlive
            # the invocation, nor one that leaves no time to record its outcome (budget.py)
            if not budget.allows(2 * self._config.timeout_seconds + budget.AWS_CALL_SECONDS):
                logger.warning("auth0 %s not started: out of time", op)
                raise IdpUnavailable("out of time")
            try:
                return fn()
            except IdpError:
                raise  # from the token callable: already classified
            except Exception as exc:
                status = _status_of(exc)
                if status is not None and 200 <= status < 300:
                    return _Unparsed(getattr(exc, "body", None))  # ParsingError on a 2xx: it worked
                if status == 401 and not retried and hasattr(self._token, "invalidate"):
                    retried = True
                    self._token.invalidate()
                    continue
                if status == 404 and missing_ok:
                    return None
                error = _classify(exc, status)
                if error is None:
                    raise  # not a provider failure: a bug, let it surface
                logger.warning("auth0 %s failed: %s", op, error)
                raise error from None


# ---------------------------------------------------------------------------------------------
# Classification (the one place)
# ---------------------------------------------------------------------------------------------


def _classify(exc: BaseException, status: int | None) -> IdpError | None:
    if status is None:
        reason = _transport_reason(exc)
        return None if reason is None else IdpUnavailable(reason)
    headers = _headers_of(exc)
    body = getattr(exc, "body", None)
    if _is_transient_status(status):
        return IdpUnavailable(f"status {status}", _retry_after(headers))
    if status in (401, 403):
        return IdpAccessDenied(f"status {status}", _retry_after(headers))
    if status == 404:
        return IdpUserMissing()
    message = body.get("message") if isinstance(body, dict) else None
    if status == 400 and isinstance(message, str):
        if message == EMAIL_TAKEN_MESSAGE:
            return IdpEmailTaken()
        if message.startswith(PASSWORD_WEAK_PREFIX):
            return IdpPasswordTooWeak()
    return IdpRejected(status, _error_code(body))


def _unusable_password() -> str:
    import secrets

    return "Aa1!" + secrets.token_urlsafe(48)


def _is_transient_status(status: int) -> bool:
    return status == 429 or status == 408 or status >= 500


def _transport_reason(exc: BaseException) -> str | None:
    """``"timeout"``/``"transport"`` for network failures, else None."""
    httpx = sys.modules.get("httpx")
    if httpx is not None:
        if isinstance(exc, httpx.TimeoutException):
            return "timeout"
        if isinstance(exc, httpx.RequestError):  # TransportError and the rest of the request failures
            return "transport"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "transport"
    return None


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    response = getattr(exc, "response", None)  # httpx.HTTPStatusError
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    return None


def _headers_of(exc: BaseException) -> Mapping[str, str]:
    headers = getattr(exc, "headers", None)
    if isinstance(headers, Mapping):
        return headers
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    return None if value is None else str(value)


def _retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or ``x-ratelimit-reset`` (epoch)."""
    retry_after = _header(headers, "retry-after")
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(retry_after).timestamp() - now()
            except (TypeError, ValueError, IndexError):
                seconds = 0.0
        if seconds > 0:
            return seconds
    reset = _header(headers, "x-ratelimit-reset")
    if reset is not None:
        try:
            seconds = float(reset) - now()
        except ValueError:
            return None
        if seconds > 0:
            return seconds
    return None


def _error_code(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key in ("errorCode", "error"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _safe_json(response: TokenHttpResponse) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _field(source: Any, name: str) -> Any:
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
