"""publish-events: put the lifecycle events of the outbox on the product's bus (SPEC section 15).

Triggered by the table's stream (the users of new outbox items, sub-second) and by a schedule every
minute (whatever the stream path left: a bus that refused, a publisher that died).
"""

from __future__ import annotations

from typing import Any

from usermgmt import container
from usermgmt.events import outbox_stream_users
from usermgmt.observability import lambda_entry


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    users = outbox_stream_users(event)
    if users is None:
        return container.get().publisher.sweep()
    return container.get().publisher.publish_users(users)
