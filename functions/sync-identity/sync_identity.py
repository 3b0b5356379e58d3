"""sync-identity: every minute, push the changes Auth0 is behind on and finish pending deletions."""

from __future__ import annotations

from typing import Any

from usermgmt import container
from usermgmt.observability import count, lambda_entry


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    outcome = container.get().users.sync.run_due(context.get_remaining_time_in_millis)
    count("IdpSyncRun")  # a heartbeat: an idle run publishes a metric too
    return outcome
