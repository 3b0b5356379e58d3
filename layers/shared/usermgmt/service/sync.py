"""The never-lost Auth0 sync (DESIGN.md, "The never-lost Auth0 sync").

A write commits the new state with a sync marker (target version + what to push) in one
transaction and, when the user's sync lease is free, takes the lease in the same write. Whoever
holds the lease pushes absolute values to Auth0, then clears the marker on condition that the target
version did not move; if it moved, it pushes again. Without the lease nobody pushes, so two pushes
of one user never race and an older state can never land after a newer one. A transient failure
gives the lease back with a due time (exponential backoff with jitter, honouring Auth0's reset
time); sync-identity picks due markers from a sparse index; after the configured attempts, or at
once on a permanent refusal, the user is marked ``failed`` with a metric (and an alarm on it).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from usermgmt.errors import IdpError, IdpUnavailable
from usermgmt.models import SUSPENDED, User
from usermgmt.observability import count, logger
from usermgmt.ports import IdpUserUpdate

if TYPE_CHECKING:
    from usermgmt.container import Container

PROFILE = "profile"  # name, given_name, family_name
BLOCKED = "blocked"
EMAIL = "email"  # email + email_verified
REVOKE = "revoke"  # sessions and refresh tokens
DELETE = "delete"

SYNCED, PENDING, FAILED = "synced", "pending", "failed"


@dataclass(frozen=True)
class Lease:
    owner: str
    until: float


def new_owner() -> str:
    return uuid.uuid4().hex


class SyncEngine:
    def __init__(self, c: Container) -> None:
        self.c = c

    # ------------------------------------------------------------------------------ pushing
    def push(self, user_id: str, user: User | None, fields: frozenset[str]) -> None:
        """Bring Auth0 in step with ``user`` for ``fields`` (``user`` None: the user is deleted)."""
        idp = self.c.idp
        if user is None or DELETE in fields:
            # Erase what is left of the user here first: a deleting request that died before its
            # erasure is finished by sync-identity, and a repeat finds nothing left to erase.
            self.c.store.erase_deleted_user(user_id)
            idp.delete_user(user_id)
            return
        if fields & {PROFILE, BLOCKED}:
            idp.update_user(
                user_id,
                IdpUserUpdate(
                    name=user.full_name,
                    given_name=user.first_name,
                    family_name=user.last_name,
                    blocked=user.status == SUSPENDED,
                ),
            )
        if EMAIL in fields:
            idp.update_user(user_id, IdpUserUpdate(email=user.email, email_verified=user.email_verified))
        if REVOKE in fields and self.c.settings.auth0_revoke_sessions and user.status == SUSPENDED:
            idp.revoke_sessions(user_id)

    def finish(
        self,
        user_id: str,
        owner: str,
        user: User | None,
        version: int,
        fields: frozenset[str],
        attempts: int,
        *,
        deleted: bool = False,
        inline: bool = False,
    ) -> str:
        """Holding the lease: push, clear the marker, and repeat while newer versions arrived."""
        store = self.c.store
        for _ in range(3):
            try:
                self.push(user_id, user, fields)
            except IdpUnavailable as exc:
                return self._defer(
                    user_id, owner, attempts + 1, exc.retry_after, deleted=deleted, inline=inline
                )
            except IdpError as exc:
                logger.warning("identity provider refused a sync", extra={"error_type": type(exc).__name__})
                store.defer_sync(user_id, owner, due=0, attempts=attempts + 1, failed=True, deleted=deleted)
                count("IdpSyncFailed")
                return FAILED
            if store.clear_sync(user_id, version, owner, deleted=deleted):
                count("IdpSynced")
                return SYNCED
            if deleted:
                break
            # Someone committed a newer version while we held the lease: push that one too.
            fresh = store.get_user(user_id)
            if fresh is None or not fresh.sync_fields:
                return fresh.idp_sync if fresh else PENDING
            user, version, fields = fresh, fresh.version, fresh.sync_fields
        store.release_lease(user_id, owner, deleted=deleted)
        return PENDING

    def _defer(
        self,
        user_id: str,
        owner: str,
        attempts: int,
        retry_after: float | None,
        *,
        deleted: bool,
        inline: bool,
    ) -> str:
        s = self.c.settings
        now = self.c.clock.now()
        if attempts >= s.sync_max_attempts and not inline:
            self.c.store.defer_sync(user_id, owner, due=0, attempts=attempts, failed=True, deleted=deleted)
            logger.warning("sync gave up", extra={"attempts": attempts})
            count("IdpSyncFailed")
            return FAILED
        if inline:
            delay = 0.0  # the next scheduled run retries at once; backoff starts there
        else:
            delay = min(s.sync_max_delay_seconds, s.sync_base_delay_seconds * 2 ** (attempts - 1))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        if retry_after:
            delay = max(delay, min(retry_after, s.sync_max_delay_seconds))
        self.c.store.defer_sync(
            user_id, owner, due=now + delay, attempts=attempts, failed=False, deleted=deleted
        )
        count("IdpSyncDeferred")
        return PENDING

    # ------------------------------------------------------------------------------ the schedule
    def run_due(self, time_left_ms: Callable[[], int] | None = None) -> dict[str, Any]:
        """One run of sync-identity: every due marker, bounded by the batch size and the time left."""
        s = self.c.settings
        store = self.c.store
        owner = new_owner()
        outcome = {SYNCED: 0, PENDING: 0, FAILED: 0, "skipped": 0}
        now = self.c.clock.now()
        for user_id in store.due_syncs(now, s.sync_batch_size):
            if time_left_ms is not None and time_left_ms() < (s.auth0_timeout_seconds * 3 + 2) * 1000:
                break
            now = self.c.clock.now()
            taken = store.acquire_lease(user_id, owner, now, now + s.sync_lease_seconds, due_only=True)
            if taken is None:
                outcome["skipped"] += 1  # another run holds it, or it is not due any more
                continue
            state, user = taken
            result = self.finish(
                user_id, owner, user, state.version, state.fields, state.attempts, deleted=state.deleted
            )
            outcome[result] += 1
        return outcome
