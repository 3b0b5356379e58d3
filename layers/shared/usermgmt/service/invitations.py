"""Where a user's lifecycle starts (SPEC section 13): create, invite into an account, storefront sign-up.

Every start goes through the one write path (``Writer.write_direct`` with ``Plan(create=True)``): the
record at version 1, its login email claimed, the audit entry and the ``create`` sync field in one
transaction. The Auth0 user is created by the never-lost sync under the id chosen here, so a retry or a
duplicate can never make two Auth0 users (``IdentityProvider.create_user``; docs/decisions.md).

No enumeration through invitations: for a new address and for an existing user the request does the
same work (one email lookup, one user read, one transaction of six items, one email, no Auth0 call:
``push_inline=False`` leaves the Auth0 creation to sync-identity) and answers the same 202.

An invitation link is a ``Link`` of purpose ``invite``; it is the user's current one while
``user.links[slot]`` holds its hash (slot ``invite:<invitationId>`` for an account invitation,
``invite`` for the welcome link of ``POST /users`` and of a password reset asked for an INVITED user).
Suspension and deletion clear the user's links, so they end invitations too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from usermgmt.auth import (
    CREATE_USERS,
    PUBLIC,
    READ_USERS,
    STOREFRONT,
    Actor,
    RequestCtx,
    actor_of,
    resolve_caller,
)
from usermgmt.clock import rfc3339
from usermgmt.emails import invitation as invitation_email
from usermgmt.emails import mask
from usermgmt.errors import (
    AccountNotFound,
    DependencyUnavailable,
    EmailTaken,
    EmailUndeliverable,
    FieldProblem,
    Forbidden,
    IdempotencyKeyReused,
    IdpUnavailable,
    InvalidCursor,
    InvitationNotFound,
    RateLimited,
    UserNotFound,
    ValidationFailed,
)
from usermgmt.links import INVITE, hash_token, plausible_token
from usermgmt.models import (
    ACTIVE,
    INVITED,
    ROLES,
    Membership,
    User,
    mail_blocked,
    normalize_email,
    user_view,
)
from usermgmt.observability import count
from usermgmt.ports import Deps
from usermgmt.ratelimit import RESET_PER_IP, RateLimiter
from usermgmt.service import linkcheck
from usermgmt.service.linkcheck import EXPIRED, INVALID, SUPERSEDED, USED
from usermgmt.service.lists import ListCursors
from usermgmt.service.sync import CREATE, DELETE, EMAIL, new_id
from usermgmt.service.writes import Applied, DirectPlanner, Plan, Writer, checked_idempotency_key
from usermgmt.store import (
    INVITATION_ID_SEPARATOR,
    AccountExists,
    AdjustCounts,
    ClaimEmail,
    ClaimRequestKey,
    DeleteInvitation,
    DeleteLink,
    Invitation,
    Link,
    Op,
    PutInvitation,
    PutLink,
    UseLink,
    split_invitation_id,
)

if TYPE_CHECKING:
    from usermgmt.schemas import CreateUserBody, InvitationBody

CREATED_ACTION = "user.created"
INVITED_ACTION = "user.invited"
ACCEPTED_ACTION = "user.invitation_accepted"
REVOKED_ACTION = "user.invitation_revoked"
INVITE_PER_ADDRESS = "invite-address"  # invitation emails a renew may send per address
WELCOME_SLOT = INVITE
CLAIM_SECONDS = 60
CREATE_KEY_SCOPE = "create-user"  # the Idempotency-Key claims of POST /users
INVITE_KEY_SCOPE = "invite"  # and of POST /accounts/{accountId}/invitations
REQUEST_KEY_SECONDS = 86400  # a key answers its first request this long
DEFAULT_LISTED, MAX_LISTED = 50, 100  # invitations per page of GET /accounts/{accountId}/invitations
READ_BUDGET = 1000  # invitations one list call may read to fill its page (hidden ones included)


class _KeyClaimed(IdempotencyKeyReused):
    """The creation's ``ClaimRequestKey`` failed: the same key was claimed meanwhile (``create`` replays)."""


def _key_times(now: float) -> tuple[int, int]:
    """A key claim's end and the moment it is made (a claim that ended is free again)."""
    return int(now) + REQUEST_KEY_SECONDS, int(now)


