"""public-requests: the account work of public requests, after their answer (security notes M4).

Fed by the public requests' SQS queue: ``POST /password-reset`` and the renew routes of reset,
verification and invitation links only queue a message and answer 202 (``service/public.py``), so they
take the same time whatever the address or token names. Here each message gets the per-address limit,
the lookups, the link and the email. A message that fails is reported in ``batchItemFailures`` and comes
back after the visibility timeout (then the dead-letter queue).
"""

from __future__ import annotations

import json
from typing import Any

from usermgmt import container
from usermgmt.observability import count, lambda_entry, logger


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures: list[dict[str, str]] = []
    public = container.get().public
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId") or "")
        try:
            body = json.loads(record.get("body") or "{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            logger.warning("malformed public request dropped", extra={"messageId": message_id})
            count("PublicRequestMalformed")
            continue
        try:
            # SQS counts deliveries: a message seen before took its per-address slot already
            received = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
            public.handle(body, retry=received > 1)
        except Exception as exc:  # comes back after the visibility timeout
            logger.warning("public request not finished", extra={"error_type": type(exc).__name__})
            count("PublicRequestRetried")
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
