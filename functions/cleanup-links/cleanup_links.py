"""cleanup-links: hourly, remove expired links and end pending email changes whose newest link expired."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.observability import lambda_entry


@lambda_entry(correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    result = container.get().cleanup.run(context.get_remaining_time_in_millis)
    return result.as_dict()
