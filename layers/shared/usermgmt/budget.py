"""The time an invocation has left (security notes L11): a request answers before it is cut off.

API Gateway gives up on an integration after 30 s and Lambda ends a function at its timeout (29 s for
the HTTP functions); either leaves the caller a bare error instead of problem+json, possibly after a
commit. So nothing waits longer than the invocation can afford: every call to a dependency that may
wait starts only when its worst case still fits (``allows``) and an answer can still be written after
it (``ANSWER_RESERVE_SECONDS``). What does not fit is not started:

* before the commit (a read, the commit, a re-plan after a conflict): the request answers 503
  ``dependency_unavailable`` and nothing was changed;
* after the commit (the inline Auth0 push, erasing rate counters, emails): the change stands and the
  answer says ``idpSync: "pending"``; the sync marker is due from the commit, so sync-identity pushes
  it once the request's lease lapses. An email that did not fit counts ``EmailFailed``.

The remaining time comes from the Lambda context (``get_remaining_time_in_millis``), set for the
invocation by ``observability.lambda_entry``; outside an invocation (scripts, the bench) there is no
limit. Tests inject it through the context they pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# What an invocation keeps for writing its answer (render, log, flush metrics).
ANSWER_RESERVE_SECONDS = 1.0
# The AWS SDK clients of ``container.aws_client``: the worst case of one call is every attempt timing
# out at connect and read, plus the backoff between attempts (standard mode: at most 1 s before the
# second attempt).
AWS_CONNECT_TIMEOUT_SECONDS = 1.0
AWS_READ_TIMEOUT_SECONDS = 2.0
AWS_MAX_ATTEMPTS = 2
AWS_CALL_SECONDS = AWS_MAX_ATTEMPTS * (AWS_CONNECT_TIMEOUT_SECONDS + AWS_READ_TIMEOUT_SECONDS) + 1.0

_remaining_ms: ContextVar[Callable[[], int] | None] = ContextVar("usermgmt_remaining_ms", default=None)


@contextmanager
def invocation(context: Any) -> Iterator[None]:
    """The budget of one invocation: ``context.get_remaining_time_in_millis`` (none without it)."""
    token = _remaining_ms.set(getattr(context, "get_remaining_time_in_millis", None))
    try:
        yield
    finally:
        _remaining_ms.reset(token)


def left() -> float:
    """Seconds the invocation may still spend before it must answer (``inf`` outside one)."""
    remaining = _remaining_ms.get()
    if remaining is None:
        return math.inf
    return remaining() / 1000 - ANSWER_RESERVE_SECONDS


def allows(seconds: float) -> bool:
    """True when a wait of up to ``seconds`` still leaves time to answer."""
    return left() >= seconds
