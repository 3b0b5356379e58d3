"""The local API Gateway: a WSGI app (werkzeug) built from ``template.yaml``.

What it does, as API Gateway HTTP APIs and Lambda do it:

* Routes from every function's ``HttpApi`` events (``{param}``, ``{proxy+}``, ``ANY``, ``$default``);
  anything else is 404 ``{"message":"Not Found"}``.
* The JWT authorizer for routes that use it: bearer token from the identity source, RS256 only, key by
  ``kid`` from the local Auth0's JWKS, ``iss`` equal to the template's issuer, ``aud`` (or ``client_id``
  when there is no ``aud``) one of the configured audiences, ``exp`` / ``nbf`` checked, ``exp``, ``iat``,
  ``iss`` and ``sub`` required. Any failure is 401 ``{"message":"Unauthorized"}`` with ``www-authenticate``
  and the function is not invoked; a route's ``AuthorizationScopes`` not met by ``scope``/``scp`` is 403.
* Payload format 2.0 events; claims rendered as strings the way API Gateway does (``[a b]`` for lists).
  ``rawPath`` and ``pathParameters`` are percent-decoded (HTTP APIs decode the path). Bodies of
  ``text/*``, ``application/json``, ``application/xml`` and ``application/javascript`` are passed as text,
  anything else (also form posts and a missing content type) base64-encoded, as HTTP APIs do.
* In-process invocation: the handler module is imported by file path as ``fn_<LogicalId>`` (once); before
  every invocation ``os.environ`` becomes base environment + Lambda runtime variables + the function's
  template environment + local overrides, under one lock (invocations are serialized), and is put
  back afterwards. When that environment changes between invocations ``usermgmt.container.reset()``
  drops the cached service.
* Local extras: ``/_local/health``, ``/_local/outbox`` (emails moto's SES received), ``/_local/events``
  (EventBridge rules of the template), ``/_local/dlq``, ``/_local/schedules/{FunctionLogicalId}``, and
  ``/_local/openapi.json`` / ``/_local/docs`` (``local/apidocs.py``).

JWKS: the constructor takes ``jwks`` either as a URL (fetched over HTTP with a 1.5 s timeout, cached,
fetched again when a token names an unknown ``kid``, at most every 5 s) or as a callable returning the
JWKS document (tests pass ``LocalAuth0.jwks``). It is never derived from the token (``jku``, ``x5u`` and
``jwk`` headers are ignored).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import html
import importlib
import importlib.util
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses
from types import ModuleType
from typing import Any, cast
from urllib.parse import parse_qsl

import jwt
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from local import apidocs
from local.serving import ServerHandle, serve_wsgi
from local.template import DEFAULT_ROUTE, EventRule, Function, HttpRoute, JwtAuthorizer, Stack

__all__ = [
    "Gateway",
    "HttpJwks",
    "LambdaContext",
    "ServerHandle",
    "decode_body",
    "load_handler_module",
    "matches_pattern",
    "serve",
]

log = logging.getLogger("local.gateway")

ALLOWED_ALGORITHMS = ["RS256"]  # hard-coded: API Gateway's JWT authorizers verify RSA signatures only
REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub"]
MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API payload quota
TEXT_TYPES = ("application/json", "application/xml", "application/javascript")
TRUST_FORWARDED_ENV = "LOCAL_TRUST_X_FORWARDED_FOR"
# Runtime variables that only name the function: a change of these alone keeps the cached service.
_IDENTITY_VARIABLES = frozenset(
    {
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
    }
)
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_URL = re.compile(r"https?://[^\s<>\"']+")


# ------------------------------------------------------------------------------------------------
# JWKS
# ------------------------------------------------------------------------------------------------


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


class _Unauthorized(Exception):
    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or "unauthorized")
        self.description = description


class _Forbidden(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# Lambda context
# ------------------------------------------------------------------------------------------------


class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools use."""

    def __init__(self, function: Function, region: str, request_id: str | None = None) -> None:
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_size
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self.region = region
        self._deadline = time.monotonic() + function.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CompiledRoute:
    function: Function
    route: HttpRoute
    pattern: re.Pattern[str] | None  # None for $default
    literal_segments: int
    variables: int
    greedy: bool

    def priority(self) -> tuple[int, int, int, int, int]:
        """Lower sorts first: exact paths, then more literal segments, then fewer variables, greedy last."""
        return (
            1 if self.pattern is None else 0,
            1 if self.greedy else 0,
            -self.literal_segments,
            self.variables,
            1 if self.route.method == "ANY" else 0,
        )


