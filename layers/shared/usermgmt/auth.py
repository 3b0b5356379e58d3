"""Who is calling, and what they may do to whom (SPEC section 3).

The JWT authorizer has verified the token before a handler runs. Here the caller is identified by
``sub`` alone and checked against the record on every request; roles come from the record, never
from token claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from usermgmt.errors import Forbidden, ReauthenticationRequired, TokenRevoked, Unauthenticated, UserNotFound
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


@dataclass(frozen=True)
class RequestCtx:
    """What a handler knows about the request: verified claims, request id, source address."""

    sub: str | None
    iat: int | None
    request_id: str
    source_ip: str = ""
    # when the person behind the token signed in (the AUTH_TIME_CLAIM claim; None: the token has none)
    auth_time: int | None = None

    def require_sub(self) -> str:
        if not self.sub:
            raise Unauthenticated("The token has no subject")
        return self.sub


@dataclass(frozen=True)
class Access:
    """The rules that apply to one caller acting on one target."""

    kind: CallerKind
    caller: User
    target: User
    # accounts whose memberships the caller may see and edit (None: all)
    accounts: frozenset[str] | None

    @property
    def actor(self) -> Actor:
        return Actor(_ACTOR_OF_KIND[self.kind], self.caller.id)


def authenticate(ctx: RequestCtx, caller: User | None) -> User:
    """Refuse a caller that is unknown, not ACTIVE, or holds a token issued before tokensValidAfter."""
    if caller is None or caller.status != ACTIVE:
        raise TokenRevoked()
    if ctx.iat is None or ctx.iat < caller.tokens_valid_after:
        raise TokenRevoked()
    return caller


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
