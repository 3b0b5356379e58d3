"""Email verification (SPEC section 6): sending verification links, and using the verify and cancel links.

A verification link confirms one address: the user's pending address when a change is waiting, else
an unverified current address (``linkcheck.verify_target``). Sending one issues a fresh VERIFY link
bound to that address (the older link is superseded) through the one write path, with an audit entry.

Using a link has no authenticated caller, so it goes through ``Writer.write_direct``: in one
transaction the link is consumed (a conditional write: of two submits exactly one wins), the new
address is claimed (``EMAIL#``; taken meanwhile -> 409 ``email_taken``, nothing changes and the link
stays usable), the old address is released, and the record, the audit entry and the Auth0 sync
marker are written. Auth0 gets ``email`` + ``email_verified`` through the never-lost sync.

A confirmed change ends every outstanding link of the user (they were sent to, or issued for, the old
address); verifying the current address ends only the VERIFY and CANCEL links.
"""

from __future__ import annotations

from typing import Any

from usermgmt.auth import PUBLIC, STOREFRONT, Access, RequestCtx
from usermgmt.emails import email_changed, greeting_name, mask, verify_address
from usermgmt.errors import (
    DependencyUnavailable,
    EmailImmutable,
    EmailTaken,
    EmailUndeliverable,
    NothingToVerify,
    RateLimited,
    UserSuspended,
)
from usermgmt.links import CANCEL, VERIFY
from usermgmt.models import ACTIVE, User, mail_blocked
from usermgmt.observability import count
from usermgmt.ports import Deps
from usermgmt.ratelimit import RateLimiter
from usermgmt.service import linkcheck
from usermgmt.service.linkcheck import SUPERSEDED, USED, CheckedLink, verify_target
from usermgmt.service.sync import EMAIL
from usermgmt.service.users import Take, verification_budget, without_change_links
from usermgmt.service.writes import Plan, Writer, diff
from usermgmt.store import ClaimEmail, ReleaseEmail, UseLink

SENT_ACTION = "user.verification_email_sent"
CHANGED_ACTION = "user.email_changed"
VERIFIED_ACTION = "user.email_verified"
CANCELLED_ACTION = "user.email_change_cancelled"
# confirm/cancel through a link act as the user themselves (write_direct's default actor)
# POST /email-verification/{token}/renew per source IP (its own counter: SPEC section 8's reset
# limit counts the password-reset routes only)
VERIFY_RENEW_PER_IP = "verify-renew-ip"


class VerificationNotSent(Exception):
    """The verification email of a storefront event could not be sent; raised so the event is retried."""