def _compile(function: Function, route: HttpRoute) -> _CompiledRoute:
    if route.path == DEFAULT_ROUTE:
        return _CompiledRoute(function, route, None, 0, 0, False)
    parts: list[str] = []
    literal = variables = 0
    greedy = False
    for segment in route.path.strip("/").split("/") if route.path != "/" else []:
        greedy_match = re.fullmatch(r"\{([A-Za-z0-9_.-]+)\+\}", segment)
        var_match = re.fullmatch(r"\{([A-Za-z0-9_.-]+)\}", segment)
        if greedy_match:
            parts.append(f"(?P<{_group(greedy_match.group(1))}>.+)")
            greedy = True
            variables += 1
        elif var_match:
            parts.append(f"(?P<{_group(var_match.group(1))}>[^/]+)")
            variables += 1
        else:
            parts.append(re.escape(segment))
            literal += 1
    regex = "^/" + "/".join(parts) + "$"
    return _CompiledRoute(function, route, re.compile(regex), literal, variables, greedy)


def _group(name: str) -> str:
    # regex group names must be identifiers; keep a reversible mapping for '.' and '-'
    return "v_" + name.replace("_", "__").replace(".", "_d").replace("-", "_h")


def _ungroup(group: str) -> str:
    name = group[2:]
    out: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == "_" and i + 1 < len(name):
            out.append({"_": "_", "d": ".", "h": "-"}[name[i + 1]])
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, default=str), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _now_rfc3339(now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_time() -> str:
    """EventBridge's ``time``: RFC 3339 UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _claim_text(value: Any) -> str:
    """A claim value as API Gateway passes it to the function: always a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(_claim_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_claim_text(value[k])}" for k in sorted(value)) + "]"
    return "" if value is None else str(value)


def _token_scopes(claims: Mapping[str, Any]) -> list[str]:
    scopes: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            scopes += value.split()
        elif isinstance(value, list):
            scopes += [str(v) for v in value]
    return scopes


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in TEXT_TYPES


def _insufficient_scope(scopes: tuple[str, ...]) -> str:
    return f'Bearer scope="{" ".join(scopes)}" error="insufficient_scope"'


def _challenge(description: str | None) -> str:
    if description is None:
        return "Bearer"
    return f'Bearer scope="" error="invalid_token" error_description="{description}"'


# ------------------------------------------------------------------------------------------------
# EventBridge patterns
# ------------------------------------------------------------------------------------------------