def _request_digest(pepper: str, body: object) -> str:
    """A keyed hash of the request body (it names a person: never stored in clear or unkeyed)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(pepper.encode() or b"usermgmt", canonical, hashlib.sha256).hexdigest()


class UnknownIdpUser(Exception):
    """A ``UserRegistered`` event names an id Auth0 does not know: the event goes to the dead-letter queue."""


class RegistrationConflict(Exception):
    """A ``UserRegistered`` event for an address another user here holds (dead-letter queue, alarmed)."""


class _EmailRaced(Exception):
    """Internal: the address was claimed between the lookup and the commit."""


@dataclass(frozen=True)
class InvitationSent:
    invitation_id: str
    sent_to: str  # masked
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "invitationId": self.invitation_id,
            "email": self.sent_to,
            "expiresAt": rfc3339(self.expires_at),
        }


@dataclass(frozen=True)
class CheckedInvite:
    link: Link
    user: User
    slot: str
    invitation: Invitation | None

    @property
    def new_user(self) -> bool:
        return self.user.status == INVITED

    @property
    def account_id(self) -> str | None:
        return self.invitation.account_id if self.invitation else None


def slot_of(invitation_id: str | None) -> str:
    return f"{INVITE}:{invitation_id}" if invitation_id else WELCOME_SLOT


def new_user_id() -> str:
    """A fresh id in Auth0's database-connection form: Auth0 creates the user under exactly this id."""
    return "auth0|" + secrets.token_hex(12)


def plan_welcome_link(w: Writer, user: User, now: float, *, mail_required: bool = False) -> Plan:
    """A fresh welcome link (choose a password) for an INVITED user; the older one dies."""
    ttl = w.d.settings.invite_link_ttl_seconds
    url, links, ops = w.issue_link(user, INVITE, now, ttl, slot=WELCOME_SLOT)
    return Plan(
        after=user.evolve(links=links),
        action=INVITED_ACTION,
        changes=[{"field": "invitation", "from": None, "to": "sent"}],
        ops=ops,
        emails=[invitation_email(user.email, user.first_name, url, ttl / 86400, None, new_user=True)],
        mail_required=mail_required,
    )