class VerificationService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer
        s = deps.settings
        self.limiter = RateLimiter(deps.store, s.rate_limit_window_seconds, s.hash_pepper)

    # ------------------------------------------------------------------------------ sending a link
    def send_for_user(self, ctx: RequestCtx, target_id: str | None) -> str:
        """Administrators (``target_id``) and the user (``/me``, ``None``): the masked address it went to.

        409 ``user_suspended`` for a suspended target, 409 ``nothing_to_verify`` when the user has
        neither a pending address nor an unverified one, 429 ``rate_limited`` beyond the budgets of
        the user or the address, 503 when the email could not be sent.
        """
        take = self.limiter.once_per_request()

        def plan(access: Access, now: float) -> Plan:
            target = access.target
            if target.status != ACTIVE:
                raise UserSuspended("No verification link is sent to a suspended user")
            address = verify_target(target)
            if address is None:
                raise NothingToVerify("The email address of this user is verified and no change is pending")
            if mail_blocked(target, address):
                raise EmailUndeliverable()
            allowed, retry_after = verification_budget(self.d, take, target, address, now)
            if not allowed:
                raise RateLimited(retry_after, "Too many verification emails; try again later")
            planned = self._plan_send(target, now)
            if planned is None:  # kept for the type: verify_target said there is an address
                raise NothingToVerify()
            return planned

        written = self.w.write(ctx, target_id, None, plan)
        self.w.deliver_required(written.plan, written)
        return mask(written.plan.emails[0].to) if written.plan else ""

    def send_for_event(self, user_id: str | None, email: str | None, event_id: str) -> bool:
        """A storefront ``VerificationEmailRequested``: send like the admin route would, else nothing.

        Unknown users, suspended users and users with nothing to verify are skipped silently. Raises
        ``VerificationNotSent`` when the email could not be sent (the event is retried).
        """
        if user_id is None and email is not None:
            user_id = self.d.store.user_id_for_email(email)
        if user_id is None:
            return False
        found: str = user_id
        take = self.limiter.once_per_request()

        def plan(now: float) -> tuple[User, Plan, float] | None:
            user = self.d.store.get_user(found)
            if user is None or user.status != ACTIVE:
                return None
            return self._plan_limited_send(user, now, take)

        applied = self.w.write_links(STOREFRONT, event_id, plan)  # anonymous: no new version (L1)
        if applied is None:
            count("VerificationRequestSkipped")
            return False
        try:
            self.w.deliver_required(applied.plan)
        except DependencyUnavailable:
            raise VerificationNotSent("verification email not sent") from None
        return True

    def check_ip(self, source_ip: str) -> None:
        """The per-IP limit of the public renew route: 429 ``rate_limited`` beyond it."""
        limit = self.d.settings.reset_limit_per_ip
        allowed, retry_after = self.limiter.take_ip(VERIFY_RENEW_PER_IP, source_ip, limit, self.d.clock.now())
        if not allowed:
            count("VerifyRenewRateLimited")
            raise RateLimited(retry_after, "Too many requests from this address; try again later")

    def renew(self, token: str, request_id: str, retry: bool = False) -> None:
        """``POST /email-verification/{token}/renew``: a fresh link when the link's change is still waiting.

        Sends only when the link can be renewed (``linkcheck.renewable``) and no error happens; the
        caller answers the same whatever happened here.
        """

        # a delivery again of the same request took its slots already
        take: Take = (lambda *_: (True, 0)) if retry else self.limiter.once_per_request()

        def plan(now: float) -> tuple[User, Plan, float] | None:
            renewable = linkcheck.renewable(
                self.d.store, token, VERIFY, now, pepper=self.d.settings.hash_pepper
            )
            if renewable is None:
                return None
            return self._plan_limited_send(renewable.user, now, take)

        # after the answer (service/public.py): a failure raises, and the request is delivered again
        applied = self.w.write_links(PUBLIC, request_id, plan)  # anonymous: no new version (L1)
        if applied is not None:
            self.w.deliver_required(applied.plan)

    def _plan_limited_send(self, user: User, now: float, take: Take) -> tuple[User, Plan, float] | None:
        """A send of an event or a renew: beyond the budgets nothing is sent, silently (counted)."""
        address = verify_target(user)
        if address is None:
            return None
        allowed, _ = verification_budget(self.d, take, user, address, now)
        if not allowed:
            return None
        planned = self._plan_send(user, now)
        return None if planned is None else (user, planned, now)

    def _plan_send(self, user: User, now: float) -> Plan | None:
        """A fresh VERIFY link to the address waiting for verification, or None when there is none."""
        address = verify_target(user)
        if address is None or mail_blocked(user, address):
            return None  # the storefront event and the renew route stay silent about it
        ttl = self.d.settings.verify_link_ttl_seconds
        url, links, ops = self.w.issue_link(user, VERIFY, now, ttl, address=address)
        return Plan(
            after=user.evolve(links=links),
            action=SENT_ACTION,
            ops=ops,
            emails=[verify_address(address, url, ttl / 3600)],
            mail_required=True,
        )

    # ------------------------------------------------------------------------------ the links
    def check_verify(self, token: str, now: float | None = None) -> tuple[CheckedLink, str]:
        """The verify link as ``GET`` sees it, and the address it confirms; raises ``LinkGone``."""
        checked = linkcheck.check(
            self.d.store,
            token,
            VERIFY,
            self.d.clock.now() if now is None else now,
            pepper=self.d.settings.hash_pepper,
        )
        target = verify_target(checked.user)
        if target is None:  # linkcheck already refuses this; kept for the type
            raise linkcheck.gone(SUPERSEDED)
        return checked, target

    def check_cancel(self, token: str) -> tuple[CheckedLink, str]:
        """The cancel link as ``GET`` sees it, and the pending address it cancels; raises ``LinkGone``."""
        checked = linkcheck.check(self.d.store, token, CANCEL, self.d.clock.now())
        if checked.user.pending_email is None:
            raise linkcheck.gone(SUPERSEDED)
        return checked, checked.user.pending_email

    def confirm(self, token: str, request_id: str) -> User | None:
        """``POST /email-verification/{token}``: the address becomes the verified login email, exactly once.

        Raises ``LinkGone`` (410; the loser of two concurrent submits gets ``link_used``),
        ``EmailTaken`` (409, nothing changed, link still usable) or ``EmailImmutable`` (a change
        confirmed after the policy was switched to ``locked``).
        """
        policy = self.d.settings.email_change_policy

        def plan(now: float) -> tuple[User, Plan, float]:
            checked, target = self.check_verify(token, now)
            user = checked.user
            changes: list[dict[str, Any]] = []
            planned = Plan(after=user, action=VERIFIED_ACTION, sync=frozenset({EMAIL}))
            planned.ops.append(UseLink(checked.link.token_hash, int(now)))
            planned.errors["link"] = linkcheck.gone(USED)
            links = without_change_links(user)
            if user.pending_email is not None:
                if policy == "locked":
                    raise EmailImmutable()
                planned.action = CHANGED_ACTION
                diff(changes, "email", user.email, target)
                diff(changes, "pendingEmail", user.pending_email, None)
                planned.ops.append(ClaimEmail(target, user.id))
                planned.ops.append(ReleaseEmail(user.email, user.id))
                planned.errors["email"] = EmailTaken("This email address was taken by another user meanwhile")
                name = greeting_name(user.first_name, user.email_verified)
                planned.emails.append(email_changed(user.email, name, target))
                links = {}  # every outstanding link went to, or was issued for, the old address
            diff(changes, "emailVerified", user.email_verified, True)
            planned.after = user.evolve(email=target, pending_email=None, email_verified=True, links=links)
            if target != user.email:
                diff(changes, "deliverability", user.deliverability, "ok")
                planned.after = planned.after.evolve(deliverability="ok")  # a new mailbox (SPEC 16)
            planned.changes = changes
            return user, planned, now

        applied = self.w.write_direct(None, request_id, plan)
        return applied.user if applied else None

    def cancel(self, token: str, request_id: str) -> User | None:
        """``POST /email-change/{token}/cancel``: the pending change ends and its links die.

        Raises ``LinkGone`` (410; the loser of two concurrent submits gets ``link_used``).
        """

        def plan(now: float) -> tuple[User, Plan, float]:
            checked = linkcheck.check(self.d.store, token, CANCEL, now)
            user = checked.user
            if user.pending_email is None:
                raise linkcheck.gone(SUPERSEDED)
            changes: list[dict[str, Any]] = []
            diff(changes, "pendingEmail", user.pending_email, None)
            planned = Plan(
                after=user.evolve(pending_email=None, links=without_change_links(user)),
                action=CANCELLED_ACTION,
                changes=changes,
                ops=[UseLink(checked.link.token_hash, int(now))],
                errors={"link": linkcheck.gone(USED)},
            )
            return user, planned, now

        applied = self.w.write_direct(None, request_id, plan)
        return applied.user if applied else None
