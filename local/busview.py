"""``/_local/bus``: the events published on the product's buses, as EventBridge delivers them.

At start the local stack gives every bus the template creates a catch-all rule whose target is a queue
of the local AWS (moto delivers matched events to SQS targets in the shape a target receives). A poller
drains that queue into the view every ``interval`` seconds, and hands each event to the template's own
EventBridge rules on that bus (``EventBus.put_event``), so rules that listen on the product's bus run
locally as they would in AWS.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from local.payload import json_response
from local.template import Stack

log = logging.getLogger("local.busview")

VIEW = "usermgmt-local-bus-view"  # the rule on each bus, and the prefix of its queue


class BusView:
    def __init__(
        self,
        stack: Stack,
        aws: Callable[[str], Any],
        deliver: Callable[[dict[str, Any], str], Any],
        *,
        interval: float = 0.2,
    ) -> None:
        self._stack = stack
        self._aws = aws
        self._deliver = deliver
        self._interval = interval
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queues: dict[str, str] = {}  # bus name -> queue url

    def start(self) -> None:
        if not self._stack.buses:
            return
        sqs, events = self._aws("sqs"), self._aws("events")
        for bus in self._stack.buses.values():
            url = sqs.create_queue(QueueName=f"{VIEW}-{bus.logical_id}")["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            events.put_rule(Name=VIEW, EventBusName=bus.name, EventPattern=json.dumps({"version": ["0"]}))
            events.put_targets(Rule=VIEW, EventBusName=bus.name, Targets=[{"Id": "view", "Arn": arn}])
            self._queues[bus.name] = url
        self._thread = threading.Thread(target=self._run, name="local-bus-view", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def response(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear()
            return Response(status=204)
        return json_response(self.events())

    def drain_once(self) -> int:
        sqs = self._aws("sqs")
        drained = 0
        for bus, url in self._queues.items():
            wait = 1 if len(self._queues) == 1 else 0  # long polling: an event is drained as it lands
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
            messages = messages.get("Messages", [])
            for message in messages:
                event = json.loads(message["Body"])
                event.setdefault("account", self._stack.account_id)  # as EventBridge delivers it
                with self._lock:
                    self._events.append(event)
                try:
                    self._deliver(event, bus)  # the template's own rules on this bus
                except Exception:
                    log.exception("a rule on the product bus failed")
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            drained += len(messages)
        return drained

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.drain_once():
                    pass
            except Exception:
                log.exception("bus view poll failed")
                self._stop.wait(self._interval)
