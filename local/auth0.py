"""A local stand-in for the parts of Auth0 this project uses.

``LocalAuth0`` is a WSGI application (werkzeug) that emulates, with Auth0's documented status codes and
error bodies (see ``docs/auth0.md``):

* ``POST /oauth/token``: ``client_credentials`` (Management API tokens), ``password`` and
  ``http://auth0.com/oauth/grant-type/password-realm`` (so a person can log in locally); RS256 tokens.
* ``GET /.well-known/jwks.json`` and ``GET /.well-known/openid-configuration``.
* The Management API v2 endpoints the adapter calls: ``GET/PATCH/DELETE /api/v2/users/{id}``,
  ``GET /api/v2/users-by-email``, ``POST /api/v2/tickets/{password-change,email-verification}``,
  ``DELETE /api/v2/users/{id}/sessions``, ``DELETE /api/v2/users/{id}/refresh-tokens`` and
  ``POST /api/v2/users/{id}/revoke-access``.
* ``POST /api/v2/users`` (create: 201; 409 "The user already exists." for a taken id or email; 400 for
  the connection's rules) and the Authentication API's public sign-up ``POST /dbconnections/signup``.
* ``GET /lo/reset`` and ``GET /lo/verify``: the pages behind the ticket URLs it issues.
* Test knobs under ``/_knobs``: fault injection (status, delay, rate-limit headers), the sign-in age of
  password-grant tokens (``POST /_knobs/clock`` ``{"authAgeSeconds": N}``), the request log and a
  view of a user's state. The same operations are available as Python methods.

State lives in memory behind one lock; the app is safe to serve from a threaded server (see ``serve``).
Passwords are kept only as salted hashes and are never returned by any endpoint or accessor.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import html
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from local.serving import ServerHandle, serve_wsgi

__all__ = ["LocalAuth0", "ServerHandle", "serve"]

PASSWORD_GRANT = "password"
PASSWORD_REALM_GRANT = "http://auth0.com/oauth/grant-type/password-realm"
CLIENT_CREDENTIALS_GRANT = "client_credentials"

MGMT_SCOPES = (
    "read:users update:users delete:users create:users create:user_tickets"
    " delete:sessions delete:refresh_tokens"
)
# Root attributes POST /api/v2/users accepts (Auth0's OAS).
CREATABLE = frozenset(
    {
        "connection",
        "email",
        "phone_number",
        "user_metadata",
        "blocked",
        "email_verified",
        "phone_verified",
        "app_metadata",
        "given_name",
        "family_name",
        "name",
        "nickname",
        "picture",
        "user_id",
        "password",
        "verify_email",
        "username",
    }
)

# Root attributes PATCH /api/v2/users/{id} accepts (Auth0's OAS, plus connection and client_id).
PATCHABLE = frozenset(
    {
        "app_metadata",
        "blocked",
        "email",
        "email_verified",
        "family_name",
        "given_name",
        "name",
        "nickname",
        "password",
        "phone_number",
        "phone_verified",
        "picture",
        "username",
        "user_metadata",
        "verify_email",
        "verify_phone_number",
        "connection",
        "client_id",
    }
)
# Pairs Auth0 refuses in one PATCH ("Cannot update X and Y simultaneously").
FORBIDDEN_PAIRS = (
    ("password", "email"),
    ("password", "email_verified"),
    ("username", "password"),
    ("username", "email"),
    ("username", "email_verified"),
)
STRING_LIMITS = {"name": (1, 300), "nickname": (1, 300), "given_name": (1, 150), "family_name": (1, 150)}
BOOLEAN_FIELDS = ("blocked", "email_verified", "phone_verified", "verify_email", "verify_phone_number")
STRING_FIELDS = ("email", "password", "picture", "username", "phone_number", "connection", "client_id")

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
USER_PATH_RE = re.compile(r"^/api/v2/users/([^/]+)(/sessions|/refresh-tokens|/revoke-access)?$")
KNOB_USER_RE = re.compile(r"^/_knobs/users/([^/]+)$")

DEFAULT_FAULT_PREFIX = "/api/v2/"


def _now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(now * 1000) % 1000:03d}Z"


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + password.encode("utf-8")).digest()


def password_is_fair(password: str) -> bool:
    """Auth0's "fair" policy: at least 8 characters and 3 of lower, upper, digit, special."""
    if len(password) < 8:
        return False
    classes = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(classes) >= 3