def matches_pattern(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge content filtering (the subset this project needs, and a little more).

    Leaves are arrays of alternatives: literal values (equality; an array value in the event matches when
    any element matches) or ``{"prefix"}``, ``{"suffix"}``, ``{"exists"}``, ``{"anything-but"}``,
    ``{"equals-ignore-case"}``, ``{"numeric": [op, value, ...]}``. Nested objects recurse; ``$or`` works.
    """
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches_pattern(p, event) for p in expected):
                return False
            continue
        present = key in event
        actual = event.get(key)
        if isinstance(expected, Mapping):
            if not present or not isinstance(actual, Mapping) or not matches_pattern(expected, actual):
                return False
            continue
        if not isinstance(expected, list):
            expected = [expected]
        if not any(_matches_leaf(rule, present, actual) for rule in expected):
            return False
    return True


def _matches_leaf(rule: Any, present: bool, actual: Any) -> bool:
    if isinstance(rule, Mapping):
        if "exists" in rule:
            return bool(rule["exists"]) == (present and actual is not None)
        if not present:
            return False
        values = actual if isinstance(actual, list) else [actual]
        return any(_matches_operator(rule, v) for v in values)
    if not present:
        return False
    values = actual if isinstance(actual, list) else [actual]
    return any(_same(rule, v) for v in values)


def _same(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool) or isinstance(value, bool):
        return rule is value
    if isinstance(rule, int | float) and isinstance(value, int | float):
        return float(rule) == float(value)
    return bool(rule == value)


def _matches_operator(rule: Mapping[str, Any], value: Any) -> bool:
    if "prefix" in rule:
        prefix = rule["prefix"]
        if isinstance(prefix, Mapping):
            text = prefix.get("equals-ignore-case", "")
            return isinstance(value, str) and value.lower().startswith(str(text).lower())
        return isinstance(value, str) and value.startswith(str(prefix))
    if "suffix" in rule:
        suffix = rule["suffix"]
        if isinstance(suffix, Mapping):
            text = suffix.get("equals-ignore-case", "")
            return isinstance(value, str) and value.lower().endswith(str(text).lower())
        return isinstance(value, str) and value.endswith(str(suffix))
    if "equals-ignore-case" in rule:
        return isinstance(value, str) and value.lower() == str(rule["equals-ignore-case"]).lower()
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        if isinstance(excluded, Mapping):
            return not _matches_operator(excluded, value)
        excluded_values = excluded if isinstance(excluded, list) else [excluded]
        return not any(_same(e, value) for e in excluded_values)
    if "numeric" in rule:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        terms = list(rule["numeric"])
        checks: dict[str, Callable[[float, float], bool]] = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            "=": lambda a, b: a == b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        for i in range(0, len(terms) - 1, 2):
            operator, bound = str(terms[i]), float(terms[i + 1])
            if operator not in checks or not checks[operator](float(value), bound):
                return False
        return True
    return False


def _input_path(event: Mapping[str, Any], path: str) -> Any:
    """The simple JSONPath forms EventBridge's InputPath takes (``$``, ``$.detail``, ``$.detail.a``)."""
    if path in ("$", ""):
        return event
    value: Any = event
    for part in path.removeprefix("$.").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


# ------------------------------------------------------------------------------------------------
# The outbox (moto's SES)
# ------------------------------------------------------------------------------------------------


def _ses_backends() -> Iterable[Any]:
    from moto.ses.models import ses_backends  # moto is a local-stack dependency only

    for account in list(ses_backends.values()):
        yield from list(account.values())


def _addresses(values: Iterable[str]) -> list[str]:
    return [address for _, address in getaddresses(list(values)) if address]


def _parse_sent(message: Any) -> dict[str, Any]:
    """One moto SES message as ``{"id","from","to","subject","text","html"}`` (``to`` bare addresses)."""
    kind = type(message).__name__
    entry: dict[str, Any] = {"id": getattr(message, "id", None), "from": getattr(message, "source", None)}
    if kind == "RawMessage":
        parsed = email.message_from_string(message.raw_data, policy=email.policy.default)
        recipients = _addresses(str(parsed.get_all(h, [""])[0]) for h in ("To", "Cc") if parsed.get(h))
        entry["to"] = recipients or _addresses(message.destinations)
        entry["subject"] = str(parsed.get("Subject", ""))
        text_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        entry["text"] = text_part.get_content() if text_part is not None else None
        entry["html"] = html_part.get_content() if html_part is not None else None
        return entry
    destinations = getattr(message, "destinations", {}) or {}
    if isinstance(destinations, Mapping):
        recipients = [a for key in ("ToAddresses", "CcAddresses") for a in destinations.get(key, [])]
    else:
        recipients = list(destinations)
    entry["to"] = _addresses(recipients)
    if kind == "Message":
        # moto keeps one body of a Simple message: the HTML part when there is one, else the text
        body = str(message.body)
        looks_html = body.lstrip().startswith("<")
        entry.update(
            subject=message.subject, text=None if looks_html else body, html=body if looks_html else None
        )
    else:
        entry.update(
            subject=getattr(message, "template", ""), text=getattr(message, "template_data", None), html=None
        )
    return entry


# ------------------------------------------------------------------------------------------------
# The gateway
# ------------------------------------------------------------------------------------------------


class Gateway:
    """WSGI app: the template's HTTP API, its authorizer, and the ``/_local`` endpoints.

    ``jwks``: URL of the local Auth0's JWKS, or a callable returning the JWKS document.
    ``environment``: local overrides applied on top of each function's template environment.
    ``base_environment``: the process environment functions start from (default: ``os.environ`` at
    construction); its ``AWS_*`` variables are dropped, so no real credentials or profiles leak in.
    ``aws``: factory ``service -> boto3 client`` used for dead-letter queues (default: boto3 with the
    stack's region and dummy credentials; right under ``moto.mock_aws``).
    ``trust_forwarded_for``: take ``sourceIp`` from ``X-Forwarded-For`` (default: env
    ``LOCAL_TRUST_X_FORWARDED_FOR`` is ``true``/``1``; otherwise the connecting address).
    """

    def __init__(
        self,
        stack: Stack,
        *,
        jwks: str | Callable[[], Mapping[str, Any]],
        environment: Mapping[str, str] | None = None,
        base_environment: Mapping[str, str] | None = None,
        aws: Callable[[str], Any] | None = None,
        trust_forwarded_for: bool | None = None,
    ) -> None:
        self.stack = stack
        self._keys = _Keys(HttpJwks(jwks) if isinstance(jwks, str) else jwks)
        self.overrides: dict[str, str] = dict(environment or {})
        base = os.environ if base_environment is None else base_environment
        self.base_environment = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        self._aws = aws or self._default_aws
        if trust_forwarded_for is None:
            trust_forwarded_for = os.environ.get(TRUST_FORWARDED_ENV, "").lower() in ("1", "true", "yes")
        self.trust_forwarded_for = trust_forwarded_for
        self.ready = False
        self._lock = threading.RLock()
        self._modules: dict[str, ModuleType] = {}
        self._last_config: dict[str, str] | None = None
        self._sent_at: dict[str, str] = {}
        self._routes = sorted(
            (_compile(function, route) for function, route in stack.routes()),
            key=lambda r: r.priority(),
        )
        for compiled in self._routes:
            if compiled.route.payload_format != "2.0":
                raise ValueError(f"{compiled.route.route_key}: only payload format 2.0 is emulated")

    def mark_ready(self) -> None:
        self.ready = True

    def _default_aws(self, service: str) -> Any:
        import boto3

        factory: Callable[..., Any] = boto3.client
        return factory(
            service,
            region_name=self.stack.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    # -------------------------------------------------------------------------------- WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:  # a bug of the gateway itself: never a stack trace in the body
            log.error("gateway error on %s\n%s", request.method, traceback.format_exc())
            response = _json_response({"message": "Internal Server Error"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/_local" or path.startswith("/_local/"):
            request.environ["local.route_key"] = f"{request.method} {path}"
            return self._local(request)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _json_response({"message": "Request Entity Too Large"}, 413)
        found = self._match(request.method, path)
        if found is None:
            request.environ["local.route_key"] = f"{request.method} (no route)"
            return _json_response({"message": "Not Found"}, 404)
        compiled, path_parameters = found
        route = compiled.route
        request.environ["local.route_key"] = route.route_key
        request_id = base64.b64encode(secrets.token_bytes(12)).decode()
        claims: dict[str, Any] | None = None
        if route.authorizer is not None:
            api = self.stack.apis[route.api]
            authorizer = api.authorizers.get(route.authorizer)
            if authorizer is None:
                log.error("%s: authorizer %s is not a JWT authorizer", route.route_key, route.authorizer)
                return _json_response({"message": "Internal Server Error"}, 500)
            try:
                claims = self.authorize(request, authorizer, route.scopes)
            except _Unauthorized as exc:
                return _json_response(
                    {"message": "Unauthorized"}, 401, {"www-authenticate": _challenge(exc.description)}
                )
            except _Forbidden:
                return _json_response(
                    {"message": "Forbidden"},
                    403,
                    {"www-authenticate": _insufficient_scope(route.scopes)},
                )
        event = self.build_event(request, compiled, path_parameters, claims, request_id)
        try:
            result = self.invoke(compiled.function.logical_id, event)
            response = self._to_response(result)
        except Exception:
            log.error(
                "%s (%s) failed:\n%s",
                compiled.function.logical_id,
                route.route_key,
                traceback.format_exc(),
            )
            response = _json_response({"message": "Internal Server Error"}, 500)
        response.headers["apigw-requestid"] = request_id
        return response

    def _match(self, method: str, path: str) -> tuple[_CompiledRoute, dict[str, str]] | None:
        for compiled in self._routes:
            if compiled.route.method not in ("ANY", method):
                continue
            if compiled.pattern is None:
                return compiled, {}
            match = compiled.pattern.match(path)
            if match:
                return compiled, {_ungroup(k): v for k, v in match.groupdict().items()}
        return None

    # -------------------------------------------------------------------------------- authorizer
    def authorize(
        self, request: Request, authorizer: JwtAuthorizer, scopes: tuple[str, ...]
    ) -> dict[str, Any]:
        """The token's claims, or ``_Unauthorized`` / ``_Forbidden`` as API Gateway decides."""
        token = self._identity(request, authorizer.identity_source)
        if not token:
            raise _Unauthorized()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Unauthorized("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise _Unauthorized(f"signing method {algorithm} is invalid")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _Unauthorized("the token's key is unknown")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALLOWED_ALGORITHMS,
                issuer=authorizer.issuer,
                options={"require": REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise _Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _Unauthorized("the token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise _Unauthorized("the token does not have a valid issuer") from None
        except jwt.InvalidSignatureError:
            raise _Unauthorized("the token does not have a valid signature") from None
        except jwt.PyJWTError:
            raise _Unauthorized("the token is invalid") from None
        if not isinstance(claims.get("sub"), str):
            raise _Unauthorized("the token is invalid")
        audience = claims.get("aud") if "aud" in claims else claims.get("client_id")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(a, str) and a in authorizer.audience for a in audiences):
            raise _Unauthorized("the token does not have a valid audience")
        if scopes and not set(scopes) & set(_token_scopes(claims)):
            raise _Forbidden()
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

    # -------------------------------------------------------------------------------- events
    def build_event(
        self,
        request: Request,
        compiled: _CompiledRoute,
        path_parameters: Mapping[str, str],
        claims: Mapping[str, Any] | None,
        request_id: str,
    ) -> dict[str, Any]:
        """The payload format 2.0 event API Gateway sends for this request."""
        route = compiled.route
        headers: dict[str, list[str]] = {}
        cookies: list[str] = []
        for key, value in request.headers.items():
            name = key.lower()
            if name == "cookie":
                cookies += [c.strip() for c in value.split(";") if c.strip()]
                continue
            headers.setdefault(name, []).append(value)
        source_ip = request.remote_addr or "127.0.0.1"
        forwarded = request.headers.get("X-Forwarded-For")
        if self.trust_forwarded_for and forwarded:
            source_ip = forwarded.split(",")[0].strip()
        headers["x-forwarded-for"] = [f"{forwarded}, {source_ip}" if forwarded else source_ip]
        headers.setdefault("x-forwarded-proto", [request.scheme])
        headers.setdefault("x-forwarded-port", [str(request.environ.get("SERVER_PORT", ""))])
        headers["x-amzn-trace-id"] = [f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"]
        now = time.time()
        host = request.host or "localhost"
        domain = host.split(":", 1)[0]
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": request.path,
            "rawQueryString": request.query_string.decode("latin-1"),
            "headers": {k: ",".join(v) for k, v in headers.items()},
        }
        if cookies:
            event["cookies"] = cookies
        query: dict[str, list[str]] = {}
        for key, value in parse_qsl(event["rawQueryString"], keep_blank_values=True):
            query.setdefault(key, []).append(value)
        if query:
            event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
        if path_parameters:
            event["pathParameters"] = dict(path_parameters)
        gmt = time.gmtime(now)
        context: dict[str, Any] = {
            "accountId": self.stack.account_id,
            "apiId": self.stack.apis[route.api].api_id,
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "sourceIp": source_ip,
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": f"{gmt.tm_mday:02d}/{_MONTHS[gmt.tm_mon - 1]}/{gmt.tm_year}:"
            f"{gmt.tm_hour:02d}:{gmt.tm_min:02d}:{gmt.tm_sec:02d} +0000",
            "timeEpoch": int(now * 1000),
        }
        if claims is not None:
            context["authorizer"] = {
                "jwt": {
                    "claims": {k: _claim_text(v) for k, v in claims.items()},
                    "scopes": _token_scopes(claims) if route.scopes else None,
                }
            }
        event["requestContext"] = context
        body = request.get_data(cache=True)
        if body:
            if _is_text(request.content_type):
                try:
                    event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
                except UnicodeDecodeError:
                    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
            else:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["isBase64Encoded"] = False
        return event

    @staticmethod
    def _to_response(result: Any) -> Response:
        """Map a payload 2.0 result back to HTTP, as API Gateway does."""
        if not (isinstance(result, dict) and "statusCode" in result):
            # "If your function returns valid JSON and doesn't return a statusCode, API Gateway assumes..."
            return Response(json.dumps(result), status=200, content_type="application/json")
        status = result["statusCode"]
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError("statusCode must be an integer HTTP status")
        body = result.get("body")
        if body is None:
            payload = b""
        elif result.get("isBase64Encoded"):
            payload = base64.b64decode(str(body), validate=False)
        else:
            payload = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
        response = Response(payload, status=status)
        response.headers.remove("Content-Type")
        for key, value in (result.get("headers") or {}).items():
            if key.lower() not in _HOP_BY_HOP:
                response.headers[key] = str(value)
        for key, values in (result.get("multiValueHeaders") or {}).items():
            if key.lower() in _HOP_BY_HOP:
                continue
            response.headers.remove(key)
            for value in values:
                response.headers.add(key, str(value))
        for cookie in result.get("cookies") or []:
            response.headers.add("Set-Cookie", str(cookie))
        return response

    # -------------------------------------------------------------------------------- invocation
    def environment_for(self, function: Function) -> dict[str, str]:
        """The complete ``os.environ`` a function runs with."""
        env = dict(self.base_environment)
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": function.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
                "AWS_REGION": self.stack.region,
                "AWS_DEFAULT_REGION": self.stack.region,
                "AWS_SAM_LOCAL": "true",
                "_HANDLER": function.handler,
                "LAMBDA_TASK_ROOT": str(function.code_uri),
            }
        )
        env.update(function.environment)
        env.update(self.overrides)
        return env

    def invoke(self, logical_id: str, event: Any, *, request_id: str | None = None) -> Any:
        """Run a function in-process (serialized with every other invocation); exceptions propagate."""
        function = self.stack.functions[logical_id]
        with self._lock:
            saved = dict(os.environ)
            env = self.environment_for(function)
            self._apply_environment(env)
            try:
                config = {k: v for k, v in env.items() if k not in _IDENTITY_VARIABLES}
                if config != self._last_config:
                    self._reset_container()
                    self._last_config = config
                handler = self._handler(function)
                return handler(event, LambdaContext(function, self.stack.region, request_id))
            finally:
                self._apply_environment(saved)
                self._stamp_outbox()

    @staticmethod
    def _apply_environment(env: Mapping[str, str]) -> None:
        # change only what differs: other threads (moto, the local Auth0) read os.environ meanwhile
        for key in [k for k in os.environ if k not in env]:
            del os.environ[key]
        for key, value in env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value

    @staticmethod
    def _reset_container() -> None:
        if (
            importlib.util.find_spec("usermgmt") is None
            or importlib.util.find_spec("usermgmt.container") is None
        ):
            return
        container = importlib.import_module("usermgmt.container")
        reset = getattr(container, "reset", None)
        if callable(reset):
            reset()

    def _handler(self, function: Function) -> Callable[[Any, Any], Any]:
        module = self._modules.get(function.logical_id)
        if module is None:
            module = load_handler_module(function)
            self._modules[function.logical_id] = module
        handler = getattr(module, function.handler_function, None)
        if not callable(handler):
            raise AttributeError(f"{function.logical_id}: {function.handler} is not callable")
        return cast("Callable[[Any, Any], Any]", handler)

    # -------------------------------------------------------------------------------- /_local
    def _local(self, request: Request) -> Response:
        path, method = request.path, request.method
        api_docs = apidocs.respond(request)  # /_local/openapi.json, /_local/docs (local/apidocs.py)
        if api_docs is not None:
            return api_docs
        if path == "/_local/health" and method == "GET":
            if self.ready:
                return _json_response({"status": "ok"})
            return _json_response({"status": "starting"}, 503)
        if path == "/_local/outbox":
            if method == "GET":
                return self._outbox_response(request)
            if method == "DELETE":
                self.clear_outbox()
                return Response(status=204)
        if path == "/_local/events" and method == "POST":
            return self._events_response(request)
        if path == "/_local/dlq" and method == "GET":
            return _json_response(self.dead_letters())
        if path.startswith("/_local/schedules/") and method == "POST":
            return self._schedule_response(path.removeprefix("/_local/schedules/"))
        return _json_response({"message": "Not Found"}, 404)

    # outbox
    def _stamp_outbox(self) -> None:
        now = _now_rfc3339()
        for backend in _ses_backends():
            for message in list(backend.sent_messages):
                key = str(getattr(message, "id", id(message)))
                self._sent_at.setdefault(key, now)

    def outbox(self) -> list[dict[str, Any]]:
        """Every email moto's SES accepted, oldest first."""
        with self._lock:
            self._stamp_outbox()
            entries: list[dict[str, Any]] = []
            for backend in _ses_backends():
                for message in list(backend.sent_messages):
                    entry = _parse_sent(message)
                    entry["to"] = ", ".join(entry["to"])
                    entry["sentAt"] = self._sent_at.get(str(entry["id"]))
                    entries.append(entry)
            entries.sort(key=lambda e: str(e["sentAt"]))
            return entries

    def clear_outbox(self) -> None:
        with self._lock:
            for backend in _ses_backends():
                backend.sent_messages.clear()
            self._sent_at.clear()

    def _outbox_response(self, request: Request) -> Response:
        entries = self.outbox()
        accept = request.accept_mimetypes
        if (
            accept.best_match(["application/json", "text/html"]) == "text/html"
            and accept["text/html"] > accept["application/json"]
        ):
            return Response(
                _outbox_html(entries),
                content_type="text/html; charset=utf-8",
                headers={
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                    "Cache-Control": "no-store",
                },
            )
        return _json_response(entries)

    # EventBridge
    def _events_response(self, request: Request) -> Response:
        try:
            entry = json.loads(request.get_data(cache=True) or b"null")
        except ValueError:
            return _json_response({"message": "body is not JSON"}, 400)
        if not isinstance(entry, dict):
            return _json_response({"message": "body must be an object"}, 400)
        try:
            event, bus = self.build_eventbridge_event(entry)
        except ValueError as exc:
            return _json_response({"message": str(exc)}, 400)
        return _json_response(self.put_event(event, bus))

    def build_eventbridge_event(self, entry: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A PutEvents entry as the event a rule target receives, and the bus it names (None: any)."""
        source, detail_type = entry.get("Source"), entry.get("DetailType")
        if not isinstance(source, str) or not source or not isinstance(detail_type, str) or not detail_type:
            raise ValueError("Source and DetailType are required strings")
        detail: Any = entry.get("Detail", {})
        if isinstance(detail, str):
            try:
                detail = json.loads(detail) if detail.strip() else {}
            except ValueError:
                raise ValueError("Detail is not valid JSON") from None
        if not isinstance(detail, dict):
            raise ValueError("Detail must be a JSON object")
        bus = entry.get("EventBusName")
        if bus is not None:
            bus = str(bus).rsplit("/", 1)[-1] if str(bus).startswith("arn:") else str(bus)
        event = {
            "version": "0",
            "id": str(entry.get("Id") or uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.stack.account_id,
            "time": str(entry.get("Time") or _event_time()),
            "region": self.stack.region,
            "resources": list(entry.get("Resources") or []),
            "detail": detail,
        }
        return event, bus

    def put_event(self, event: Mapping[str, Any], bus: str | None = None) -> dict[str, Any]:
        """Deliver ``event`` to every matching EventBridgeRule target now.

        ``bus`` None matches rules on any bus (handy by hand; PutEvents itself defaults to ``default``).
        A target that raises is treated as Lambda's async retries would end: the event goes once to the
        rule's dead-letter queue (when it has one); only the exception's type is reported.
        """
        matched: list[str] = []
        results: list[dict[str, Any]] = []
        for function in self.stack.functions.values():
            for rule in function.rules:
                if not rule.enabled or (bus is not None and rule.bus_name != bus):
                    continue
                if not matches_pattern(rule.pattern, event):
                    continue
                matched.append(function.logical_id)
                payload: Any = event
                if rule.input is not None:
                    payload = json.loads(rule.input)
                elif rule.input_path is not None:
                    payload = _input_path(event, rule.input_path)
                outcome: dict[str, Any] = {"function": function.logical_id, "rule": rule.event_id}
                try:
                    outcome["result"] = self.invoke(function.logical_id, payload)
                except Exception as exc:
                    log.error(
                        "%s (rule %s) failed:\n%s", function.logical_id, rule.event_id, traceback.format_exc()
                    )
                    outcome["error"] = type(exc).__name__
                    outcome["deadLettered"] = self._dead_letter(function, rule, event, exc)
                results.append(outcome)
        return {"matched": matched, "results": results}

    def _dlq_url(self, rule: EventRule) -> str | None:
        if rule.dlq_logical_id and rule.dlq_logical_id in self.stack.queues:
            url = str(self.stack.resolver.ref(rule.dlq_logical_id))
            if url.startswith("http"):
                return url
        if rule.dlq_arn:
            name = rule.dlq_arn.rsplit(":", 1)[-1]
            return str(self._aws("sqs").get_queue_url(QueueName=name)["QueueUrl"])
        return None

    def _dead_letter(
        self, function: Function, rule: EventRule, event: Mapping[str, Any], exc: Exception
    ) -> bool:
        if not rule.dlq_arn:
            return False
        try:
            url = self._dlq_url(rule)
            if url is None:
                return False
            rule_arn = f"arn:aws:events:{self.stack.region}:{self.stack.account_id}:rule/"
            rule_arn += rule.rule_name if rule.bus_name == "default" else f"{rule.bus_name}/{rule.rule_name}"
            attributes = {
                "RULE_ARN": rule_arn,
                "TARGET_ARN": function.arn,
                "ERROR_CODE": "LambdaFunctionError",
                "ERROR_MESSAGE": type(exc).__name__,
                "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
                "RETRY_ATTEMPTS": str(
                    rule.maximum_retry_attempts if rule.maximum_retry_attempts is not None else 185
                ),
            }
            self._aws("sqs").send_message(
                QueueUrl=url,
                MessageBody=json.dumps(event),
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                },
            )
        except Exception as send_error:  # the DLQ itself failed: say so, keep serving
            log.error("dead-lettering to %s failed: %s", rule.dlq_arn, type(send_error).__name__)
            return False
        return True

    def dead_letters(self) -> list[dict[str, Any]]:
        """Messages waiting in the rules' dead-letter queues (read, not deleted)."""
        seen_queues: set[str] = set()
        messages: list[dict[str, Any]] = []
        sqs = self._aws("sqs")
        for function in self.stack.functions.values():
            for rule in function.rules:
                if not rule.dlq_arn or rule.dlq_arn in seen_queues:
                    continue
                seen_queues.add(rule.dlq_arn)
                url = self._dlq_url(rule)
                if url is None:
                    continue
                ids: set[str] = set()
                for _ in range(20):
                    response = sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        VisibilityTimeout=0,
                        MessageAttributeNames=["All"],
                        WaitTimeSeconds=0,
                    )
                    fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in ids]
                    if not fresh:
                        break
                    for message in fresh:
                        ids.add(message["MessageId"])
                        try:
                            body: Any = json.loads(message["Body"])
                        except ValueError:
                            body = message["Body"]
                        messages.append(
                            {
                                "queue": rule.dlq_arn.rsplit(":", 1)[-1],
                                "messageId": message["MessageId"],
                                "body": body,
                                "attributes": {
                                    k: v.get("StringValue")
                                    for k, v in (message.get("MessageAttributes") or {}).items()
                                },
                            }
                        )
        return messages

    # schedules
    def scheduled_event(self, function: Function) -> Any:
        schedule = function.schedules[0]
        if schedule.input is not None:
            return json.loads(schedule.input)
        rule_name = f"{self.stack.resolver.stack_name}-{function.logical_id}{schedule.event_id}"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.stack.account_id,
            "time": _event_time(),
            "region": self.stack.region,
            "resources": [f"arn:aws:events:{self.stack.region}:{self.stack.account_id}:rule/{rule_name}"],
            "detail": {},
        }

    def run_schedule(self, logical_id: str) -> Any:
        """Invoke a scheduled function now (``KeyError`` when it has no Schedule/ScheduleV2 event)."""
        function = self.stack.functions.get(logical_id)
        if function is None or not function.schedules:
            raise KeyError(logical_id)
        return self.invoke(logical_id, self.scheduled_event(function))

    def _schedule_response(self, logical_id: str) -> Response:
        function = self.stack.functions.get(logical_id)
        if function is None or not function.schedules:
            return _json_response({"message": "no schedule"}, 404)
        try:
            result = self.run_schedule(logical_id)
        except Exception as exc:
            log.error("%s (schedule) failed:\n%s", logical_id, traceback.format_exc())
            return _json_response({"error": type(exc).__name__}, 500)
        return _json_response(result)


def load_handler_module(function: Function) -> ModuleType:
    """Import a function's handler module by file path under the unique name ``fn_<LogicalId>``."""
    name = f"fn_{function.logical_id}"
    path = function.handler_file
    if not path.is_file():
        raise FileNotFoundError(f"{function.logical_id}: handler file {path} does not exist")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _linkify(text: str) -> str:
    escaped = html.escape(text)
    return _URL.sub(lambda m: f'<a href="{m.group(0)}" rel="noreferrer noopener">{m.group(0)}</a>', escaped)


def _outbox_html(entries: list[dict[str, Any]]) -> str:
    rows: list[str] = []
    for entry in reversed(entries):
        parts = [
            "<article>",
            f"<h2>{html.escape(str(entry.get('subject') or '(no subject)'))}</h2>",
            f"<p class=meta>to {html.escape(str(entry.get('to') or ''))} &middot; "
            f"from {html.escape(str(entry.get('from') or ''))} &middot; "
            f"{html.escape(str(entry.get('sentAt') or ''))}</p>",
        ]
        if entry.get("text"):
            parts.append(f"<pre>{_linkify(str(entry['text']))}</pre>")
        if entry.get("html"):
            parts.append(
                '<details><summary>HTML part</summary><iframe sandbox="allow-popups '
                'allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation" srcdoc="'
                f'{html.escape(str(entry["html"]), quote=True)}"></iframe></details>'
            )
        parts.append("</article>")
        rows.append("".join(parts))
    body = "".join(rows) or "<p>No emails yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Local outbox</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "article{border-bottom:1px solid #ddd;padding:1rem 0}pre{white-space:pre-wrap}"
        ".meta{color:#555}iframe{width:100%;height:24rem;border:1px solid #ccc}"
        f"</style></head><body><h1>Local outbox ({len(entries)})</h1>{body}</body></html>"
    )


# ------------------------------------------------------------------------------------------------
# Serving
# ------------------------------------------------------------------------------------------------


class _RequestLog(WSGIRequestHandler):
    """Logs method, route key and status: never the path (link tokens live in paths) or the query."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        environ = getattr(self, "environ", {}) or {}
        route = environ.get("local.route_key") or f"{self.command} (no route)"
        log.info("%s -> %s", route, code)

    def log_error(self, format: str, *args: Any) -> None:
        log.warning("request error: %s", args[0] if args else format)


def serve(app: Callable[..., Iterable[bytes]], host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Serve ``app`` from a threaded werkzeug server in a daemon thread (``port=0`` picks a free port)."""
    return serve_wsgi(app, host, port, request_handler=_RequestLog, name="gateway")


def decode_body(event: Mapping[str, Any]) -> bytes:
    """The raw request body of a payload 2.0 event (tests and tools)."""
    body = event.get("body")
    if body is None:
        return b""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(str(body))
        except binascii.Error:
            return b""
    return str(body).encode()
