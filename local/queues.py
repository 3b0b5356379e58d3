"""SQS event source mappings, run locally as Lambda runs them (the bulk jobs' queue and bulk-worker).

For each ``SQS`` event of a function in the template, ``ScalingConfig.MaximumConcurrency`` pollers
(default 2, Lambda's minimum) receive up to ``BatchSize`` messages from the local AWS's queue, invoke the
function with them in Lambda's SQS event shape, and delete the messages it finished: all of them, or,
with ``FunctionResponseTypes: [ReportBatchItemFailures]``, all but those named in ``batchItemFailures``
(a failed invocation finishes none). Messages not deleted come back once their visibility ends; the
queue's ``RedrivePolicy`` moves one that was received ``maxReceiveCount`` times to its dead-letter queue
(moto's SQS does that, as SQS does).

One local difference, on purpose: a message that failed is made visible again after
``retry_seconds`` (default 2) instead of the queue's whole visibility timeout (12 minutes for the bulk
queue), so a demo or a test sees a retry and a redrive in seconds. A poller that dies mid-batch leaves
its messages invisible for the queue's visibility timeout, as in AWS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.template import Stack, load_template

log = logging.getLogger("local.queues")


@dataclass(frozen=True)
class QueueSource:
    """An ``SQS`` event of a function: its queue and how Lambda would read it."""

    function: str  # logical id
    event_id: str
    queue: str  # logical id of the queue
    batch_size: int
    partial_failures: bool
    max_concurrency: int


def queue_sources(stack: Stack) -> list[QueueSource]:
    """The template's SQS event source mappings (``Queue: !GetAtt <Queue>.Arn``)."""
    raw = load_template(stack.path).get("Resources") or {}
    sources: list[QueueSource] = []
    for logical_id, resource in raw.items():
        if resource.get("Type") != "AWS::Serverless::Function" or logical_id not in stack.functions:
            continue
        for event_id, event in ((resource.get("Properties") or {}).get("Events") or {}).items():
            if event.get("Type") != "SQS":
                continue
            props = event.get("Properties") or {}
            target = (props.get("Queue") or {}).get("Fn::GetAtt")
            if not (isinstance(target, list) and len(target) == 2 and target[1] == "Arn"):
                raise ValueError(f"{logical_id}.{event_id}: Queue must be !GetAtt <Queue>.Arn locally")
            scaling = props.get("ScalingConfig") or {}
            concurrency = stack.resolver.resolve(scaling.get("MaximumConcurrency", 2))
            sources.append(
                QueueSource(
                    function=logical_id,
                    event_id=event_id,
                    queue=str(target[0]),
                    batch_size=int(stack.resolver.resolve(props.get("BatchSize", 10))),
                    partial_failures="ReportBatchItemFailures"
                    in [str(t) for t in props.get("FunctionResponseTypes") or []],
                    max_concurrency=max(1, int(concurrency)),
                )
            )
    return sources


def sqs_event(messages: list[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """Received messages as Lambda hands them to a function."""
    records = []
    for m in messages:
        body = str(m.get("Body", ""))
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": body,
                "attributes": dict(m.get("Attributes") or {}),
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 (SQS's own checksum)
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


class QueuePoller:
    def __init__(
        self,
        stack: Stack,
        sqs: Any,
        invoke: Callable[[str, Any], Any],
        *,
        retry_seconds: int = 2,
        wait_seconds: int = 1,
    ) -> None:
        self._stack = stack
        self._sqs = sqs
        self._invoke = invoke
        self._retry_seconds = retry_seconds
        self._wait_seconds = wait_seconds
        self.sources = queue_sources(stack)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _url(self, source: QueueSource) -> str:
        return str(self._stack.resolver.get_att(source.queue, "QueueUrl"))

    def start(self) -> None:
        for source in self.sources:
            for n in range(source.max_concurrency):
                thread = threading.Thread(
                    target=self._run, args=(source,), name=f"local-sqs-{source.function}-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._wait_seconds + 5)

    def poll_once(self, source: QueueSource, *, wait_seconds: int = 0) -> int:
        """Receive one batch and deliver it; returns the number of messages received."""
        url = self._url(source)
        resp = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, source.batch_size),
            WaitTimeSeconds=wait_seconds,
            AttributeNames=["All"],
        )
        messages = resp.get("Messages") or []
        if not messages:
            return 0
        arn = str(self._stack.resolver.get_att(source.queue, "Arn"))
        failed: set[str]
        try:
            result = self._invoke(source.function, sqs_event(messages, arn, self._stack.region))
            failed = set()
            if source.partial_failures and isinstance(result, dict):
                failed = {str(f.get("itemIdentifier")) for f in result.get("batchItemFailures") or []}
        except Exception as exc:
            log.warning("%s batch failed (%s)", source.function, type(exc).__name__)
            failed = {str(m["MessageId"]) for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(done[start : start + 10])
                ],
            )
        retry = [m for m in messages if m["MessageId"] in failed]
        if retry:
            self._sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self._retry_seconds,
                    }
                    for i, m in enumerate(retry)
                ],
            )
        return len(messages)

    def _run(self, source: QueueSource) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(source, wait_seconds=self._wait_seconds)
            except Exception:  # keep polling: a broken batch is logged, the stack stays up
                log.exception("queue poll failed")
                time.sleep(1)


def describe(sources: list[QueueSource]) -> str:
    return json.dumps([s.__dict__ for s in sources])
