"""DynamoDB stream event source mappings, run locally as Lambda runs them.

moto's server does not serve the DynamoDB Streams API, but it keeps every table's stream records in
process (the local AWS runs in this process). For each ``DynamoDB`` event of a function in the template,
a poller reads the new records of that table's stream as they are written (woken by moto's stream, at
the latest every ``interval`` seconds), keeps those that match
the mapping's ``FilterCriteria`` (EventBridge pattern syntax, as Lambda evaluates them), and invokes the
function with batches of at most ``BatchSize`` records, in stream order. A failed invocation is retried
from the same record, up to ``MaximumRetryAttempts`` (-1: until the record would expire, here forever),
then skipped, as an event source mapping does.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from local.eventbus import matches_pattern
from local.template import Function, Stack, StreamSource

log = logging.getLogger("local.streams")

MOTO_ACCOUNT = "123456789012"


def _records(table_name: str, region: str, start: int) -> list[dict[str, Any]]:
    """The stream records of a table from position ``start`` on, as Lambda delivers them."""
    from moto.dynamodb.models import dynamodb_backends

    from local.aws import dynamodb_lock

    with dynamodb_lock():
        table = dynamodb_backends[MOTO_ACCOUNT][region].get_table(table_name)
        shard = table.stream_shard
        if shard is None:
            return []
        fresh = [dict(r.record) for r in shard.items[start:]]
    for record in fresh:
        record["awsRegion"] = region
        inner = dict(record["dynamodb"])
        created = inner.get("ApproximateCreationDateTime")
        if isinstance(created, datetime.datetime):
            inner["ApproximateCreationDateTime"] = created.timestamp()
        record["dynamodb"] = inner
    return fresh


_written = threading.Event()


def _wake_on_writes() -> None:
    """Wake the pollers when moto appends to any stream (instead of waiting for the next poll)."""
    from moto.dynamodb.models.table import StreamShard

    original = StreamShard.add
    if getattr(original, "_local_wakes", False):
        return

    def add(self: Any, old: Any, new: Any) -> None:
        original(self, old, new)
        _written.set()

    add._local_wakes = True  # type: ignore[attr-defined]
    StreamShard.add = add  # type: ignore[method-assign]


def wanted(source: StreamSource, record: Mapping[str, Any]) -> bool:
    return not source.filters or any(matches_pattern(p, record) for p in source.filters)


class StreamPoller:
    def __init__(self, stack: Stack, invoke: Callable[[str, Any], Any], *, interval: float = 0.2) -> None:
        self._stack = stack
        self._invoke = invoke
        self._interval = interval
        self._mappings: list[tuple[Function, StreamSource, str]] = [
            (f, s, stack.tables[s.table].name) for f in stack.functions.values() for s in f.streams
        ]
        self._positions = {(f.logical_id, s.event_id): 0 for f, s, _ in self._mappings}
        self._tries: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self._mappings:
            return
        _wake_on_writes()
        for function, source, table in self._mappings:  # LATEST: what is written from now on
            self._positions[(function.logical_id, source.event_id)] = len(
                _records(table, self._stack.region, 0)
            )
        self._thread = threading.Thread(target=self._run, name="local-streams", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poll_once(self) -> int:
        """Deliver what is new on every mapped stream; returns the number of records delivered."""
        delivered = 0
        for function, source, table in self._mappings:
            key = (function.logical_id, source.event_id)
            start = self._positions[key]
            records = _records(table, self._stack.region, start)
            if not records:
                continue
            batch_end = min(len(records), source.batch_size)
            batch = [r for r in records[:batch_end] if wanted(source, r)]
            if batch:
                try:
                    self._invoke(function.logical_id, {"Records": batch})
                except Exception as exc:
                    tries = self._tries.get(key, 0) + 1
                    self._tries[key] = tries
                    log.warning(
                        "%s stream batch failed (%s), try %d", function.logical_id, type(exc).__name__, tries
                    )
                    if source.max_retries < 0 or tries <= source.max_retries:
                        continue  # retried from the same record at the next poll
                delivered += len(batch)
            self._tries.pop(key, None)
            self._positions[key] = start + batch_end
        return delivered

    def _run(self) -> None:
        while not self._stop.is_set():
            _written.wait(self._interval)
            _written.clear()
            try:
                while self.poll_once():
                    pass
            except Exception:  # keep polling: a broken batch is logged, the stack stays up
                log.exception("stream poll failed")
