"""Storefront events from EventBridge: telling them apart, validating them, running each one once.

Events are untrusted input (security notes AUTH-13): the rule pins ``source`` and ``detail-type``;
here the ``detail`` is validated before anything is written, and a malformed event raises
``MalformedEvent`` so that it ends in the dead-letter queue (after Lambda's async retries) instead of
being dropped or half-processed.

Deduplication uses Powertools idempotency (DynamoDB persistence on the users table, keyed on the
event ``id``). The persistence layer is built by the composition root on first use, never at import.
The idempotency record holds a hash of the event id and the small result the handler returns; never
personal data. Powertools deletes the record when the handler raises, so a failed event is retried
in full; every step of a handler must therefore be safe to repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from usermgmt import container
from usermgmt.errors import MalformedEvent
from usermgmt.models import normalize_email
from usermgmt.observability import count, logger

# correlation id of a function serving both kinds: API Gateway's request id, else the event id
CORRELATION_PATH = "requestContext.requestId || id"
MAX_USER_ID_CHARS = 256

__all__ = [
    "CORRELATION_PATH",
    "EventRequest",
    "MalformedEvent",
    "SesFeedback",
    "detail_email",
    "detail_of",
    "handle_ses_feedback",
    "handle_storefront_event",
    "http_or_storefront",
    "outbox_stream_users",
    "parse_user_or_email",
    "run_once",
]


def is_http(event: Mapping[str, Any]) -> bool:
    """An API Gateway (payload 2.0) request."""
    return "requestContext" in event


def is_eventbridge(event: Mapping[str, Any]) -> bool:
    """An event delivered by an EventBridge rule."""
    return "detail-type" in event and "source" in event


def event_id_of(event: Mapping[str, Any]) -> str:
    """The event's ``id`` (what deduplication keys on); else ``MalformedEvent``."""
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise MalformedEvent("the event has no id")
    return event_id


def detail_of(event: Mapping[str, Any], detail_type: str) -> dict[str, Any]:
    """The ``detail`` object of an event of ``detail_type`` that has an ``id``; else ``MalformedEvent``."""
    if event.get("detail-type") != detail_type:
        raise MalformedEvent("unexpected detail-type")
    event_id_of(event)
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise MalformedEvent("detail is not an object")
    return detail


def detail_email(detail: Mapping[str, Any], field: str = "email") -> str:
    """A required, valid email address from ``detail`` (normalised); else ``MalformedEvent``."""
    raw = detail.get(field)
    if not isinstance(raw, str):
        raise MalformedEvent(f"detail.{field} is missing or not a string")
    try:
        return normalize_email(raw)
    except ValueError:
        raise MalformedEvent(f"detail.{field} is not a valid email address") from None


@dataclass(frozen=True)
class EventRequest:
    """A validated ``{"userId"}`` or ``{"email"}`` detail: exactly one of the two is set."""

    user_id: str | None = None
    email: str | None = None


def parse_user_or_email(detail: Mapping[str, Any]) -> EventRequest:
    """``{"userId"}`` or ``{"email"}`` (other keys are ignored); else ``MalformedEvent``.

    The exception's message names the problem, never the values (it is logged).
    """
    has_id, has_email = "userId" in detail, "email" in detail
    if has_id == has_email:
        raise MalformedEvent("detail must name exactly one of userId and email")
    if has_email:
        return EventRequest(email=detail_email(detail))
    user_id = detail["userId"]
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_CHARS:
        raise MalformedEvent("detail.userId must be a non-empty string")
    if not user_id.isprintable() or user_id != user_id.strip():
        raise MalformedEvent("detail.userId holds characters a user id never has")
    return EventRequest(user_id=user_id)


