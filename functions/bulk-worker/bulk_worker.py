"""bulk-worker: decide the items of bulk jobs, fed by the jobs' SQS queue (SPEC section 14).

A message names a job and up to ten of its users. A message whose items could not all be decided (the
table or a dependency failed) is reported in ``batchItemFailures`` and comes back after the visibility
timeout; items it decided stay decided, so a second delivery only finishes the rest.
"""

from __future__ import annotations

import json
from typing import Any

from usermgmt import container
from usermgmt.observability import count, lambda_entry, logger


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    bulk = container.get().bulk
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId") or "")
        try:
            body = json.loads(record.get("body") or "{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            logger.warning("malformed bulk message dropped", extra={"messageId": message_id})
            count("BulkMessageMalformed")
            continue
        try:
            bulk.run_message(body)
        except Exception as exc:  # the message comes back; what it decided stays decided
            logger.warning("bulk message not finished", extra={"error_type": type(exc).__name__})
            count("BulkMessageRetried")
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
