"""Payload format 2.0: routes compiled from the template, the events API Gateway sends, results mapped back.

* Routes from every function's ``HttpApi`` events (``{param}``, ``{proxy+}``, ``ANY``, ``$default``),
  matched in API Gateway's priority order (exact paths, more literal segments, greedy last).
* Events: claims rendered as strings the way API Gateway does (``[a b]`` for lists). ``rawPath`` and
  ``pathParameters`` are percent-decoded (HTTP APIs decode the path). Bodies of ``text/*``,
  ``application/json``, ``application/xml`` and ``application/javascript`` are passed as text, anything
  else (also form posts and a missing content type) base64-encoded, as HTTP APIs do.
* Results: a dict with ``statusCode`` maps to that response (headers, ``multiValueHeaders``, cookies,
  base64 bodies); anything else valid JSON is a 200 with that JSON, as API Gateway assumes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response

from local.jwt_authorizer import token_scopes
from local.template import DEFAULT_ROUTE, Function, HttpRoute

__all__ = [
    "CompiledRoute",
    "Routes",
    "build_event",
    "claim_text",
    "compile_route",
    "decode_body",
    "json_response",
    "to_response",
]

TEXT_TYPES = ("application/json", "application/xml", "application/javascript")
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, default=str), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledRoute:
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


def compile_route(function: Function, route: HttpRoute) -> CompiledRoute:
    if route.path == DEFAULT_ROUTE:
        return CompiledRoute(function, route, None, 0, 0, False)
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
    return CompiledRoute(function, route, re.compile(regex), literal, variables, greedy)


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


class Routes:
    """Every route of the template, in the order API Gateway tries them."""

    def __init__(self, routes: Iterable[tuple[Function, HttpRoute]]) -> None:
        self._routes = sorted((compile_route(f, r) for f, r in routes), key=lambda r: r.priority())
        for compiled in self._routes:
            if compiled.route.payload_format != "2.0":
                raise ValueError(f"{compiled.route.route_key}: only payload format 2.0 is emulated")

    def match(self, method: str, path: str) -> tuple[CompiledRoute, dict[str, str]] | None:
        for compiled in self._routes:
            if compiled.route.method not in ("ANY", method):
                continue
            if compiled.pattern is None:
                return compiled, {}
            match = compiled.pattern.match(path)
            if match:
                return compiled, {_ungroup(k): v for k, v in match.groupdict().items()}
        return None

    def apis_for(self, path: str) -> set[str]:
        """The logical ids of the APIs with a route on ``path`` (any method; ``$default`` counts)."""
        return {c.route.api for c in self._routes if c.pattern is None or c.pattern.match(path)}


# ------------------------------------------------------------------------------------------------
# Events and results
# ------------------------------------------------------------------------------------------------


def claim_text(value: Any) -> str:
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
        return "[" + " ".join(claim_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{claim_text(value[k])}" for k in sorted(value)) + "]"
    return "" if value is None else str(value)


def is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in TEXT_TYPES


def build_event(
    request: Request,
    compiled: CompiledRoute,
    path_parameters: Mapping[str, str],
    claims: Mapping[str, Any] | None,
    request_id: str,
    *,
    account_id: str,
    api_id: str,
    trust_forwarded_for: bool = False,
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
    if trust_forwarded_for and forwarded:
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
        "accountId": account_id,
        "apiId": api_id,
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
                "claims": {k: claim_text(v) for k, v in claims.items()},
                "scopes": token_scopes(claims) if route.scopes else None,
            }
        }
    event["requestContext"] = context
    body = request.get_data(cache=True)
    if body:
        if is_text(request.content_type):
            try:
                event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["isBase64Encoded"] = False
    return event


def to_response(result: Any) -> Response:
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
