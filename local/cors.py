"""API Gateway's CORS handling of an HTTP API, from the template's ``CorsConfiguration``.

As API Gateway does it: a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
is answered by the gateway itself, 204, without a route, an authorizer or a function; the allow-headers
are on it only when the origin is allowed. On every other response of the API, a request whose
``Origin`` is allowed gets ``Access-Control-Allow-Origin`` (and the exposed headers, credentials);
CORS headers a function returns are dropped, as API Gateway ignores them when CORS is configured.
Allowed origins are exact (case-insensitive), ``*``, or a scheme wildcard such as ``https://*``.
"""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from local.template import CorsConfiguration

__all__ = ["add_cors_headers", "is_preflight", "origin_allowed", "preflight_response"]


def is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and bool(request.headers.get("Origin"))
        and bool(request.headers.get("Access-Control-Request-Method"))
    )


def origin_allowed(cors: CorsConfiguration, origin: str) -> bool:
    if not origin:
        return False
    origin = origin.strip().lower()
    for allowed in cors.allow_origins:
        allowed = allowed.lower()
        if allowed == "*" or allowed == origin:
            return True
        if allowed.endswith("://*") and origin.startswith(allowed[:-1]):
            return True
    return False


def _allow_origin(cors: CorsConfiguration, origin: str) -> str:
    return "*" if cors.allow_origins == ("*",) and not cors.allow_credentials else origin


def preflight_response(cors: CorsConfiguration, request: Request) -> Response:
    response = Response(status=204)
    response.headers.remove("Content-Type")
    origin = request.headers.get("Origin") or ""
    if not origin_allowed(cors, origin):
        return response
    response.headers["Access-Control-Allow-Origin"] = _allow_origin(cors, origin)
    if cors.allow_methods:
        response.headers["Access-Control-Allow-Methods"] = ",".join(cors.allow_methods)
    if cors.allow_headers:
        response.headers["Access-Control-Allow-Headers"] = ",".join(h.lower() for h in cors.allow_headers)
    if cors.max_age is not None:
        response.headers["Access-Control-Max-Age"] = str(cors.max_age)
    if cors.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    return response


def add_cors_headers(cors: CorsConfiguration, request: Request, response: Response) -> None:
    for name in {k for k, _ in response.headers.items() if k.lower().startswith("access-control-")}:
        response.headers.remove(name)
    origin = request.headers.get("Origin") or ""
    if not origin_allowed(cors, origin):
        return
    response.headers["Access-Control-Allow-Origin"] = _allow_origin(cors, origin)
    if cors.expose_headers:
        response.headers["Access-Control-Expose-Headers"] = ",".join(h.lower() for h in cors.expose_headers)
    if cors.allow_credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