def run_once(
    event: Mapping[str, Any], context: Any, name: str, process: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``process`` once per event ``id``; a repeat gets the stored result without running it.

    ``name`` keeps the records of different handlers apart (e.g. ``"PasswordResetRequested"``).
    ``process`` must return a small JSON object without personal data: it is stored as the record.
    A duplicate arriving while the first is still running raises Powertools'
    ``IdempotencyAlreadyInProgressError`` (the event is retried later).
    """
    from aws_lambda_powertools.utilities.idempotency import idempotent_function

    event_id = event_id_of(event)
    persistence, config = container.get().idempotency
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    def _run(*, event: dict[str, Any]) -> dict[str, Any]:
        return process()

    runner = idempotent_function(
        data_keyword_argument="event",
        persistence_store=persistence,
        config=config,
        key_prefix=f"event.{name}",
    )(_run)
    result: dict[str, Any] = runner(event={"id": event_id})
    return result


def handle_storefront_event[Request](
    event: Mapping[str, Any],
    context: Any,
    detail_type: str,
    parse: Callable[[dict[str, Any]], Request],
    act: Callable[[Request, str], object],
) -> dict[str, Any]:
    """Validate a storefront event, then ``act(request, event_id)`` once per event id.

    A malformed event writes nothing and raises, so it ends in the dead-letter queue once (after
    Lambda's retries). The stored result is the same constant for every outcome: it says nothing
    about the account.
    """
    try:
        request = parse(detail_of(event, detail_type))
    except MalformedEvent as exc:
        logger.warning("malformed storefront event", extra={"reason": str(exc)})
        count("EventMalformed")
        raise
    event_id = event_id_of(event)

    def process() -> dict[str, Any]:
        act(request, event_id)
        return {"result": "accepted"}

    return run_once(event, context, detail_type, process)


def http_or_storefront(
    event: dict[str, Any],
    context: Any,
    resolve: Callable[[dict[str, Any], Any], dict[str, Any]],
    on_event: Callable[[dict[str, Any], Any], dict[str, Any]],
) -> dict[str, Any]:
    """Route an invocation of a function that serves HTTP routes and a storefront event."""
    if is_http(event):
        return resolve(event, context)
    if is_eventbridge(event):
        return on_event(event, context)
    raise MalformedEvent("neither an HTTP request nor an EventBridge event")


# ------------------------------------------------------------------------------------------------
# SES feedback (SPEC section 16) and the table's stream (SPEC section 15)
# ------------------------------------------------------------------------------------------------
SES_SOURCE = "aws.ses"
SES_DETAIL_TYPES = ("Email Bounced", "Email Complaint Received")


@dataclass(frozen=True)
class SesFeedback:
    """What an SES event means for the recipients: ``state`` None when it changes nothing."""

    state: str | None
    addresses: tuple[str, ...]


def parse_ses_feedback(detail: Mapping[str, Any]) -> SesFeedback:
    """A bounce or complaint as SES publishes it to EventBridge; else ``MalformedEvent``."""
    kind = detail.get("eventType")
    if kind == "Bounce":
        section, recipients = detail.get("bounce"), "bouncedRecipients"
    elif kind == "Complaint":
        section, recipients = detail.get("complaint"), "complainedRecipients"
    else:
        raise MalformedEvent("detail.eventType is neither Bounce nor Complaint")
    if not isinstance(section, dict) or not isinstance(section.get(recipients), list):
        raise MalformedEvent(f"detail has no {recipients}")
    addresses: list[str] = []
    for recipient in section[recipients]:
        raw = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        try:
            addresses.append(normalize_email(str(raw)))
        except ValueError:
            continue  # a display form SES could not parse: nobody's login email
    if kind == "Complaint":
        return SesFeedback("complained", tuple(addresses))
    permanent = section.get("bounceType") == "Permanent"
    return SesFeedback("bounced" if permanent else None, tuple(addresses))


def handle_ses_feedback(
    event: Mapping[str, Any], context: Any, act: Callable[[str, tuple[str, ...], str], object]
) -> dict[str, Any]:
    """Validate an SES bounce or complaint event, then ``act(state, addresses, event_id)`` once per id."""
    try:
        if event.get("source") != SES_SOURCE or event.get("detail-type") not in SES_DETAIL_TYPES:
            raise MalformedEvent("not an SES bounce or complaint")
        feedback = parse_ses_feedback(detail_of(event, str(event["detail-type"])))
    except MalformedEvent as exc:
        logger.warning("malformed ses event", extra={"reason": str(exc)})
        count("EventMalformed")
        raise
    event_id = event_id_of(event)

    def process() -> dict[str, Any]:
        if feedback.state is not None:
            act(feedback.state, feedback.addresses, event_id)
        return {"result": "accepted"}

    return run_once(event, context, "SesFeedback", process)


def outbox_stream_users(event: Mapping[str, Any]) -> list[str] | None:
    """The users of the outbox items a DynamoDB stream batch announces (None: not a stream batch)."""
    records = event.get("Records")
    if not isinstance(records, list):
        return None
    users: list[str] = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:dynamodb":
            continue
        pk = ((record.get("dynamodb") or {}).get("Keys") or {}).get("pk") or {}
        value = pk.get("S") if isinstance(pk, dict) else None
        if isinstance(value, str) and value.startswith("OUTBOX#"):
            users.append(value.removeprefix("OUTBOX#"))
    return list(dict.fromkeys(users))


def handle_sqs_batch(
    event: Mapping[str, Any], handle: Callable[[dict[str, Any], int], None], *, metric: str, what: str
) -> dict[str, Any]:
    """An SQS batch as Lambda's event source mapping delivers it, with partial batch failures.

    Each record's body must be a JSON object, given to ``handle`` with how often SQS has delivered it
    (``ApproximateReceiveCount``); a malformed one is dropped (``<metric>Malformed``), one whose
    ``handle`` raises is reported in ``batchItemFailures`` (``<metric>Retried``) and comes back after
    the visibility timeout, then goes to the dead-letter queue.
    """
    import json

    failures: list[dict[str, str]] = []
    for record in event.get("Records") or []:
        message_id = str(record.get("messageId") or "")
        try:
            body = json.loads(record.get("body") or "{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            logger.warning(f"malformed {what} dropped", extra={"messageId": message_id})
            count(f"{metric}Malformed")
            continue
        received = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        try:
            handle(body, received)
        except Exception as exc:  # comes back after the visibility timeout
            logger.warning(f"{what} not finished", extra={"error_type": type(exc).__name__})
            count(f"{metric}Retried")
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures}
