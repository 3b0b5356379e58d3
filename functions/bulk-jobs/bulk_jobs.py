"""bulk-jobs: start, read, list and cancel bulk jobs (SPEC section 14)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.api import json_body, json_response, make_resolver, query_int, request_ctx
from usermgmt.observability import lambda_entry
from usermgmt.settings import MAX_BULK_BODY_BYTES

app = make_resolver()


@app.post("/bulk-jobs")
def start_job() -> Response[str]:
    key = app.current_event.headers.get("idempotency-key")
    body = json_body(app, MAX_BULK_BODY_BYTES)
    view, _replayed = container.get().bulk.start(request_ctx(app), body, key)
    return json_response(202, view, headers={"Location": f"/bulk-jobs/{view['id']}"})


@app.get("/bulk-jobs")
def list_jobs() -> Response[str]:
    limit = query_int(app, "limit", 50, 1, 200)
    cursor = app.current_event.get_query_string_value("cursor")
    return json_response(200, container.get().bulk.list(request_ctx(app), limit, cursor))


@app.get("/bulk-jobs/<jobId>")
def get_job(jobId: str) -> Response[str]:
    return json_response(200, container.get().bulk.get(request_ctx(app), jobId))


@app.get("/bulk-jobs/<jobId>/items")
def job_items(jobId: str) -> Response[str]:
    event = app.current_event
    limit = query_int(app, "limit", 50, 1, 200)
    page = container.get().bulk.items(
        request_ctx(app),
        jobId,
        event.get_query_string_value("status"),
        limit,
        event.get_query_string_value("cursor"),
    )
    return json_response(200, page)


@app.post("/bulk-jobs/<jobId>/cancel")
def cancel_job(jobId: str) -> Response[str]:
    return json_response(200, container.get().bulk.cancel(request_ctx(app), jobId))


@lambda_entry(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
