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


def _forget_tracked_models() -> None:
    """moto keeps every model object it ever made (for its dashboard, which nothing here uses), and a
    transaction deep-copies whole tables: the copies would stay forever, growing memory with every
    write times the table's size (a 1,000-user bench ran out of 24 GB). Forget them."""
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
