"""suspend-user: POST /users/{userId}/suspend (SUSPENDED at once; tokens and links dead; Auth0 blocked),
POST /users/{userId}/sessions/revoke and POST /me/sessions/revoke (signing out everywhere)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import if_match, json_response, make_resolver, path_user_id, request_ctx
from usermgmt.observability import lambda_entry

app = make_resolver()


@app.post("/users/<userId>/suspend")
def suspend_user(userId: str) -> Response:
    view, version = container.get().lifecycle.suspend(request_ctx(app), path_user_id(userId), if_match(app))
    return json_response(200, view, etag=version)


@app.post("/users/<userId>/sessions/revoke")
def revoke_user_sessions(userId: str) -> Response:
    view, version = container.get().lifecycle.revoke_sessions(request_ctx(app), path_user_id(userId))
    return json_response(200, view, etag=version)


@app.post("/me/sessions/revoke")
def revoke_my_sessions() -> Response:
    view, version = container.get().lifecycle.revoke_sessions(request_ctx(app), None)
    return json_response(200, view, etag=version)


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
