"""The bulk jobs' queue on SQS (``SendMessageBatch``, ten messages a call)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from usermgmt.ports import QueueUnavailable

BATCH = 10  # SQS's limit per SendMessageBatch


class SqsQueue:
    def __init__(self, client: Callable[[], Any], url: str) -> None:
        self._client_factory = client
        self._client: Any = None
        self._url = url

    def send(self, bodies: list[dict[str, Any]]) -> None:
        if not self._url:
            raise QueueUnavailable("no queue configured")
        if self._client is None:
            self._client = self._client_factory()
        for start in range(0, len(bodies), BATCH):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(body, separators=(",", ":"))}
                for i, body in enumerate(bodies[start : start + BATCH])
            ]
            for _attempt in range(4):
                try:
                    resp = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
                except Exception as exc:
                    raise QueueUnavailable(type(exc).__name__) from None
                failed = {f["Id"] for f in resp.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            if entries:
                raise QueueUnavailable("messages refused")
