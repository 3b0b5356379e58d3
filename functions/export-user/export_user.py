"""export-user: GET /users/{userId}/export and GET /me/export (SPEC section 18), as an attachment."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import json_response, make_resolver, path_user_id, request_ctx
from usermgmt.observability import lambda_entry

app = make_resolver()
ATTACHMENT = {"Content-Disposition": 'attachment; filename="user-export.json"'}


@app.get("/users/<userId>/export")
def export_user(userId: str) -> Response:
    document = container.get().export.export(request_ctx(app), path_user_id(userId))
    return json_response(200, document, headers=ATTACHMENT)


@app.get("/me/export")
def export_me() -> Response:
    document = container.get().export.export(request_ctx(app), None)
    return json_response(200, document, headers=ATTACHMENT)


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
