"""API Gateway's JWT authorizer, as HTTP APIs apply it before a function is invoked.

Bearer token from the identity source, RS256 only, key by ``kid`` from a JWKS, ``iss`` equal to the
template's issuer, ``aud`` (or ``client_id`` when there is no ``aud``) one of the configured audiences,
``exp`` / ``nbf`` checked, ``exp``, ``iat``, ``iss`` and ``sub`` required. Any failure is ``Unauthorized``
(401 ``{"message":"Unauthorized"}`` with ``www-authenticate``); a route's ``AuthorizationScopes`` not met
by ``scope``/``scp`` is ``Forbidden`` (403).

JWKS: either a URL (``HttpJwks``: fetched over HTTP with a 1.5 s timeout, cached, fetched again when a
token names an unknown ``kid``, at most every 5 s) or a callable returning the JWKS document (tests pass
``LocalAuth0.jwks``). It is never derived from the token (``jku``, ``x5u`` and ``jwk`` headers are
ignored).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from werkzeug.wrappers import Request

from local.template import JwtAuthorizer

__all__ = [
    "Forbidden",
    "HttpJwks",
    "JwtAuthorizerCheck",
    "Unauthorized",
    "challenge",
    "insufficient_scope",
    "token_scopes",
]

log = logging.getLogger("local.jwt_authorizer")

ALLOWED_ALGORITHMS = ["RS256"]  # hard-coded: API Gateway's JWT authorizers verify RSA signatures only
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]


class HttpJwks:
    """A JWKS document fetched from ``url``; ``refresh=True`` fetches it again (at most every 5 s)."""

    def __init__(self, url: str, *, timeout: float = 1.5, min_interval: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._document: Mapping[str, Any] | None = None
        self._fetched_at = 0.0

    def __call__(self, refresh: bool = False) -> Mapping[str, Any]:
        with self._lock:
            stale = refresh and time.monotonic() - self._fetched_at >= self.min_interval
            if self._document is None or stale:
                try:
                    with urllib.request.urlopen(self.url, timeout=self.timeout) as response:  # noqa: S310
                        document = json.loads(response.read())
                except (OSError, ValueError) as exc:
                    log.warning("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
                    return self._document or {"keys": []}
                self._document = document if isinstance(document, dict) else {"keys": []}
                self._fetched_at = time.monotonic()
            return self._document


class _Keys:
    """RSA public keys by ``kid`` from a JWKS source."""

    def __init__(self, source: Callable[..., Mapping[str, Any]]) -> None:
        self._source = source
        self._refreshable = isinstance(source, HttpJwks)

    def get(self, kid: str) -> Any | None:
        key = self._find(self._source(), kid)
        if key is None and self._refreshable:
            key = self._find(self._source(refresh=True), kid)
        return key

    @staticmethod
    def _find(document: Mapping[str, Any], kid: str) -> Any | None:
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("kid") != kid or jwk.get("kty") != "RSA":
                continue
            if jwk.get("use", "sig") != "sig":
                continue
            try:
                return jwt.PyJWK(jwk, algorithm="RS256").key
            except jwt.PyJWTError:
                return None
        return None


class Unauthorized(Exception):
    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or "unauthorized")
        self.description = description


class Forbidden(Exception):
    pass


def token_scopes(claims: Mapping[str, Any]) -> list[str]:
    scopes: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes += value.split()
        elif isinstance(value, list):
            scopes += [str(v) for v in value]
    return scopes


def insufficient_scope(scopes: tuple[str, ...]) -> str:
    return f'Bearer scope="{" ".join(scopes)}" error="insufficient_scope"'


def challenge(description: str | None) -> str:
    if description is None:
        return "Bearer"
    return f'Bearer scope="" error="invalid_token" error_description="{description}"'


class JwtAuthorizerCheck:
    """Checks a request against one of the template's JWT authorizers with keys from ``jwks``."""

    def __init__(self, jwks: str | Callable[[], Mapping[str, Any]]) -> None:
        self._keys = _Keys(HttpJwks(jwks) if isinstance(jwks, str) else jwks)

    def authorize(
        self, request: Request, authorizer: JwtAuthorizer, scopes: tuple[str, ...]
    ) -> dict[str, Any]:
        """The token's claims, or ``Unauthorized`` / ``Forbidden`` as API Gateway decides."""
        token = self._identity(request, authorizer.identity_source)
        if not token:
            raise Unauthorized()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Unauthorized(f"signing method {algorithm} is invalid")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Unauthorized("the token's key is unknown")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALLOWED_ALGORITHMS,
                issuer=authorizer.issuer,
                options={"require": REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token does not have a valid issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token does not have a valid signature") from None
        except jwt.PyJWTError:
            raise Unauthorized("the token is invalid") from None
        if not isinstance(claims.get("sub"), str):
            raise Unauthorized("the token is invalid")
        audience = claims.get("aud") if "aud" in claims else claims.get("client_id")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(a, str) and a in authorizer.audience for a in audiences):
            raise Unauthorized("the token does not have a valid audience")
        if scopes and not set(scopes) & set(token_scopes(claims)):
            raise Forbidden()
        return claims

    @staticmethod
    def _identity(request: Request, source: str) -> str | None:
        source = source.strip()
        value: str | None = None
        if source.startswith("$request.header."):
            value = request.headers.get(source.removeprefix("$request.header."))
        elif source.startswith("$request.querystring."):
            value = request.args.get(source.removeprefix("$request.querystring."))
        if not value:
            return None
        value = value.strip()
        scheme, _, rest = value.partition(" ")
        if scheme.lower() == "bearer":
            value = rest.strip()
        return value or None
