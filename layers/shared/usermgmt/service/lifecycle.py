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

from usermgmt.auth import (
    DELETE_USERS,
    SUSPEND_USERS,
    Access,
    RequestCtx,
    forbid_self,
    require_platform,
    require_recent_sign_in,
)
from usermgmt.clock import revocation_second
from usermgmt.emails import account_deleted, account_suspended, greeting_name
from usermgmt.models import ACTIVE, INVITED, SUSPENDED, user_view
from usermgmt.ports import Deps
from usermgmt.service.sync import BLOCKED, DELETE, FAILED, REVOKE, SYNCED
from usermgmt.service.writes import Plan, Writer, diff

SUSPENDED_ACTION = "user.suspended"
ENABLED_ACTION = "user.enabled"
DELETED_ACTION = "user.deleted"
SESSIONS_REVOKED_ACTION = "user.sessions_revoked"


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

    def revoke_sessions(self, ctx: RequestCtx, target_id: str | None) -> tuple[dict[str, Any], int]:
        """Sign a user out everywhere (SPEC section 17): every access token issued until now is refused.

        ``tokensValidAfter`` moves to the next whole second; where ``AUTH0_REVOKE_SESSIONS`` is on,
        Auth0 sessions and refresh tokens are revoked through the never-lost sync. ``/me``
        (``target_id`` None) needs a recent sign-in and signs the caller out too.
        """
        settings = self.d.settings

        def check(access: Access) -> None:
            if access.kind == "self":
                require_recent_sign_in(ctx, settings.reauth_max_age_seconds, self.d.clock.now())

        def plan(access: Access, now: float) -> Plan | None:
            t = access.target
            after = t.evolve(tokens_valid_after=max(t.tokens_valid_after, revocation_second(now)))
            sync = frozenset({REVOKE}) if settings.auth0_revoke_sessions else frozenset()
            if after == t and not sync:
                return None
            return Plan(after=after, action=SESSIONS_REVOKED_ACTION, sync=sync)

        written = self.w.write(ctx, target_id, None, plan, access_check=check)
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
        suspended_from=INVITED if t.status == INVITED else None,  # enable gives INVITED back
        tokens_valid_after=max(t.tokens_valid_after, revocation_second(now)),
        links={},  # a link is good only while it is the user's current one for its purpose
    )
    # REVOKE acts only where AUTH0_REVOKE_SESSIONS is on (SyncEngine.push checks the setting).
    # The person learns of it (security notes L18; AUTH-21), after the commit, best effort.
    notice = account_suspended(t.email, greeting_name(t.first_name, t.email_verified))
    return Plan(
        after=after,
        action=SUSPENDED_ACTION,
        changes=changes,
        sync=frozenset({BLOCKED, REVOKE}),
        emails=[notice],
    )


def _plan_enable(access: Access, now: float) -> Plan | None:
    t = access.target
    if t.status in (ACTIVE, INVITED):  # an INVITED user is not suspended: nothing to enable
        return None
    # a user suspended before accepting their invitation has no password yet: they are INVITED again
    # (their invitation ended with the suspension; a password reset sends a fresh one)
    status = INVITED if t.suspended_from == INVITED else ACTIVE
    changes: list[dict[str, Any]] = []
    diff(changes, "status", t.status, status)
    return Plan(
        after=t.evolve(status=status, suspended_from=None),
        action=ENABLED_ACTION,
        changes=changes,
        sync=frozenset({BLOCKED}),
    )


def _plan_delete(access: Access, now: float) -> Plan:
    t = access.target
    notice = account_deleted(t.email, greeting_name(t.first_name, t.email_verified))
    return Plan(after=t, action=DELETED_ACTION, sync=frozenset({DELETE}), delete=True, emails=[notice])
