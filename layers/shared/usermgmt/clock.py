"""Time, injectable for tests."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> float:
        return time.time()


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def revocation_second(now: float) -> int:
    """``tokensValidAfter`` for a revocation at ``now``: the next whole second.

    Token ``iat`` has whole seconds, so every token issued up to and including the second of the
    revocation is refused, also when ``now`` falls exactly on a second (where rounding up would let
    a token of that very second through).
    """
    return math.floor(now) + 1