class HttpError(Exception):
    """Raised inside handlers; rendered as a JSON error response."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def mgmt_error(status: int, message: str | None, error_code: str | None = None) -> HttpError:
    """Management API error body: ``{"statusCode","error","message","errorCode"?}``."""
    body: dict[str, Any] = {"statusCode": status, "error": HTTPStatus(status).phrase}
    if message is not None:
        body["message"] = message
    if error_code is not None:
        body["errorCode"] = error_code
    return HttpError(status, body)


def oauth_error(status: int, error: str, description: str) -> HttpError:
    """Authentication API error body: ``{"error","error_description"}``."""
    return HttpError(status, {"error": error, "error_description": description})


def payload_error(detail: str, prop: str | None = None) -> HttpError:
    where = f" on property {prop}" if prop else ""
    return mgmt_error(400, f"Payload validation error: '{detail}'{where}.", "invalid_body")


def user_missing() -> HttpError:
    return mgmt_error(404, "The user does not exist.", "inexistent_user")


@dataclass
class _User:
    user_id: str
    email: str
    password_salt: bytes
    password_hash: bytes
    given_name: str | None
    family_name: str | None
    name: str | None
    nickname: str | None
    email_verified: bool
    blocked: bool
    created_at: float
    updated_at: float
    app_metadata: dict[str, Any]
    user_metadata: dict[str, Any]
    extra: dict[str, Any]
    password_changes: int = 0
    last_password_reset: float | None = None
    sessions_revoked: int = 0
    refresh_tokens_revoked: int = 0
    access_revoked: int = 0
    password_change_tickets: int = 0
    email_verification_tickets: int = 0
    verification_emails: int = 0


@dataclass
class _Fault:
    status: int | None
    count: int
    path_prefix: str
    method: str | None
    delay: float | None
    ratelimit_reset_in: float | None

    def matches(self, method: str, path: str) -> bool:
        if self.count == 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return path.startswith(self.path_prefix)


@dataclass
class _Ticket:
    kind: str  # "reset" or "verify"
    user_id: str
    expires_at: float
    mark_email_as_verified: bool
    result_url: str | None


class LocalAuth0:
    """WSGI app emulating Auth0's token endpoint, JWKS and the Management API subset we use."""

    def __init__(
        self,
        *,
        issuer: str,
        public_url: str,
        api_audience: str,
        login_client_id: str,
        m2m_client_id: str,
        m2m_client_secret: str,
        connection: str = "Username-Password-Authentication",
        token_ttl: int = 86400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer if issuer.endswith("/") else issuer + "/"
        self.public_url = public_url.rstrip("/")
        self.api_audience = api_audience
        self.mgmt_audience = self.issuer + "api/v2/"
        self.userinfo_audience = self.issuer + "userinfo"
        self.login_client_id = login_client_id
        self.m2m_client_id = m2m_client_id
        self._m2m_client_secret = m2m_client_secret
        self.connection = connection
        self.token_ttl = int(token_ttl)
        self._clock = clock
        # how long ago the sign-in of a password-grant token happened (POST /_knobs/clock)
        self.auth_age_seconds = 0

        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._private_key.public_key()
        self.kid = secrets.token_urlsafe(12)

        self._lock = threading.RLock()
        self._users: dict[str, _User] = {}
        self._tickets: dict[str, _Ticket] = {}
        self._faults: list[_Fault] = []
        self._tokens_issued: dict[str, int] = {}
        # machine clients of the API (client id -> secret, scopes), from the seed's machineClients
        self._machines: dict[str, tuple[str, tuple[str, ...]]] = {}
        # A plain list so callers may read (or clear) it directly; appended under the lock.
        self.request_log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------
    # Python API
    # ------------------------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        email: str,
        password: str,
        *,
        given_name: str | None,
        family_name: str | None,
        email_verified: bool = True,
        blocked: bool = False,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Create (or replace) a database user; returns its API representation."""
        now = self._clock()
        salt = secrets.token_bytes(16)
        if name is None:
            joined = " ".join(p for p in (given_name, family_name) if p)
            name = joined or email
        user = _User(
            user_id=user_id,
            email=email.lower(),
            password_salt=salt,
            password_hash=_hash_password(password, salt),
            given_name=given_name,
            family_name=family_name,
            name=name,
            nickname=email.split("@", 1)[0],
            email_verified=email_verified,
            blocked=blocked,
            created_at=now,
            updated_at=now,
            app_metadata={},
            user_metadata={},
            extra={},
        )
        with self._lock:
            self._users[user_id] = user
            return self._user_json(user)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The user's API representation plus test-only state (never the password).

        Extra keys: ``_revocations`` (``sessions``, ``refresh_tokens``, ``revoke_access`` counters),
        ``_password_changes``, ``_tickets`` (``password_change``, ``email_verification`` counters) and
        ``_verification_emails``.
        """
        with self._lock:
            user = self._users.get(user_id)
            return None if user is None else self._state_json(user)

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._state_json(u) for u in self._users.values()]

    def check_password(self, user_id: str, password: str) -> bool:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                return False
            return hmac.compare_digest(user.password_hash, _hash_password(password, user.password_salt))

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._public_key, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        """Sign ``claims`` with this instance's key (RS256, ``kid`` set unless overridden)."""
        hdrs: dict[str, Any] = {"kid": self.kid, "typ": "JWT"}
        hdrs.update(headers or {})
        return jwt.encode(claims, self._private_key, algorithm="RS256", headers=hdrs)

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.public_url + "/.well-known/jwks.json",
            "token_endpoint": self.public_url + "/oauth/token",
            "response_types_supported": ["token", "id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": [CLIENT_CREDENTIALS_GRANT, PASSWORD_GRANT, PASSWORD_REALM_GRANT],
        }

    def inject_fault(
        self,
        status: int | None = 500,
        *,
        count: int = 1,
        path_prefix: str = DEFAULT_FAULT_PREFIX,
        method: str | None = None,
        delay: float | None = None,
        ratelimit_reset_in: float | None = None,
    ) -> None:
        """Make the next ``count`` matching requests fail (``-1``: until cleared).

        ``status`` None with a ``delay`` only slows requests down. Faults never apply to ``/_knobs``.
        """
        if status is not None and not 400 <= int(status) <= 599:
            raise ValueError("status must be an HTTP error status (4xx/5xx) or None")
        if status is None and not delay:
            raise ValueError("a fault needs a status or a delay")
        fault = _Fault(
            status=None if status is None else int(status),
            count=int(count),
            path_prefix=path_prefix,
            method=method,
            delay=None if delay is None else float(delay),
            ratelimit_reset_in=None if ratelimit_reset_in is None else float(ratelimit_reset_in),
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self.request_log.clear()

    def requests(self) -> list[dict[str, Any]]:
        """A snapshot copy of the request log."""
        with self._lock:
            return [dict(r) for r in self.request_log]

    def tokens_issued(self, grant: str = CLIENT_CREDENTIALS_GRANT) -> int:
        """How many tokens ``/oauth/token`` issued for ``grant`` since start."""
        with self._lock:
            return self._tokens_issued.get(grant, 0)

    # ------------------------------------------------------------------------------------------
    # WSGI
    # ------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": 0,
            "at": self._clock(),
        }
        response = self._respond(request)
        entry["status"] = response.status_code
        with self._lock:
            self.request_log.append(entry)
        return response(environ, start_response)

    def _respond(self, request: Request) -> Response:
        path = request.path
        try:
            if path.startswith("/_knobs/") or path == "/_knobs":
                return self._knobs(request)
            fault = self._take_fault(request.method, path)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status is not None:
                    return self._fault_response(fault, path)
            return self._route(request)
        except HttpError as exc:
            return _json(exc.body, exc.status, exc.headers)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.count > 0:
                        fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _fault_response(self, fault: _Fault, path: str) -> Response:
        status = fault.status or 500
        headers: dict[str, str] = {}
        if status == 429 and fault.ratelimit_reset_in is not None:
            reset = math.ceil(self._clock() + fault.ratelimit_reset_in)
            headers.update(
                {"x-ratelimit-limit": "2", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
            )
        if path.startswith("/oauth/"):
            if status == 429:
                body: dict[str, Any] = {
                    "error": "too_many_requests",
                    "error_description": "Global limit has been reached",
                }
            elif status in (401, 403):  # a rotated secret, a removed grant: Auth0's own answers
                body = {"error": "access_denied", "error_description": "Unauthorized"}
            else:
                body = {"error": "server_error", "error_description": HTTPStatus(status).phrase}
            return _json(body, status, headers)
        if status == 429:
            body = mgmt_error(429, "Global limit has been reached", "too_many_requests").body
        elif status == 401:
            body = mgmt_error(401, "Invalid token", "invalid_token").body
        elif status == 403:
            body = mgmt_error(403, "Insufficient scope", "insufficient_scope").body
        elif status == 500:
            body = mgmt_error(500, "Internal error").body
        else:
            body = mgmt_error(status, HTTPStatus(status).phrase).body
        return _json(body, status, headers)

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == "/oauth/token":
            if method != "POST":
                raise oauth_error(405, "invalid_request", "Method not allowed")
            return self._token(request)
        if path == "/.well-known/jwks.json" and method == "GET":
            return _json(self.jwks(), 200)
        if path == "/.well-known/openid-configuration" and method == "GET":
            return _json(self.openid_configuration(), 200)
        if path in ("/lo/reset", "/lo/verify") and method == "GET":
            return self._ticket_page(request)
        if path == "/dbconnections/signup":
            if method != "POST":
                raise oauth_error(405, "invalid_request", "Method not allowed")
            return self._signup(_json_body(request))
        if path.startswith("/api/v2/"):
            return self._management(request)
        raise mgmt_error(404, "Not Found")

    # ------------------------------------------------------------------------------------------
    # /oauth/token
    # ------------------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        params = _token_params(request)
        grant = params.get("grant_type")
        if not grant:
            raise oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
        grant = str(grant)
        if grant == CLIENT_CREDENTIALS_GRANT:
            body = self._client_credentials(request, params)
        elif grant in (PASSWORD_GRANT, PASSWORD_REALM_GRANT):
            body = self._password_grant(grant, params)
        else:
            raise oauth_error(403, "unsupported_grant_type", f"Unsupported grant type: {grant}")
        with self._lock:
            self._tokens_issued[grant] = self._tokens_issued.get(grant, 0) + 1
        return _json(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def add_machine_client(self, client_id: str, secret: str, scopes: Sequence[str]) -> None:
        """A machine-to-machine application with a client grant to the API for ``scopes``."""
        with self._lock:
            self._machines[client_id] = (secret, tuple(scopes))

    def _machine_token(self, client_id: str, secret: object, audience: object) -> dict[str, Any]:
        """A client-credentials token for the API audience, as Auth0 issues it to a machine client."""
        known, scopes = self._machines[client_id]
        if not isinstance(secret, str) or not hmac.compare_digest(secret.encode(), known.encode()):
            raise oauth_error(401, "access_denied", "Unauthorized")
        if audience != self.api_audience:
            raise oauth_error(
                403,
                "access_denied",
                f'Client is not authorized to access "{audience}". You need to create a "client-grant" '
                "associated to this API.",
            )
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": f"{client_id}@clients",
            "aud": self.api_audience,
            "iat": now,
            "exp": now + self.token_ttl,
            "scope": " ".join(scopes),
            "permissions": list(scopes),
            "gty": "client-credentials",
            "azp": client_id,
        }
        return {
            "access_token": self.sign(claims),
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": " ".join(scopes),
        }

    def _client_credentials(self, request: Request, params: Mapping[str, Any]) -> dict[str, Any]:
        client_id = params.get("client_id")
        secret = params.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id = client_id or request.authorization.username
            secret = secret or request.authorization.password
        if not client_id:
            raise oauth_error(400, "invalid_request", "Missing required parameter: client_id")
        if client_id == self.login_client_id:
            raise oauth_error(
                403, "unauthorized_client", "Grant type 'client_credentials' not allowed for the client."
            )
        with self._lock:
            is_machine = client_id in self._machines
        if is_machine:
            return self._machine_token(str(client_id), secret, params.get("audience"))
        if (
            client_id != self.m2m_client_id
            or not isinstance(secret, str)
            or not hmac.compare_digest(secret.encode(), self._m2m_client_secret.encode())
        ):
            raise oauth_error(401, "access_denied", "Unauthorized")
        audience = params.get("audience")
        if not audience:
            raise oauth_error(
                403,
                "access_denied",
                "No audience parameter was provided, and no default audience has been configured",
            )
        if audience == self.api_audience:
            raise oauth_error(
                403,
                "access_denied",
                f'Client is not authorized to access "{audience}". You need to create a "client-grant" '
                "associated to this API.",
            )
        if audience != self.mgmt_audience:
            raise oauth_error(403, "access_denied", f"Service not found: {audience}")
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": f"{client_id}@clients",
            "aud": self.mgmt_audience,
            "iat": now,
            "exp": now + self.token_ttl,
            "scope": MGMT_SCOPES,
            "gty": "client-credentials",
            "azp": client_id,
        }
        return {
            "access_token": self.sign(claims),
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": MGMT_SCOPES,
        }

    def _password_grant(self, grant: str, params: Mapping[str, Any]) -> dict[str, Any]:
        for required in ("client_id", "username", "password"):
            if not params.get(required):
                raise oauth_error(400, "invalid_request", f"Missing required parameter: {required}")
        client_id = str(params["client_id"])
        if client_id == self.m2m_client_id:
            raise oauth_error(403, "unauthorized_client", f"Grant type '{grant}' not allowed for the client.")
        if client_id != self.login_client_id:
            raise oauth_error(401, "access_denied", "Unauthorized")
        if grant == PASSWORD_REALM_GRANT:
            realm = params.get("realm")
            if not realm:
                raise oauth_error(400, "invalid_request", "Missing required parameter: realm")
            if realm != self.connection:
                raise oauth_error(400, "invalid_request", "connection is disabled or does not exist")
        audience = params.get("audience") or self.api_audience
        if audience != self.api_audience:
            raise oauth_error(403, "access_denied", f"Service not found: {audience}")
        username = str(params["username"]).strip().lower()
        password = str(params["password"])
        scope = str(params.get("scope") or "")
        with self._lock:
            user = next((u for u in self._users.values() if u.email == username), None)
            if user is None or not hmac.compare_digest(
                user.password_hash, _hash_password(password, user.password_salt)
            ):
                raise oauth_error(403, "invalid_grant", "Wrong email or password.")
            if user.blocked:
                raise oauth_error(401, "unauthorized", "user is blocked")
            sub = user.user_id
        now = int(self._clock())
        scopes = scope.split()
        aud: str | list[str] = (
            [self.api_audience, self.userinfo_audience] if "openid" in scopes else self.api_audience
        )
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + self.token_ttl,
            "scope": scope,
            "azp": client_id,
            "gty": "password",
            # a password grant is a sign-in: when it happened (RFC 9470; SPEC section 17), moved into
            # the past by the clock knob to rehearse an old sign-in
            "auth_time": now - self.auth_age_seconds,
        }
        return {
            "access_token": self.sign(claims),
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
            "scope": scope,
        }

    # ------------------------------------------------------------------------------------------
    # Management API
    # ------------------------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise mgmt_error(401, "Invalid token")
        try:
            return jwt.decode(
                token.strip(),
                self._public_key,
                algorithms=["RS256"],
                audience=self.mgmt_audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise mgmt_error(401, "Expired token received for JSON Web Token validation") from None
        except jwt.PyJWTError:
            raise mgmt_error(401, "Invalid token") from None

    @staticmethod
    def _require_scope(claims: Mapping[str, Any], scope: str) -> None:
        granted = str(claims.get("scope") or "").split()
        if scope not in granted:
            raise mgmt_error(403, f"Insufficient scope, expected any of: {scope}", "insufficient_scope")

    def _management(self, request: Request) -> Response:
        claims = self._authenticate(request)
        method, path = request.method, request.path
        match = USER_PATH_RE.match(path)
        if match is not None:
            # werkzeug already percent-decodes the path (auth0%7C123 -> auth0|123).
            user_id = match.group(1)
            sub = match.group(2)
            if sub is None:
                if method == "GET":
                    self._require_scope(claims, "read:users")
                    return self._get_user(user_id)
                if method == "PATCH":
                    self._require_scope(claims, "update:users")
                    return self._patch_user(user_id, _json_body(request))
                if method == "DELETE":
                    self._require_scope(claims, "delete:users")
                    with self._lock:
                        self._users.pop(user_id, None)
                    return Response(status=204)
            elif sub == "/sessions" and method == "DELETE":
                self._require_scope(claims, "delete:sessions")
                return self._revoke(user_id, "sessions")
            elif sub == "/refresh-tokens" and method == "DELETE":
                self._require_scope(claims, "delete:refresh_tokens")
                return self._revoke(user_id, "refresh_tokens")
            elif sub == "/revoke-access" and method == "POST":
                self._require_scope(claims, "delete:sessions")
                self._require_scope(claims, "delete:refresh_tokens")
                return self._revoke(user_id, "revoke_access")
            raise mgmt_error(404, "Not Found")
        if path == "/api/v2/users" and method == "POST":
            self._require_scope(claims, "create:users")
            return self._create_user(_json_body(request))
        if path == "/api/v2/users-by-email" and method == "GET":
            self._require_scope(claims, "read:users")
            email = request.args.get("email")
            if not email:
                raise mgmt_error(
                    400, "Query validation error: 'Missing required property: email'.", "invalid_query_string"
                )
            with self._lock:
                found = [self._user_json(u) for u in self._users.values() if u.email == email.lower()]
            return _json(found, 200)
        if (
            path in ("/api/v2/tickets/password-change", "/api/v2/tickets/email-verification")
            and method == "POST"
        ):
            self._require_scope(claims, "create:user_tickets")
            kind = "reset" if path.endswith("password-change") else "verify"
            return self._create_ticket(kind, _json_body(request))
        raise mgmt_error(404, "Not Found")

    def _create_user(self, body: Any) -> Response:
        """``POST /api/v2/users`` on the database connection: Auth0's answers for the cases we meet."""
        if not isinstance(body, dict):
            raise payload_error(f"Expected type object but found type {_json_type(body)}")
        for key in body:
            if key not in CREATABLE:
                raise payload_error(f"Additional properties not allowed: {key}")
        if not isinstance(body.get("connection"), str) or not body["connection"]:
            raise payload_error("Missing required property: connection")
        _validate_patch({k: v for k, v in body.items() if k in PATCHABLE})
        if body["connection"] != self.connection:
            raise mgmt_error(400, "The connection does not exist.", "inexistent_connection")
        email = body.get("email")
        if not isinstance(email, str) or not email:
            raise payload_error("Missing required property: email")
        password = body.get("password")
        if not isinstance(password, str) or not password:
            raise payload_error("Missing required property: password")
        if not password_is_fair(password):
            raise mgmt_error(400, "PasswordStrengthError: Password is too weak", "invalid_body")
        local_id = body.get("user_id")
        if local_id is not None and (not isinstance(local_id, str) or not local_id or "|" in local_id):
            raise payload_error("Object didn't pass validation for format user-id", "user_id")
        with self._lock:
            user_id = f"auth0|{local_id or secrets.token_hex(12)}"
            if user_id in self._users or any(u.email == email.lower() for u in self._users.values()):
                raise mgmt_error(409, "The user already exists.", "auth0_idp_error")
            self.add_user(
                user_id,
                email,
                password,
                given_name=body.get("given_name"),
                family_name=body.get("family_name"),
                name=body.get("name"),
                email_verified=bool(body.get("email_verified", False)),
                blocked=bool(body.get("blocked", False)),
            )
            return _json(self._user_json(self._users[user_id]), 201)

    def _signup(self, body: Any) -> Response:
        """The Authentication API's public sign-up (database connections): 200 ``{_id, email, ...}``.

        Errors as Auth0 answers them: ``{"name", "code", "description", "statusCode"}``; an address that
        exists is the generic ``invalid_signup`` (Auth0 does not reveal it).
        """

        def bad(code: str, description: str, name: str = "BadRequestError") -> HttpError:
            return HttpError(400, {"name": name, "code": code, "description": description, "statusCode": 400})

        if not isinstance(body, dict):
            raise bad("invalid_signup", "Invalid sign up")
        client_id, email, password = body.get("client_id"), body.get("email"), body.get("password")
        connection = body.get("connection")
        if not isinstance(client_id, str) or client_id != self.login_client_id:
            raise bad("invalid_request", "Unknown client")
        if not isinstance(connection, str) or connection != self.connection:
            raise bad("bad.connection", "Connection does not exist")
        if not isinstance(email, str) or not EMAIL_RE.match(email):
            raise bad("bad.email", "Invalid email")
        if not isinstance(password, str) or not password:
            raise bad("invalid_password", "Password is required")
        if not password_is_fair(password):
            raise HttpError(
                400,
                {
                    "name": "PasswordStrengthError",
                    "message": "Password is too weak",
                    "code": "invalid_password",
                    "policy": "fair",
                    "statusCode": 400,
                },
            )
        names = {k: body.get(k) for k in ("given_name", "family_name", "name")}
        if any(v is not None and not isinstance(v, str) for v in names.values()):
            raise bad("invalid_signup", "Invalid sign up")
        with self._lock:
            if any(u.email == email.lower() for u in self._users.values()):
                raise bad("invalid_signup", "Invalid sign up")
            local_id = secrets.token_hex(12)
            self.add_user(
                f"auth0|{local_id}",
                email,
                password,
                given_name=names["given_name"],
                family_name=names["family_name"],
                name=names["name"],
                email_verified=False,
            )
        answer: dict[str, Any] = {"_id": local_id, "email": email.lower(), "email_verified": False}
        answer.update({k: v for k, v in names.items() if v is not None})
        return _json(answer, 200)

    def _get_user(self, user_id: str) -> Response:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise user_missing()
            return _json(self._user_json(user), 200)

    def _patch_user(self, user_id: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise payload_error(f"Expected type object but found type {_json_type(body)}")
        _validate_patch(body)
        present = set(body)
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise user_missing()
            if body.get("connection") is not None and body["connection"] != self.connection:
                raise mgmt_error(400, "The connection does not exist.", "inexistent_connection")
            for first, second in FORBIDDEN_PAIRS:
                if first in present and second in present:
                    raise mgmt_error(400, f"Cannot update {first} and {second} simultaneously")
            if "password" in body and (body["password"] is None or not password_is_fair(body["password"])):
                raise mgmt_error(400, "PasswordStrengthError: Password is too weak", "invalid_body")
            if "email" in body and body["email"] is not None:
                new_email = body["email"].lower()
                if any(u.email == new_email and u.user_id != user_id for u in self._users.values()):
                    raise mgmt_error(400, "The specified new email already exists", "auth0_idp_error")
            self._apply_patch(user, body)
            return _json(self._user_json(user), 200)

    def _apply_patch(self, user: _User, body: Mapping[str, Any]) -> None:
        now = self._clock()
        for key in ("name", "given_name", "family_name", "nickname"):
            if key in body:
                setattr(user, key, body[key])
        if "blocked" in body:
            user.blocked = bool(body["blocked"])
        if "email" in body and body["email"] is not None:
            user.email = body["email"].lower()
        if "email_verified" in body:
            user.email_verified = bool(body["email_verified"])
        if body.get("verify_email"):
            user.email_verified = False
            user.verification_emails += 1
        if "password" in body:
            salt = secrets.token_bytes(16)
            user.password_salt = salt
            user.password_hash = _hash_password(body["password"], salt)
            user.password_changes += 1
            user.last_password_reset = now
            # Auth0: resetting a password through the Management API removes administrator blocks.
            user.blocked = False
        for key in ("app_metadata", "user_metadata"):
            if key in body:
                target: dict[str, Any] = getattr(user, key)
                value = body[key]
                if value is None or value == {}:
                    target.clear()
                else:
                    for k, v in value.items():
                        if v is None:
                            target.pop(k, None)
                        else:
                            target[k] = copy.deepcopy(v)
        for key in ("picture", "username", "phone_number", "phone_verified"):
            if key in body:
                if body[key] is None:
                    user.extra.pop(key, None)
                else:
                    user.extra[key] = body[key]
        user.updated_at = now

    def _revoke(self, user_id: str, what: str) -> Response:
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise user_missing()
            if what == "sessions":
                user.sessions_revoked += 1
                return Response(status=204)
            if what == "refresh_tokens":
                user.refresh_tokens_revoked += 1
                return Response(status=204)
            user.access_revoked += 1
            return Response(status=202)

    def _create_ticket(self, kind: str, body: Any) -> Response:
        if not isinstance(body, dict):
            raise payload_error(f"Expected type object but found type {_json_type(body)}")
        ttl = body.get("ttl_sec") or 432000
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise payload_error("Expected type integer but found type " + _json_type(ttl), "ttl_sec")
        user_id = body.get("user_id")
        with self._lock:
            if user_id is None and kind == "reset" and body.get("email"):
                email = str(body["email"]).lower()
                user = next((u for u in self._users.values() if u.email == email), None)
            elif isinstance(user_id, str):
                user = self._users.get(user_id)
            else:
                raise payload_error("Missing required property: user_id")
            if user is None:
                raise user_missing()
            ticket = secrets.token_urlsafe(24)
            self._tickets[ticket] = _Ticket(
                kind=kind,
                user_id=user.user_id,
                expires_at=self._clock() + ttl,
                mark_email_as_verified=bool(body.get("mark_email_as_verified")),
                result_url=body.get("result_url"),
            )
            if kind == "reset":
                user.password_change_tickets += 1
            else:
                user.email_verification_tickets += 1
        return _json({"ticket": f"{self.public_url}/lo/{kind}?ticket={ticket}#"}, 201)

    def _ticket_page(self, request: Request) -> Response:
        kind = "reset" if request.path == "/lo/reset" else "verify"
        token = request.args.get("ticket", "")
        with self._lock:
            ticket = self._tickets.get(token)
            valid = ticket is not None and ticket.kind == kind and ticket.expires_at > self._clock()
            if valid and ticket is not None and kind == "verify":
                user = self._users.get(ticket.user_id)
                if user is not None:
                    user.email_verified = True
        if not valid:
            text = "This link is invalid or has expired."
            status = 404
        elif kind == "reset":
            text = "Local Auth0: this is where Auth0 would let you choose a new password."
            status = 200
        else:
            text = "Local Auth0: your email address has been verified."
            status = 200
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Local Auth0</title></head>"
            f"<body><h1>Local Auth0</h1><p>{html.escape(text)}</p></body></html>"
        )
        return Response(
            page,
            status=status,
            content_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )

    # ------------------------------------------------------------------------------------------
    # /_knobs
    # ------------------------------------------------------------------------------------------

    def _knobs(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path == "/_knobs/faults":
            if method == "POST":
                body = _json_body(request)
                if not isinstance(body, dict):
                    raise HttpError(400, {"error": "body must be a JSON object"})
                try:
                    self.inject_fault(
                        body.get("status"),
                        count=int(body.get("count", 1)),
                        path_prefix=str(body.get("path_prefix") or DEFAULT_FAULT_PREFIX),
                        method=body.get("method"),
                        delay=body.get("delay"),
                        ratelimit_reset_in=body.get("ratelimit_reset_in"),
                    )
                except (TypeError, ValueError) as exc:
                    raise HttpError(400, {"error": str(exc)}) from None
                return _json({"ok": True}, 201)
            if method == "DELETE":
                self.clear_faults()
                return Response(status=204)
            if method == "GET":
                with self._lock:
                    faults = [f.__dict__.copy() for f in self._faults]
                return _json(faults, 200)
        if path == "/_knobs/clock" and method == "POST":
            body = _json_body(request)
            age = body.get("authAgeSeconds") if isinstance(body, dict) else None
            if not isinstance(age, int) or isinstance(age, bool) or age < 0:
                raise HttpError(400, {"error": "authAgeSeconds must be a non-negative integer"})
            self.auth_age_seconds = age
            return _json({"authAgeSeconds": age}, 200)
        if path == "/_knobs/requests":
            if method == "GET":
                return _json(self.requests(), 200)
            if method == "DELETE":
                self.clear_requests()
                return Response(status=204)
        match = KNOB_USER_RE.match(path)
        if match is not None and method == "GET":
            state = self.get_user(match.group(1))
            if state is None:
                raise HttpError(404, {"error": "no such user"})
            return _json(state, 200)
        raise HttpError(404, {"error": "no such knob"})

    # ------------------------------------------------------------------------------------------
    # representations
    # ------------------------------------------------------------------------------------------

    def _user_json(self, user: _User) -> dict[str, Any]:
        provider_id = user.user_id.split("|", 1)[1] if "|" in user.user_id else user.user_id
        data: dict[str, Any] = {
            "user_id": user.user_id,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name,
            "nickname": user.nickname,
            "given_name": user.given_name,
            "family_name": user.family_name,
            "blocked": user.blocked,
            "created_at": _now_iso(user.created_at),
            "updated_at": _now_iso(user.updated_at),
            "identities": [
                {
                    "connection": self.connection,
                    "provider": "auth0",
                    "user_id": provider_id,
                    "isSocial": False,
                }
            ],
            "app_metadata": copy.deepcopy(user.app_metadata),
            "user_metadata": copy.deepcopy(user.user_metadata),
        }
        for key in ("name", "nickname", "given_name", "family_name"):
            if data[key] is None:
                del data[key]
        if user.last_password_reset is not None:
            data["last_password_reset"] = _now_iso(user.last_password_reset)
        data.update(copy.deepcopy(user.extra))
        return data

    def _state_json(self, user: _User) -> dict[str, Any]:
        data = self._user_json(user)
        data["_revocations"] = {
            "sessions": user.sessions_revoked,
            "refresh_tokens": user.refresh_tokens_revoked,
            "revoke_access": user.access_revoked,
        }
        data["_password_changes"] = user.password_changes
        data["_tickets"] = {
            "password_change": user.password_change_tickets,
            "email_verification": user.email_verification_tickets,
        }
        data["_verification_emails"] = user.verification_emails
        return data


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _json(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=dict(headers or {}), content_type="application/json"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_body(request: Request) -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise mgmt_error(400, "Invalid request payload JSON format", "invalid_body") from None


def _token_params(request: Request) -> dict[str, Any]:
    if request.mimetype == "application/json":
        raw = request.get_data(cache=True)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise oauth_error(400, "invalid_request", "Invalid request payload JSON format") from None
        if not isinstance(body, dict):
            raise oauth_error(400, "invalid_request", "Invalid request payload JSON format")
        return body
    return dict(request.form.items())


def _validate_patch(body: Mapping[str, Any]) -> None:
    for key in body:
        if key not in PATCHABLE:
            raise payload_error(f"Additional properties not allowed: {key}")
    for key, (low, high) in STRING_LIMITS.items():
        if key in body and body[key] is not None:
            value = body[key]
            if not isinstance(value, str):
                raise payload_error(f"Expected type string but found type {_json_type(value)}", key)
            if not low <= len(value) <= high:
                which = "short" if len(value) < low else "long"
                limit = low if which == "short" else high
                raise payload_error(
                    f"String is too {which} ({len(value)} chars), "
                    f"{'minimum' if which == 'short' else 'maximum'} {limit}",
                    key,
                )
    for key in BOOLEAN_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], bool):
            raise payload_error(f"Expected type boolean but found type {_json_type(body[key])}", key)
    for key in STRING_FIELDS:
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise payload_error(f"Expected type string but found type {_json_type(body[key])}", key)
    for key in ("app_metadata", "user_metadata"):
        if key in body and body[key] is not None and not isinstance(body[key], dict):
            raise payload_error(f"Expected type object but found type {_json_type(body[key])}", key)
    if body.get("email") is not None and not EMAIL_RE.match(body["email"]):
        raise payload_error("Object didn't pass validation for format email", "email")
    if body.get("connection") is not None and body["connection"] == "":
        raise payload_error("String is too short (0 chars), minimum 1", "connection")


# ----------------------------------------------------------------------------------------------
# serving
# ----------------------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logging.getLogger("local.auth0").debug("%s %s %s", self.command, self.path.split("?", 1)[0], code)


def serve(app: Any, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True) -> ServerHandle:
    """Serve ``app`` from a threaded werkzeug server in a daemon thread; ``port=0`` picks a free port."""
    handler: type[WSGIRequestHandler] = _QuietHandler if quiet else WSGIRequestHandler
    return serve_wsgi(app, host, port, request_handler=handler, name="local-auth0")
