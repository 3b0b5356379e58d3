"""Is this link usable? One answer for every link route (SPEC sections 6, 8, 10).

A link is good when its item exists for that purpose, is unused, is still the user's current link
for the purpose (``user.links[purpose]``; suspension, deletion, a newer link or a password change
remove it), is bound to the address it was issued for, and has not expired. Expiry is checked
here, never left to DynamoDB TTL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from usermgmt.errors import (
    DependencyUnavailable,
    IdpError,
    IdpPasswordTooWeak,
    IdpRejected,
    IdpUnavailable,
    LinkGone,
    OutcomeUnknown,
    PasswordTooWeak,
)
from usermgmt.links import VERIFY, address_hash, hash_token, plausible_token
from usermgmt.models import ACTIVE, User
from usermgmt.observability import count, logger
from usermgmt.ports import IdentityProvider
from usermgmt.store import Link, UserStore

INVALID = "link_invalid"
USED = "link_used"
SUPERSEDED = "link_superseded"
EXPIRED = "link_expired"

MESSAGES = {
    INVALID: "This link is not valid.",
    USED: "This link has already been used.",
    SUPERSEDED: "A newer link was sent; only the newest one works.",
    EXPIRED: "This link has expired.",
}


def gone(code: str, *, can_renew: bool = False) -> LinkGone:
    return LinkGone(code, MESSAGES[code], can_renew=can_renew)


@dataclass(frozen=True)
class CheckedLink:
    link: Link
    user: User


def verify_target(user: User) -> str | None:
    """The address a verification link confirms: the pending one, else an unverified current one."""
    if user.pending_email:
        return user.pending_email
    return None if user.email_verified else user.email


def check(store: UserStore, token: str, purpose: str, now: float, *, pepper: str = "") -> CheckedLink:
    """Raise ``LinkGone`` with the right code, or return the link and its (ACTIVE) user."""
    if not plausible_token(token):
        raise gone(INVALID)
    link = store.get_link(hash_token(token))
    if link is None or link.purpose != purpose:
        raise gone(INVALID)
    user = store.get_user(link.user_id)
    if user is None or user.status != ACTIVE:
        raise gone(INVALID)
    if link.status == "used":
        raise gone(USED)
    if user.links.get(purpose) != link.token_hash:
        raise gone(SUPERSEDED)
    if purpose == VERIFY:
        target = verify_target(user)
        if target is None or link.address_hash != address_hash(target, pepper):
            raise gone(SUPERSEDED)
    if link.expires_at <= now:
        raise gone(EXPIRED, can_renew=True)
    return CheckedLink(link, user)


def renewable(
    store: UserStore, token: str, purpose: str, now: float, *, pepper: str = ""
) -> CheckedLink | None:
    """The link and user a renew request may send a fresh link for, or None (nothing is sent).

    A link can be renewed when it is an unused link of ``purpose`` whose user is ACTIVE, it expired or
    was superseded by a newer one, and (for a verification link) the address it was issued for is
    still the one waiting for verification.
    """
    if not plausible_token(token):
        return None
    link = store.get_link(hash_token(token))
    if link is None or link.purpose != purpose or link.status != "active":
        return None
    user = store.get_user(link.user_id)
    if user is None or user.status != ACTIVE:
        return None
    if purpose == VERIFY:
        target = verify_target(user)
        if target is None or link.address_hash != address_hash(target, pepper):
            return None  # confirmed, cancelled or replaced by a change to another address
    if link.expires_at > now and user.links.get(purpose) == link.token_hash:
        return None  # the link still works: nothing to renew
    return CheckedLink(link, user)


def set_password_holding_claim(
    idp: IdentityProvider,
    store: UserStore,
    user_id: str,
    password: str,
    token_hash: str,
    claim: str,
    *,
    first: Callable[[], None] | None = None,
    unknown_on_timeout: bool = False,
) -> None:
    """Set ``password`` in Auth0 while this request holds the link's claim (a password reset, a new
    user's invitation): one translation of Auth0's answers for both.

    Every refusal gives the claim back, so the person can use the link again: a password Auth0 refuses
    is ``PasswordTooWeak`` (400, its other rules too), an outage ``DependencyUnavailable`` (503). With
    ``unknown_on_timeout`` a timeout keeps the claim (Auth0 may have set the password; sync-identity
    finishes the change once the claim lapses) and raises ``OutcomeUnknown``. ``first`` runs before the
    call, under the same rules (an invited user's Auth0 creation).
    """
    try:
        if first is not None:
            first()
        idp.set_password(user_id, password)
    except IdpUnavailable as exc:
        if unknown_on_timeout and exc.reason == "timeout":
            logger.warning("password change outcome unknown", extra={"error_type": type(exc).__name__})
            count("PasswordOutcomeUnknown")
            raise OutcomeUnknown(
                "The password change could not be confirmed. Try signing in with the new password;"
                " if it does not work, request a new link in a minute."
            ) from None
        store.release_link_claim(token_hash, claim)
        raise DependencyUnavailable(retry_after=math.ceil(exc.retry_after or 5)) from None
    except IdpPasswordTooWeak:
        store.release_link_claim(token_hash, claim)
        count("PasswordRejected")
        raise PasswordTooWeak() from None
    except IdpRejected as exc:
        store.release_link_claim(token_hash, claim)
        logger.warning("password not set", extra={"error_type": type(exc).__name__, "status": exc.status})
        if exc.status == 400:  # Auth0's other password rules (history, dictionary, same as before)
            raise PasswordTooWeak("The password was not accepted; choose a different one") from None
        raise DependencyUnavailable() from None
    except IdpError as exc:
        store.release_link_claim(token_hash, claim)
        logger.warning("password not set", extra={"error_type": type(exc).__name__})
        raise DependencyUnavailable() from None
    except BaseException:
        store.release_link_claim(token_hash, claim)
        raise
