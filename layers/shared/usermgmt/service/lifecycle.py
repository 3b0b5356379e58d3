"""Suspend, enable and delete (SPEC section 7): they end access at once and erase what they must.

Suspend and enable are updates and go through ``UserService.write`` (access, ``If-Match``, conflict
retries, audit entry, sync marker, inline Auth0 push). Delete is not an update: one transaction
removes the record, frees the login email, kills the user's links and leaves a tombstone (the sync
marker of the Auth0 deletion, no personal data) plus a tombstone audit entry; the Auth0 push then
erases the rest of the user's partition and deletes the Auth0 user. If the Lambda dies or Auth0 is
down, sync-identity finishes from the tombstone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from usermgmt.adapters.dynamo import AuditEntry, ConditionFailed, Op, StoreUnavailable, SyncMark
from usermgmt.auth import Access, RequestCtx, forbid_self, require_platform
from usermgmt.clock import revocation_second, rfc3339
from usermgmt.errors import DependencyUnavailable, VersionMismatch
from usermgmt.models import ACTIVE, SUSPENDED, User, user_view
from usermgmt.observability import count, logger
from usermgmt.service.sync import BLOCKED, DELETE, FAILED, PENDING, REVOKE, SYNCED, new_owner
from usermgmt.service.users import MAX_CONFLICT_RETRIES, Plan, UserService, diff

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

    def body(self) -> dict[str, Any]:
        status = "deletion_failed" if self.idp_state == FAILED else "deletion_pending"
        return {"id": self.user_id, "status": status}


# ------------------------------------------------------------------------------------------------ suspend
def suspend(
    users: UserService, ctx: RequestCtx, target_id: str, expected_version: int | None
) -> tuple[dict[str, Any], int]:
    """Status SUSPENDED, every token issued so far refused, every outstanding link dead, Auth0 blocked."""
    written = users.write(ctx, target_id, expected_version, _plan_suspend, access_check=_no_self_suspend)
    return user_view(written.user, written.access.accounts), written.user.version


def _no_self_suspend(access: Access) -> None:
    forbid_self(access, "suspend")


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


# ------------------------------------------------------------------------------------------------ enable
def enable(
    users: UserService, ctx: RequestCtx, target_id: str, expected_version: int | None
) -> tuple[dict[str, Any], int]:
    """Status ACTIVE and Auth0 unblocked; tokens issued before the suspension stay refused."""
    written = users.write(ctx, target_id, expected_version, _plan_enable)
    return user_view(written.user, written.access.accounts), written.user.version


def _plan_enable(access: Access, now: float) -> Plan | None:
    t = access.target
    if t.status == ACTIVE:
        return None
    changes: list[dict[str, Any]] = []
    diff(changes, "status", t.status, ACTIVE)
    return Plan(
        after=t.evolve(status=ACTIVE), action=ENABLED_ACTION, changes=changes, sync=frozenset({BLOCKED})
    )


# ------------------------------------------------------------------------------------------------ delete
def delete(users: UserService, ctx: RequestCtx, target_id: str, expected_version: int | None) -> Deleted:
    """Remove the user at once, erase their personal data, and delete them in Auth0 (now or later)."""
    c = users.c
    store = c.store
    for _attempt in range(MAX_CONFLICT_RETRIES):
        access = users.access(ctx, target_id)
        require_platform(access)
        forbid_self(access, "delete")
        user = access.target
        if expected_version is not None and user.version != expected_version:
            raise VersionMismatch(f"The user is at version {user.version}")
        now = c.clock.now()
        owner = new_owner()
        version = user.version + 1
        try:
            store.transact(_delete_ops(users, ctx, access, user, now, owner, version))
        except ConditionFailed as failed:
            if failed.label in ("user", "transaction-conflict"):
                continue  # changed (or deleted) since we read it: read again
            raise DependencyUnavailable() from None
        state = _finish_deletion(users, user.id, owner, version)
        logger.info("user deleted", extra={"action": DELETED_ACTION, "target": user.id, "idpSync": state})
        count("UserDeleted")
        return Deleted(user.id, state)
    raise DependencyUnavailable("The user is being changed by others; try again")


def _delete_ops(
    users: UserService, ctx: RequestCtx, access: Access, user: User, now: float, owner: str, version: int
) -> list[Op]:
    store = users.c.store
    at = rfc3339(now)
    ops = [store.op_delete_user(user), store.op_release_email(user.email, user.id)]
    ops += [store.op_delete_link(token_hash) for token_hash in sorted(set(user.links.values()))]
    ops.append(
        store.op_put_tombstone(
            user.id,
            version=version,
            deleted_at=at,
            sync=SyncMark(frozenset({DELETE})),
            lease_owner=owner,
            lease_until=now + users.c.settings.sync_lease_seconds,
        )
    )
    ops.append(
        store.op_put_tombstone_audit(
            AuditEntry(
                user_id=user.id,
                at=at,
                actor=access.actor,
                action=DELETED_ACTION,
                request_id=ctx.request_id or new_owner(),
                seq=version,
            )
        )
    )
    return ops


def _finish_deletion(users: UserService, user_id: str, owner: str, version: int) -> str:
    """Holding the tombstone's lease: erase the rest, delete in Auth0. What is left, sync-identity does."""
    try:
        return users.sync.finish(
            user_id, owner, None, version, frozenset({DELETE}), 0, deleted=True, inline=True
        )
    except StoreUnavailable:
        # The user is gone already; the tombstone keeps the marker and its lease lapses, then
        # sync-identity erases and deletes. Answering 503 here would claim nothing changed.
        logger.warning("deletion left to sync-identity", extra={"code": "dependency_unavailable"})
        return PENDING
