"""cleanup-links: remove expired links and end pending email changes whose newest link expired.

SPEC sections 2, 6 and 10. Work is found through the sparse ExpiryIndex only (``expAt`` older than
``now - CLEANUP_GRACE_SECONDS``), never by a Scan, so a run costs what has expired, not what the table
holds. A run is bounded (``CLEANUP_MAX_ITEMS`` index entries and the Lambda's remaining time) and
pages through the index with ``LastEvaluatedKey``; what it leaves, the next run finds.

Every write is conditional, so two runs at once (or a run after a crash) are safe:

- a link is deleted only while it is still expired before the cutoff (``expAt < :cutoff``); an item
  that is already gone counts as skipped;
- a pending email change ends only when the expired link is still the user's current verify link
  and the change is still pending: through the one write path (the record conditional on its
  version, a real audit entry, the deletion of the link) in one transaction. A change that was
  confirmed, cancelled or superseded meanwhile survives; its expired link is then deleted on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from usermgmt.auth import system
from usermgmt.links import VERIFY
from usermgmt.models import User
from usermgmt.observability import count, logger
from usermgmt.ports import Deps
from usermgmt.service.sync import new_id
from usermgmt.service.users import without_change_links
from usermgmt.service.writes import Plan, Writer
from usermgmt.store import DeleteExpiredLink, ExpiredLinkRef

SYSTEM_ACTOR = system("cleanup")
EMAIL_CHANGE_EXPIRED = "user.email_change_expired"
DEFAULT_PAGE_SIZE = 100
# stop taking new work when the Lambda has less than this left (one item costs a few calls)
DEFAULT_TIME_RESERVE_MS = 10_000

TimeLeft = Callable[[], int]


@dataclass
class CleanupResult:
    links_deleted: int = 0
    pending_email_changes_ended: int = 0
    skipped: int = 0
    # True when the run reached the end of the expired part of the index (nothing left for now)
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "linksDeleted": self.links_deleted,
            "pendingEmailChangesEnded": self.pending_email_changes_ended,
            "skipped": self.skipped,
            "complete": self.complete,
        }


class _LinkMoved(Exception):
    """Internal: the expired link was deleted or renewed while its change was being ended."""


class _Outcome(Enum):
    ENDED = "ended"  # the pending change ended and the link was deleted, in one transaction
    MOVED_ON = "moved_on"  # the change is no longer the one of this link: delete the link alone
    SKIPPED = "skipped"  # the link is gone or changed, or the transaction met another writer


class CleanupService:
    def __init__(
        self,
        deps: Deps,
        writer: Writer,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        time_reserve_ms: int = DEFAULT_TIME_RESERVE_MS,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.d = deps
        self.w = writer
        self.page_size = page_size
        self.time_reserve_ms = time_reserve_ms

    def run(self, time_left_ms: TimeLeft | None = None, *, max_items: int | None = None) -> CleanupResult:
        """One bounded pass over the expired part of the ExpiryIndex.

        ``time_left_ms`` is the Lambda context's ``get_remaining_time_in_millis``; ``max_items``
        overrides ``settings.cleanup_max_items``. Store errors propagate (the run fails and the next
        one carries on where this one stopped); the counts of the work done are emitted either way.
        """
        store = self.d.store
        budget = max_items if max_items is not None else self.d.settings.cleanup_max_items
        cutoff = int(self.d.clock.now()) - self.d.settings.cleanup_grace_seconds
        result = CleanupResult()
        seen = 0  # index entries taken on in this run: what the budget bounds

        def can_go_on() -> bool:
            if seen >= budget:
                return False
            return time_left_ms is None or time_left_ms() > self.time_reserve_ms

        start_key: dict[str, Any] | None = None
        try:
            while can_go_on():
                page = store.expired_links(cutoff, min(self.page_size, budget - seen), start_key)
                seen += page.others  # not links: not this job's to remove
                for ref in page.links:
                    if not can_go_on():
                        return result
                    self._clean(ref, cutoff, result)
                    seen += 1
                start_key = page.start_key
                if start_key is None:
                    result.complete = True
                    break
        finally:
            count("LinksDeleted", result.links_deleted)
            count("PendingEmailChangesEnded", result.pending_email_changes_ended)
            count("CleanupSkipped", result.skipped)
            logger.info("cleanup run", extra={"cutoff": cutoff, **result.as_dict()})
        return result

    # ------------------------------------------------------------------------------ one link
    def _clean(self, ref: ExpiredLinkRef, cutoff: int, result: CleanupResult) -> None:
        store = self.d.store
        link = store.get_link(ref.token_hash)
        if link is None or link.expires_at >= cutoff:
            result.skipped += 1  # another run (or DynamoDB TTL) took it, or it is not expired after all
            return
        if link.purpose == VERIFY:
            outcome = self._end_pending_change(ref.token_hash, link.user_id, cutoff)
            if outcome is _Outcome.ENDED:
                result.pending_email_changes_ended += 1
                result.links_deleted += 1
                return
            if outcome is _Outcome.SKIPPED:
                result.skipped += 1
                return
        if store.delete_expired_link(ref.token_hash, cutoff):
            result.links_deleted += 1
        else:
            result.skipped += 1

    def _end_pending_change(self, token_hash: str, user_id: str, cutoff: int) -> _Outcome:
        """End the user's pending email change if this expired link is still its (newest) verify link."""

        def plan(now: float) -> tuple[User, Plan, float] | None:
            user = self.d.store.get_user(user_id)
            if user is None or not user.pending_email or user.links.get(VERIFY) != token_hash:
                return None  # confirmed, cancelled or superseded meanwhile: it stays
            ended = Plan(
                after=user.evolve(pending_email=None, links=without_change_links(user)),
                action=EMAIL_CHANGE_EXPIRED,
                changes=[{"field": "pendingEmail", "from": user.pending_email, "to": None}],
                ops=[DeleteExpiredLink(token_hash, cutoff)],
                errors={"link": _LinkMoved()},
            )
            return user, ended, now

        try:
            applied = self.w.write_direct(SYSTEM_ACTOR, new_id(), plan)
        except _LinkMoved:
            return _Outcome.SKIPPED  # the link went or changed meanwhile: the next run sees
        if applied is None:
            return _Outcome.MOVED_ON
        logger.info("pending email change expired", extra={"target": user_id})
        return _Outcome.ENDED
