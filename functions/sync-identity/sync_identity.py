"""sync-identity: every minute, push the changes Auth0 is behind on, finish pending deletions and reset
links whose request died after Auth0 set the password.

An operator re-drives users whose sync failed for good (Auth0 refused a value) by invoking it with
``{"redrive": "failed"}`` (README, "Operations").
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from usermgmt import container
from usermgmt.observability import count, lambda_entry


@lambda_entry(correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    c = container.get()
    if event.get("redrive") == "failed":
        return c.sync.redrive_failed()
    outcome = c.sync.run_due(c.passwords, context.get_remaining_time_in_millis)
    count("IdpSyncRun")  # a heartbeat: an idle run publishes a metric too
    return outcome
