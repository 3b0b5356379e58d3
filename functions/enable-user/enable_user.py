"""enable-user: POST /users/{userId}/enable (status ACTIVE, Auth0 unblocked)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import if_match, json_response, make_resolver, path_user_id, request_ctx
from usermgmt.observability import lambda_entry

app = make_resolver()


@app.post("/users/<userId>/enable")
def enable_user(userId: str) -> Response:
    view, version = container.get().lifecycle.enable(request_ctx(app), path_user_id(userId), if_match(app))
    return json_response(200, view, etag=version)


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
