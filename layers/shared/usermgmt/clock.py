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


def whole_seconds_up(ts: float) -> int:
    """tokensValidAfter is whole seconds rounded up, so a token of the same second is refused."""
    return math.ceil(ts)
