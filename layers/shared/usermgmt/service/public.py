"""Public requests answered before their account work (security notes M4, AUTH-8).

``POST /password-reset`` and the three renew routes (reset, verification and invitation links) answer
every caller alike in status, body and headers; answering alike in *time* needs the request to do the
same work whatever the address or token names. So the request does only what does not depend on an
account (the per-IP limit, reading the body, one ``SendMessage``) and answers 202; the public-requests
function, fed by that queue, does the rest (the per-address limit, the lookups, the link and the email)
with the same services as before.

A message is ``{"kind", "requestId", ...}``: ``reset`` with ``email``; ``renew`` with ``purpose``
(``reset``, ``verify``, ``invite``) and ``token``. A queue outage leaves the answer unchanged (logged and
counted: the person can ask again), as a failed send did before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from usermgmt.observability import count, logger
from usermgmt.ports import JobQueue, QueueUnavailable

RESET, RENEW = "reset", "renew"
RENEW_PURPOSES = ("reset", "verify", "invite")
MAX_TOKEN_CHARS = 200  # a real token is 43 characters; anything longer names no link


class PublicRequests:
    def __init__(
        self,
        queue: JobQueue,
        request_reset: Callable[[str, str, bool], None],
        renewers: dict[str, Callable[[str, str, bool], None]],
    ) -> None:
        self.queue = queue
        self.request_reset = request_reset
        self.renewers = renewers

    # ------------------------------------------------------------------------------ in the request
    def accept_reset(self, email: str | None, request_id: str) -> None:
        """``POST /password-reset`` with its address (None: a body without one, nothing to do)."""
        if email is None:
            count("ResetRequestIgnored")
            return
        self._queue({"kind": RESET, "email": email, "requestId": request_id})

    def accept_renew(self, purpose: str, token: str, request_id: str) -> None:
        """A renew route's token, whatever it is (checked after the answer)."""
        self._queue(
            {"kind": RENEW, "purpose": purpose, "token": token[:MAX_TOKEN_CHARS], "requestId": request_id}
        )

    def _queue(self, message: dict[str, Any]) -> None:
        try:
            self.queue.send([message])
        except QueueUnavailable as exc:
            logger.warning("public request not queued", extra={"error_type": type(exc).__name__})
            count("PublicRequestNotQueued")

    # ------------------------------------------------------------------------------ after the answer
    def handle(self, message: dict[str, Any], retry: bool = False) -> None:
        """One queued request; raises for what should be retried (a malformed message is dropped).

        ``retry``: the message was delivered before (its per-address slot is taken already: a failing
        dependency must not spend the person's budget).
        """
        kind, request_id = message.get("kind"), str(message.get("requestId") or "")
        if kind == RESET and isinstance(message.get("email"), str):
            self.request_reset(str(message["email"]), request_id, retry)
        elif (
            kind == RENEW
            and message.get("purpose") in RENEW_PURPOSES
            and isinstance(message.get("token"), str)
        ):
            self.renewers[str(message["purpose"])](str(message["token"]), request_id, retry)
        else:
            logger.warning("malformed public request dropped")
            count("PublicRequestMalformed")
