"""Suspend, enable and delete (SPEC section 7): they end access at once and erase what they must.

All three go through the one write path (``Writer.write``: access, ``If-Match``, conflict retries,
audit entry, sync marker, inline Auth0 push). A deletion's plan removes the record, frees the login
email, kills the user's links and leaves a tombstone (the sync marker of the Auth0 deletion, no
personal data) plus a tombstone audit entry; the push then erases the rest of the user's partition,
blocks the Auth0 user and deletes it. If the Lambda dies or Auth0 is down, sync-identity finishes from
the tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from usermgmt.auth import DELETE_USERS, SUSPEND_USERS, Access, RequestCtx, forbid_self, require_platform
from usermgmt.clock import revocation_second
from usermgmt.models import ACTIVE, SUSPENDED, user_view
from usermgmt.ports import Deps
from usermgmt.service.sync import BLOCKED, DELETE, FAILED, REVOKE, SYNCED
from usermgmt.service.writes import Plan, Writer, diff

SUSPENDED_ACTION = "user.suspended"
ENABLED_ACTION = "user.enabled"
DELETED_ACTION = "user.deleted"


@dataclass(frozen=True)
class Deleted:
    """The outcome of a deletion: ``idp_state`` says whether Auth0 has deleted the user yet."""

    user_id: str
    idp_state: str  # synced | pending | failed

    @property
    def done(self) -> bool:
        return self.idp_state == SYNCED

    @property
    def status(self) -> str:
        return "deletion_failed" if self.idp_state == FAILED else "deletion_pending"


class LifecycleService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer

    def suspend(
        self, ctx: RequestCtx, target_id: str, expected_version: int | None
    ) -> tuple[dict[str, Any], int]:
        """Status SUSPENDED, every token issued so far refused, every outstanding link dead, Auth0 blocked."""
        written = self.w.write(
            ctx,
            target_id,
            expected_version,
            _plan_suspend,
            access_check=_no_self_suspend,
            scope=SUSPEND_USERS,
        )
        return user_view(written.user, written.access.accounts), written.user.version

    def enable(
        self, ctx: RequestCtx, target_id: str, expected_version: int | None
    ) -> tuple[dict[str, Any], int]:
        """Status ACTIVE and Auth0 unblocked; tokens issued before the suspension stay refused."""
        written = self.w.write(ctx, target_id, expected_version, _plan_enable, scope=SUSPEND_USERS)
        return user_view(written.user, written.access.accounts), written.user.version

    def delete(self, ctx: RequestCtx, target_id: str, expected_version: int | None) -> Deleted:
        """Remove the user at once, erase their personal data, and delete them in Auth0 (now or later)."""
        written = self.w.write(
            ctx, target_id, expected_version, _plan_delete, access_check=_may_delete, scope=DELETE_USERS
        )
        return Deleted(written.user.id, written.user.idp_sync)


def _no_self_suspend(access: Access) -> None:
    forbid_self(access, "suspend")


def _may_delete(access: Access) -> None:
    require_platform(access)
    forbid_self(access, "delete")


def _plan_suspend(access: Access, now: float) -> Plan | None:
    t = access.target
    if t.status == SUSPENDED:
        return None
    changes: list[dict[str, Any]] = []
    diff(changes, "status", t.status, SUSPENDED)
    after = t.evolve(
        status=SUSPENDED,
        tokens_valid_after=max(t.tokens_valid_after, revocation_second(now)),
        links={},  # a link is good only while it is the user's current one for its purpose
    )
    # REVOKE acts only where AUTH0_REVOKE_SESSIONS is on (SyncEngine.push checks the setting).
    return Plan(after=after, action=SUSPENDED_ACTION, changes=changes, sync=frozenset({BLOCKED, REVOKE}))


def _plan_enable(access: Access, now: float) -> Plan | None:
    t = access.target
    if t.status == ACTIVE:
        return None
    changes: list[dict[str, Any]] = []
    diff(changes, "status", t.status, ACTIVE)
    return Plan(
        after=t.evolve(status=ACTIVE), action=ENABLED_ACTION, changes=changes, sync=frozenset({BLOCKED})
    )


def _plan_delete(access: Access, now: float) -> Plan:
    return Plan(after=access.target, action=DELETED_ACTION, sync=frozenset({DELETE}), delete=True)
