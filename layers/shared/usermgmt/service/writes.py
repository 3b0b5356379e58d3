"""The one write path: every change of a user goes through ``Writer`` and nowhere else.

A use case hands the writer a *planner*: a function of the current state that returns a ``Plan`` (the
new record, its audit changes, the Auth0 fields to push, extra ops and emails) or ``None`` for "nothing
to change". ``Writer.write`` (a caller acting through the API) and ``Writer.write_direct`` (a link, a
storefront event, a schedule) then do the same steps:

1. read what the plan needs (caller and target in one round trip for ``write``) and check ``If-Match``;
2. ``commit``: one transaction of the record (conditional on its version), the audit entry (sequence =
   the new version), the sync marker (and the push lease when it is free) and the plan's ops; a
   deletion writes the tombstone instead of the record. A version conflict re-reads and re-plans;
3. ``complete``: after the commit nothing can answer "nothing was changed". The inline Auth0 push and
   the emails are best effort: a failure of either is logged and counted, the marker stays for
   sync-identity, and the answer says ``idpSync: "pending"``.

This is also the one place where a change gains what other readers must learn in the same transaction
(the outbox event of a change, membership index items, counters): each such reader is a ``Derived``
the container hands the writer, asked for its ops with every commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from usermgmt import budget
from usermgmt.auth import (
    READ_USERS,
    UPDATE_USERS,
    Access,
    Actor,
    RequestCtx,
    admin_access,
    authenticate,
    machine_caller,
    self_access,
)
from usermgmt.clock import rfc3339
from usermgmt.errors import (
    ConditionFailed,
    DependencyUnavailable,
    FieldProblem,
    Forbidden,
    MailNotSent,
    StoreUnavailable,
    ValidationFailed,
    VersionMismatch,
)
from usermgmt.links import address_hash, link_url, new_token
from usermgmt.models import User, mail_blocked
from usermgmt.observability import count, logger
from usermgmt.ports import Deps, Email, MailUnavailable
from usermgmt.ratelimit import personal_counters
from usermgmt.service.sync import PENDING, SyncEngine, new_id
from usermgmt.store import AuditEntry as StoredAudit
from usermgmt.store import (
    ClaimEmail,
    CreateUser,
    DeleteLink,
    DeleteUser,
    Lease,
    Link,
    Op,
    PutAudit,
    PutLink,
    PutTombstone,
    RecordLink,
    ReleaseEmail,
    SetLinks,
    SyncState,
    UpdateUser,
    merge_links,
)

MAX_CONFLICT_RETRIES = 5
MAX_IDEMPOTENCY_KEY_CHARS = 255


def checked_idempotency_key(key: str | None, *, required: bool) -> str | None:
    """An ``Idempotency-Key`` header as a route takes it (1 to 255 printable characters); 422 otherwise,
    also when a route that ``required`` it got none."""
    if key is None and not required:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        rule = "is required (1 to {} characters)" if required else "must be 1 to {} characters"
        raise ValidationFailed(
            errors=[FieldProblem("Idempotency-Key", rule.format(MAX_IDEMPOTENCY_KEY_CHARS))]
        )
    return key


LINK_TTL_GRACE = 14 * 86400  # links stay readable (as expired) this long after expiry, then DynamoDB TTL

# The business metric of each action: literal names, in one place.
METRICS = {
    "user.updated": "UserUpdated",
    "user.suspended": "UserSuspended",
    "user.enabled": "UserEnabled",
    "user.deleted": "UserDeleted",
    "user.password_reset_requested": "PasswordResetRequested",
    "user.password_changed": "PasswordChanged",
    "user.verification_email_sent": "VerificationEmailSent",
    "user.email_changed": "EmailChanged",
    "user.email_verified": "EmailVerified",
    "user.email_change_cancelled": "EmailChangeCancelled",
    "user.email_change_expired": "EmailChangeExpired",
    "user.created": "UserCreated",
    "user.invited": "UserInvited",
    "user.invitation_accepted": "InvitationAccepted",
    "user.sessions_revoked": "SessionsRevoked",
    "user.exported": "UserExported",
}


@dataclass
class Plan:
    """What a use case wants to change. ``None`` from a planner means "nothing to change"."""

    after: User
    action: str
    changes: list[dict[str, Any]] = field(default_factory=list)
    sync: frozenset[str] = frozenset()
    ops: list[Op] = field(default_factory=list)
    emails: list[Email] = field(default_factory=list)
    # op label -> what its failed condition means (a client error, or a signal to the use case)
    errors: dict[str, Exception] = field(default_factory=dict)
    audit: bool = True
    # the user is removed: their record, email reservation and current links go, a tombstone (with
    # the sync marker of ``sync``) and a tombstone audit entry stay
    delete: bool = False
    # the emails are what the caller asked for (send-only routes): the use case delivers them itself
    # after the commit and answers 503 when they could not be sent, instead of best effort
    mail_required: bool = False
    # the user is new: ``after`` is written at version 1 on condition that its id is free, with its
    # login email claimed (the ``email`` op fails when another user holds it); there is no ``before``
    create: bool = False
    # False: never push to Auth0 inside the request (the marker is due at once for sync-identity), so a
    # request that must not differ in its work (an invitation, SPEC section 13) does not
    push_inline: bool = True


@dataclass(frozen=True)
class Written:
    """The outcome of ``write``: the user as it is now, and the committed plan (None: nothing changed)."""

    user: User
    access: Access
    plan: Plan | None

    @property
    def before(self) -> User:
        """The user as the write read them, before its change."""
        return self.access.target


@dataclass(frozen=True)
class Applied:
    """The outcome of a ``write_direct`` that changed something: the user as committed, and the plan
    (and the user as it was read before, None for a creation)."""

    user: User
    plan: Plan
    before: User | None = None


@dataclass(frozen=True)
class Committed:
    """A committed write: the user as it was and as written, and the push lease when this write took it."""

    before: User | None  # None: the user was created
    user: User
    lease: Lease | None


@dataclass(frozen=True)
class Change:
    """A change as it is committed: what derived items (events, indexes, counters) are made from."""

    before: User | None  # None: the user is created
    after: User | None  # None: the user is deleted
    plan: Plan
    actor: Actor
    request_id: str
    at: str  # RFC 3339 time of the change
    version: int  # the user's version after it
    job_id: str | None = None  # the bulk job this change is an item of


class Derived(Protocol):
    """Something that must be written in the same transaction as every change (the one write path)."""

    def ops(self, change: Change) -> list[Op]: ...


Planner = Callable[[Access, float], Plan | None]
# planner(now) -> (user as read (None: a creation), plan, now) or None
DirectPlanner = Callable[[float], tuple[User | None, Plan, float] | None]


def _require_time() -> None:
    """Before a table call of the write path: 503 (nothing changed) when its worst case would not
    leave time to answer (budget.py)."""
    if not budget.allows(budget.AWS_CALL_SECONDS):
        count("OutOfTime")
        raise DependencyUnavailable("The request ran out of time; try again")


def diff(changes: list[dict[str, Any]], name: str, old: Any, new: Any) -> bool:
    if old == new:
        return False
    changes.append({"field": name, "from": old, "to": new})
    return True


class Writer:
    def __init__(self, deps: Deps, sync: SyncEngine, derived: Sequence[Derived] = ()) -> None:
        self.d = deps
        self.sync = sync
        self.derived = tuple(derived)

    # ------------------------------------------------------------------------------ access
    def access(self, ctx: RequestCtx, target_id: str | None, scope: str = READ_USERS) -> Access:
        """Caller and target in one strongly consistent round trip; ``None`` target = ``/me``.

        A machine caller (client-credentials token) has no record: it is allowed by client id, needs
        ``scope`` (what the route asks of a machine), reaches users as a platform administrator, and
        is refused every ``/me`` route.
        """
        if ctx.is_machine:
            caller = machine_caller(ctx, self.d.settings.machine_clients, scope)
            if target_id is None:
                raise Forbidden("A machine caller has no /me")
            target = self.d.store.get_user(target_id)
            found = admin_access(caller, target)
            return Access(found.kind, caller, found.target, None, client_id=ctx.client_id)
        sub = ctx.require_sub()
        ids = [sub] if target_id in (None, sub) else [sub, target_id]
        users = self.d.store.get_users(ids)
        caller = authenticate(ctx, users.get(sub))
        if target_id is None:
            return self_access(caller)
        return admin_access(caller, users.get(target_id))

    # ------------------------------------------------------------------------------ the write path
    def write(
        self,
        ctx: RequestCtx,
        target_id: str | None,
        expected_version: int | None,
        planner: Planner,
        *,
        access_check: Callable[[Access], None] | None = None,
        scope: str = UPDATE_USERS,
    ) -> Written:
        for _attempt in range(MAX_CONFLICT_RETRIES):
            _require_time()  # for the read
            access = self.access(ctx, target_id, scope)
            if access_check:
                access_check(access)
            before = access.target
            if expected_version is not None and before.version != expected_version:
                raise VersionMismatch(f"The user is at version {before.version}")
            now = self.d.clock.now()
            plan = planner(access, now)
            job = ctx.job
            if plan is None:
                if job is not None:
                    job.outcome = "unchanged"
                return Written(before, access, None)
            if job is not None and job.dry_run:
                job.outcome = "would_change"  # decided by the same rules; nothing is committed
                return Written(before, access, None)
            _require_time()  # for the commit
            committed = self.commit(
                before,
                plan,
                now,
                actor=access.actor,
                request_id=ctx.request_id,
                job_id=job.job_id if job else None,
            )
            if committed is None:
                continue  # someone else wrote first: read again and re-apply
            if job is not None:
                job.outcome = "changed"
            return Written(self.complete(committed, plan), access, plan)
        raise DependencyUnavailable("The user is being changed by others; try again")

    def write_direct(self, actor: Actor | None, request_id: str, planner: DirectPlanner) -> Applied | None:
        """The write path of actions without an authenticated caller (links, events, schedules).

        ``actor`` names who acted in the audit trail; ``None`` means the user themselves (a person
        using a link sent to them). ``planner(now)`` reads what it needs afresh on every attempt and
        returns the user it read with the plan, or ``None`` for "nothing to do". Returns what was
        written, or ``None`` when nothing was done.
        """
        for _attempt in range(MAX_CONFLICT_RETRIES):
            _require_time()  # for the planner's reads
            planned = planner(self.d.clock.now())
            if planned is None:
                return None
            before, plan, now = planned
            _require_time()  # for the commit
            subject = before.id if before is not None else plan.after.id
            committed = self.commit(
                before, plan, now, actor=actor or Actor("self", subject), request_id=request_id
            )
            if committed is not None:
                return Applied(self.complete(committed, plan), plan, before)
        raise DependencyUnavailable("The user is being changed by others; try again")

    def write_links(self, actor: Actor, request_id: str, planner: DirectPlanner) -> Applied | None:
        """An anonymous request's link (a public route, a storefront event): the link is issued without a
        new version, audit entry or event (security notes L1: nobody but the user can change the user,
        and an administrator's ``If-Match`` keeps working). ``planner`` as in ``write_direct``; a plan
        that changes more than the links goes through ``write_direct`` instead."""
        for _attempt in range(MAX_CONFLICT_RETRIES):
            planned = planner(self.d.clock.now())
            if planned is None:
                return None
            before, plan, _now = planned
            if (
                before is None
                or plan.create
                or plan.delete
                or plan.sync
                or plan.after.evolve(links=before.links) != before
            ):
                return self.write_direct(actor, request_id, planner)  # plans afresh
            try:
                self.d.store.transact([SetLinks(before, tuple(sorted(plan.after.links.items()))), *plan.ops])
            except ConditionFailed as failed:
                if failed.label in plan.errors:
                    raise plan.errors[failed.label] from None
                if failed.label in ("user", "transaction-conflict"):
                    continue  # the user changed (or a link was added) meanwhile: read again
                raise DependencyUnavailable() from None
            logger.info(
                "link issued", extra={"action": plan.action, "target": before.id, "actor": actor.type}
            )
            self._announce(before, plan.after, plan)
            return Applied(plan.after, plan)
        raise DependencyUnavailable("The user is being changed by others; try again")

    def commit(
        self,
        before: User | None,
        plan: Plan,
        now: float,
        *,
        actor: Actor,
        request_id: str,
        job_id: str | None = None,
    ) -> Committed | None:
        """Commit ``plan`` over ``before`` in one transaction. ``None``: someone else changed the user first
        (for a creation: the id was taken; the planner picks another).

        Raises the client error a failed op stands for (``plan.errors``).
        """
        s = self.d.settings
        at = rfc3339(now)
        version = 1 if before is None else before.version + 1
        lease: Lease | None = None
        ops: list[Op]
        if before is None or plan.create:
            after = plan.after.evolve(version=version, created_at=at, updated_at=at)
            if plan.sync:
                after = after.evolve(idp_sync=PENDING)
                if plan.push_inline:
                    lease = Lease(new_id(), now, now + s.sync_lease_seconds)
            ops = [CreateUser(after, sync=plan.sync, lease=lease, due=now), ClaimEmail(after.email, after.id)]
            before = None
        elif plan.delete:
            lease = Lease(new_id(), now, now + s.sync_lease_seconds)
            after = before.evolve(version=version, updated_at=at, idp_sync=PENDING)
            ops = [DeleteUser(before), ReleaseEmail(before.email, before.id)]
            ops += [DeleteLink(h) for h in sorted(set(before.links.values()))]
            ops.append(PutTombstone(before.id, version, at, plan.sync, lease))
        else:
            after = plan.after.evolve(version=version, updated_at=at)
            if plan.sync:
                after = after.evolve(idp_sync=PENDING)
                if before.lease_until < now and plan.push_inline:
                    lease = Lease(new_id(), now, now + s.sync_lease_seconds)
            ops = [UpdateUser(before, after, plan.sync, lease, due=now)]
        if plan.audit:
            entry = StoredAudit(
                user_id=after.id,
                at=at,
                actor=actor.audit_name,
                action=plan.action,
                request_id=request_id or new_id(),
                changes=() if plan.delete else tuple(plan.changes),
                seq=version,
                job_id=job_id,
            )
            ops.append(PutAudit(entry, keep=plan.delete))
        ops.extend(plan.ops)
        change = Change(before, None if plan.delete else after, plan, actor, request_id, at, version, job_id)
        for derived in self.derived:
            ops.extend(derived.ops(change))
        try:
            self.d.store.transact(ops)
        except ConditionFailed as failed:
            if failed.label in plan.errors:
                raise plan.errors[failed.label] from None
            if failed.label in ("user", "transaction-conflict"):
                return None
            raise DependencyUnavailable() from None
        if plan.sync:
            after = after.evolve(
                sync_fields=(before.sync_fields if before else frozenset()) | plan.sync,
                sync_version=version,
                sync_failed=(before.sync_failed if before else frozenset()) - plan.sync,
            )
        return Committed(before, after, lease)

    def complete(self, committed: Committed, plan: Plan) -> User:
        """After a commit: push to Auth0 when this write took the lease, send the plan's emails.

        Never raises: the change is committed, whatever fails here is finished by sync-identity (the
        marker stays) or was an email (logged and counted).
        """
        after = committed.user
        if plan.delete and budget.allows(budget.AWS_CALL_SECONDS):
            self._forget_counters(after)  # a counter left over expires with its TTL
        # the least an inline push needs: one Auth0 call (token and request) and settling the marker
        push_seconds = 2 * self.d.settings.auth0_timeout_seconds + budget.AWS_CALL_SECONDS
        if committed.lease is not None and not budget.allows(push_seconds):
            # no time for the push and its settling: the marker is due from the commit and the lease
            # lapses, so sync-identity pushes it; the answer says pending (budget.py)
            count("PushOutOfTime")
        elif committed.lease is not None:
            state = SyncState(
                user_id=after.id,
                version=after.version,
                fields=after.sync_fields,
                failed=after.sync_failed,
                attempts=0,
                lease_owner=committed.lease.owner,
                lease_until=committed.lease.until,
                deleted=plan.delete,
            )
            try:
                after = after.evolve(
                    idp_sync=self.sync.finish(state, None if plan.delete else after, inline=True)
                )
            except Exception as exc:  # a store failure or a bug after the commit: the marker stays
                logger.warning("post-commit sync not finished", extra={"error_type": type(exc).__name__})
                count("PostCommitFailed")
        logger.info(
            "change committed",
            extra={
                "action": plan.action,
                "target": after.id,
                "version": after.version,
                "idpSync": after.idp_sync,
            },
        )
        self._announce(committed.before, after, plan)
        return after

    def _announce(self, before: User | None, after: User, plan: Plan) -> None:
        """After a write: the plan's emails (unless sent before the commit) and the action's metric."""
        if not plan.mail_required:
            self.send([e for e in plan.emails if not self._blocked(before, after, e.to)])
        metric = METRICS.get(plan.action)
        if metric:
            count(metric)

    def _forget_counters(self, user: User) -> None:
        """A deleted user's rate counters go with them (they are named by a keyed hash of the person's
        addresses and id; SPEC section 7). Best effort: a counter left over expires with its TTL."""
        s = self.d.settings
        now = self.d.clock.now()
        try:
            addresses = {a for a in (user.email, user.pending_email) if a}
            addresses |= self._recent_addresses(user.id, now - 3 * s.rate_limit_window_seconds)
            keys = personal_counters(
                user.id,
                sorted(addresses),
                window_seconds=s.rate_limit_window_seconds,
                pepper=s.hash_pepper,
                now=now,
            )
            self.d.store.delete_counters(keys)
        except Exception as exc:
            logger.warning("rate counters not erased", extra={"error_type": type(exc).__name__})
            count("PostCommitFailed")

    def _recent_addresses(self, user_id: str, since: float) -> set[str]:
        """Addresses the user's audit trail shows them having (login or pending) since ``since``: an
        address given up meanwhile may still name counters. Read before the erasure removes the trail."""
        found: set[str] = set()
        cutoff, cursor = rfc3339(since), None
        while True:
            page = self.d.store.audit_page(user_id, 100, cursor)
            for entry in page.items:
                if entry["at"] < cutoff:
                    return found
                for change in entry.get("changes") or ():
                    if change.get("field") in ("email", "pendingEmail"):
                        found |= {v for v in (change.get("from"), change.get("to")) if isinstance(v, str)}
            if not page.cursor:
                return found
            cursor = page.cursor

    # ------------------------------------------------------------------------------ email
    @staticmethod
    def _blocked(before: User | None, after: User, address: str) -> bool:
        """SES reported this login email (before or after the change) as undeliverable: no mail to it."""
        if (before is not None and mail_blocked(before, address)) or mail_blocked(after, address):
            count("EmailSuppressed")
            return True
        return False

    def send(self, emails: list[Email]) -> None:
        """Emails that follow a committed change: a failure is logged and counted, never raised."""
        for email in emails:
            try:
                self.deliver(email)
            except MailUnavailable:
                pass  # logged and counted by deliver
            except Exception as exc:  # a bug in the mailer must not turn a committed change into a 500
                logger.warning("email not sent", extra={"error_type": type(exc).__name__})
                count("EmailFailed")

    def deliver_required(self, plan: Plan | None, written: Written | Applied | None = None) -> None:
        """Send the emails of a committed send-only plan; ``MailNotSent`` (503) when one could not go out.

        With ``written`` (the write that issued the plan's links), a failed send also gives the user
        back the links that write superseded: the person keeps the link they already have, instead of
        losing it to one that never reached them (security notes L22)."""
        for email in plan.emails if plan else []:
            try:
                self.deliver(email)
            except MailUnavailable:
                if written is not None and written.before is not None:
                    self._restore_links(written.before, written.user)
                raise MailNotSent() from None

    def _restore_links(self, before: User, after: User) -> None:
        """Best effort, without a new version: only while the user is still as ``after`` left them."""
        links = merge_links(after.links, after.links, before.links)  # the write's slots moved back
        if links == after.links:
            return
        try:
            self.d.store.transact([SetLinks(after, tuple(sorted(links.items())))])
        except (ConditionFailed, StoreUnavailable):
            return  # changed meanwhile, or the table is failing: the new link stays the current one
        count("LinkRestored")

    def deliver(self, email: Email) -> None:
        """Send one email; raises ``MailUnavailable`` (logged without the address, counted)."""
        try:
            self.d.mailer.send(email)
        except MailUnavailable as exc:
            logger.warning("email not sent", extra={"error_type": type(exc).__name__})
            count("EmailFailed")
            raise
        count("EmailSent")

    # ------------------------------------------------------------------------------ links
    def issue_link(
        self,
        user: User,
        purpose: str,
        now: float,
        ttl: int,
        *,
        address: str | None = None,
        ref: str | None = None,
        slot: str | None = None,
    ) -> tuple[str, dict[str, str], list[Op]]:
        """A fresh link for ``purpose``; the user's previous link for it is superseded.

        ``slot`` is the key in ``user.links`` (default: the purpose; an invitation link has one per
        invitation) and ``ref`` what the link is about (an invitation id).
        Returns the URL (only ever put in an email), the user's new ``links`` map and the ops (the
        link first, then its record for erasure).
        """
        token, token_hash = new_token()
        expires = int(now) + ttl
        link = Link(
            token_hash=token_hash,
            purpose=purpose,
            user_id=user.id,
            expires_at=expires,
            created_at=int(now),
            address_hash=address_hash(address, self.d.settings.hash_pepper) if address else None,
            ref=ref,
        )
        links = {**user.links, (slot or purpose): token_hash}
        item_ttl = expires + self.d.settings.cleanup_grace_seconds + LINK_TTL_GRACE
        ops: list[Op] = [PutLink(link, ttl=item_ttl), RecordLink(user.id, token_hash, item_ttl, ref)]
        return link_url(self.d.settings.public_base_url, purpose, token), links, ops
