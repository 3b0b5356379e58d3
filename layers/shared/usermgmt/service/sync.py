"""The never-lost Auth0 sync (docs/decisions.md, "The never-lost Auth0 sync").

A write commits the new state with a sync marker (target version + fields to push) in one transaction
and, when the user's push lease is free, takes the lease in the same write. Whoever holds the lease
pushes absolute values to Auth0, then settles the marker on condition that the target version did not
move; if it moved, it pushes the newer version too. Without the lease nobody pushes.

What can go wrong, and what happens:

* Auth0 down, slow, rate limiting, or refusing our credentials or scopes (401/403: a rotated secret, a
  removed grant): the marker stays ``pending`` and is retried with capped exponential backoff and
  jitter, honouring Auth0's reset time, for as long as it takes. Past ``SYNC_MAX_ATTEMPTS`` every
  further deferral counts ``IdpSyncStuck`` (alarmed); refused credentials count ``IdpAccessDenied``.
  Nothing transient is ever given up: not a block, an unblock, a deletion or a name.
* Auth0 refuses one value for good (a 400 on a field): that field group is ``failed``, shown as
  ``idpSync: "failed"``, alarmed (``IdpSyncFailed``) and kept in the FAILED partition of the sync
  index. The other fields are pushed and settled as usual, and later syncs do not push the failed
  field again until it changes (a write re-queues it) or an operator re-drives it (``redrive_failed``).
  A block is never lost to a refused name: a refused combined PATCH is retried with ``blocked`` alone.
* A push that would outlive its lease: before every Auth0 call the holder checks that its lease
  leaves time for the call (the *fence*); otherwise it stops and gives the lease back, so a push never
  lands after a newer holder's.
* One user whose push raises something unexpected is deferred like an outage and counted
  (``IdpSyncError``); the run goes on with the next one.
* A deletion blocks the Auth0 user before it deletes it, so a deletion still pending leaves no
  working login.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from usermgmt.clock import rfc3339
from usermgmt.errors import (
    IdpAccessDenied,
    IdpEmailTaken,
    IdpRejected,
    IdpUnavailable,
    IdpUserMissing,
)
from usermgmt.models import SUSPENDED, User
from usermgmt.observability import MetricUnit, count, logger, metrics
from usermgmt.ports import Deps, IdpNewUser, IdpUserUpdate
from usermgmt.store import DueWork, OutboxEvent, SyncState

PROFILE = "profile"  # name, given_name, family_name
BLOCKED = "blocked"
EMAIL = "email"  # email + email_verified
REVOKE = "revoke"  # sessions and refresh tokens (where AUTH0_REVOKE_SESSIONS is on)
DELETE = "delete"
CREATE = "create"  # a new user: created in Auth0 under the id chosen here (SPEC section 13)
# the user's fields (as the API names them) whose values each group pushes: what a refusal is about
FIELDS_OF_GROUP: dict[str, tuple[str, ...]] = {
    PROFILE: ("firstName", "lastName"),
    BLOCKED: ("status",),
    EMAIL: ("email", "emailVerified"),
    CREATE: ("email", "firstName", "lastName"),
    REVOKE: (),
    DELETE: (),
}


def fields_of(groups: Iterable[str]) -> list[str]:
    """The API field names behind sync groups, in a stable order (events name fields, not groups)."""
    return sorted({name for group in groups for name in FIELDS_OF_GROUP.get(group, ())})


SYNCED, PENDING, FAILED = "synced", "pending", "failed"
# the longest one Auth0 call may take (token fetch + request, each bounded by the timeout per phase)
CALL_BUDGET_FACTOR = 4
BACKLOG_AGE_METRIC = "IdpSyncOldestDueAge"  # seconds the oldest due sync work has waited


def new_id() -> str:
    """A fresh opaque id (lease owners, link claims, request ids of work without a request)."""
    return uuid.uuid4().hex


def new_idp_user(user: User) -> IdpNewUser:
    """What Auth0 is told about a new user: the record's current values, no usable password."""
    return IdpNewUser(
        user_id=user.id,
        email=user.email,
        email_verified=user.email_verified,
        given_name=user.first_name,
        family_name=user.last_name,
        name=user.full_name,
        blocked=user.status == SUSPENDED,
    )


