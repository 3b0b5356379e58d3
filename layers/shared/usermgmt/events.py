"""Storefront events from EventBridge: telling them apart, validating them, running each one once.

Events are untrusted input (security notes AUTH-13): the rule pins ``source`` and ``detail-type``;
here the ``detail`` is validated before anything is written, and a malformed event raises
``MalformedEvent`` so that it ends in the dead-letter queue (after Lambda's async retries) instead of
being dropped or half-processed.

Deduplication uses Powertools idempotency (DynamoDB persistence on the users table, keyed on the
event ``id``). The persistence layer is built on first use from the settings, never at import. The
idempotency record holds a hash of the event id and the small result the handler returns; never
personal data. Powertools deletes the record when the handler raises, so a failed event is retried
in full; every step of a handler must therefore be safe to repeat.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from usermgmt import container as container_module
from usermgmt.models import normalize_email
from usermgmt.observability import count, logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

# correlation id of a function serving both kinds: API Gateway's request id, else the event id
CORRELATION_PATH = "requestContext.requestId || id"
IDEMPOTENCY_SECONDS = 86400  # longer than any retry window (EventBridge 1 h here, Lambda async 6 h)

_persistence: weakref.WeakKeyDictionary[container_module.Container, DynamoDBPersistenceLayer] = (
    weakref.WeakKeyDictionary()
)
_config: list[IdempotencyConfig] = []


class MalformedEvent(Exception):
    """The event cannot be processed as sent; retrying does not help. The message holds no personal data."""


def is_http(event: Mapping[str, Any]) -> bool:
    """An API Gateway (payload 2.0) request."""
    return "requestContext" in event


def is_eventbridge(event: Mapping[str, Any]) -> bool:
    """An event delivered by an EventBridge rule."""
    return "detail-type" in event and "source" in event


def detail_of(event: Mapping[str, Any], detail_type: str) -> dict[str, Any]:
    """The ``detail`` object of an event of ``detail_type`` that has an ``id``; else ``MalformedEvent``."""
    if event.get("detail-type") != detail_type:
        raise MalformedEvent("unexpected detail-type")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise MalformedEvent("the event has no id")
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


def idempotency_config() -> IdempotencyConfig:
    """One config per container process (Powertools keeps the Lambda context on it)."""
    if not _config:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

        _config.append(IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=IDEMPOTENCY_SECONDS))
    return _config[0]


def persistence_layer(c: container_module.Container | None = None) -> DynamoDBPersistenceLayer:
    """The idempotency store on the users table (``pk``/``sk``, DynamoDB TTL on ``ttl``), built once."""
    c = c or container_module.get()
    layer = _persistence.get(c)
    if layer is None:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

        layer = DynamoDBPersistenceLayer(
            table_name=c.settings.table_name,
            key_attr="pk",
            sort_key_attr="sk",
            expiry_attr="ttl",
            boto3_client=container_module.aws_client("dynamodb"),
        )
        _persistence[c] = layer
    return layer


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

    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise MalformedEvent("the event has no id")
    config = idempotency_config()
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    def _run(*, event: dict[str, Any]) -> dict[str, Any]:
        return process()

    runner = idempotent_function(
        data_keyword_argument="event",
        persistence_store=persistence_layer(),
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
    event_id = str(event["id"])

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
