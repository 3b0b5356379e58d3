"""``EventBus`` on EventBridge PutEvents: the product's bus, one source for every event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from usermgmt.ports import BusEntry, BusUnavailable


class EventBridgeBus:
    """``client`` is built on the first call (a function that publishes nothing never pays for it)."""

    def __init__(self, client: Callable[[], Any], bus_name: str, source: str) -> None:
        self._make_client = client
        self._client: Any = None
        self._bus = bus_name
        self._source = source

    def put_events(self, entries: list[BusEntry]) -> list[bool]:
        if not entries:
            return []
        if self._client is None:
            self._client = self._make_client()
        request = [
            {
                "Source": self._source,
                "DetailType": e.detail_type,
                "Detail": json.dumps(e.detail, separators=(",", ":")),
                "EventBusName": self._bus,
            }
            for e in entries
        ]
        try:
            resp = self._client.put_events(Entries=request)
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "urllib3")):
                raise BusUnavailable(type(exc).__name__) from None
            raise
        results = resp.get("Entries") or []
        if len(results) != len(entries):
            raise BusUnavailable("unexpected PutEvents answer")
        return [bool(r.get("EventId")) and not r.get("ErrorCode") for r in results]
