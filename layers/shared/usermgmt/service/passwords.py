"""Password reset (SPEC section 8): starting one from every entry point, and using the link.

Starting a reset issues a RESET link (superseding the user's previous one) and emails it to the
address on file, only ever to an ACTIVE user. The per-address limit is taken right before a link
would be issued, by every entry point, so it counts sends across all of them; the public route and
the storefront event take it for unknown addresses too, so both kinds of request do the same work
up to the lookup and answer the same.

Using a link (``change_password``) reads the link and its user once (2 reads), *claims* the link (a
short lease on the link item that is also a durable marker for the sync), asks Auth0 to set the
password, then commits in one transaction through the write path: the link consumed, the claim ended,
``tokensValidAfter`` moved, every reset link of the user dead, the audit entry written and, where the
tenant allows it, Auth0 sessions and refresh tokens revoked through the never-lost sync.

* A rejected password or an Auth0 refusal gives the claim back: the link stays usable.
* A second submit of the same link while the first is in flight finds the claim and answers 410
  ``link_used``: Auth0 is asked to set a password at most once per link use.
* Auth0 did not answer in time (its outcome is unknown), or DynamoDB failed after Auth0 accepted: the
  claim stays. Once it lapses, sync-identity finishes it as if the password had changed
  (``finish_lapsed_claim``): the safe direction, since the person can always ask for a new link.
* Auth0 lifts an administrator block when a password is set through the Management API. A suspended
  user must stay blocked: the commit then carries the BLOCKED sync field (pushed inline first,
  sync-identity otherwise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from usermgmt.auth import PUBLIC, STOREFRONT, Access, Actor, RequestCtx, system
from usermgmt.clock import revocation_second
from usermgmt.emails import greeting_name, mask, password_changed, password_reset
from usermgmt.errors import (
    DependencyUnavailable,
    EmailUndeliverable,
    RateLimited,
    StoreUnavailable,
    UserSuspended,
)
from usermgmt.links import RESET, plausible_token
from usermgmt.models import ACTIVE, INVITED, SUSPENDED, User, mail_blocked, normalize_email
from usermgmt.observability import count, logger
from usermgmt.ports import Deps, MailUnavailable
from usermgmt.ratelimit import (
    RESET_PER_ADDRESS,
    RESET_PER_ADDRESS_AUTHENTICATED,
    RESET_PER_IP,
    RateLimiter,
)
from usermgmt.service import linkcheck
from usermgmt.service.invitations import plan_welcome_link
from usermgmt.service.linkcheck import USED, CheckedLink
from usermgmt.service.sync import BLOCKED, REVOKE, new_id
from usermgmt.service.writes import Plan, Writer
from usermgmt.store import UseLink

REQUESTED_ACTION = "user.password_reset_requested"
CHANGED_ACTION = "user.password_changed"
ACTOR_SYNC = system("sync")  # finishing a reset whose request died
# how long a request may hold a link while Auth0 sets the password (well above the Lambda timeout)
CLAIM_SECONDS = 60
MAX_PASSWORD_CHARS = 1000


class DeliveryFailed(Exception):
    """The reset email could not be sent; raised only where a retry will come (storefront events)."""


class _LinkDied(Exception):
    """Internal: the link item refused to be consumed after the password was set."""


@dataclass(frozen=True)
class ResetRequested:
    """What an administrator or the user learns: where the link went (masked)."""

    sent_to: str


class PasswordService:
    # How long a second submit waits for a request holding the same link before answering link_used.
    claim_wait_seconds: float = 4.0
    claim_poll_seconds: float = 0.2

    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer
        s = deps.settings
        self.limiter = RateLimiter(deps.store, s.rate_limit_window_seconds, s.hash_pepper)

    # ------------------------------------------------------------------------------ limits
    def check_ip(self, source_ip: str) -> None:
        """The per-IP limit of the public routes (POST /password-reset and renew): 429 beyond it."""
        allowed, retry_after = self.limiter.take_ip(
            RESET_PER_IP, source_ip, self.d.settings.reset_limit_per_ip, self.d.clock.now()
        )
        if not allowed:
            count("ResetIpRateLimited")
            raise RateLimited(retry_after, "Too many requests from this address; try again later")

    def _take_address(self, email: str, now: float, *, authenticated: bool = False) -> tuple[bool, int]:
        """One reset email to ``email``: anonymous entry points (public route, event, renew) share one
        budget; administrators and the user themselves have their own, which anonymous requests cannot
        spend (security notes L4)."""
        s = self.d.settings
        if authenticated:
            scope, limit = RESET_PER_ADDRESS_AUTHENTICATED, s.reset_limit_per_address_authenticated
        else:
            scope, limit = RESET_PER_ADDRESS, s.reset_limit_per_address
        allowed, retry_after = self.limiter.take(scope, email, limit, now)
        if not allowed:
            count("ResetAddressRateLimited")
        return allowed, retry_after

    # ------------------------------------------------------------------------------ starting a reset
    def request_for_user(self, ctx: RequestCtx, target_id: str | None) -> ResetRequested:
        """Administrators (``target_id``) and the user (``/me``, ``None``): 202 with the masked address.

        409 ``user_suspended`` for a suspended target, 429 ``rate_limited`` beyond the per-address
        limit, 503 when the email could not be sent.
        """
        taken: dict[str, tuple[bool, int]] = {}

        def plan(access: Access, now: float) -> Plan:
            target = access.target
            if target.status not in (ACTIVE, INVITED):
                raise UserSuspended("No reset link is sent to a suspended user")
            if mail_blocked(target, target.email):
                raise EmailUndeliverable()
            if ctx.job is not None and ctx.job.dry_run:
                taken[target.email] = (True, 0)  # a dry run decides; it takes no slot of the limit
            if target.email not in taken:  # a re-plan after a write conflict takes no second slot
                taken[target.email] = self._take_address(target.email, now, authenticated=True)
            allowed, retry_after = taken[target.email]
            if not allowed:
                raise RateLimited(
                    retry_after, "Too many reset emails were sent to this user; try again later"
                )
            return self._plan_reset_link(target, now)

        # An INVITED user has no password to reset: a fresh invitation (choose a password) goes instead.
        written = self.w.write(ctx, target_id, None, plan)
        self.w.deliver_required(written.plan, written)
        return ResetRequested(sent_to=mask(written.user.email))

    def request_public(self, email: str, request_id: str, retry: bool = False) -> None:
        """A ``POST /password-reset`` for ``email``, after its answer (queued: ``service/public.py``).

        The caller got the same answer whatever happens here; a failure raises, so the message is
        delivered again (then dead-lettered and alarmed); a ``retry`` takes no second slot of the
        per-address limit.
        """
        self._send_if_active(email, PUBLIC, request_id, take_slot=not retry)

    def request_by_event(self, email: str, event_id: str) -> None:
        """A storefront ``PasswordResetRequested``: as the public route, but failures raise (and retry)."""
        try:
            self._send_if_active(email, STOREFRONT, event_id)
        except MailUnavailable:
            raise DeliveryFailed("reset email not sent") from None

    def renew(self, token: str, request_id: str, retry: bool = False) -> None:
        """``POST /password-reset/{token}/renew``: a fresh link for an expired or superseded one's user."""
        if not plausible_token(token):
            return
        renewable = linkcheck.renewable(self.d.store, token, RESET, self.d.clock.now())
        if renewable is not None:  # after the answer (service/public.py): a failure raises and retries
            self._send_if_active(renewable.user.email, PUBLIC, request_id, take_slot=not retry)

    def _send_if_active(self, email: str, actor: Actor, request_id: str, *, take_slot: bool = True) -> None:
        """Take the address's slot; when allowed and the address is an ACTIVE user's, issue and send a link.

        Raises ``MailUnavailable`` when the email could not be sent (the callers decide what it means).
        ``take_slot`` False: a delivery again of a request that took its slot already.
        """
        if take_slot and not self._take_address(email, self.d.clock.now())[0]:
            return
        user_id = self.d.store.user_id_for_email(email)
        if user_id is None:
            return

        def plan(now: float) -> tuple[User, Plan, float] | None:
            user = self.d.store.get_user(user_id)
            if (
                user is None
                or user.status not in (ACTIVE, INVITED)
                or user.email != email
                or mail_blocked(user, email)
            ):
                return None  # public routes and events answer the same whatever the reason
            return user, self._plan_reset_link(user, now), now

        applied = self.w.write_links(actor, request_id, plan)  # anonymous: no new version (L1)
        if applied is not None:
            for email_out in applied.plan.emails:
                self.w.deliver(email_out)

    def _plan_reset_link(self, user: User, now: float) -> Plan:
        if user.status == INVITED:  # no password yet: a fresh invitation instead (SPEC section 13)
            return plan_welcome_link(self.w, user, now, mail_required=True)
        ttl = self.d.settings.reset_link_ttl_seconds
        url, links, ops = self.w.issue_link(user, RESET, now, ttl)
        return Plan(
            after=user.evolve(links=links),
            action=REQUESTED_ACTION,
            ops=ops,
            emails=[
                password_reset(user.email, greeting_name(user.first_name, user.email_verified), url, ttl / 60)
            ],
            mail_required=True,
        )

    # ------------------------------------------------------------------------------ using the link
    def check_link(self, token: str) -> CheckedLink:
        """The link as ``GET /password-reset/{token}`` sees it; raises ``LinkGone``. Changes nothing."""
        return linkcheck.check(self.d.store, token, RESET, self.d.clock.now())

    def change_password(self, token: str, password: str, request_id: str) -> User | None:
        """Set the password through the link, exactly once. See the module docstring for the order.

        Raises ``LinkGone`` (410), ``PasswordTooWeak`` (400) or ``DependencyUnavailable`` (503; the link
        stays usable, except after ``OutcomeUnknown``). Returns the user as committed (None: deleted
        meanwhile, or the commit is left to the sync).
        """
        store = self.d.store
        now = self.d.clock.now()
        checked = linkcheck.check(store, token, RESET, now)
        token_hash = checked.link.token_hash
        claim = self._claim(token, checked, now)
        # a timeout is an unknown outcome: the claim stays, sync-identity finishes the change
        linkcheck.set_password_holding_claim(
            self.d.idp, store, checked.user.id, password, token_hash, claim, unknown_on_timeout=True
        )
        try:
            return self._commit_change(checked.user, token_hash, now, claim, request_id, actor=None)
        except (StoreUnavailable, DependencyUnavailable) as exc:
            # Auth0 holds the new password; the claim is the durable marker the sync finishes from.
            logger.warning("password commit left to the sync", extra={"error_type": type(exc).__name__})
            count("PasswordCommitDeferred")
            return None

    def finish_lapsed_claim(self, token_hash: str) -> None:
        """sync-identity: a claim that was neither consumed nor given back. Finish it as a password change.

        Its request may have set the password in Auth0 and then failed (or its outcome was unknown):
        the record follows as if it had (tokens refused, resets dead, a suspended user blocked again).
        """
        link = self.d.store.get_link(token_hash)
        now = self.d.clock.now()
        if link is None or link.status != "active" or link.claim_owner is None or link.claim_until > now:
            return  # finished, given back, re-claimed or gone meanwhile: the index entry was stale
        if link.purpose != RESET:
            # an invitation link whose request died: given back (its commit is all or nothing; the
            # person uses the link again and the password is set again)
            self.d.store.release_link_claim(token_hash, link.claim_owner)
            return
        user = self.d.store.get_user(link.user_id)
        if user is None:
            self.d.store.release_link_claim(token_hash, link.claim_owner)  # deleted: nothing to finish
            return
        claimed_at = link.claim_until - CLAIM_SECONDS
        try:
            self._commit_change(user, token_hash, claimed_at, link.claim_owner, new_id(), actor=ACTOR_SYNC)
        except _LinkDied:
            return  # someone else holds or used it now
        count("PasswordClaimFinished")

    def _claim(self, token: str, checked: CheckedLink, now: float) -> str:
        """Hold the link for this request; a concurrent holder is waited for briefly, then 410 link_used."""
        store = self.d.store
        claim = new_id()
        deadline = time.monotonic() + self.claim_wait_seconds
        while True:
            if store.claim_link(checked.link.token_hash, claim, int(now), int(now) + CLAIM_SECONDS):
                return claim
            # Used, gone or expired meanwhile: the check says which. Otherwise someone holds it.
            linkcheck.check(store, token, RESET, now)
            if time.monotonic() >= deadline:
                raise linkcheck.gone(USED)
            time.sleep(self.claim_poll_seconds)

    def _commit_change(
        self,
        user: User,
        token_hash: str,
        link_now: float,
        claim: str,
        request_id: str,
        *,
        actor: Actor | None,
    ) -> User | None:
        """The record follows the password Auth0 now holds: link consumed, tokens revoked, resets dead.

        The first attempt plans on ``user`` as read with the link (no second read); a conflict reads
        again. The link is consumed at the time it was checked (a slow Auth0 call cannot make it expire
        in between). If the link item refuses (the user was deleted, or the claim lapsed and the link
        was taken meanwhile) the caller decides: a request commits without it, the sync gives up.
        """
        store = self.d.store
        revoke = self.d.settings.auth0_revoke_sessions
        first: list[User] = [user]

        def plan(now: float) -> tuple[User, Plan, float] | None:
            current = first.pop() if first else store.get_user(user.id)
            if current is None:
                return None  # deleted meanwhile: the deletion removes the Auth0 user as well
            links = {purpose: h for purpose, h in current.links.items() if purpose != RESET}
            after = current.evolve(
                tokens_valid_after=max(current.tokens_valid_after, revocation_second(now)), links=links
            )
            # Auth0 lifted any administrator block when it set the password: a suspended user is
            # blocked again through the never-lost sync; sessions end where the tenant allows it.
            sync = {BLOCKED} if current.status == SUSPENDED else set()
            if revoke:
                sync.add(REVOKE)
            changed = Plan(
                after=after,
                action=CHANGED_ACTION,
                sync=frozenset(sync),
                ops=[UseLink(token_hash, int(link_now), claim)],
                errors={"link": _LinkDied()},
                emails=[
                    password_changed(current.email, greeting_name(current.first_name, current.email_verified))
                ],
            )
            return current, changed, now

        try:
            applied = self.w.write_direct(actor, request_id, plan)
        except _LinkDied:
            if actor == ACTOR_SYNC:
                raise
            logger.warning("link died while the password was set", extra={"target": user.id})

            def without_link(now: float) -> tuple[User, Plan, float] | None:
                planned = plan(now)
                if planned is not None:
                    planned[1].ops.clear()
                return planned

            applied = self.w.write_direct(actor, request_id, without_link)
        return applied.user if applied else None


def reset_address(body: object) -> str | None:
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
