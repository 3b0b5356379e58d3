"""Expiring single-use links (SPEC section 10): 32 random bytes, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

RESET = "reset"
VERIFY = "verify"
CANCEL = "cancel"
INVITE = "invite"

_PATHS = {
    RESET: "/password-reset/{token}",
    VERIFY: "/email-verification/{token}",
    CANCEL: "/email-change/{token}/cancel",
    INVITE: "/invitations/{token}",
}


def new_token() -> tuple[str, str]:
    """A fresh token and its hash. Only the hash is ever stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def address_hash(email: str, pepper: str = "") -> str:
    """Binds a link to an address without storing the address on the link: an HMAC-SHA-256 under the
    ``HASH_PEPPER`` setting (a plain SHA-256 when it is empty, as in local runs), so a table copy cannot
    be searched for a guessed address (security notes L15)."""
    message = b"address:" + email.lower().encode()
    if pepper:
        return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def link_url(base_url: str, purpose: str, token: str) -> str:
    return base_url.rstrip("/") + _PATHS[purpose].format(token=token)


def plausible_token(token: str) -> bool:
    return 20 <= len(token) <= 100 and all(c.isalnum() or c in "-_" for c in token)
