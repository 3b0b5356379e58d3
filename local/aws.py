"""The local AWS: moto's ``ThreadedMotoServer`` and the resources the template declares.

Everything is created from the loaded template (``local.template.Stack``), never from hand copies:
DynamoDB tables (attribute definitions, key schema, GSIs, LSIs, billing mode, TTL, point-in-time
recovery), SQS queues (also the dead-letter queues SAM generates), custom EventBridge buses (declared ones
and those the EventBridgeRule events name), plus what the template takes as parameters:
the SES identity (verified at once in moto), the SES configuration set and a Secrets Manager secret
holding the local M2M client secret (its ARN becomes the ``Auth0ClientSecretArn`` parameter).
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from local.template import Physical, Stack

__all__ = [
    "DUMMY_CREDENTIALS",
    "LocalAws",
    "PortInUse",
    "client",
    "create_stack_resources",
    "ensure_port_free",
    "make_dynamodb_atomic",
]

DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "StreamSpecification",
    "SSESpecification",
    "TableClass",
    "DeletionProtectionEnabled",
)
# CloudFormation's SQS properties that are queue attributes (everything but the name and tags).
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


class PortInUse(Exception):
    def __init__(self, host: str, port: int, what: str) -> None:
        super().__init__(f"{what}: {host}:{port} is already in use")
        self.host = host
        self.port = port
        self.what = what


_DYNAMODB_LOCK = threading.Lock()


def make_dynamodb_atomic() -> None:
    """Make every DynamoDB request against moto in this process run alone, as DynamoDB applies each.

    DynamoDB never interleaves a conditional write or a transaction with another request; moto has no
    locking, so two threads of its server (or of ``mock_aws``) can both pass one condition. One lock
    around moto's DynamoDB request dispatch (``DynamoHandler.call_action``, which both the server and
    ``mock_aws`` go through) restores that. Idempotent; other services are untouched.
    """
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_local_atomic", False):
        return

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _DYNAMODB_LOCK:
            try:
                return original(self)
            finally:
                _forget_tracked_models()

    call_action._local_atomic = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _make_transactions_cheap()
    _make_queries_cheap()


def _remember_backends_by_host() -> None:
    """moto's server finds the service of every request by listing its package directory and trying
    each service's URL patterns, under one lock; the answer for a host never changes, so remember it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.get_backend_for_host
    if getattr(original, "_local_cheap", False):
        return
    known: dict[str, Any] = {}

    @functools.wraps(original)
    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host is None:
            return None
        if host not in known:
            known[host] = original(self, host)
        return known[host]

    get_backend_for_host._local_cheap = True  # type: ignore[attr-defined]
    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def _make_transactions_cheap() -> None:
    """Roll a cancelled ``TransactWriteItems`` back from copies of the items it names, not of its tables.

    moto deep-copies every table a transaction touches (its items and its stream records) before
    applying it, so each write costs the table's size and seeding a thousand users takes many minutes.
    Here its table copy is the table itself, and the wrapper keeps what the rollback needs: a copy of
    each named item as it was (or its absence) and each touched stream's length. A cancelled
    transaction puts those items back and drops the stream records it added; the table then reads as
    it did, which is DynamoDB's contract. Runs under the DynamoDB lock, so nothing sees the interim.
    """
    import copy
    import types

    from moto.dynamodb import models as dynamodb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    if getattr(original, "_local_cheap", False):
        return

    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    # the models module's only whole-table copy is the transaction's backup; item copies still copy
    dynamodb_models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment]

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = _saved_state(self, transact_items)
        try:
            original(self, transact_items)
        except BaseException:
            _restore(saved)
            raise

    transact_write_items._local_cheap = True  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _make_queries_cheap() -> None:
    """Hand moto's ``Query`` only the items its key condition can match, not the whole table sorted.

    moto starts every Query, on the table or an index, from all the table's items sorted by key, and
    only then keeps those of the partition asked for: each read costs the table's size times its log,
    so reads slow down as the local table grows (a thousand-user bench spent most of its time there).
    Here a table Query starts from its partition's items and an index Query from the items whose
    attributes equal its hash key condition; moto then filters, sorts and pages them as before, so the
    answer is the same.
    """
    from moto.dynamodb.models.table import Table

    original = Table.query
    if getattr(original, "_local_cheap", False):
        return

    @functools.wraps(original)
    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        candidates = _query_candidates(self, hash_key, index_name, kwargs.get("hash_key_conditions"))
        if candidates is None:
            return original(self, hash_key, *args, **kwargs)
        self.all_items = lambda: candidates  # this call only; the lock keeps other requests out
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    query._local_cheap = True  # type: ignore[attr-defined]
    Table.query = query  # type: ignore[method-assign]


