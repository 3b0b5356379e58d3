"""Lifecycle events out (SPEC section 15): written with the change, published afterwards, in order.

``Outbox`` is a ``Derived`` of the write path: every committed change of a user writes its event into
the user's outbox partition in the same transaction as the change, so an event exists exactly when the
change does. ``EventPublisher`` (publish-events) drains it to the product's EventBridge bus: for each
user with waiting events it reads the partition oldest first and puts them on the bus in that order
(up to 10 per PutEvents), removes what the bus took, and stops at the first entry it refused, so a
later event of a user never overtakes an earlier one. Delivery is at least once with a stable ``id``.

It runs on two triggers (docs/decisions.md, "Lifecycle events"): the table's stream (new outbox items,
sub-second in AWS) and a sweep every minute (anything the stream path did not finish). An event that
keeps failing counts ``OutboxStuck`` (alarmed) past ``PUBLISH_MAX_ATTEMPTS`` and stays for an operator;
the sweep keeps trying it.

Events are thin: ids, version, the names of the changed fields, who acted and where; never an email
address, a name or any other value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from usermgmt.auth import Actor
from usermgmt.observability import count, logger
from usermgmt.ports import BusEntry, BusUnavailable, Deps, EventBus
from usermgmt.service.sync import fields_of, new_id
from usermgmt.service.writes import Change
from usermgmt.settings import Settings
from usermgmt.store import Op, OutboxEvent, PutEvent

PUT_EVENTS_MAX = 10  # entries per PutEvents call (EventBridge's limit)
OUTBOX_PAGE = 100

# action of a change -> its event type (every committed version has one: no gaps in a user's sequence)
EVENT_TYPES: dict[str, str | None] = {
    "user.created": "user.created",
    "user.invited": "user.invited",
    "user.activated": "user.activated",
    "user.suspended": "user.suspended",
    "user.enabled": "user.enabled",
    "user.deleted": "user.deleted",
    "user.sessions_revoked": "user.sessions_revoked",
    "user.password_reset_requested": "user.password_reset_requested",
    "user.password_changed": "user.password_changed",
    "user.email_changed": "user.email_changed",
    "user.email_verified": "user.updated",
    "user.email_change_cancelled": "user.email_change_cancelled",
    "user.email_change_expired": "user.email_change_cancelled",
    "user.deliverability_changed": "user.deliverability_changed",
    "user.memberships_changed": "user.memberships_changed",
    "user.verification_email_sent": "user.updated",
    "user.invitation_revoked": "user.updated",  # a new link: every version has its event
    # an export changes no field: its version's event says what happened, so consumers that re-read
    # the user on user.updated are not sent to do so (and an export is worth knowing of)
    "user.exported": "user.exported",
}
BULK_JOB_FINISHED = "bulk_job.finished"  # not a user's change: written by the bulk service
IDP_SYNC_FAILED = "user.idp_sync_failed"


def event_type(change: Change) -> str | None:
    """The event type of a committed change; an edit is named by what matters most in it."""
    action = change.plan.action
    fields = {c["field"] for c in change.plan.changes}
    if action == "user.invitation_accepted":  # a new person sets a password, or a user joins an account
        return "user.activated" if "status" in fields else "user.memberships_changed"
    if action != "user.updated":
        return EVENT_TYPES.get(action, "user.updated")
    after = change.after
    if "pendingEmail" in fields and after is not None:
        return "user.email_change_requested" if after.pending_email else "user.email_change_cancelled"
    if "memberships" in fields:
        return "user.memberships_changed"
    if "deliverability" in fields:
        return "user.deliverability_changed"
    return "user.updated"


def cloud_event(
    settings: Settings,
    *,
    detail_type: str,
    user_id: str,
    version: int,
    at: str,
    fields: Iterable[str],
    actor: Actor,
    request_id: str,
    job_id: str | None = None,
) -> dict[str, Any]:
    """The CloudEvents 1.0 structure that is the event's ``detail``."""
    origin: dict[str, str] = {"requestId": request_id}
    if job_id:
        origin["jobId"] = job_id
    return {
        "specversion": "1.0",
        "id": new_id(),
        "source": settings.user_events_source,
        "type": detail_type,
        "subject": user_id,
        "time": at,
        "sequence": str(version),
        "datacontenttype": "application/json",
        "data": {
            "userId": user_id,
            "version": version,
            "changedFields": list(dict.fromkeys(fields)),
            "actor": {"type": actor.type, "id": actor.id},
            "origin": origin,
        },
    }