class LeaseExpiring(Exception):
    """Internal: the lease would lapse before the next Auth0 call could end."""


class ClaimFinisher(Protocol):
    def finish_lapsed_claim(self, token_hash: str) -> None:
        """Finish what a reset-link claim nobody completed or gave back stands for."""
        ...


class SyncEngine:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        # how long Auth0 asked the last inline push that it refused to wait (429 ``x-ratelimit-reset``
        # or ``Retry-After``); a bulk job paces itself by it (``take_retry_after``)
        self._retry_after: float | None = None

    def take_retry_after(self) -> float | None:
        """What Auth0 asked an inline push to wait since the last call (None: nothing asked)."""
        retry_after, self._retry_after = self._retry_after, None
        return retry_after

    # ------------------------------------------------------------------------------ pushing
    def push(self, state: SyncState, user: User | None) -> frozenset[str]:
        """Bring Auth0 in step with ``user`` (None: deleted) for ``state.fields``.

        Returns the fields Auth0 refused for good. Raises ``IdpUnavailable`` (retry later) and
        ``LeaseExpiring``.
        """
        idp = self.d.idp
        uid = state.user_id
        if user is None or DELETE in state.fields:
            # Erase what is left of the user here first: a deleting request that died before its
            # erasure is finished by sync-identity, and a repeat finds nothing left to erase.
            self.d.store.erase_deleted_user(uid)
            self._fence(state)
            try:
                idp.update_user(uid, IdpUserUpdate(blocked=True))  # no working login while pending
            except IdpUserMissing:
                return frozenset()  # Auth0 has no such user: nothing to delete
            except IdpRejected:
                pass  # the deletion below is what counts
            self._fence(state)
            try:
                idp.delete_user(uid)
            except IdpRejected:
                return frozenset({DELETE})
            return frozenset()
        failed: set[str] = set()
        if CREATE in state.fields:
            self._fence(state)
            try:
                idp.create_user(new_idp_user(user))
            except (IdpRejected, IdpEmailTaken):
                # Auth0 refused the user itself: nothing else can be pushed for it either
                return frozenset(state.fields)
        if state.fields & {PROFILE, BLOCKED}:
            failed |= self._push_profile(state, user)
        if EMAIL in state.fields:
            self._fence(state)
            try:
                idp.update_user(uid, IdpUserUpdate(email=user.email, email_verified=user.email_verified))
            except (IdpRejected, IdpEmailTaken, IdpUserMissing):
                failed.add(EMAIL)
        if REVOKE in state.fields and self.d.settings.auth0_revoke_sessions:
            self._fence(state)
            try:
                idp.revoke_sessions(uid)
            except (IdpRejected, IdpUserMissing):
                failed.add(REVOKE)
        return frozenset(failed)

    def ensure_created(self, user: User) -> None:
        """Create the Auth0 user now when its creation is still pending (idempotent: the id is ours).

        For a use case that needs the Auth0 user at once (accepting an invitation sets its password);
        the marker stays for the lease holder, whose create then finds the user (done).
        """
        if CREATE in user.sync_fields:
            self.d.idp.create_user(new_idp_user(user))

    def _push_profile(self, state: SyncState, user: User) -> set[str]:
        """Names and ``blocked`` in one PATCH; a refused PATCH is retried with ``blocked`` alone."""
        blocked = user.status == SUSPENDED
        self._fence(state)
        try:
            self.d.idp.update_user(
                state.user_id,
                IdpUserUpdate(
                    name=user.full_name,
                    given_name=user.first_name,
                    family_name=user.last_name,
                    blocked=blocked,
                ),
            )
        except IdpUserMissing:
            return set(state.fields & {PROFILE, BLOCKED})
        except IdpRejected:
            if BLOCKED not in state.fields:
                return {PROFILE}
            self._fence(state)
            try:
                self.d.idp.update_user(state.user_id, IdpUserUpdate(blocked=blocked))
            except (IdpRejected, IdpUserMissing):
                return {PROFILE, BLOCKED}
            return {PROFILE}
        return set()

    def _fence(self, state: SyncState) -> None:
        budget = CALL_BUDGET_FACTOR * self.d.settings.auth0_timeout_seconds
        if self.d.clock.now() + budget >= state.lease_until:
            raise LeaseExpiring()

    # ------------------------------------------------------------------------------ holding the lease
    def finish(self, state: SyncState, user: User | None, *, inline: bool = False) -> str:
        """Holding the lease: push, settle the marker, and repeat while newer versions arrived."""
        store = self.d.store
        for _ in range(3):
            try:
                refused = self.push(state, user)
            except LeaseExpiring:
                store.release_lease(state.user_id, state.lease_owner, deleted=state.deleted)
                count("IdpSyncLeaseExpired")
                return PENDING
            except IdpUnavailable as exc:
                return self._defer(
                    state, exc.retry_after, inline=inline, access_denied=isinstance(exc, IdpAccessDenied)
                )
            failed = (state.failed - state.fields) | refused
            news = self._failed_event(state, refused) if refused else None
            if store.settle_sync(
                state.user_id, state.version, state.lease_owner, failed, deleted=state.deleted, event=news
            ):
                if refused:
                    logger.warning("identity provider refused a value", extra={"fields": sorted(refused)})
                    count("IdpSyncFailed")
                else:
                    count("IdpSynced")
                return FAILED if failed else SYNCED
            if state.deleted:
                break
            # A newer version was committed while we held the lease: push that one too.
            fresh = store.get_user(state.user_id)
            if fresh is None:
                return PENDING  # deleted meanwhile: the deletion's own marker finishes Auth0
            if not fresh.sync_fields:
                return fresh.idp_sync
            user = fresh
            state = SyncState(
                user_id=state.user_id,
                version=fresh.sync_version,
                fields=fresh.sync_fields,
                failed=fresh.sync_failed,
                attempts=state.attempts,
                lease_owner=state.lease_owner,
                lease_until=state.lease_until,
                deleted=False,
            )
        store.release_lease(state.user_id, state.lease_owner, deleted=state.deleted)
        return PENDING

    def _failed_event(self, state: SyncState, refused: frozenset[str]) -> OutboxEvent:
        from usermgmt.service.outbox import sync_failed_event  # the outbox builds on this module

        return sync_failed_event(self.d, state.user_id, state.version, refused, rfc3339(self.d.clock.now()))

    def _defer(
        self, state: SyncState, retry_after: float | None, *, inline: bool, access_denied: bool
    ) -> str:
        s = self.d.settings
        attempts = state.attempts + 1
        if inline:
            delay = 0.0  # the next scheduled run retries at once; backoff starts there
            self._retry_after = retry_after
        else:
            delay = min(s.sync_max_delay_seconds, s.sync_base_delay_seconds * 2 ** min(attempts - 1, 30))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        if retry_after:
            delay = max(delay, min(retry_after, s.sync_max_delay_seconds))
        self.d.store.defer_sync(
            state.user_id,
            state.lease_owner,
            due=self.d.clock.now() + delay,
            attempts=attempts,
            deleted=state.deleted,
        )
        count("IdpSyncDeferred")
        if access_denied:
            logger.warning("identity provider refused our credentials", extra={"attempts": attempts})
            count("IdpAccessDenied")
        if attempts >= s.sync_max_attempts:
            logger.warning("identity provider sync behind for long", extra={"attempts": attempts})
            count("IdpSyncStuck")
        return PENDING

    # ------------------------------------------------------------------------------ the schedule
    def run_due(self, claims: ClaimFinisher, time_left_ms: Callable[[], int] | None = None) -> dict[str, Any]:
        """One run of sync-identity: due markers and lapsed claims, a page of ``SYNC_BATCH_SIZE`` at a
        time, oldest first, while the run's time allows (without ``time_left_ms``: one page)."""
        s = self.d.settings
        owner_prefix = new_id()
        outcome = {SYNCED: 0, PENDING: 0, FAILED: 0, "skipped": 0, "claims": 0, "errors": 0}
        self.publish_backlog_age()
        reserve_ms = (s.auth0_timeout_seconds * 3 + 2) * 1000  # a push of one user, as a rule
        seen: set[tuple[str, str]] = set()

        def time_left() -> bool:
            return time_left_ms is None or time_left_ms() >= reserve_ms

        while time_left():
            page = self.d.store.due_work(self.d.clock.now(), s.sync_batch_size)
            fresh = [work for work in page if (work.kind, work.key) not in seen]
            for work in fresh:
                if not time_left():
                    break
                seen.add((work.kind, work.key))
                self._run_one(work, claims, f"{owner_prefix}-{len(seen)}", outcome)
            # a short page was all that is due; a page of only work seen already (leased elsewhere, or
            # due again at once) would only repeat itself; tests and callers without a clock: one page
            if len(page) < s.sync_batch_size or not fresh or time_left_ms is None:
                break
        return outcome

    def _run_one(self, work: DueWork, claims: ClaimFinisher, owner: str, outcome: dict[str, Any]) -> None:
        store = self.d.store
        held: SyncState | None = None
        try:
            if work.kind == "link":
                claims.finish_lapsed_claim(work.key)
                outcome["claims"] += 1
                return
            now = self.d.clock.now()
            taken = store.acquire_lease(
                work.key, owner, now, now + self.d.settings.sync_lease_seconds, due_only=True
            )
            if taken is None:
                outcome["skipped"] += 1  # another run holds it, or it is not due any more
                return
            held, user = taken
            outcome[self.finish(held, user)] += 1
        except Exception as exc:  # one poisoned item must not stop the run
            logger.warning("sync item failed", extra={"error_type": type(exc).__name__, "kind": work.kind})
            count("IdpSyncError")
            outcome["errors"] += 1
            if held is not None:
                self._defer_poisoned(held)

    def _defer_poisoned(self, state: SyncState) -> None:
        """A user whose push raised is retried with backoff like an outage (and alarms as stuck), not
        at every run ahead of everyone behind it; if even that fails, its lease lapses instead."""
        try:
            self._defer(state, None, inline=False, access_denied=False)
        except Exception as exc:
            logger.warning("sync item not deferred", extra={"error_type": type(exc).__name__})

    def publish_backlog_age(self) -> float:
        """Publish ``IdpSyncOldestDueAge``: how long the oldest due work has waited (0: nothing due).

        The alarm on it (template.yaml ``SyncBacklogAgeAlarm``) sees a sync that runs but falls behind;
        a sync that does not run at all is the heartbeat's alarm.
        """
        now = self.d.clock.now()
        oldest = self.d.store.oldest_due(now)
        age = 0.0 if oldest is None else max(0.0, now - oldest)
        metrics.add_metric(name=BACKLOG_AGE_METRIC, unit=MetricUnit.Seconds, value=age)
        return age

    def redrive_failed(self, limit: int = 100) -> dict[str, int]:
        """An operator's re-drive: every failed marker becomes pending again, due now."""
        now = self.d.clock.now()
        moved = sum(1 for uid in self.d.store.failed_syncs(limit) if self.d.store.redrive_failed(uid, now))
        logger.info("failed syncs re-driven", extra={"count": moved})
        return {"redriven": moved}
