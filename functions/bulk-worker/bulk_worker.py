"""bulk-worker: decide the items of bulk jobs, fed by the jobs' SQS queue (SPEC section 14).

A message names a job and up to ten of its users. A message whose items could not all be decided (the
table or a dependency failed) is reported in ``batchItemFailures`` and comes back after the visibility
timeout; items it decided stay decided, so a second delivery only finishes the rest.
"""

from __future__ import annotations

from typing import Any

from usermgmt import container
from usermgmt.events import handle_sqs_batch
from usermgmt.observability import lambda_entry


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    bulk = container.get().bulk
    return handle_sqs_batch(
        event, lambda body, _received: bulk.run_message(body), metric="BulkMessage", what="bulk message"
    )
