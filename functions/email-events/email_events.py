"""email-events: SES bounces and complaints mark the user's login email undeliverable (SPEC section 16)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.events import handle_ses_feedback
from usermgmt.observability import lambda_entry


@lambda_entry(correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_ses_feedback(event, context, container.get().deliverability.record)
