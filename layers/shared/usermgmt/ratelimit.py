"""Sliding-window rate limits kept in DynamoDB (SPEC section 8; security notes AUTH-9, H1, L2, L4, L5).

Each (scope, key) has one counter item per window of ``window_seconds``, bumped by one atomic ``ADD``
that also answers the new count: taking a slot and counting it are the same call, so there is no
"peek" a concurrent request could slip past. The limit is checked on a *sliding* window: the
previous window's count weighs by the share of it that still lies within the last ``window_seconds``
(``previous * (1 - elapsed) + current``), so a burst at the end of one window and another at the start
of the next cannot pass twice the limit (a fixed window lets 2x through at the boundary, L2). The
estimate assumes the previous window's hits were spread evenly; it is never more lenient than twice
the limit and, for bursts, errs towards refusing.

Every hit counts, the refused ones too: whoever keeps hammering stays refused. The raw key (an email
address, an IP address, a user id) is never stored: the item is named by an HMAC-SHA-256 of
``scope:key`` under the ``HASH_PEPPER`` setting (a plain SHA-256 when it is empty, as in local runs),
so a table copy cannot be searched for a guessed address (L15). Items expire through DynamoDB TTL
two windows after their window ends.

Call ``take`` only where the limited thing happens (for the per-address limits: right before a link
is issued and sent), whatever the entry point.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Callable
from typing import Protocol

# Scopes of the password-reset limits (SPEC section 8).
RESET_PER_ADDRESS = "reset-address"  # reset emails per address: public route, storefront event, renew
RESET_PER_ADDRESS_AUTHENTICATED = "reset-address-auth"  # administrator and /me resets: their own budget
RESET_PER_IP = "reset-ip"  # POST /password-reset and POST /password-reset/{token}/renew per source IP
# Scopes of the verification limits (security notes H1, L5): every verification email and every start
# of an email change counts against the user it is for and against the address it goes to.
VERIFY_PER_USER = "verify-user"
VERIFY_PER_ADDRESS = "verify-address"
# The scopes whose counters are named after a person (an address of theirs, or their user id): a
# deleted user's counters in these are deleted with them (``personal_counters``). Per-IP scopes are not.
ADDRESS_SCOPES = (RESET_PER_ADDRESS, RESET_PER_ADDRESS_AUTHENTICATED, VERIFY_PER_ADDRESS, "invite-address")
USER_SCOPES = (VERIFY_PER_USER,)


class CounterStore(Protocol):
    def incr_counter(self, counter_key: str, ttl: int) -> int:
        """Add one to the counter and return the new count."""
        ...

    def read_counter(self, counter_key: str) -> int:
        """The counter's count (0 when there is none)."""
        ...


def client_network(source_ip: str) -> str:
    """What a per-IP limit counts: the address itself for IPv4, its /64 for IPv6 (one subscriber gets
    a whole /64 and can use any address in it, so counting addresses would let one client pass the
    limit 2**64 times); unparsable or missing: one shared bucket."""
    try:
        address = ipaddress.ip_address(source_ip.strip())
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def counter_digest(scope: str, key: str, pepper: str = "") -> str:
    """The stored name of a key: keys are compared case-insensitively and never stored in clear."""
    message = f"{scope}:{key.strip().lower()}".encode()
    if pepper:
        return hmac.new(pepper.encode(), message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


def personal_counters(
    user_id: str, addresses: list[str], *, window_seconds: int, pepper: str, now: float
) -> list[str]:
    """The names of every counter of ``user_id`` and ``addresses`` that can still exist at ``now``: a
    counter lives until two windows after its own (its TTL), so three windows per scope and key."""
    w = int(window_seconds)
    start = int(now // w) * w
    keys = [(scope, a) for scope in ADDRESS_SCOPES for a in addresses] + [(s, user_id) for s in USER_SCOPES]
    return [
        f"{scope}#{counter_digest(scope, key, pepper)}#{start - n * w}"
        for scope, key in keys
        for n in range(3)
    ]


class RateLimiter:
    def __init__(self, store: CounterStore, window_seconds: int, pepper: str = "") -> None:
        if window_seconds < 1:
            raise ValueError("window_seconds must be at least 1")
        self._store = store
        self._window = int(window_seconds)
        self._pepper = pepper

    @property
    def window_seconds(self) -> int:
        return self._window

    def take(self, scope: str, key: str, limit: int, now: float) -> tuple[bool, int]:
        """Count one hit of ``key`` in ``scope``; ``(allowed, retry_after)``.

        ``allowed`` is False once the hits of the last ``window_seconds`` (sliding) exceed ``limit``.
        ``retry_after`` is the whole seconds until one more hit would be allowed (at least 1), for a
        ``Retry-After`` header.
        """
        w = self._window
        start = int(now // w) * w
        digest = counter_digest(scope, key, self._pepper)
        current = self._store.incr_counter(f"{scope}#{digest}#{start}", ttl=start + 3 * w)
        previous = self._store.read_counter(f"{scope}#{digest}#{start - w}")
        elapsed = (now - start) / w
        allowed = previous * (1 - elapsed) + current <= limit
        return allowed, self._retry_after(limit, previous, current, start, now)

    def take_ip(self, scope: str, source_ip: str, limit: int, now: float) -> tuple[bool, int]:
        """``take`` for the client's network (``client_network``) rather than its exact address."""
        return self.take(scope, client_network(source_ip), limit, now)

    def _retry_after(self, limit: int, previous: int, current: int, start: int, now: float) -> int:
        w = self._window
        if current + 1 <= limit:  # later in this window, once enough of the previous one slid out
            share = 1 - (limit - current - 1) / previous if previous else 0.0
            at = start + max(0.0, share) * w
        else:  # in the next window, once enough of this one slid out
            share = 1 - (limit - 1) / current if current else 0.0
            at = start + w + max(0.0, share) * w
        return max(1, math.ceil(at - now))

    def once_per_request(self) -> Callable[[str, str, int, float], tuple[bool, int]]:
        """``take`` counting each (scope, key) once: a re-plan after a write conflict takes no second slot."""
        taken: dict[tuple[str, str], tuple[bool, int]] = {}

        def take(scope: str, key: str, limit: int, now: float) -> tuple[bool, int]:
            if (scope, key) not in taken:
                taken[(scope, key)] = self.take(scope, key, limit, now)
            return taken[(scope, key)]

        return take
