"""The local SQS event source mapping (``local/queues.py``) from template.yaml, over moto in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.aws import create_stack_resources
from local.queues import QueuePoller, queue_sources
from local.template import Stack, load_stack

ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = {
    "Auth0Domain": "tenant.eu.auth0.com",
    "ApiAudience": "https://api.users.example.com",
    "Auth0ClientId": "m2m-client",
    "Auth0ClientSecretArn": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:auth0-AbCdEf",
    "SenderIdentity": "example.com",
    "SenderEmail": "no-reply@example.com",
    "SesConfigurationSet": "usermgmt",
    "PublicBaseUrl": "https://users.example.com",
    "CorsAllowedOrigins": "https://admin.example.com",
}
REGION = "eu-central-1"


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield lambda service: boto3.client(service, region_name=REGION)


@pytest.fixture
def stack(aws: Any) -> Stack:
    stack = load_stack(ROOT / "template.yaml", parameters=PARAMETERS, region=REGION)
    create_stack_resources(stack, aws)
    return stack


def test_the_queue_mappings_come_from_the_template(stack: Stack) -> None:
    sources = {s.function: s for s in queue_sources(stack)}
    assert {f: s.queue for f, s in sources.items()} == {
        "BulkWorkerFunction": "BulkJobsQueue",
        "PublicRequestsFunction": "PublicRequestsQueue",
    }
    bulk = sources["BulkWorkerFunction"]
    assert bulk.batch_size == 10 and bulk.partial_failures
    assert bulk.max_concurrency == 2  # the BulkWorkerMaxConcurrency parameter's default
    assert sources["PublicRequestsFunction"].partial_failures


def test_batches_partial_failures_and_redrive_to_the_dead_letter_queue(stack: Stack, aws: Any) -> None:
    sqs = aws("sqs")
    url = str(stack.resolver.get_att("BulkJobsQueue", "QueueUrl"))
    dlq = str(stack.resolver.get_att("BulkJobsDlq", "QueueUrl"))
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
    seen: list[list[int]] = []

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        assert function == "BulkWorkerFunction"
        bodies = [json.loads(r["body"])["n"] for r in event["Records"]]
        seen.append(bodies)
        failing = [r["messageId"] for r in event["Records"] if json.loads(r["body"])["n"] == 3]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failing]}

    poller = QueuePoller(stack, sqs, invoke, retry_seconds=0)
    (source,) = [s for s in poller.sources if s.function == "BulkWorkerFunction"]
    for _ in range(20):
        poller.poll_once(source)
    assert max(len(batch) for batch in seen) <= 10
    delivered = [n for batch in seen for n in batch]
    assert sorted(set(delivered)) == list(range(12))
    assert delivered.count(3) == 5  # maxReceiveCount deliveries, then the dead-letter queue
    assert all(delivered.count(n) == 1 for n in range(12) if n != 3)
    moved = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["n"] for m in moved] == [3]
    assert not sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages")


def test_a_failed_invocation_finishes_no_message(stack: Stack, aws: Any) -> None:
    sqs = aws("sqs")
    url = str(stack.resolver.get_att("BulkJobsQueue", "QueueUrl"))
    sqs.send_message(QueueUrl=url, MessageBody="{}")
    calls = {"n": 0}

    def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker died")
        return {"batchItemFailures": []}

    poller = QueuePoller(stack, sqs, invoke, retry_seconds=0)
    (source,) = [s for s in poller.sources if s.function == "BulkWorkerFunction"]
    assert poller.poll_once(source) == 1
    assert poller.poll_once(source) == 1  # delivered again
    assert poller.poll_once(source) == 0
