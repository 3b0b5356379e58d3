"""public-requests: the account work of public requests, after their answer (security notes M4).

Fed by the public requests' SQS queue: ``POST /password-reset`` and the renew routes of reset,
verification and invitation links only queue a message and answer 202 (``service/public.py``), so they
take the same time whatever the address or token names. Here each message gets the per-address limit,
the lookups, the link and the email. A message that fails is reported in ``batchItemFailures`` and comes
back after the visibility timeout (then the dead-letter queue).
"""

from __future__ import annotations

from typing import Any

from usermgmt import container
from usermgmt.events import handle_sqs_batch
from usermgmt.observability import lambda_entry


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    public = container.get().public
    # SQS counts deliveries: a message seen before took its per-address slot already
    return handle_sqs_batch(
        event,
        lambda body, received: public.handle(body, retry=received > 1),
        metric="PublicRequest",
        what="public request",
    )