class InvitationService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer
        self.limiter = RateLimiter(deps.store, deps.settings.rate_limit_window_seconds)
        self.cursors = ListCursors(deps.settings)

    # ------------------------------------------------------------------------------ callers
    def _caller(self, ctx: RequestCtx, scope: str = CREATE_USERS) -> User:
        """A person, or a machine caller with ``scope`` (platform reach)."""
        return resolve_caller(ctx, self.d.store.get_user, self.d.settings.machine_clients, scope)

    @staticmethod
    def _actor(caller: User) -> Actor:
        return actor_of(caller)

    def _account_admin(self, ctx: RequestCtx, account_id: str, scope: str = CREATE_USERS) -> User:
        """Platform administrators and administrators of ``account_id``; else 404 account_not_found."""
        caller = self._caller(ctx, scope)
        if caller.is_platform_admin or account_id in caller.administered_accounts():
            return caller
        raise AccountNotFound()

    def _invitation_in_scope(self, ctx: RequestCtx, invitation_id: str) -> tuple[User, Invitation]:
        caller = self._caller(ctx)
        invitation = self.d.store.get_invitation(invitation_id)
        if invitation is None or not (
            caller.is_platform_admin or invitation.account_id in caller.administered_accounts()
        ):
            raise InvitationNotFound()
        return caller, invitation

    # ------------------------------------------------------------------------------ POST /users
    def create(self, ctx: RequestCtx, body: object, key: str | None = None) -> tuple[dict[str, Any], int]:
        """A platform administrator creates a user: 201 with the INVITED user; a welcome link is mailed.

        With an ``Idempotency-Key``, the same caller, key and body within ``REQUEST_KEY_SECONDS`` answer
        the user that request created, as they are now, and create nothing (a script retrying after a
        timeout gets its user, not ``email_taken``); the same key with another body is 409
        ``idempotency_key_reused``. The key is claimed in the creation's own transaction."""
        from usermgmt.schemas import CreateUserBody, parse_body

        caller = self._caller(ctx)
        if not caller.is_platform_admin:
            raise Forbidden("Only a platform administrator may create users")
        digest = ""
        key = checked_idempotency_key(key, required=False)
        if key is not None:
            digest = _request_digest(self.d.settings.hash_pepper, body)
            replay = self._created_with(caller, key, digest)
            if replay is not None:
                return replay
        fields = parse_body(CreateUserBody, body)
        if self.d.store.user_id_for_email(fields.email) is not None:
            raise EmailTaken()

        def plan(now: float) -> tuple[User | None, Plan, float]:
            user = self._new_user(fields, now)
            welcome = plan_welcome_link(self.w, user, now)
            welcome.action = CREATED_ACTION
            welcome.create = True
            welcome.sync = frozenset({CREATE})
            welcome.changes = _creation_changes(user)
            welcome.errors["email"] = EmailTaken()
            for i, m in enumerate(user.memberships):
                op = AccountExists(m.account_id)
                welcome.ops.append(op)
                welcome.errors[op.label] = ValidationFailed(
                    errors=[FieldProblem(f"memberships.{i}.accountId", "is not a known account")]
                )
            if key is not None:
                claim = ClaimRequestKey(CREATE_KEY_SCOPE, caller.id, key, user.id, digest, *_key_times(now))
                welcome.ops.append(claim)
                welcome.errors[claim.label] = _KeyClaimed()
            return None, welcome, now

        try:
            applied = self.w.write_direct(self._actor(caller), ctx.request_id, plan)
        except (_KeyClaimed, EmailTaken):
            # the same key at the same moment (its claim or its address failed first): answer what that
            # request made; anything else stands
            replay = self._created_with(caller, key, digest) if key is not None else None
            if replay is None:
                raise
            return replay
        if applied is None:  # pragma: no cover - a creation always plans
            raise DependencyUnavailable()
        return user_view(applied.user), applied.user.version

    def _created_with(self, caller: User, key: str, digest: str) -> tuple[dict[str, Any], int] | None:
        """The user an earlier ``POST /users`` with this key made, as it is now (None: no such request)."""
        held = self._held_key(CREATE_KEY_SCOPE, caller, key, digest)
        if held is None:
            return None
        user = self.d.store.get_user(held)
        if user is None:
            raise UserNotFound("The user that request created has been deleted since")
        count("CreateUserReplayed")
        return user_view(user), user.version

    def _new_user(self, fields: CreateUserBody, now: float) -> User:
        memberships = tuple(m.to_domain() for m in fields.memberships)
        problems: list[FieldProblem] = []
        seen: set[str] = set()
        for i, m in enumerate(memberships):
            if m.account_id in seen:
                problems.append(FieldProblem(f"memberships.{i}.accountId", "is listed twice"))
            seen.add(m.account_id)
        default = fields.defaultAccountId
        if default is None and memberships:
            default = memberships[0].account_id
        if default is not None and default not in seen:
            problems.append(FieldProblem("defaultAccountId", "must name one of the user's accounts"))
        if problems:
            raise ValidationFailed(errors=problems)
        return User(
            id=new_user_id(),
            email=fields.email,
            first_name=fields.firstName,
            last_name=fields.lastName,
            profile=fields.profile,
            status=INVITED,
            email_verified=False,
            account_number=fields.accountNumber,
            default_account_id=default,
            memberships=memberships,
        )

    # ------------------------------------------------------------------------------ invitations
    def invite(
        self, ctx: RequestCtx, account_id: str, body: object, key: str | None = None
    ) -> InvitationSent:
        """Invite an address into an account: the same work and answer whoever holds the address.

        With an ``Idempotency-Key`` (as ``create``): the same caller, key, account and body answer the
        invitation that request made, and invite nobody again."""
        from usermgmt.schemas import InvitationBody, parse_body

        caller = self._account_admin(ctx, account_id)
        if split_invitation_id(f"{account_id}{INVITATION_ID_SEPARATOR}0") is None:
            raise AccountNotFound()  # no account has an id an invitation's id cannot carry
        fields = parse_body(InvitationBody, body)
        claim: tuple[str, str] | None = None
        key = checked_idempotency_key(key, required=False)
        if key is not None:
            claim = (key, _request_digest(self.d.settings.hash_pepper, [account_id, body]))
            replay = self._invited_with(caller, fields.email, *claim)
            if replay is not None:
                return replay
        for _attempt in range(2):
            try:
                return self._invite(caller, account_id, fields, ctx.request_id, claim)
            except _EmailRaced:
                continue  # someone took the address meanwhile: it is an existing user's now
            except _KeyClaimed:  # the same key at the same moment: answer what that request made
                replay = self._invited_with(caller, fields.email, *claim) if claim else None
                if replay is None:
                    raise
                return replay
        raise DependencyUnavailable()

    def _invited_with(self, caller: User, email: str, key: str, digest: str) -> InvitationSent | None:
        """The invitation an earlier request with this key made (None: no such request)."""
        held = self._held_key(INVITE_KEY_SCOPE, caller, key, digest)
        if held is None:
            return None
        invitation = self.d.store.get_invitation(held)
        if invitation is None:
            raise InvitationNotFound()  # revoked or accepted since
        count("InvitationReplayed")
        return InvitationSent(invitation.id, mask(email), invitation.expires_at)

    def _held_key(self, scope: str, caller: User, key: str, digest: str) -> str | None:
        """What this caller's live ``Idempotency-Key`` made on a route; 409 when its body was another."""
        held = self.d.store.request_key(scope, caller.id, key)
        if held is None or held.expires_at < int(self.d.clock.now()):
            return None
        if held.body_hash != digest:
            raise IdempotencyKeyReused()
        return held.target

    def _invite(
        self,
        caller: User,
        account_id: str,
        fields: InvitationBody,
        request_id: str,
        claim: tuple[str, str] | None = None,
    ) -> InvitationSent:
        store = self.d.store
        ttl = self.d.settings.invite_link_ttl_seconds
        roles = tuple(r for r in ROLES if r in set(fields.roles))
        sent: list[InvitationSent] = []
        owner = store.user_id_for_email(fields.email)
        fresh_id = new_user_id()

        def plan(now: float) -> tuple[User | None, Plan, float]:
            # one user read whoever holds the address (the same work for both answers)
            existing = store.get_user(owner or fresh_id)
            # the key starts with the creation time, so the account's list pages oldest first
            key = f"{int(now):010d}{secrets.token_hex(16)}"
            invitation_id = f"{account_id}{INVITATION_ID_SEPARATOR}{key}"
            new = existing is None
            user = existing or User(
                id=fresh_id,
                email=fields.email,
                first_name=fields.firstName,
                last_name=fields.lastName,
                status=INVITED,
                default_account_id=account_id,
                memberships=(Membership(account_id, roles),),
            )
            slot = slot_of(invitation_id)
            url, links, link_ops = self.w.issue_link(user, INVITE, now, ttl, ref=invitation_id, slot=slot)
            put_link = link_ops[0]
            assert isinstance(put_link, PutLink)  # noqa: S101 - issue_link returns the PutLink first
            invitation = Invitation(
                id=invitation_id,
                account_id=account_id,
                user_id=user.id,
                roles=roles,
                created_at=int(now),
                expires_at=put_link.link.expires_at,
                token_hash=put_link.link.token_hash,
                invited_by=caller.id,
                created_user=new,
            )
            ops: list[Op] = [
                PutInvitation(invitation, ttl=put_link.ttl),
                *link_ops,
                AccountExists(account_id),
            ]
            if not new:
                # the address is the user's already: the same claim a creation makes (it holds), and the
                # same touch of the account's counts (by nothing) that a creation's count makes, so both
                # kinds of invitation write the same number of items (a user in several accounts
                # still writes one membership entry more per account: docs/decisions.md)
                ops.append(ClaimEmail(user.email, user.id))
                ops.append(AdjustCounts(account_id, ((INVITED, 0),)))
            errors: dict[str, Exception] = {
                AccountExists(account_id).label: AccountNotFound(),
                "email": _EmailRaced(),
            }
            if claim is not None:
                key_op = ClaimRequestKey(
                    INVITE_KEY_SCOPE, caller.id, claim[0], invitation_id, claim[1], *_key_times(now)
                )
                ops.append(key_op)
                errors[key_op.label] = _KeyClaimed()
            email = invitation_email(
                user.email, user.first_name, url, ttl / 86400, account_id, new_user=user.status == INVITED
            )
            planned = Plan(
                after=user.evolve(links=links),
                action=CREATED_ACTION if new else INVITED_ACTION,
                changes=_creation_changes(user)
                if new
                else [{"field": "invitation", "from": None, "to": account_id}],
                sync=frozenset({CREATE}) if new else frozenset(),
                ops=ops,
                emails=[email],
                errors=errors,
                create=new,
                push_inline=False,
            )
            sent[:] = [InvitationSent(invitation_id, mask(fields.email), invitation.expires_at)]
            return existing, planned, now

        self.w.write_direct(self._actor(caller), request_id, plan)
        count("InvitationSent")
        return sent[0]

    def list_pending(
        self, ctx: RequestCtx, account_id: str, limit: int = DEFAULT_LISTED, cursor: str | None = None
    ) -> dict[str, Any]:
        """A page of the account's invitations, oldest first: ``{"items", "nextCursor"}``.

        Invitations whose user was deleted or whose link ended (suspension) are left out; the page is
        filled from further reads of the partition, up to ``READ_BUDGET`` invitations per call (then it
        may be short, with a ``nextCursor``). The cursor is the lists' (``ListCursors``): bound to the
        caller and the account, expiring; anything else is 400 ``invalid_cursor``.
        """
        caller = self._account_admin(ctx, account_id, READ_USERS)
        store = self.d.store
        now = self.d.clock.now()
        digest = hashlib.sha256(f"invitations\x1f{account_id}".encode()).hexdigest()[:32]
        after: str | None = None
        if cursor is not None:
            after = self.cursors.open(cursor, caller.id, digest, now).get("a")
            if not isinstance(after, str) or (split_invitation_id(after) or ("",))[0] != account_id:
                raise InvalidCursor()
        items: list[dict[str, Any]] = []
        read, more = 0, True
        while more and len(items) < limit and read < READ_BUDGET:
            invitations, more = store.account_invitations(account_id, max(limit - len(items), 25), after)
            if not invitations:
                break
            read += len(invitations)
            users = store.get_users({inv.user_id for inv in invitations})
            for inv in invitations:
                if len(items) == limit:
                    more = True  # the rest of this read is the next page's
                    break
                after = inv.id
                user = users.get(inv.user_id)
                if user is None or user.links.get(slot_of(inv.id)) is None:
                    continue  # the user was deleted, or suspended (their links ended)
                items.append(
                    {
                        "invitationId": inv.id,
                        "accountId": inv.account_id,
                        "email": mask(user.email),
                        "roles": list(inv.roles),
                        "createdAt": rfc3339(inv.created_at),
                        "expiresAt": rfc3339(inv.expires_at),
                        "status": "pending" if inv.expires_at > now else "expired",
                    }
                )
        next_cursor = self.cursors.issue(caller.id, digest, now, now, after) if more and after else None
        return {"items": items, "nextCursor": next_cursor}

    def resend(self, ctx: RequestCtx, invitation_id: str) -> InvitationSent:
        """An administrator's or machine's resend: 202 with where it went, 404 when the invitation is
        gone, 409 ``email_undeliverable`` (nothing changed) when SES reported the address, 503 when the
        email could not be sent (SPEC sections 13 and 16; the send-only routes' rules)."""
        caller, invitation = self._invitation_in_scope(ctx, invitation_id)
        sent = self._reissue(invitation.id, self._actor(caller), ctx.request_id)
        if sent is None:
            raise InvitationNotFound()
        return sent

    def _reissue(self, invitation_id: str, actor: Actor, request_id: str) -> InvitationSent | None:
        """A fresh link for a pending invitation (the older one dies), mailed; None when it is gone.

        An address SES reported is 409 for an administrator and quietly nothing for the public renew;
        the email is sent after the commit (``_deliver``).
        """
        store = self.d.store
        ttl = self.d.settings.invite_link_ttl_seconds
        sent: list[InvitationSent] = []

        def plan(now: float) -> tuple[User | None, Plan, float] | None:
            invitation = store.get_invitation(invitation_id)
            user = store.get_user(invitation.user_id) if invitation else None
            if invitation is None or user is None or user.status not in (INVITED, ACTIVE):
                return None
            if mail_blocked(user, user.email):
                if _anonymous(actor):
                    return None  # the renew route answered already; nothing is sent
                raise EmailUndeliverable()
            url, links, link_ops = self.w.issue_link(
                user, INVITE, now, ttl, ref=invitation.id, slot=slot_of(invitation.id)
            )
            put_link = link_ops[0]
            assert isinstance(put_link, PutLink)  # noqa: S101
            renewed = replace(
                invitation, expires_at=put_link.link.expires_at, token_hash=put_link.link.token_hash
            )
            new = user.status == INVITED
            email = invitation_email(
                user.email, user.first_name, url, ttl / 86400, invitation.account_id, new_user=new
            )
            sent[:] = [InvitationSent(invitation.id, mask(user.email), renewed.expires_at)]
            return (
                user,
                Plan(
                    after=user.evolve(links=links),
                    action=INVITED_ACTION,
                    changes=[{"field": "invitation", "from": None, "to": invitation.account_id}],
                    ops=[
                        PutInvitation(renewed, ttl=put_link.ttl, expected_token=invitation.token_hash),
                        *link_ops,
                    ],
                    emails=[email],
                    errors={
                        "invitation": DependencyUnavailable("The invitation changed meanwhile; try again")
                    },
                    mail_required=True,
                    push_inline=False,
                ),
                now,
            )

        applied = self._write(actor)(actor, request_id, plan)
        if applied is None:
            return None
        self._deliver(actor, applied)
        return sent[0]

    def revoke(self, ctx: RequestCtx, invitation_id: str) -> None:
        """End an invitation; an INVITED user it created with no other membership is deleted with it."""
        caller, _ = self._invitation_in_scope(ctx, invitation_id)
        store = self.d.store

        def plan(now: float) -> tuple[User | None, Plan, float] | None:
            invitation = store.get_invitation(invitation_id)
            if invitation is None:
                raise InvitationNotFound()
            end = DeleteInvitation(invitation.id, invitation.token_hash)
            errors: dict[str, Exception] = {"invitation": DependencyUnavailable("try again")}
            user = store.get_user(invitation.user_id)
            if user is None:
                store.transact([end])  # its user is gone: only the invitation item is left
                return None
            slot = slot_of(invitation.id)
            links = {k: v for k, v in user.links.items() if k != slot}
            ops: list[Op] = [end]
            if slot in user.links:
                ops.append(DeleteLink(user.links[slot]))
            created_here = invitation.created_user and user.status == INVITED
            if created_here and user.account_ids <= {invitation.account_id}:
                return (
                    user,
                    Plan(
                        after=user,
                        action="user.deleted",
                        sync=frozenset({DELETE}),
                        delete=True,
                        ops=[end],
                        errors=errors,
                    ),
                    now,
                )
            after = user.evolve(links=links)
            changes: list[dict[str, Any]] = [
                {"field": "invitation", "from": invitation.account_id, "to": None}
            ]
            if created_here:
                memberships = tuple(m for m in user.memberships if m.account_id != invitation.account_id)
                default = user.default_account_id
                if default == invitation.account_id:
                    default = memberships[0].account_id if memberships else None
                after = after.evolve(memberships=memberships, default_account_id=default)
                changes.append(
                    {
                        "field": "memberships",
                        "from": [m.account_id for m in user.memberships],
                        "to": [m.account_id for m in memberships],
                    }
                )
            return (
                user,
                Plan(after=after, action=REVOKED_ACTION, changes=changes, ops=ops, errors=errors),
                now,
            )

        self.w.write_direct(self._actor(caller), ctx.request_id, plan)
        count("InvitationRevoked")

    # ------------------------------------------------------------------------------ the link
    def check_link(self, token: str) -> CheckedInvite:
        """The link as ``GET /invitations/{token}`` sees it; raises ``LinkGone``. Changes nothing."""
        store = self.d.store
        if not plausible_token(token):
            raise linkcheck.gone(INVALID)
        link = store.get_link(hash_token(token))
        if link is None or link.purpose != INVITE:
            raise linkcheck.gone(INVALID)
        user = store.get_user(link.user_id)
        if user is None or user.status not in (INVITED, ACTIVE):
            raise linkcheck.gone(INVALID)
        if link.status == "used":
            raise linkcheck.gone(USED)
        slot = slot_of(link.ref)
        current = user.links.get(slot)
        if current is None:
            raise linkcheck.gone(INVALID)  # revoked, or a welcome link of a user who chose a password
        if current != link.token_hash:
            raise linkcheck.gone(SUPERSEDED)
        invitation = store.get_invitation(link.ref) if link.ref else None
        if link.ref and invitation is None:
            raise linkcheck.gone(INVALID)
        if link.expires_at <= self.d.clock.now():
            raise linkcheck.gone(EXPIRED, can_renew=True)
        return CheckedInvite(link, user, slot, invitation)

    def accept(
        self, token: str, password: str | None, request_id: str, checked: CheckedInvite | None = None
    ) -> User | None:
        """Accept through the link: a new user's password is set in Auth0 (the link is held meanwhile, so
        a double submit sets it once), then one commit makes them ACTIVE and verified; an existing user
        gains the membership. The commit is conditional on the link (unused, unexpired, held by this
        request) and on the invitation (unchanged), so a link the caller checked a moment ago is safe.
        Raises ``LinkGone``, ``ValidationFailed``, ``PasswordTooWeak`` (the link stays usable) or
        ``DependencyUnavailable``."""
        store = self.d.store
        now = self.d.clock.now()
        if checked is None:  # the caller may pass the link it checked just now (no second read)
            checked = self.check_link(token)
        token_hash = checked.link.token_hash
        claim: str | None = None
        if checked.new_user:
            if not password:
                raise ValidationFailed(
                    "Choose a password", errors=[FieldProblem("newPassword", "is required")]
                )
            claim = self._claim(token, checked, now)
            # a timeout gives the claim back too: only a reset's lapsed claim is finished by the sync,
            # and setting the same password again when the person retries is harmless
            linkcheck.set_password_holding_claim(
                self.d.idp,
                store,
                checked.user.id,
                password,
                token_hash,
                claim,
                first=lambda: self.w.sync.ensure_created(checked.user),
            )
        first: list[User] = [checked.user]
        invitation = checked.invitation

        def plan(plan_now: float) -> tuple[User | None, Plan, float] | None:
            user = first.pop() if first else store.get_user(checked.user.id)
            if user is None:
                return None
            after = user
            changes: list[dict[str, Any]] = []
            sync: set[str] = set()
            links = {k: v for k, v in user.links.items() if k not in (checked.slot, WELCOME_SLOT)}
            if user.status == INVITED:
                changes.append({"field": "status", "from": INVITED, "to": ACTIVE})
                if not user.email_verified:
                    changes.append({"field": "emailVerified", "from": False, "to": True})
                after = after.evolve(status=ACTIVE, email_verified=True)
                sync.add(EMAIL)
            ops: list[Op] = [UseLink(token_hash, int(now), claim)]
            if invitation is not None:
                ops.append(DeleteInvitation(invitation.id, token_hash))
                memberships = _with_roles(user.memberships, invitation.account_id, invitation.roles)
                if memberships != user.memberships:
                    changes.append(
                        {
                            "field": "memberships",
                            "from": _memberships_json(user.memberships),
                            "to": _memberships_json(memberships),
                        }
                    )
                    after = after.evolve(
                        memberships=memberships,
                        default_account_id=user.default_account_id or invitation.account_id,
                    )
            return (
                user,
                Plan(
                    after=after.evolve(links=links),
                    action=ACCEPTED_ACTION,
                    changes=changes,
                    sync=frozenset(sync),
                    ops=ops,
                    errors={"link": linkcheck.gone(USED), "invitation": linkcheck.gone(INVALID)},
                ),
                plan_now,
            )

        try:
            applied = self.w.write_direct(None, request_id, plan)
        except BaseException:
            if claim is not None:
                store.release_link_claim(token_hash, claim)
            raise
        return applied.user if applied else None

    def _claim(self, token: str, checked: CheckedInvite, now: float) -> str:
        claim = new_id()
        deadline = time.monotonic() + 4.0
        while True:
            if self.d.store.claim_link(checked.link.token_hash, claim, int(now), int(now) + CLAIM_SECONDS):
                return claim
            self.check_link(token)  # used, gone or expired meanwhile: its answer
            if time.monotonic() >= deadline:
                raise linkcheck.gone(USED)
            time.sleep(0.2)

    # ------------------------------------------------------------------------------ renew
    def check_ip(self, source_ip: str) -> None:
        """The per-IP limit of the public renew routes (shared with the password-reset ones)."""
        allowed, retry_after = self.limiter.take_ip(
            RESET_PER_IP, source_ip, self.d.settings.reset_limit_per_ip, self.d.clock.now()
        )
        if not allowed:
            raise RateLimited(retry_after, "Too many requests from this address; try again later")

    def renew(self, token: str, request_id: str, retry: bool = False) -> None:
        """``POST /invitations/{token}/renew``: a fresh link for an expired or superseded one, after the
        answer (``service/public.py``): what it finds ends quietly, a failure raises and is retried."""
        if not plausible_token(token):
            return
        store = self.d.store
        link = store.get_link(hash_token(token))
        if link is None or link.purpose != INVITE or link.status != "active":
            return
        user = store.get_user(link.user_id)
        if user is None or user.status not in (INVITED, ACTIVE):
            return
        current = user.links.get(slot_of(link.ref))
        if current is None or (current == link.token_hash and link.expires_at > self.d.clock.now()):
            return  # revoked or accepted, or the link still works
        if not retry:  # a delivery again of the same request took its slot already
            allowed, _ = self.limiter.take(
                INVITE_PER_ADDRESS, user.email, self.d.settings.reset_limit_per_address, self.d.clock.now()
            )
            if not allowed:
                return
        if link.ref:
            self._reissue(link.ref, PUBLIC, request_id)
        elif user.status == INVITED:
            self._send_welcome(user.id, PUBLIC, request_id)

    def _send_welcome(self, user_id: str, actor: Actor, request_id: str) -> None:
        def plan(now: float) -> tuple[User | None, Plan, float] | None:
            user = self.d.store.get_user(user_id)
            if user is None or user.status != INVITED or mail_blocked(user, user.email):
                return None
            return user, plan_welcome_link(self.w, user, now, mail_required=True), now

        applied = self._write(actor)(actor, request_id, plan)
        if applied is not None:
            self._deliver(actor, applied)

    def _write(self, actor: Actor) -> Callable[[Actor, str, DirectPlanner], Applied | None]:
        """An anonymous request's link takes no new version (security notes L1); anyone else's does."""
        return self.w.write_links if _anonymous(actor) else self.w.write_direct

    def _deliver(self, actor: Actor, applied: Applied) -> None:
        """The emails of a committed ``mail_required`` plan. An administrator's or machine's send answers
        503 when one could not go out (``MailNotSent``); an anonymous renew raises ``MailUnavailable``,
        so its queued request is delivered again (as the password-reset renew does)."""
        if _anonymous(actor):
            for email in applied.plan.emails:
                self.w.deliver(email)
        else:
            self.w.deliver_required(applied.plan, applied)

    # ------------------------------------------------------------------------------ storefront sign-up
    def register(self, user_id: str, event_id: str) -> None:
        """``UserRegistered``: the record from what Auth0 holds for the id, ACTIVE, once.

        Raises ``UnknownIdpUser`` (Auth0 does not know the id) and ``RegistrationConflict`` (another user
        here holds the address): both end in the dead-letter queue. Auth0 outages raise and are retried.
        """
        store = self.d.store
        if store.get_user(user_id) is not None:
            return  # a repeat: nothing changes
        try:
            idp_user = self.d.idp.get_user(user_id)
        except IdpUnavailable:
            raise
        if idp_user is None or not idp_user.email:
            raise UnknownIdpUser("the identity provider does not know this user")
        try:
            email = normalize_email(idp_user.email)
        except ValueError:
            raise UnknownIdpUser("the identity provider holds no usable email for this user") from None
        first, last = _names_of(idp_user.given_name, idp_user.family_name, idp_user.name, email)
        owner = store.user_id_for_email(email)
        if owner is not None and owner != user_id:
            count("RegistrationConflict")
            raise RegistrationConflict("another user holds this address")

        def plan(now: float) -> tuple[User | None, Plan, float] | None:
            if store.get_user(user_id) is not None:
                return None
            user = User(
                id=user_id,
                email=email,
                first_name=first,
                last_name=last,
                status=ACTIVE,
                email_verified=idp_user.email_verified,
            )
            return (
                None,
                Plan(
                    after=user,
                    action=CREATED_ACTION,
                    changes=_creation_changes(user),
                    create=True,
                    errors={"email": RegistrationConflict("another user holds this address")},
                ),
                now,
            )

        self.w.write_direct(STOREFRONT, event_id, plan)


