"""The resolver factory shared by every HTTP function, and the request/response helpers.

Every JSON error is RFC 9457 problem details; every response carries ``Cache-Control: no-store``
and ``Referrer-Policy: no-referrer``. Request bodies are validated by the package's own models
(``usermgmt.models``), which name each offending field; see docs/decisions.md for why Powertools'
``enable_validation`` is off.
"""

from __future__ import annotations

import base64
import binascii
import json
import traceback
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from usermgmt.auth import RequestCtx
from usermgmt.errors import (
    ApiError,
    DependencyUnavailable,
    FieldProblem,
    InvalidJson,
    InvitationNotFound,
    PayloadTooLarge,
    RouteNotFound,
    StoreUnavailable,
    UnsupportedMediaType,
    UserNotFound,
    ValidationFailed,
)
from usermgmt.observability import count, logger
from usermgmt.service.linkcheck import INVALID, gone
from usermgmt.settings import MAX_BODY_BYTES, MAX_USER_ID_BYTES

JSON = "application/json"
PROBLEM = "application/problem+json"
BASE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def json_response(
    status: int, body: Any, *, etag: int | None = None, headers: dict[str, str] | None = None
) -> Response[str]:
    all_headers = dict(BASE_HEADERS)
    if etag is not None:
        all_headers["ETag"] = f'"{etag}"'
    all_headers.update(headers or {})
    return Response(status_code=status, content_type=JSON, body=_dumps(body), headers=all_headers)


def empty_response(status: int, *, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status_code=status, body="", headers={**BASE_HEADERS, **(headers or {})})


def problem_response(err: ApiError) -> Response[str]:
    return Response(
        status_code=err.status,
        content_type=PROBLEM,
        body=_dumps(err.problem()),
        headers={**BASE_HEADERS, **err.headers},
    )


# Refusals a security team watches for, named in the OWASP Logging Vocabulary (security notes PRIV-4):
# one WARNING line each, ``security_event`` = "<event>:<caller id>,<route>", so a log query or a
# metric filter finds every kind across functions without knowing this API's problem codes.
SECURITY_EVENTS = {
    "forbidden": "authz_fail",
    "insufficient_scope": "authz_fail",
    "token_revoked": "authn_token_reuse",
    "rate_limited": "excess_rate_limit_exceeded",
    "validation_failed": "input_validation_fail",
    "invalid_json": "input_validation_fail",
    "invalid_filter": "input_validation_fail",
    "invalid_cursor": "input_validation_fail",
}


def make_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()

    @app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
    def _api_error(err: ApiError) -> Response[str]:
        count("ClientError" if err.status < 500 else "ServerError")
        if err.status >= 500:
            logger.warning("request failed", extra={"code": err.code})
        event = SECURITY_EVENTS.get(err.code)
        if event is not None:
            _security_event(app, event, err.code)
        return problem_response(err)

    @app.exception_handler(StoreUnavailable)  # type: ignore[untyped-decorator]
    def _store_down(err: StoreUnavailable) -> Response[str]:
        logger.warning("table unavailable", extra={"code": "dependency_unavailable"})
        count("ServerError")
        return problem_response(DependencyUnavailable())

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(err: Exception) -> Response[str]:
        # Type and frames only: an exception message may carry user data.
        frames = [
            f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}"
            for f in traceback.extract_tb(err.__traceback__)
        ]
        count("ServerError")
        logger.error("unhandled error", extra={"error_type": type(err).__name__, "frames": frames[-8:]})
        return problem_response(ApiError("An unexpected error occurred"))

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        count("ClientError")
        return unmatched(app, app.current_event.route_key or "")

    return app


def _security_event(app: APIGatewayHttpResolver, event: str, code: str) -> None:
    """Who (the token's ``sub``, ``-`` without one) was refused what (the route): ids, no personal data."""
    try:
        current = app.current_event
        claims = current.request_context.authorizer.jwt_claim or {}
        caller = str(claims.get("sub") or "-")
        route = current.route_key or "-"
    except Exception:  # an event without that shape (tests, direct invokes): still log the event
        caller, route = "-", "-"
    logger.warning("security event", extra={"security_event": f"{event}:{caller},{route}", "code": code})


def unmatched(app: APIGatewayHttpResolver, route_key: str) -> Response[str]:
    """API Gateway routed the request to this function, but its router refused the path: a path
    parameter holds characters no user id or link token has (Powertools matches word characters and
    URI punctuation only). Answer as for an id or a token that names nothing."""
    from usermgmt import pages  # pages builds on this module

    if "{userId}" in route_key:
        return problem_response(UserNotFound())
    # ``/invitations/{invitation}``: an invitation id on the administrators' routes (resend, DELETE),
    # a link's token on the person's (GET, POST, renew)
    by_id = route_key.startswith("DELETE ") or route_key.endswith("/resend")
    if "{invitation}" in route_key and by_id:
        return problem_response(InvitationNotFound())
    if "{jobId}" in route_key:
        from usermgmt.errors import JobNotFound

        return problem_response(JobNotFound())
    if "{accountId}" in route_key:
        from usermgmt.errors import AccountNotFound

        return problem_response(AccountNotFound())
    token = "{token}" in route_key or "{invitation}" in route_key
    if token and route_key.endswith("/renew"):
        return pages.json_answer(202, {"status": "accepted"})  # renew: the same answer for any token
    if token:
        return pages.gone(app, gone(INVALID))
    return problem_response(RouteNotFound())


