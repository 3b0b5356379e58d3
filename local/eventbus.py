"""EventBridge as the template wires it: content patterns, PutEvents delivery to rule targets, the rules'
dead-letter queues, and schedules run on demand.

``POST /_local/events`` takes a PutEvents entry, builds the event a rule target receives and invokes
every function whose ``EventBridgeRule`` matches, at once. A target that fails is treated as Lambda's
async retries would end: the event goes once to the rule's dead-letter queue. ``POST
/_local/schedules/{FunctionLogicalId}`` runs a ``Schedule``/``ScheduleV2`` function now.
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from local.lambda_runtime import error_name
from local.payload import json_response
from local.template import EventRule, Function, Stack

__all__ = ["EventBus", "event_time", "matches_pattern"]

log = logging.getLogger("local.eventbus")


def event_time() -> str:
    """EventBridge's ``time``: RFC 3339 UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches_pattern(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge content filtering (the subset this project needs, and a little more).

    Leaves are arrays of alternatives: literal values (equality; an array value in the event matches when
    any element matches) or ``{"prefix"}``, ``{"suffix"}``, ``{"exists"}``, ``{"anything-but"}``,
    ``{"equals-ignore-case"}``, ``{"numeric": [op, value, ...]}``. Nested objects recurse; ``$or`` works.
    """
    for key, expected in pattern.items():
        if key == "$or":
            if not any(matches_pattern(p, event) for p in expected):
                return False
            continue
        present = key in event
        actual = event.get(key)
        if isinstance(expected, Mapping):
            if not present or not isinstance(actual, Mapping) or not matches_pattern(expected, actual):
                return False
            continue
        if not isinstance(expected, list):
            expected = [expected]
        if not any(_matches_leaf(rule, present, actual) for rule in expected):
            return False
    return True


def _matches_leaf(rule: Any, present: bool, actual: Any) -> bool:
    if isinstance(rule, Mapping):
        if "exists" in rule:
            return bool(rule["exists"]) == (present and actual is not None)
        if not present:
            return False
        values = actual if isinstance(actual, list) else [actual]
        return any(_matches_operator(rule, v) for v in values)
    if not present:
        return False
    values = actual if isinstance(actual, list) else [actual]
    return any(_same(rule, v) for v in values)


def _same(rule: Any, value: Any) -> bool:
    if isinstance(rule, bool) or isinstance(value, bool):
        return rule is value
    if isinstance(rule, int | float) and isinstance(value, int | float):
        return float(rule) == float(value)
    return bool(rule == value)


def _matches_operator(rule: Mapping[str, Any], value: Any) -> bool:
    if "prefix" in rule:
        prefix = rule["prefix"]
        if isinstance(prefix, Mapping):
            text = prefix.get("equals-ignore-case", "")
            return isinstance(value, str) and value.lower().startswith(str(text).lower())
        return isinstance(value, str) and value.startswith(str(prefix))
    if "suffix" in rule:
        suffix = rule["suffix"]
        if isinstance(suffix, Mapping):
            text = suffix.get("equals-ignore-case", "")
            return isinstance(value, str) and value.lower().endswith(str(text).lower())
        return isinstance(value, str) and value.endswith(str(suffix))
    if "equals-ignore-case" in rule:
        return isinstance(value, str) and value.lower() == str(rule["equals-ignore-case"]).lower()
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        if isinstance(excluded, Mapping):
            return not _matches_operator(excluded, value)
        excluded_values = excluded if isinstance(excluded, list) else [excluded]
        return not any(_same(e, value) for e in excluded_values)
    if "numeric" in rule:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        terms = list(rule["numeric"])
        checks: dict[str, Callable[[float, float], bool]] = {
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            "=": lambda a, b: a == b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        for i in range(0, len(terms) - 1, 2):
            operator, bound = str(terms[i]), float(terms[i + 1])
            if operator not in checks or not checks[operator](float(value), bound):
                return False
        return True
    return False


def _input_path(event: Mapping[str, Any], path: str) -> Any:
    """The simple JSONPath forms EventBridge's InputPath takes (``$``, ``$.detail``, ``$.detail.a``)."""
    if path in ("$", ""):
        return event
    value: Any = event
    for part in path.removeprefix("$.").split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class EventBus:
    """Delivers events and schedules of ``stack`` through ``invoke(logical_id, event)``.

    ``aws`` is a factory ``service -> boto3 client`` (used for the dead-letter queues).
    """

    def __init__(self, stack: Stack, invoke: Callable[[str, Any], Any], aws: Callable[[str], Any]) -> None:
        self.stack = stack
        self._invoke = invoke
        self._aws = aws

    def events_response(self, request: Request) -> Response:
        try:
            entry = json.loads(request.get_data(cache=True) or b"null")
        except ValueError:
            return json_response({"message": "body is not JSON"}, 400)
        if not isinstance(entry, dict):
            return json_response({"message": "body must be an object"}, 400)
        try:
            event, bus = self.build_eventbridge_event(entry)
        except ValueError as exc:
            return json_response({"message": str(exc)}, 400)
        return json_response(self.put_event(event, bus))

    def build_eventbridge_event(self, entry: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """A PutEvents entry as the event a rule target receives, and the bus it names (None: any)."""
        source, detail_type = entry.get("Source"), entry.get("DetailType")
        if not isinstance(source, str) or not source or not isinstance(detail_type, str) or not detail_type:
            raise ValueError("Source and DetailType are required strings")
        detail: Any = entry.get("Detail", {})
        if isinstance(detail, str):
            try:
                detail = json.loads(detail) if detail.strip() else {}
            except ValueError:
                raise ValueError("Detail is not valid JSON") from None
        if not isinstance(detail, dict):
            raise ValueError("Detail must be a JSON object")
        bus = entry.get("EventBusName")
        if bus is not None:
            bus = str(bus).rsplit("/", 1)[-1] if str(bus).startswith("arn:") else str(bus)
        event = {
            "version": "0",
            "id": str(entry.get("Id") or uuid.uuid4()),
            "detail-type": detail_type,
            "source": source,
            "account": self.stack.account_id,
            "time": str(entry.get("Time") or event_time()),
            "region": self.stack.region,
            "resources": list(entry.get("Resources") or []),
            "detail": detail,
        }
        return event, bus

    def put_event(self, event: Mapping[str, Any], bus: str | None = None) -> dict[str, Any]:
        """Deliver ``event`` to every matching EventBridgeRule target now.

        ``bus`` None matches rules on any bus (handy by hand; PutEvents itself defaults to ``default``).
        A target that raises is treated as Lambda's async retries would end: the event goes once to the
        rule's dead-letter queue (when it has one); only the exception's type is reported.
        """
        matched: list[str] = []
        results: list[dict[str, Any]] = []
        for function in self.stack.functions.values():
            for rule in function.rules:
                if not rule.enabled or (bus is not None and rule.bus_name != bus):
                    continue
                if not matches_pattern(rule.pattern, event):
                    continue
                matched.append(function.logical_id)
                payload: Any = event
                if rule.input is not None:
                    payload = json.loads(rule.input)
                elif rule.input_path is not None:
                    payload = _input_path(event, rule.input_path)
                outcome: dict[str, Any] = {"function": function.logical_id, "rule": rule.event_id}
                try:
                    outcome["result"] = self._invoke(function.logical_id, payload)
                except Exception as exc:
                    log.error(
                        "%s (rule %s) failed:\n%s", function.logical_id, rule.event_id, traceback.format_exc()
                    )
                    outcome["error"] = error_name(exc)
                    outcome["deadLettered"] = self._dead_letter(function, rule, event, exc)
                results.append(outcome)
        return {"matched": matched, "results": results}

    def _dlq_url(self, rule: EventRule) -> str | None:
        if rule.dlq_logical_id and rule.dlq_logical_id in self.stack.queues:
            url = str(self.stack.resolver.ref(rule.dlq_logical_id))
            if url.startswith("http"):
                return url
        if rule.dlq_arn:
            name = rule.dlq_arn.rsplit(":", 1)[-1]
            return str(self._aws("sqs").get_queue_url(QueueName=name)["QueueUrl"])
        return None

    def _dead_letter(
        self, function: Function, rule: EventRule, event: Mapping[str, Any], exc: Exception
    ) -> bool:
        if not rule.dlq_arn:
            return False
        try:
            url = self._dlq_url(rule)
            if url is None:
                return False
            rule_arn = f"arn:aws:events:{self.stack.region}:{self.stack.account_id}:rule/"
            rule_arn += rule.rule_name if rule.bus_name == "default" else f"{rule.bus_name}/{rule.rule_name}"
            attributes = {
                "RULE_ARN": rule_arn,
                "TARGET_ARN": function.arn,
                "ERROR_CODE": "LambdaFunctionError",
                "ERROR_MESSAGE": type(exc).__name__,
                "EXHAUSTED_RETRY_CONDITION": "MaximumRetryAttempts",
                "RETRY_ATTEMPTS": str(
                    rule.maximum_retry_attempts if rule.maximum_retry_attempts is not None else 185
                ),
            }
            self._aws("sqs").send_message(
                QueueUrl=url,
                MessageBody=json.dumps(event),
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
                },
            )
        except Exception as send_error:  # the DLQ itself failed: say so, keep serving
            log.error("dead-lettering to %s failed: %s", rule.dlq_arn, type(send_error).__name__)
            return False
        return True

    def dead_letters(self) -> list[dict[str, Any]]:
        """Messages waiting in the rules' dead-letter queues (read, not deleted)."""
        seen_queues: set[str] = set()
        messages: list[dict[str, Any]] = []
        sqs = self._aws("sqs")
        for function in self.stack.functions.values():
            for rule in function.rules:
                if not rule.dlq_arn or rule.dlq_arn in seen_queues:
                    continue
                seen_queues.add(rule.dlq_arn)
                url = self._dlq_url(rule)
                if url is None:
                    continue
                ids: set[str] = set()
                for _ in range(20):
                    response = sqs.receive_message(
                        QueueUrl=url,
                        MaxNumberOfMessages=10,
                        VisibilityTimeout=0,
                        MessageAttributeNames=["All"],
                        WaitTimeSeconds=0,
                    )
                    fresh = [m for m in response.get("Messages", []) if m["MessageId"] not in ids]
                    if not fresh:
                        break
                    for message in fresh:
                        ids.add(message["MessageId"])
                        try:
                            body: Any = json.loads(message["Body"])
                        except ValueError:
                            body = message["Body"]
                        messages.append(
                            {
                                "queue": rule.dlq_arn.rsplit(":", 1)[-1],
                                "messageId": message["MessageId"],
                                "body": body,
                                "attributes": {
                                    k: v.get("StringValue")
                                    for k, v in (message.get("MessageAttributes") or {}).items()
                                },
                            }
                        )
        return messages

    def scheduled_event(self, function: Function) -> Any:
        schedule = function.schedules[0]
        if schedule.input is not None:
            return json.loads(schedule.input)
        rule_name = f"{self.stack.resolver.stack_name}-{function.logical_id}{schedule.event_id}"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.stack.account_id,
            "time": event_time(),
            "region": self.stack.region,
            "resources": [f"arn:aws:events:{self.stack.region}:{self.stack.account_id}:rule/{rule_name}"],
            "detail": {},
        }

    def run_schedule(self, logical_id: str) -> Any:
        """Invoke a scheduled function now (``KeyError`` when it has no Schedule/ScheduleV2 event)."""
        function = self.stack.functions.get(logical_id)
        if function is None or not function.schedules:
            raise KeyError(logical_id)
        return self._invoke(logical_id, self.scheduled_event(function))

    def schedule_response(self, logical_id: str) -> Response:
        function = self.stack.functions.get(logical_id)
        if function is None or not function.schedules:
            return json_response({"message": "no schedule"}, 404)
        try:
            result = self.run_schedule(logical_id)
        except Exception as exc:
            log.error("%s (schedule) failed:\n%s", logical_id, traceback.format_exc())
            return json_response({"error": error_name(exc)}, 500)
        return json_response(result)
