"""Reading and changing users: the rules, and the one write path every change goes through.

``UserService.write`` is that path: load caller and target in one round trip, check access and
``If-Match``, let a plan compute the new state, commit state + audit entry + sync marker (+ links,
uniqueness items, account checks) in one transaction, re-plan on a version conflict, then bring
Auth0 in step inline and send the emails the plan asked for. ``UserService.write_direct`` is its
sibling for actions without an authenticated caller (link POSTs, storefront events): the planner
loads the user itself; the commit (``commit``) and what follows it (``complete``) are the same steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from usermgmt.adapters.dynamo import AuditEntry, ConditionFailed, Link, Op, SyncMark
from usermgmt.auth import Access, RequestCtx, admin_access, authenticate, require_platform, self_access
from usermgmt.clock import rfc3339
from usermgmt.emails import access_changed, email_change_notice, verify_address
from usermgmt.errors import (
    ApiError,
    DependencyUnavailable,
    EmailImmutable,
    EmailTaken,
    FieldProblem,
    Forbidden,
    UserNotFound,
    ValidationFailed,
    VersionMismatch,
)
from usermgmt.links import CANCEL, VERIFY, address_hash, link_url, new_token
from usermgmt.models import ADMIN_ROLE, Membership, MembershipIn, User, parse_patch, user_view
from usermgmt.observability import count, logger
from usermgmt.ports import Email, MailUnavailable
from usermgmt.service.sync import PENDING, PROFILE, SyncEngine, new_owner

if TYPE_CHECKING:
    from usermgmt.container import Container

MAX_CONFLICT_RETRIES = 5
LINK_TTL_GRACE = 14 * 86400  # links stay readable (as expired) this long after expiry, then DynamoDB TTL


@dataclass
class Plan:
    """What a use case wants to change. ``None`` from a planner means "nothing to change"."""

    after: User
    action: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    sync: frozenset[str] = frozenset()
    ops: list[Op] = field(default_factory=list)
    emails: list[Email] = field(default_factory=list)
    # transaction op label -> the client error its failed condition means
    errors: dict[str, ApiError] = field(default_factory=dict)
    audit: bool = True


@dataclass(frozen=True)
class Written:
    user: User
    access: Access
    changed: bool


@dataclass(frozen=True)
class Committed:
    """A committed write: the user as written, and the sync lease owner when this write took the lease."""

    user: User
    owner: str | None


Planner = Callable[[Access, float], Plan | None]
# planner(now) -> (user as read, plan, now) or None; see ``UserService.write_direct``
DirectPlanner = Callable[[float], tuple[User, Plan, float] | None]


def diff(changes: list[dict[str, Any]], name: str, old: Any, new: Any) -> bool:
    if old == new:
        return False
    changes.append({"field": name, "from": old, "to": new})
    return True


def _memberships_json(memberships: tuple[Membership, ...]) -> list[dict[str, Any]]:
    return [{"accountId": m.account_id, "roles": list(m.roles)} for m in memberships]


class UserService:
    def __init__(self, c: Container) -> None:
        self.c = c
        self.sync = SyncEngine(c)

    # ------------------------------------------------------------------------------ access
    def access(self, ctx: RequestCtx, target_id: str | None) -> Access:
        """Caller and target in one strongly consistent round trip; ``None`` target = ``/me``."""
        sub = ctx.require_sub()
        ids = [sub] if target_id in (None, sub) else [sub, target_id]
        users = self.c.store.get_users(ids)
        caller = authenticate(ctx, users.get(sub))
        if target_id is None:
            return self_access(caller)
        return admin_access(caller, users.get(target_id))

    # ------------------------------------------------------------------------------ reads
    def get(self, ctx: RequestCtx, target_id: str | None) -> tuple[dict[str, Any], int]:
        access = self.access(ctx, target_id)
        return user_view(access.target, access.accounts), access.target.version

    def audit(self, ctx: RequestCtx, target_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        access = self.access(ctx, target_id)
        require_platform(access)
        try:
            page = self.c.store.audit_page(access.target.id, limit, cursor)
        except ValueError:
            raise ValidationFailed(errors=[FieldProblem("cursor", "is not a cursor of this list")]) from None
        return {"items": page.items, "nextCursor": page.cursor}

    # ------------------------------------------------------------------------------ the write path
    def write(
        self,
        ctx: RequestCtx,
        target_id: str | None,
        expected_version: int | None,
        planner: Planner,
        *,
        access_check: Callable[[Access], None] | None = None,
    ) -> Written:
        for _attempt in range(MAX_CONFLICT_RETRIES):
            access = self.access(ctx, target_id)
            if access_check:
                access_check(access)
            before = access.target
            if expected_version is not None and before.version != expected_version:
                raise VersionMismatch(f"The user is at version {before.version}")
            now = self.c.clock.now()
            plan = planner(access, now)
            if plan is None:
                return Written(before, access, changed=False)
            committed = self.commit(before, plan, now, actor=access.actor, request_id=ctx.request_id)
            if committed is None:
                continue  # someone else wrote first: read again and re-apply
            return Written(self.complete(committed, plan), access, changed=True)
        raise DependencyUnavailable("The user is being changed by others; try again")

    def write_direct(self, actor: str | None, request_id: str, planner: DirectPlanner) -> User | None:
        """The write path of actions without an authenticated caller (link POSTs, storefront events).

        ``actor`` names who acted in the audit trail; ``None`` means the user themselves (a person
        confirming or cancelling through a link sent to them).

        ``planner(now)`` reads what it needs afresh on every attempt (link, user) and returns the user
        it read with the plan, or ``None`` for "nothing to do". Same commit, conflict retry, inline
        sync and emails as ``write``; returns the committed user, or ``None`` when nothing was done.
        """
        for _attempt in range(MAX_CONFLICT_RETRIES):
            planned = planner(self.c.clock.now())
            if planned is None:
                return None
            before, plan, now = planned
            committed = self.commit(before, plan, now, actor=actor or before.id, request_id=request_id)
            if committed is not None:
                return self.complete(committed, plan)
        raise DependencyUnavailable("The user is being changed by others; try again")

    def commit(
        self, before: User, plan: Plan, now: float, *, actor: str, request_id: str
    ) -> Committed | None:
        """Commit ``plan`` over ``before``: state, audit entry, sync marker and the plan's ops at once.

        Takes the sync lease in the same write when it is free. Raises the client error a failed op
        stands for (``plan.errors``); returns ``None`` when someone else changed the user first.
        """
        store = self.c.store
        after = plan.after.evolve(version=before.version + 1, updated_at=rfc3339(now))
        owner: str | None = None
        ops: list[Op] = []
        if plan.sync:
            after = after.evolve(idp_sync=PENDING)
            lease_free = before.lease_until < now
            owner = new_owner() if lease_free else None
            lease = (owner, now, now + self.c.settings.sync_lease_seconds) if owner else None
            ops.append(store.op_update_user(before, after, sync=SyncMark(plan.sync), lease=lease))
        else:
            ops.append(store.op_update_user(before, after))
        if plan.audit:
            ops.append(
                store.op_put_audit(
                    AuditEntry(
                        user_id=before.id,
                        at=rfc3339(now),
                        actor=actor,
                        action=plan.action,
                        request_id=request_id or new_owner(),
                        changes=tuple(plan.changes),
                        seq=after.version,
                    )
                )
            )
        ops.extend(plan.ops)
        try:
            store.transact(ops)
        except ConditionFailed as failed:
            if failed.label in plan.errors:
                raise plan.errors[failed.label] from None
            if failed.label in ("user", "transaction-conflict"):
                return None
            raise DependencyUnavailable() from None
        return Committed(after.evolve(sync_fields=before.sync_fields | plan.sync), owner)

    def complete(self, committed: Committed, plan: Plan) -> User:
        """After a commit: bring Auth0 in step when this write took the lease, send the plan's emails."""
        after = committed.user
        if committed.owner is not None:
            state = self.sync.finish(
                after.id, committed.owner, after, after.version, after.sync_fields, 0, inline=True
            )
            after = after.evolve(idp_sync=state)
        logger.info(
            "change committed",
            extra={
                "action": plan.action,
                "target": after.id,
                "version": after.version,
                "idpSync": after.idp_sync,
            },
        )
        self.send(plan.emails)
        count(f"User{plan.action.split('.')[-1].title().replace('_', '')}")
        return after

    def send(self, emails: list[Email]) -> None:
        """Emails that follow a committed change: a failure is logged and counted, not raised."""
        for email in emails:
            with contextlib.suppress(MailUnavailable):
                self.deliver(email)

    def deliver(self, email: Email) -> None:
        """Send one email; raises ``MailUnavailable`` (logged without the address, counted)."""
        try:
            self.c.mailer.send(email)
        except MailUnavailable as exc:
            logger.warning("email not sent", extra={"error_type": type(exc).__name__})
            count("EmailFailed")
            raise
        count("EmailSent")

    # ------------------------------------------------------------------------------ links
    def issue_link(
        self, user: User, purpose: str, now: float, ttl: int, *, address: str | None = None
    ) -> tuple[str, dict[str, str], list[Op]]:
        """A fresh link for ``purpose``; the user's previous link for it is superseded.

        Returns the URL (only ever put in an email), the user's new ``links`` map and the op.
        """
        token, token_hash = new_token()
        expires = int(now) + ttl
        link = Link(
            token_hash=token_hash,
            purpose=purpose,
            user_id=user.id,
            expires_at=expires,
            created_at=int(now),
            address_hash=address_hash(address) if address else None,
        )
        links = {**user.links, purpose: token_hash}
        op = self.c.store.op_put_link(
            link, ttl=expires + self.c.settings.cleanup_grace_seconds + LINK_TTL_GRACE
        )
        return link_url(self.c.settings.public_base_url, purpose, token), links, [op]

    def plan_email_change(self, user: User, new_email: str, now: float) -> tuple[User, list[Op], list[Email]]:
        """Start (or restart) a change of login email: pending address, verify link, notice to the old one."""
        s = self.c.settings
        owner = self.c.store.user_id_for_email(new_email)
        if owner is not None and owner != user.id:
            raise EmailTaken()
        verify_url, links, ops = self.issue_link(
            user, VERIFY, now, s.verify_link_ttl_seconds, address=new_email
        )
        cancel_url, links, cancel_ops = self.issue_link(
            user.evolve(links=links), CANCEL, now, s.verify_link_ttl_seconds
        )
        after = user.evolve(pending_email=new_email, links=links)
        emails = [
            verify_address(new_email, user.first_name, verify_url, s.verify_link_ttl_seconds / 3600),
            email_change_notice(user.email, user.first_name, new_email, cancel_url),
        ]
        return after, ops + cancel_ops, emails

    # ------------------------------------------------------------------------------ PATCH
    def patch(
        self, ctx: RequestCtx, target_id: str | None, body: object, expected_version: int | None
    ) -> tuple[dict[str, Any], int]:
        parsed: dict[str, dict[str, Any]] = {}

        def plan(access: Access, now: float) -> Plan | None:
            if access.kind not in parsed:
                parsed[access.kind] = parse_patch(access.kind, body)
            return self._plan_patch(access, parsed[access.kind], now)

        written = self.write(ctx, target_id, expected_version, plan)
        return user_view(written.user, written.access.accounts), written.user.version

    def _plan_patch(self, access: Access, fields: dict[str, Any], now: float) -> Plan | None:
        t = access.target
        after = t
        changes: list[dict[str, Any]] = []
        plan = Plan(after=t, action="user.updated")
        sync: set[str] = set()
        if "firstName" in fields and diff(changes, "firstName", t.first_name, fields["firstName"]):
            after = after.evolve(first_name=fields["firstName"])
            sync.add(PROFILE)
        if "lastName" in fields and diff(changes, "lastName", t.last_name, fields["lastName"]):
            after = after.evolve(last_name=fields["lastName"])
            sync.add(PROFILE)
        for name, attr in (("accountNumber", "account_number"), ("profile", "profile")):
            if name in fields and diff(changes, name, getattr(t, attr), fields[name]):
                after = after.evolve(**{attr: fields[name]})
        if "memberships" in fields:
            memberships = (
                self._replace_memberships(fields["memberships"], plan)
                if access.kind == "platform"
                else self._merge_memberships(access, fields["memberships"])
            )
            if diff(changes, "memberships", _memberships_json(t.memberships), _memberships_json(memberships)):
                after = after.evolve(memberships=memberships)
        if "defaultAccountId" in fields:
            diff(changes, "defaultAccountId", t.default_account_id, fields["defaultAccountId"])
            after = after.evolve(default_account_id=fields["defaultAccountId"])
        if "memberships" in fields or "defaultAccountId" in fields:
            _check_default_account(after)
        if "email" in fields:
            after = self._plan_email(after, fields["email"], now, changes, plan)
        if not changes:
            return None
        plan.after = after
        plan.changes = changes
        plan.sync = frozenset(sync)
        if after.memberships != t.memberships or after.profile != t.profile:
            summary = [f"{m.account_id}: {', '.join(m.roles)}" for m in after.memberships] or ["no accounts"]
            plan.emails.append(access_changed(t.email, after.first_name, summary))
        return plan

    def _plan_email(
        self, user: User, new_email: str, now: float, changes: list[dict[str, Any]], plan: Plan
    ) -> User:
        if new_email == user.email:
            if user.pending_email:
                # back to the current address: the pending change ends and its links die
                diff(changes, "pendingEmail", user.pending_email, None)
                links = {k: v for k, v in user.links.items() if k not in (VERIFY, CANCEL)}
                return user.evolve(pending_email=None, links=links)
            return user
        if self.c.settings.email_change_policy == "locked":
            raise EmailImmutable()
        if new_email == user.pending_email:
            return user  # already pending; the resend route sends a fresh link
        after, ops, emails = self.plan_email_change(user, new_email, now)
        diff(changes, "pendingEmail", user.pending_email, new_email)
        plan.ops.extend(ops)
        plan.emails.extend(emails)
        return after

    def _replace_memberships(self, entries: list[MembershipIn], plan: Plan) -> tuple[Membership, ...]:
        problems: list[FieldProblem] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if entry.accountId in seen:
                problems.append(FieldProblem(f"memberships.{i}.accountId", "is listed twice"))
            seen.add(entry.accountId)
            op = self.c.store.op_account_exists(entry.accountId)
            plan.ops.append(op)
            plan.errors[op.label] = ValidationFailed(
                errors=[FieldProblem(f"memberships.{i}.accountId", "is not a known account")]
            )
        if problems:
            raise ValidationFailed(errors=problems)
        return tuple(e.to_domain() for e in entries)

    def _merge_memberships(self, access: Access, entries: list[MembershipIn]) -> tuple[Membership, ...]:
        t = access.target
        administered = access.accounts or frozenset()
        current = {m.account_id: m for m in t.memberships}
        problems: list[FieldProblem] = []
        updates: dict[str, Membership] = {}
        for i, entry in enumerate(entries):
            if entry.accountId not in administered or entry.accountId not in current:
                problems.append(
                    FieldProblem(
                        f"memberships.{i}.accountId", "must be an account you administer that the user is in"
                    )
                )
            elif entry.accountId in updates:
                problems.append(FieldProblem(f"memberships.{i}.accountId", "is listed twice"))
            else:
                updates[entry.accountId] = entry.to_domain()
        if problems:
            raise ValidationFailed(errors=problems)
        if access.caller.id == t.id:
            for account_id, membership in updates.items():
                if ADMIN_ROLE in current[account_id].roles and ADMIN_ROLE not in membership.roles:
                    raise Forbidden("You cannot remove your own Administrator role")
        return tuple(updates.get(m.account_id, m) for m in t.memberships)


def _check_default_account(user: User) -> None:
    accounts = user.account_ids
    if user.default_account_id is None and accounts:
        raise ValidationFailed(
            errors=[FieldProblem("defaultAccountId", "must name one of the user's accounts")]
        )
    if user.default_account_id is not None and user.default_account_id not in accounts:
        raise ValidationFailed(
            errors=[FieldProblem("defaultAccountId", "must name one of the user's accounts")]
        )


__all__ = ["Plan", "UserNotFound", "UserService", "diff"]