def outbox_key(version: int, n: int = 0) -> str:
    """Orders one user's events: by version, then the change's own event before later news of it."""
    return f"{version:012d}#{n}"


class Outbox:
    """The ``Derived`` that writes a change's event in the change's transaction."""

    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def ops(self, change: Change) -> list[Op]:
        detail_type = event_type(change)
        if detail_type is None:
            return []
        changed = change.after if change.after is not None else change.before
        if changed is None:  # pragma: no cover - a change has a user before or after it
            return []
        user_id = changed.id
        fields = [] if change.after is None else [c["field"] for c in change.plan.changes]
        detail = cloud_event(
            self.d.settings,
            detail_type=detail_type,
            user_id=user_id,
            version=change.version,
            at=change.at,
            fields=fields,
            actor=change.actor,
            request_id=change.request_id,
            job_id=change.job_id,
        )
        event = OutboxEvent(user_id, outbox_key(change.version), detail_type, detail, self.d.clock.now())
        return [PutEvent(event)]


def sync_failed_event(deps: Deps, user_id: str, version: int, failed: frozenset[str], at: str) -> OutboxEvent:
    """``user.idp_sync_failed``: Auth0 refused values of ``version`` (written with the failed marker)."""
    detail = cloud_event(
        deps.settings,
        detail_type=IDP_SYNC_FAILED,
        user_id=user_id,
        version=version,
        at=at,
        fields=fields_of(failed),
        actor=Actor("system", "sync"),
        request_id=new_id(),
    )
    return OutboxEvent(user_id, outbox_key(version, 1), IDP_SYNC_FAILED, detail, deps.clock.now())


class EventPublisher:
    def __init__(self, deps: Deps, bus: EventBus) -> None:
        self.d = deps
        self.bus = bus

    def publish_users(self, user_ids: Iterable[str]) -> dict[str, int]:
        """Publish every waiting event of these users, each user's in order.

        One PutEvents call carries at most one event per user (up to 10 users), so a partial failure of
        a call can never put a user's later event on the bus before an earlier one. A user whose event
        was refused is left for the next pass from that event on.
        """
        store = self.d.store
        pending = list(dict.fromkeys(user_ids))
        queues: dict[str, deque[OutboxEvent]] = {}
        more: set[str] = set()  # users whose last read was a full page
        outcome = {"published": 0, "failed": 0}
        while pending or queues:
            while pending and len(queues) < PUT_EVENTS_MAX:
                user_id = pending.pop(0)
                waiting = store.outbox_of(user_id, OUTBOX_PAGE)
                if waiting:
                    queues[user_id] = deque(waiting)
                if len(waiting) == OUTBOX_PAGE:
                    more.add(user_id)
                else:
                    more.discard(user_id)
            if not queues:
                break
            heads = [(user_id, queue[0]) for user_id, queue in queues.items()]
            try:
                taken = self.bus.put_events([BusEntry(e.detail_type, e.event) for _, e in heads])
            except BusUnavailable:
                taken = [False] * len(heads)
            done = [e for (_, e), ok in zip(heads, taken, strict=True) if ok]
            if done:
                store.remove_events(done)
                outcome["published"] += len(done)
                count("EventPublished", len(done))
            for (user_id, event), ok in zip(heads, taken, strict=True):
                queue = queues[user_id]
                if not ok:
                    self._failed(event)
                    outcome["failed"] += 1
                    del queues[user_id]  # the rest of this user's events wait behind it
                    continue
                queue.popleft()
                if not queue:
                    del queues[user_id]
                    if user_id in more:
                        pending.insert(0, user_id)  # more than a page was waiting: read on
        return outcome

    def sweep(self) -> dict[str, int]:
        """The scheduled pass: every user with events older than the grace the stream path gets."""
        s = self.d.settings
        before = self.d.clock.now() - s.outbox_sweep_grace_seconds
        return self.publish_users(self.d.store.outbox_users(before, s.outbox_sweep_batch))

    def _failed(self, event: OutboxEvent) -> None:
        attempts = self.d.store.count_publish_attempt(event)
        count("EventPublishFailed")
        if attempts >= self.d.settings.publish_max_attempts:
            logger.warning("outbox event stuck", extra={"attempts": attempts, "type": event.detail_type})
            count("OutboxStuck")