# ------------------------------------------------------------------------------------------------ helpers


def _anonymous(actor: Actor) -> bool:
    """A public route or a storefront event: no caller to tell anything (the generic answer)."""
    return actor.type in ("public", "storefront")


def _memberships_json(memberships: tuple[Membership, ...]) -> list[dict[str, Any]]:
    return [{"accountId": m.account_id, "roles": list(m.roles)} for m in memberships]


def _with_roles(
    memberships: tuple[Membership, ...], account_id: str, roles: tuple[str, ...]
) -> tuple[Membership, ...]:
    """The memberships with ``roles`` added in ``account_id`` (a new membership when there is none)."""
    for i, m in enumerate(memberships):
        if m.account_id == account_id:
            merged = tuple(r for r in ROLES if r in set(m.roles) | set(roles))
            if merged == m.roles:
                return memberships
            return (*memberships[:i], Membership(account_id, merged), *memberships[i + 1 :])
    return (*memberships, Membership(account_id, tuple(r for r in ROLES if r in set(roles))))


def _creation_changes(user: User) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = [
        {"field": "email", "from": None, "to": user.email},
        {"field": "firstName", "from": None, "to": user.first_name},
        {"field": "lastName", "from": None, "to": user.last_name},
        {"field": "profile", "from": None, "to": user.profile},
        {"field": "status", "from": None, "to": user.status},
    ]
    if user.account_number:
        changes.append({"field": "accountNumber", "from": None, "to": user.account_number})
    if user.memberships:
        changes.append({"field": "memberships", "from": None, "to": _memberships_json(user.memberships)})
    if user.default_account_id:
        changes.append({"field": "defaultAccountId", "from": None, "to": user.default_account_id})
    return changes


def _names_of(given: str | None, family: str | None, name: str | None, email: str) -> tuple[str, str]:
    """First and last name from what Auth0 holds; the parts of ``name``, else the address, fill gaps."""
    from usermgmt.models import clean_name

    parts = (name or "").split(None, 1)
    candidates_first = [given, parts[0] if parts else None, email.split("@", 1)[0]]
    candidates_last = [family, parts[1] if len(parts) > 1 else None, "-"]

    def first_valid(values: list[str | None]) -> str:
        for value in values:
            if value:
                try:
                    return clean_name(value)
                except ValueError:
                    continue
        return "-"

    return first_valid(candidates_first), first_valid(candidates_last)
