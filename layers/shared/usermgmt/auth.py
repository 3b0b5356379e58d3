"""Who is calling, and what they may do to whom (SPEC section 3).

The JWT authorizer has verified the token before a handler runs. Here the caller is identified by
``sub`` alone and checked against the record on every request; roles come from the record, never
from token claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from usermgmt.errors import (
    Forbidden,
    InsufficientScope,
    ReauthenticationRequired,
    TokenRevoked,
    Unauthenticated,
    UserNotFound,
)
from usermgmt.models import ACTIVE, User

CallerKind = Literal["platform", "delegated", "self"]
ActorType = Literal["platform_admin", "delegated_admin", "self", "client", "storefront", "public", "system"]
_ACTOR_OF_KIND: dict[str, ActorType] = {
    "platform": "platform_admin",
    "delegated": "delegated_admin",
    "self": "self",
}


@dataclass(frozen=True)
class Actor:
    """Who made a change, as audit entries and events name them (SPEC section 15)."""

    type: ActorType
    id: str

    @property
    def audit_name(self) -> str:
        """The audit trail's ``actor``: a person's user id, else the kind of caller."""
        if self.type in ("platform_admin", "delegated_admin", "self", "client"):
            return self.id
        return self.type if self.type != "system" else f"system:{self.id}"


PUBLIC = Actor("public", "public")  # a public route (the forgot-password page, a renew from a link page)
STOREFRONT = Actor("storefront", "storefront")  # a storefront event


def system(job: str) -> Actor:
    """A schedule or a feed of the platform's own (``cleanup``, ``sync``, ``ses``)."""
    return Actor("system", job)


# Scopes a machine caller's token carries (SPEC section 3): what each route needs.
READ_USERS = "read:users"
UPDATE_USERS = "update:users"
SUSPEND_USERS = "suspend:users"
DELETE_USERS = "delete:users"
CREATE_USERS = "create:users"
BULK_USERS = "bulk:users"
CLIENT_CREDENTIALS = "client-credentials"  # the ``gty`` claim of a client-credentials token
MACHINE_SUFFIX = "@clients"


@dataclass
class JobItem:
    """The bulk job an item is done for (SPEC section 14): named in its audit entry and event.

    ``dry_run`` decides without committing; the write path records the item's ``outcome``:
    ``changed``, ``unchanged`` (a no-op) or ``would_change`` (a dry run that would have changed it).
    """

    job_id: str
    dry_run: bool = False
    outcome: str = ""


@dataclass(frozen=True)
class RequestCtx:
    """What a handler knows about the request: verified claims, request id, source address.

    ``gty`` and ``scopes`` tell a machine caller (a client-credentials token) and what Auth0 granted
    it; ``job`` is set when a bulk job's worker acts for the job's creator (one item).
    """

    sub: str | None
    iat: int | None
    request_id: str
    source_ip: str = ""
    # when the person behind the token signed in (the AUTH_TIME_CLAIM claim; None: the token has none)
    auth_time: int | None = None
    gty: str | None = None
    scopes: frozenset[str] = frozenset()
    job: JobItem | None = None

    def require_sub(self) -> str:
        if not self.sub:
            raise Unauthenticated("The token has no subject")
        return self.sub

    @property
    def is_machine(self) -> bool:
        """A client-credentials token: ``gty`` says so, or its subject is ``<client_id>@clients``."""
        return self.gty == CLIENT_CREDENTIALS or (self.sub or "").endswith(MACHINE_SUFFIX)

    @property
    def client_id(self) -> str:
        sub = self.sub or ""
        return sub[: -len(MACHINE_SUFFIX)] if sub.endswith(MACHINE_SUFFIX) else sub


def machine_caller(ctx: RequestCtx, allowed: frozenset[str], scope: str) -> User:
    """A machine caller as a caller record with platform-administrator reach (it has no user record).

    Refused like an unknown caller (401 ``token_revoked``) when its client id is not allowed at all;
    403 ``insufficient_scope`` when its token lacks ``scope``.
    """
    sub = ctx.require_sub()
    if not sub.endswith(MACHINE_SUFFIX) or ctx.client_id not in allowed:
        raise TokenRevoked()
    if scope not in ctx.scopes:
        raise InsufficientScope(f"This call needs the scope {scope}")
    return User(id=sub, email="", first_name="", last_name="", profile="administrator")


@dataclass(frozen=True)
class Access:
    """The rules that apply to one caller acting on one target."""

    kind: CallerKind
    caller: User
    target: User
    # accounts whose memberships the caller may see and edit (None: all)
    accounts: frozenset[str] | None
    # a machine caller (platform-administrator reach within its scopes): its client id
    client_id: str | None = None

    @property
    def actor(self) -> Actor:
        if self.client_id is not None:
            return Actor("client", self.client_id)
        return Actor(_ACTOR_OF_KIND[self.kind], self.caller.id)


def authenticate(ctx: RequestCtx, caller: User | None) -> User:
    """Refuse a caller that is unknown, not ACTIVE, or holds a token issued before tokensValidAfter."""
    if caller is None or caller.status != ACTIVE:
        raise TokenRevoked()
    if ctx.iat is None or ctx.iat < caller.tokens_valid_after:
        raise TokenRevoked()
    return caller


def resolve_caller(
    ctx: RequestCtx, read_user: Callable[[str], User | None], machines: frozenset[str], scope: str
) -> User:
    """The caller of a route that takes people and machines: a person's record (``authenticate``), or a
    machine's in-memory record when its client id is allowed and its token carries ``scope``."""
    if ctx.is_machine:
        return machine_caller(ctx, machines, scope)
    return authenticate(ctx, read_user(ctx.require_sub()))


def actor_of(caller: User) -> Actor:
    """How audit entries and events name an administrator, or a machine caller (``machine_caller``)."""
    if caller.id.endswith(MACHINE_SUFFIX):
        return Actor("client", caller.id[: -len(MACHINE_SUFFIX)])
    return Actor("platform_admin" if caller.is_platform_admin else "delegated_admin", caller.id)


def require_recent_sign_in(ctx: RequestCtx, max_age: int, now: float) -> None:
    """SPEC section 17: the sign-in behind the token is at most ``max_age`` seconds old (0: no check).

    A token without the claim counts as too old. Raises the RFC 9470 401 ``reauthentication_required``.
    """
    if max_age <= 0:
        return
    if ctx.auth_time is None or now - ctx.auth_time > max_age:
        raise ReauthenticationRequired(max_age)


def self_access(caller: User) -> Access:
    return Access("self", caller, caller, None)


def admin_access(caller: User, target: User | None) -> Access:
    """Administrator rules for ``/users/{userId}`` routes; 404 for anything outside the caller's scope."""
    if caller.is_platform_admin:
        if target is None:
            raise UserNotFound()
        return Access("platform", caller, target, None)
    administered = caller.administered_accounts()
    if not administered or target is None or target.is_platform_admin:
        raise UserNotFound()
    if not target.account_ids & administered:
        raise UserNotFound()
    return Access("delegated", caller, target, administered)


def require_platform(access: Access) -> None:
    """Actions only a platform administrator may take (the target is already in scope)."""
    if access.kind != "platform":
        raise Forbidden("Only a platform administrator may do this")


def forbid_self(access: Access, what: str) -> None:
    if access.caller.id == access.target.id:
        raise Forbidden(f"You cannot {what} yourself")
