"""update-user: read and edit users (GET/PATCH /users/{userId}, GET/PATCH /me, GET /users/{userId}/audit)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import (
    if_match,
    json_body,
    json_response,
    make_resolver,
    path_user_id,
    query_int,
    request_ctx,
)
from usermgmt.observability import count, lambda_entry

app = make_resolver()


@app.get("/users/<userId>")
def get_user(userId: str) -> Response[str]:
    view, version = container.get().users.get(request_ctx(app), path_user_id(userId))
    count("UserRead")
    return json_response(200, view, etag=version)


@app.get("/me")
def get_me() -> Response[str]:
    view, version = container.get().users.get(request_ctx(app), None)
    count("UserRead")
    return json_response(200, view, etag=version)


@app.patch("/users/<userId>")
def patch_user(userId: str) -> Response[str]:
    view, version = container.get().users.patch(
        request_ctx(app), path_user_id(userId), json_body(app), if_match(app)
    )
    return json_response(200, view, etag=version)


@app.patch("/me")
def patch_me() -> Response[str]:
    view, version = container.get().users.patch(request_ctx(app), None, json_body(app), if_match(app))
    return json_response(200, view, etag=version)


@app.get("/users/<userId>/audit")
def get_audit(userId: str) -> Response[str]:
    limit = query_int(app, "limit", default=50, low=1, high=100)
    cursor = app.current_event.get_query_string_value("cursor")
    page = container.get().users.audit(request_ctx(app), path_user_id(userId), limit, cursor)
    count("AuditRead")
    return json_response(200, page)


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
