"""Fixed-window rate limits kept in DynamoDB (SPEC section 8; security notes AUTH-9).

One counter item per (scope, key, window start), bumped by one atomic ``ADD`` that also answers the
new count: taking a slot and checking the limit are the same call, so there is no "peek" that a
concurrent request could slip past, and every entry point that counts against a scope counts
against the same item. The raw key (an email address, an IP address) is never stored: the item is
named by ``sha256(scope:key)``. Items expire through DynamoDB TTL one window after their window ends.

Call ``take`` only where the limited thing happens (for the per-address limit: right before a link
is issued and sent), whatever the entry point.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

# Scopes of the password-reset limits (SPEC section 8).
RESET_PER_ADDRESS = "reset-address"  # reset emails per address, across every entry point
RESET_PER_IP = "reset-ip"  # POST /password-reset and POST /password-reset/{token}/renew per source IP


class CounterStore(Protocol):
    def incr_counter(self, counter_key: str, ttl: int) -> int:
        """Add one to the counter and return the new count."""
        ...


def counter_digest(scope: str, key: str) -> str:
    """The stored name of a key: keys are compared case-insensitively and never stored in clear."""
    return hashlib.sha256(f"{scope}:{key.strip().lower()}".encode()).hexdigest()


class RateLimiter:
    def __init__(self, store: CounterStore, window_seconds: int) -> None:
        if window_seconds < 1:
            raise ValueError("window_seconds must be at least 1")
        self._store = store
        self._window = int(window_seconds)

    @property
    def window_seconds(self) -> int:
        return self._window

    def take(self, scope: str, key: str, limit: int, now: float) -> tuple[bool, int]:
        """Count one hit of ``key`` in ``scope``; ``(allowed, retry_after)``.

        ``allowed`` is False from the ``limit + 1``-th hit of the current window on. ``retry_after``
        is the whole seconds until the window ends (at least 1), for a ``Retry-After`` header.
        """
        start = int(now // self._window) * self._window
        end = start + self._window
        counter_key = f"{scope}#{counter_digest(scope, key)}#{start}"
        hits = self._store.incr_counter(counter_key, ttl=end + self._window)
        retry_after = max(1, math.ceil(end - now))
        return hits <= limit, retry_after
