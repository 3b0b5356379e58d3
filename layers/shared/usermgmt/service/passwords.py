"""Password reset (SPEC section 8): starting one from every entry point, and using the link.

Starting a reset issues a RESET link (superseding the user's previous one) and emails it to the
address on file, only ever to an ACTIVE user. The per-address limit is taken right before a link
would be issued, by every entry point, so it counts sends across all of them; the public route and
the storefront event take it for unknown addresses too, so both kinds of request do the same work
up to the lookup and answer the same.

Using a link (``change_password``) is serialised per link: the request first *claims* the link (a
short lease on the link item), then asks Auth0 to set the password, then commits in one transaction:
the link is consumed, ``tokensValidAfter`` moves, every reset link of the user dies and the audit
entry is written. A rejected password or an Auth0 outage gives the claim back, so the link stays
usable; a second submit of the same link while the first is in flight finds the claim and answers
410 ``link_used``. So Auth0 is asked to set a password at most once per link use, and the request
that reports success is the one whose password Auth0 holds.

Auth0 lifts an administrator block when a password is set through the Management API. A user
suspended while their link was in use must stay blocked: the commit then carries the BLOCKED sync
field, so the never-lost sync pushes ``blocked: true`` (inline first, sync-identity otherwise).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from usermgmt.adapters.dynamo import StoreUnavailable
from usermgmt.auth import Access, RequestCtx
from usermgmt.clock import revocation_second
from usermgmt.emails import mask, password_changed, password_reset
from usermgmt.errors import (
    ApiError,
    DependencyUnavailable,
    IdpError,
    IdpPasswordTooWeak,
    IdpRejected,
    IdpUnavailable,
    PasswordTooWeak,
    RateLimited,
    UserSuspended,
)
from usermgmt.links import RESET, hash_token, plausible_token
from usermgmt.models import ACTIVE, SUSPENDED, User, normalize_email
from usermgmt.observability import count, logger
from usermgmt.ports import Email, MailUnavailable
from usermgmt.ratelimit import RESET_PER_ADDRESS, RESET_PER_IP, RateLimiter
from usermgmt.service import linkcheck
from usermgmt.service.linkcheck import USED, CheckedLink
from usermgmt.service.sync import BLOCKED, new_owner
from usermgmt.service.users import Plan

if TYPE_CHECKING:
    from usermgmt.container import Container

REQUESTED_ACTION = "user.password_reset_requested"
CHANGED_ACTION = "user.password_changed"
# audit actors of the requests that have no authenticated caller
ACTOR_PUBLIC = "public"
ACTOR_STOREFRONT = "storefront"
# how long a request may hold a link while Auth0 sets the password (well above the Lambda timeout)
CLAIM_SECONDS = 60
MAX_PASSWORD_CHARS = 1000


class DeliveryFailed(Exception):
    """The reset email could not be sent; raised only where a retry will come (storefront events)."""


class _LinkDied(ApiError):
    """Internal: the link item refused to be consumed after the password was set."""


@dataclass(frozen=True)
class ResetRequested:
    """What an administrator or the user learns: where the link went (masked)."""

    sent_to: str


class PasswordService:
    # How long a second submit waits for a request holding the same link before answering link_used.
    claim_wait_seconds: float = 4.0
    claim_poll_seconds: float = 0.2

    def __init__(self, c: Container) -> None:
        self.c = c
        self.limiter = RateLimiter(c.store, c.settings.rate_limit_window_seconds)

    # ------------------------------------------------------------------------------ limits
    def check_ip(self, source_ip: str) -> None:
        """The per-IP limit of the public routes (POST /password-reset and renew): 429 beyond it."""
        allowed, retry_after = self.limiter.take(
            RESET_PER_IP, source_ip or "unknown", self.c.settings.reset_limit_per_ip, self.c.clock.now()
        )
        if not allowed:
            count("ResetIpRateLimited")
            raise RateLimited(retry_after, "Too many requests from this address; try again later")

    def _take_address(self, email: str, now: float) -> tuple[bool, int]:
        allowed, retry_after = self.limiter.take(
            RESET_PER_ADDRESS, email, self.c.settings.reset_limit_per_address, now
        )
        if not allowed:
            count("ResetAddressRateLimited")
        return allowed, retry_after

    # ------------------------------------------------------------------------------ starting a reset
    def request_for_user(self, ctx: RequestCtx, target_id: str | None) -> ResetRequested:
        """Administrators (``target_id``) and the user (``/me``, ``None``): 202 with the masked address.

        409 ``user_suspended`` for a suspended target, 429 ``rate_limited`` beyond the per-address
        limit, 503 when the email could not be sent.
        """
        s = self.c.settings
        taken: dict[str, tuple[bool, int]] = {}
        outbox: list[Email] = []

        def plan(access: Access, now: float) -> Plan:
            target = access.target
            if target.status != ACTIVE:
                raise UserSuspended("No reset link is sent to a suspended user")
            if target.email not in taken:  # a re-plan after a write conflict takes no second slot
                taken[target.email] = self._take_address(target.email, now)
            allowed, retry_after = taken[target.email]
            if not allowed:
                raise RateLimited(
                    retry_after, "Too many reset emails were sent to this user; try again later"
                )
            url, links, ops = self.c.users.issue_link(target, RESET, now, s.reset_link_ttl_seconds)
            outbox[:] = [self._reset_email(target, url)]
            return Plan(after=target.evolve(links=links), action=REQUESTED_ACTION, ops=ops)

        written = self.c.users.write(ctx, target_id, None, plan)
        try:
            self.c.users.deliver(outbox[0])
        except MailUnavailable:
            raise DependencyUnavailable("The email could not be sent; try again later") from None
        return ResetRequested(sent_to=mask(written.user.email))

    def request_public(self, body: object, request_id: str) -> None:
        """``POST /password-reset``: the caller always gets the same answer, whatever happens here."""
        email = _email_of(body)
        if email is None:
            count("ResetRequestIgnored")
            return
        try:
            self._send_if_active(email, ACTOR_PUBLIC, request_id)
        except (StoreUnavailable, DependencyUnavailable, MailUnavailable) as exc:
            # Graceful degradation: an outage must not turn the generic answer into a different one.
            logger.warning("reset request not completed", extra={"error_type": type(exc).__name__})
            count("ResetRequestFailed")

    def request_by_event(self, email: str, event_id: str) -> None:
        """A storefront ``PasswordResetRequested``: as the public route, but failures raise (and retry)."""
        try:
            self._send_if_active(email, ACTOR_STOREFRONT, event_id)
        except MailUnavailable:
            raise DeliveryFailed("reset email not sent") from None

    def renew(self, token: str, request_id: str) -> None:
        """``POST /password-reset/{token}/renew``: a fresh link for an expired or superseded one's user."""
        if not plausible_token(token):
            return
        try:
            link = self.c.store.get_link(hash_token(token))
            if link is None or link.purpose != RESET or link.status != "active":
                return
            user = self.c.store.get_user(link.user_id)
            if user is None or user.status != ACTIVE:
                return
            expired = link.expires_at <= self.c.clock.now()
            superseded = user.links.get(RESET) != link.token_hash
            if not (expired or superseded):
                return  # the link still works: nothing to renew
            self._send_if_active(user.email, ACTOR_PUBLIC, request_id)
        except (StoreUnavailable, DependencyUnavailable, MailUnavailable) as exc:
            logger.warning("reset renewal not completed", extra={"error_type": type(exc).__name__})
            count("ResetRequestFailed")

    def _send_if_active(self, email: str, actor: str, request_id: str) -> None:
        """Take the address's slot; when allowed and the address is an ACTIVE user's, issue and send a link.

        Raises ``MailUnavailable`` when the email could not be sent (the callers decide what it means).
        """
        allowed, _ = self._take_address(email, self.c.clock.now())
        if not allowed:
            return
        user_id = self.c.store.user_id_for_email(email)
        if user_id is None:
            return
        s = self.c.settings
        outbox: list[Email] = []

        def plan(now: float) -> tuple[User, Plan, float] | None:
            user = self.c.store.get_user(user_id)
            if user is None or user.status != ACTIVE or user.email != email:
                return None
            url, links, ops = self.c.users.issue_link(user, RESET, now, s.reset_link_ttl_seconds)
            outbox[:] = [self._reset_email(user, url)]
            return user, Plan(after=user.evolve(links=links), action=REQUESTED_ACTION, ops=ops), now

        if self.c.users.write_direct(actor, request_id, plan) is not None:
            self.c.users.deliver(outbox[0])

    # ------------------------------------------------------------------------------ using the link
    def check_link(self, token: str) -> CheckedLink:
        """The link as ``GET /password-reset/{token}`` sees it; raises ``LinkGone``. Changes nothing."""
        return linkcheck.check(self.c.store, token, RESET, self.c.clock.now())

    def change_password(self, token: str, password: str, request_id: str) -> User | None:
        """Set the password through the link, exactly once. See the module docstring for the order.

        Raises ``LinkGone`` (410), ``PasswordTooWeak`` (400) or ``DependencyUnavailable`` (503); in the
        last two cases the link stays usable. Returns the user as committed (None: deleted meanwhile).
        """
        store = self.c.store
        now = self.c.clock.now()
        checked = linkcheck.check(store, token, RESET, now)
        claim = self._claim(token, checked, now)
        user_id = checked.user.id
        try:
            self.c.idp.set_password(user_id, password)
        except IdpPasswordTooWeak:
            store.release_link_claim(checked.link.token_hash, claim)
            count("PasswordRejected")
            raise PasswordTooWeak() from None
        except IdpUnavailable as exc:
            store.release_link_claim(checked.link.token_hash, claim)
            raise DependencyUnavailable(retry_after=math.ceil(exc.retry_after or 5)) from None
        except IdpRejected as exc:
            store.release_link_claim(checked.link.token_hash, claim)
            logger.warning("password not set", extra={"error_type": type(exc).__name__, "status": exc.status})
            if exc.status == 400:  # Auth0's other password rules (history, dictionary, same as before)
                raise PasswordTooWeak("The password was not accepted; choose a different one") from None
            raise DependencyUnavailable() from None
        except IdpError as exc:
            store.release_link_claim(checked.link.token_hash, claim)
            logger.warning("password not set", extra={"error_type": type(exc).__name__})
            raise DependencyUnavailable() from None
        except BaseException:
            store.release_link_claim(checked.link.token_hash, claim)
            raise
        count("PasswordChanged")
        user = self._commit_change(user_id, checked.link.token_hash, now, request_id)
        if user is not None:
            with contextlib.suppress(MailUnavailable):  # logged and counted; the change itself is done
                self.c.users.deliver(password_changed(user.email, user.first_name))
        return user

    def _claim(self, token: str, checked: CheckedLink, now: float) -> str:
        """Hold the link for this request; a concurrent holder is waited for briefly, then 410 link_used."""
        store = self.c.store
        claim = new_owner()
        deadline = time.monotonic() + self.claim_wait_seconds
        while True:
            if store.claim_link(checked.link.token_hash, claim, int(now), int(now) + CLAIM_SECONDS):
                return claim
            # Used, gone or expired meanwhile: the check says which. Otherwise someone holds it.
            linkcheck.check(store, token, RESET, now)
            if time.monotonic() >= deadline:
                raise linkcheck.gone(USED)
            time.sleep(self.claim_poll_seconds)

    def _commit_change(self, user_id: str, token_hash: str, link_now: float, request_id: str) -> User | None:
        """The record follows the password Auth0 now holds: link consumed, tokens revoked, resets dead.

        The link is consumed at the time it was checked (a slow Auth0 call cannot make it expire in
        between). If the link item refuses (the user was suspended or deleted meanwhile and its links
        cleared), the record is still updated without it: the password is set, so the block must be
        re-asserted and the tokens revoked all the same.
        """
        users = self.c.users
        store = self.c.store
        use_link = True

        def plan(now: float) -> tuple[User, Plan, float] | None:
            user = store.get_user(user_id)
            if user is None:
                return None  # deleted meanwhile: the deletion removes the Auth0 user as well
            links = {purpose: h for purpose, h in user.links.items() if purpose != RESET}
            after = user.evolve(
                tokens_valid_after=max(user.tokens_valid_after, revocation_second(now)), links=links
            )
            # Auth0 lifted any administrator block when it set the password: a suspended user is
            # blocked again through the never-lost sync.
            sync = frozenset({BLOCKED}) if user.status == SUSPENDED else frozenset()
            changed = Plan(after=after, action=CHANGED_ACTION, sync=sync)
            if use_link:
                changed.ops.append(store.op_use_link(token_hash, int(link_now)))
                changed.errors["link"] = _LinkDied()
            return user, changed, now

        try:
            return users.write_direct(user_id, request_id, plan)
        except _LinkDied:
            logger.warning("link died while the password was set", extra={"target": user_id})
            use_link = False
            return users.write_direct(user_id, request_id, plan)

    # ------------------------------------------------------------------------------ email
    def _reset_email(self, user: User, url: str) -> Email:
        return password_reset(user.email, user.first_name, url, self.c.settings.reset_link_ttl_seconds / 60)


def _email_of(body: object) -> str | None:
    """The normalised address of a ``{"email"}`` body, or None for anything else (nothing is sent)."""
    if not isinstance(body, dict):
        return None
    raw = body.get("email")
    if not isinstance(raw, str):
        return None
    try:
        return normalize_email(raw)
    except ValueError:
        return None