# ------------------------------------------------------------------------------------------------
# request helpers
# ------------------------------------------------------------------------------------------------


def request_ctx(app: APIGatewayHttpResolver) -> RequestCtx:
    event = app.current_event
    rc = event.request_context
    claims: dict[str, Any] = {}
    try:
        claims = dict(rc.authorizer.jwt_claim or {})
    except (AttributeError, KeyError, TypeError):
        claims = {}
    iat = _int_claim(claims, "iat")
    sub = claims.get("sub")
    gty = claims.get("gty")
    return RequestCtx(
        sub=str(sub) if sub else None,
        iat=iat,
        request_id=rc.request_id or "",
        source_ip=rc.http.source_ip or "",
        auth_time=_int_claim(claims, _auth_time_claim()),
        gty=str(gty) if gty else None,
        scopes=token_scopes(claims),
    )


def _auth_time_claim() -> str:
    from usermgmt import container  # the settings of this function (AUTH_TIME_CLAIM)

    return container.get().settings.auth_time_claim


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    """A numeric claim (API Gateway passes claims as strings); None when absent or not a number."""
    try:
        return int(float(str(claims[name])))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """What the token grants: ``scope`` (space-separated) and Auth0's ``permissions`` (RBAC).

    API Gateway hands claims over as strings; an array claim arrives as ``[a b c]``.
    """
    found: set[str] = set()
    for name in ("scope", "permissions"):
        value = claims.get(name)
        if isinstance(value, list):
            found.update(str(v) for v in value)
        elif value:
            found.update(str(value).strip("[]").replace(",", " ").split())
    return frozenset(found)


def path_user_id(raw: str) -> str:
    """Path ids arrive percent-encoded (``auth0%7C...``) or already decoded; accept both.

    An id longer than any user id can be (``MAX_USER_ID_BYTES`` of UTF-8) names no user: 404 here,
    before the table is asked (DynamoDB refuses keys over 2048 bytes, which would read as an outage).
    """
    user_id = unquote(raw) if "%" in raw else raw
    if len(user_id.encode("utf-8", errors="surrogatepass")) > MAX_USER_ID_BYTES:
        raise UserNotFound()
    return user_id


def media_type(app: APIGatewayHttpResolver) -> str:
    """The request's media type, lower case, without parameters ("" when there is none)."""
    return (app.current_event.headers.get("content-type") or "").split(";")[0].strip().lower()


def is_json(media: str) -> bool:
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def body_bytes(app: APIGatewayHttpResolver, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body as sent (413 beyond ``MAX_BODY_BYTES``).

    API Gateway base64-encodes bodies it does not take for text; they are decoded here, never by
    Powertools' ``decoded_body`` (which raises on bytes that are not UTF-8).
    """
    event = app.current_event
    body = event.body or ""
    if not event.is_base64_encoded:
        raw = body.encode("utf-8", errors="surrogatepass")
    else:
        try:
            raw = base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            raw = body.encode()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The body must be at most {limit} bytes")
    return raw


def body_text(raw: bytes, *, not_utf8: ApiError) -> str:
    """``raw`` as UTF-8 text; ``not_utf8`` when it is not (JSON and forms are UTF-8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8 from None


def json_body(app: APIGatewayHttpResolver, limit: int = MAX_BODY_BYTES) -> Any:
    """The parsed JSON body (None when empty): 413 beyond ``limit``, 415 for another media type, 400
    for bad JSON."""
    raw = body_bytes(app, limit)
    if not is_json(media_type(app)):
        raise UnsupportedMediaType()
    text = body_text(raw, not_utf8=InvalidJson("The body must be JSON in UTF-8"))
    try:
        return json.loads(text) if text else None
    except ValueError:
        raise InvalidJson() from None


def if_match(app: APIGatewayHttpResolver) -> int | None:
    """The version a client says it edits; None when it sent no ``If-Match`` (or ``*``)."""
    value = (app.current_event.headers.get("if-match") or "").strip()
    if not value or value == "*":
        return None
    if value.startswith("W/"):
        value = value[2:]
    try:
        return int(value.strip('"'))
    except ValueError:
        raise ValidationFailed(
            "If-Match must be an ETag of this API",
            errors=[FieldProblem("If-Match", "must be a version ETag")],
        ) from None


def query_int(app: APIGatewayHttpResolver, name: str, default: int, low: int, high: int) -> int:
    raw = app.current_event.get_query_string_value(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValidationFailed(errors=[FieldProblem(name, f"must be an integer from {low} to {high}")])
    return value