def _query_candidates(table: Any, hash_key: Any, index_name: str | None, conditions: Any) -> list[Any] | None:
    """The items a Query may return (a superset moto filters further), or None to let moto look at all."""
    if not index_name:
        if hash_key is None:
            return None
        found = table.items.get(hash_key)
        if found is None:
            return []
        return list(found.values()) if table.range_key_attr else [found]
    if not conditions:
        return None
    matched = []
    for stored in table.items.values():
        for item in stored.values() if table.range_key_attr else (stored,):
            attrs = item.attrs
            if all(name in attrs and attrs[name] == value for name, value in conditions):
                matched.append(item)
    return matched


@dataclass
class _SavedState:
    items: list[tuple[Any, Any, Any, Any]] = field(default_factory=list)  # (table, hash, range, item)
    streams: list[tuple[Any, int]] = field(default_factory=list)  # (shard, length)


def _saved_state(backend: Any, transact_items: list[dict[str, Any]]) -> _SavedState:
    """Each named item as it is now (a deep copy, or None when absent), and each touched stream's length."""
    import copy

    from moto.dynamodb.models.dynamo_type import DynamoType

    saved = _SavedState()
    shards: dict[int, Any] = {}
    for entry in transact_items:
        if len(entry) != 1:
            continue  # moto refuses it before any write
        op = next(iter(entry.values()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, Mapping) else None
        if table is None:
            continue
        key = op.get("Key") or op.get("Item") or {}
        if table.hash_key_attr not in key:
            continue
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = None
        if table.range_key_attr is not None:
            if table.range_key_attr not in key:
                continue
            range_value = DynamoType(key[table.range_key_attr])
        current = table.get_item(hash_value, range_value)
        saved.items.append((table, hash_value, range_value, copy.deepcopy(current)))
        if table.stream_shard is not None:
            shards.setdefault(id(table.stream_shard), table.stream_shard)
    saved.streams = [(shard, len(shard.items)) for shard in shards.values()]
    return saved


def _restore(saved: _SavedState) -> None:
    for table, hash_value, range_value, item in reversed(saved.items):
        if range_value is None:
            if item is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = item
            continue
        bucket = table.items[hash_value]
        if item is None:
            bucket.pop(range_value, None)
            if not bucket:
                table.items.pop(hash_value, None)
        else:
            bucket[range_value] = item
    for shard, length in saved.streams:
        del shard.items[length:]


def _forget_tracked_models() -> None:
    """moto keeps every model object it ever made (for its dashboard, which nothing here uses): every
    item copy a request makes would stay forever (when transactions still copied whole tables, a
    1,000-user bench ran out of 24 GB this way). Forget them."""
    from moto.core.model_instances import model_data

    for model in model_data.get("dynamodb", {}).values():
        tracked = getattr(model, "instances_tracked", None)
        if tracked:
            tracked.clear()


def dynamodb_lock() -> threading.Lock:
    """The lock every DynamoDB request runs under (for in-process readers of moto's state)."""
    return _DYNAMODB_LOCK


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Raise ``PortInUse`` when something listens on ``host:port`` (a clear error beats a hang).

    The probe binds with ``SO_REUSEADDR``, as the servers do: connections of a stack that just stopped
    linger in TIME_WAIT for a minute, and they must not make the port look busy; a listener still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(host, port, what) from None


def client(service: str, endpoint_url: str | None, region: str) -> Any:
    """A boto3 client for the local AWS (dummy credentials; ``endpoint_url`` None = in-process moto)."""
    factory: Callable[..., Any] = boto3.client
    return factory(service, endpoint_url=endpoint_url, region_name=region, **DUMMY_CREDENTIALS)


class LocalAws:
    """moto server on ``host:port`` in a daemon thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000, region: str = "eu-central-1") -> None:
        self.host = host
        self.port = port
        self.region = region
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        ensure_port_free(self.host, self.port, "local AWS (moto)")
        make_dynamodb_atomic()
        _remember_backends_by_host()
        # moto's request handler logs every request through werkzeug's logger
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self, service: str) -> Any:
        return client(service, self.endpoint, self.region)


@dataclass
class CreatedResources:
    tables: dict[str, str] = field(default_factory=dict)  # logical id -> table name
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue url
    buses: dict[str, str] = field(default_factory=dict)  # logical id -> bus name
    sender_identity: str | None = None
    configuration_set: str | None = None


def create_secret(aws: Any, name: str, value: str) -> str:
    """Store ``value`` as a plain-string secret; return its ARN (``aws`` is a client factory)."""
    secrets = aws("secretsmanager")
    response = secrets.create_secret(Name=name, SecretString=value)
    return str(response["ARN"])


def create_stack_resources(
    stack: Stack,
    aws: Any,
    *,
    sender_identity: str | None = None,
    configuration_set: str | None = None,
) -> CreatedResources:
    """Create every table, queue and custom bus of ``stack`` plus the SES identity / configuration set.

    ``aws`` is a factory ``service -> boto3 client``. Queue URLs moto answers are written back into the
    stack's resolver so later ``Ref``s of queues resolve to them.
    """
    created = CreatedResources()
    dynamodb = aws("dynamodb")
    for table in stack.tables.values():
        props: Mapping[str, Any] = table.properties
        request: dict[str, Any] = {k: _without_nulls(props[k]) for k in _TABLE_KEYS if k in props}
        request["TableName"] = table.name
        if "BillingMode" not in request and "ProvisionedThroughput" not in request:
            request["ProvisionedThroughput"] = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        if request.get("BillingMode") == "PROVISIONED" and "ProvisionedThroughput" not in request:
            request["ProvisionedThroughput"] = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        sse = request.get("SSESpecification")
        if isinstance(sse, dict) and "SSEEnabled" in sse:
            request["SSESpecification"] = {"Enabled": bool(sse["SSEEnabled"]), **_sse_extra(sse)}
        stream = request.get("StreamSpecification")
        if isinstance(stream, dict) and "StreamEnabled" not in stream:
            request["StreamSpecification"] = {"StreamEnabled": True, **stream}
        dynamodb.create_table(**request)
        ttl = props.get("TimeToLiveSpecification")
        if isinstance(ttl, dict) and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=table.name,
                TimeToLiveSpecification={"AttributeName": str(ttl["AttributeName"]), "Enabled": True},
            )
        pitr = props.get("PointInTimeRecoverySpecification")
        if isinstance(pitr, dict) and pitr.get("PointInTimeRecoveryEnabled"):
            dynamodb.update_continuous_backups(
                TableName=table.name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        created.tables[table.logical_id] = table.name

    sqs = aws("sqs")
    # a dead-letter queue must exist before the queue whose RedrivePolicy names it
    for queue in sorted(stack.queues.values(), key=lambda q: "RedrivePolicy" in q.properties):
        attributes = {
            k: _attribute_text(queue.properties[k]) for k in _QUEUE_ATTRIBUTES if k in queue.properties
        }
        url = str(sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"])
        created.queues[queue.logical_id] = url
        arn = stack.resolver.get_att(queue.logical_id, "Arn")
        stack.resolver.set_physical(
            queue.logical_id, Physical(url, {"Arn": arn, "QueueName": queue.name, "QueueUrl": url})
        )

    events = aws("events")
    for bus in stack.buses.values():
        events.create_event_bus(Name=bus.name)
        created.buses[bus.logical_id] = bus.name
    # buses the rules listen on that the template takes by name (a parameter) rather than creating
    for function in stack.functions.values():
        for rule in function.rules:
            if rule.bus_name != "default" and rule.bus_name not in created.buses.values():
                events.create_event_bus(Name=rule.bus_name)
                created.buses[f"{function.logical_id}.{rule.event_id}"] = rule.bus_name

    if sender_identity:
        aws("sesv2").create_email_identity(EmailIdentity=sender_identity)
        created.sender_identity = sender_identity
    if configuration_set:
        aws("sesv2").create_configuration_set(ConfigurationSetName=configuration_set)
        created.configuration_set = configuration_set
    return created


def _sse_extra(sse: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if "SSEType" in sse:
        extra["SSEType"] = sse["SSEType"]
    if "KMSMasterKeyId" in sse:
        extra["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
    return extra


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
