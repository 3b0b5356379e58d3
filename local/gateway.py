"""The local API Gateway: a WSGI app (werkzeug) built from ``template.yaml``, the front door of the stack.

For every request, as API Gateway HTTP APIs do: match a route of the template (anything else is 404
``{"message":"Not Found"}``), apply the JWT authorizer (``local.jwt_authorizer``), build the payload 2.0
event (``local.payload``), invoke the function (``local.lambda_runtime``) and map its result back. The
server is threaded: requests are served in parallel, and how many run a function at once is the
runtime's business (the local stack gives each function several execution environments).

CORS as API Gateway handles it for an API with a ``CorsConfiguration`` (``local.cors``): preflights are
answered here, allowed origins get their headers on every response of the API.

Local extras under ``/_local``: ``health``, ``outbox`` (``local.outbox``), ``events``, ``dlq`` and
``schedules/{FunctionLogicalId}`` (``local.eventbus``), ``openapi.json`` and ``docs`` (``local.apidocs``).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from local import apidocs
from local.busview import BusView
from local.cors import add_cors_headers, is_preflight, preflight_response
from local.eventbus import EventBus, matches_pattern
from local.jwt_authorizer import Forbidden, JwtAuthorizerCheck, Unauthorized, challenge, insufficient_scope
from local.lambda_runtime import FunctionError, InProcessRuntime, Runtime, function_environment
from local.outbox import Outbox
from local.payload import Routes, build_event, decode_body, json_response, to_response
from local.serving import ServerHandle, serve_wsgi
from local.template import CorsConfiguration, Function, Stack

__all__ = ["Gateway", "ServerHandle", "decode_body", "matches_pattern", "serve"]

log = logging.getLogger("local.gateway")

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API payload quota
TRUST_FORWARDED_ENV = "LOCAL_TRUST_X_FORWARDED_FOR"


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
    ``runtime``: runs the handlers (default: ``InProcessRuntime``, one at a time in this process; the
    local stack passes a ``WorkerPoolRuntime``).
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
        runtime: Runtime | None = None,
    ) -> None:
        self.stack = stack
        self._authorizer = JwtAuthorizerCheck(jwks)
        self.overrides: dict[str, str] = dict(environment or {})
        base = os.environ if base_environment is None else base_environment
        self.base_environment = {k: v for k, v in base.items() if not k.startswith("AWS_")}
        if trust_forwarded_for is None:
            trust_forwarded_for = os.environ.get(TRUST_FORWARDED_ENV, "").lower() in ("1", "true", "yes")
        self.trust_forwarded_for = trust_forwarded_for
        self.runtime: Runtime = runtime or InProcessRuntime(stack.region)
        self.ready = False
        self._routes = Routes(stack.routes())
        self._outbox = Outbox()
        self.events = EventBus(stack, self.invoke, aws or self._default_aws)
        self.bus_view: BusView | None = None  # set by the local stack when it runs the product's buses

    def mark_ready(self) -> None:
        self.ready = True

    def prewarm(self) -> None:
        """Give every function one execution environment now, in parallel (the runtime's init phase), so
        the first request of each does not pay a cold start; later ones scale out on demand."""
        functions = list(self.stack.functions.values())
        failures: list[BaseException] = []

        def start(function: Function) -> None:
            try:
                self.runtime.prewarm(function, self.environment_for(function))
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=start, args=(f,), name=f"prewarm-{f.logical_id}") for f in functions
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def close(self) -> None:
        """Stop the runtime's execution environments."""
        self.ready = False
        self.runtime.close()

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
            response = json_response({"message": "Internal Server Error"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/_local" or path.startswith("/_local/"):
            request.environ["local.route_key"] = f"{request.method} {path}"
            return self._local(request)
        cors = self._cors_for(path)
        if cors is not None and is_preflight(request):
            request.environ["local.route_key"] = "OPTIONS (CORS preflight)"
            return preflight_response(cors, request)
        response = self._api(request)
        if cors is not None:
            add_cors_headers(cors, request, response)
        return response

    def _cors_for(self, path: str) -> CorsConfiguration | None:
        """The CORS configuration of the API serving ``path`` (the only API when no route matches)."""
        apis = self._routes.apis_for(path) or set(self.stack.apis)
        configured = [self.stack.apis[a].cors for a in sorted(apis) if a in self.stack.apis]
        return next((c for c in configured if c is not None), None)

    def _api(self, request: Request) -> Response:
        path = request.path
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return json_response({"message": "Request Entity Too Large"}, 413)
        found = self._routes.match(request.method, path)
        if found is None:
            request.environ["local.route_key"] = f"{request.method} (no route)"
            return json_response({"message": "Not Found"}, 404)
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
                return json_response({"message": "Internal Server Error"}, 500)
            try:
                claims = self._authorizer.authorize(request, authorizer, route.scopes)
            except Unauthorized as exc:
                return json_response(
                    {"message": "Unauthorized"}, 401, {"www-authenticate": challenge(exc.description)}
                )
            except Forbidden:
                return json_response(
                    {"message": "Forbidden"}, 403, {"www-authenticate": insufficient_scope(route.scopes)}
                )
        event = build_event(
            request,
            compiled,
            path_parameters,
            claims,
            request_id,
            account_id=self.stack.account_id,
            api_id=self.stack.apis[route.api].api_id,
            trust_forwarded_for=self.trust_forwarded_for,
        )
        try:
            response = to_response(self.invoke(compiled.function.logical_id, event))
        except FunctionError as exc:  # the worker logged its traceback
            log.error("%s (%s) failed: %s", compiled.function.logical_id, route.route_key, exc.error_type)
            response = json_response({"message": "Internal Server Error"}, 500)
        except Exception:
            log.error(
                "%s (%s) failed:\n%s", compiled.function.logical_id, route.route_key, traceback.format_exc()
            )
            response = json_response({"message": "Internal Server Error"}, 500)
        response.headers["apigw-requestid"] = request_id
        return response

    # -------------------------------------------------------------------------------- invocation
    def environment_for(self, function: Function) -> dict[str, str]:
        """The complete ``os.environ`` a function runs with."""
        return function_environment(function, self.stack.region, self.base_environment, self.overrides)

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Run a function through the runtime; a failed invocation raises (``FunctionError`` or the
        handler's own exception in process)."""
        function = self.stack.functions[logical_id]
        try:
            return self.runtime.invoke(function, event, self.environment_for(function))
        finally:
            self._outbox.stamp()

    # -------------------------------------------------------------------------------- /_local
    def _local(self, request: Request) -> Response:
        path, method = request.path, request.method
        api_docs = apidocs.respond(request)  # /_local/openapi.json, /_local/docs (local/apidocs.py)
        if api_docs is not None:
            return api_docs
        if path == "/_local/health" and method == "GET":
            if self.ready:
                return json_response({"status": "ok"})
            return json_response({"status": "starting"}, 503)
        if path == "/_local/outbox":
            if method == "GET":
                return self._outbox.response(request)
            if method == "DELETE":
                self.clear_outbox()
                return Response(status=204)
        if path == "/_local/events" and method == "POST":
            return self.events.events_response(request)
        if path == "/_local/bus" and method in ("GET", "DELETE") and self.bus_view is not None:
            return self.bus_view.response(request)  # local/busview.py
        if path == "/_local/dlq" and method == "GET":
            return json_response(self.dead_letters())
        if path.startswith("/_local/schedules/") and method == "POST":
            return self.events.schedule_response(path.removeprefix("/_local/schedules/"))
        return json_response({"message": "Not Found"}, 404)

    # what tests and tools call directly
    def outbox(self) -> list[dict[str, Any]]:
        """Every email moto's SES accepted, oldest first."""
        return self._outbox.entries()

    def clear_outbox(self) -> None:
        self._outbox.clear()

    def build_eventbridge_event(self, entry: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        return self.events.build_eventbridge_event(entry)

    def put_event(self, event: Mapping[str, Any], bus: str | None = None) -> dict[str, Any]:
        return self.events.put_event(event, bus)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.events.dead_letters()

    def run_schedule(self, logical_id: str) -> Any:
        return self.events.run_schedule(logical_id)


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
