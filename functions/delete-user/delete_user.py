"""delete-user: DELETE /users/{userId} (204 once Auth0 has deleted the user too, 202 while pending)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import empty_response, if_match, json_response, make_resolver, path_user_id, request_ctx
from usermgmt.observability import lambda_entry

app = make_resolver()


@app.delete("/users/<userId>")
def delete_user(userId: str) -> Response:
    deleted = container.get().lifecycle.delete(request_ctx(app), path_user_id(userId), if_match(app))
    if deleted.done:
        return empty_response(204)
    return json_response(202, {"id": deleted.user_id, "status": deleted.status})


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
