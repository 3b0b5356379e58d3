"""The local AWS applies each DynamoDB request atomically, as DynamoDB does.

Many threads race one conditional write against the moto server the local stack starts (real HTTP,
one boto3 client per thread); in every round exactly one may win and every other must get
``ConditionalCheckFailedException``. moto alone does not lock: without ``make_dynamodb_atomic`` two
threads of its server both pass the condition now and then, and these tests fail.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws import DUMMY_CREDENTIALS, LocalAws

REGION = "eu-central-1"
TABLE = "atomic-race"
THREADS = 12
ROUNDS = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    local = LocalAws("127.0.0.1", _free_port(), REGION)
    local.start()
    local.client("dynamodb").create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # switch threads as often as possible: an unlocked check-then-write interleaves at once
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield local
    finally:
        sys.setswitchinterval(interval)
        local.stop()


def _race(aws: LocalAws, attempt: Callable[[Any, int, int], None]) -> list[int]:
    """``attempt(client, round, thread)`` from THREADS threads at once, ROUNDS times: winners per round."""
    clients = [_new_client(aws) for _ in range(THREADS)]
    winners: list[int] = []
    for round_no in range(ROUNDS):
        barrier = threading.Barrier(THREADS)
        won: list[int] = []
        errors: list[BaseException] = []

        def run(
            index: int,
            round_no: int = round_no,
            barrier: threading.Barrier = barrier,
            won: list[int] = won,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                attempt(clients[index], round_no, index)
                won.append(index)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in (
                    "ConditionalCheckFailedException",
                    "TransactionCanceledException",
                ):
                    errors.append(exc)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        winners.append(len(won))
    return winners


def _new_client(aws: LocalAws) -> Any:
    factory: Callable[..., Any] = boto3.client
    return factory(
        "dynamodb",
        endpoint_url=aws.endpoint,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}, max_pool_connections=2),
        **DUMMY_CREDENTIALS,
    )


def test_one_conditional_put_wins_each_race(aws: LocalAws) -> None:
    def put_if_absent(dynamodb: Any, round_no: int, index: int) -> None:
        dynamodb.put_item(
            TableName=TABLE,
            Item={"pk": {"S": f"put-{round_no}"}, "winner": {"N": str(index)}},
            ConditionExpression="attribute_not_exists(pk)",
        )

    assert _race(aws, put_if_absent) == [1] * ROUNDS


def test_one_versioned_update_wins_each_race(aws: LocalAws) -> None:
    dynamodb = _new_client(aws)
    for round_no in range(ROUNDS):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": f"v-{round_no}"}, "version": {"N": "1"}})

    def bump_version_one(dynamodb: Any, round_no: int, index: int) -> None:
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"v-{round_no}"}},
            UpdateExpression="SET version = version + :one, winner = :me",
            ConditionExpression="version = :seen",
            ExpressionAttributeValues={":one": {"N": "1"}, ":me": {"N": str(index)}, ":seen": {"N": "1"}},
        )

    assert _race(aws, bump_version_one) == [1] * ROUNDS
    for round_no in range(ROUNDS):
        item = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": f"v-{round_no}"}}, ConsistentRead=True)
        assert item["Item"]["version"] == {"N": "2"}


def test_one_transaction_wins_each_race(aws: LocalAws) -> None:
    def claim_two_items(dynamodb: Any, round_no: int, index: int) -> None:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": {"pk": {"S": f"tx-{round_no}-{part}"}, "winner": {"N": str(index)}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
                for part in ("a", "b")
            ]
        )

    assert _race(aws, claim_two_items) == [1] * ROUNDS


# -- a cancelled transaction changes nothing (the local AWS rolls back the items it named, not a table copy)

STREAMED = "atomic-streamed"


@pytest.fixture(scope="module")
def streamed(aws: LocalAws) -> Any:
    dynamodb = _new_client(aws)
    dynamodb.create_table(
        TableName=STREAMED,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return dynamodb


def _items(dynamodb: Any) -> list[dict[str, Any]]:
    items = dynamodb.scan(TableName=STREAMED, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def _stream_records(aws: LocalAws) -> list[dict[str, Any]]:
    arn = aws.client("dynamodb").describe_table(TableName=STREAMED)["Table"]["LatestStreamArn"]
    streams = aws.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return list(streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"])


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _writes(pk: str, *, failing: bool) -> list[dict[str, Any]]:
    """Update one item (in place, with a list inside), add one in a new partition, delete one, then check."""
    return [
        {
            "Update": {
                "TableName": STREAMED,
                "Key": _key(pk, "kept"),
                "UpdateExpression": "SET n = n + :one, tags = list_append(tags, :tag)",
                "ExpressionAttributeValues": {":one": {"N": "1"}, ":tag": {"L": [{"S": "new"}]}},
            }
        },
        {"Put": {"TableName": STREAMED, "Item": {**_key(f"{pk}-new", "added"), "n": {"N": "7"}}}},
        {"Delete": {"TableName": STREAMED, "Key": _key(pk, "gone")}},
        {
            "ConditionCheck": {
                "TableName": STREAMED,
                "Key": _key(pk, "absent" if failing else "anchor"),
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
    ]


def test_a_cancelled_transaction_leaves_items_and_stream_as_they_were(aws: LocalAws, streamed: Any) -> None:
    streamed.put_item(TableName=STREAMED, Item={**_key("u1", "kept"), "n": {"N": "1"}, "tags": {"L": []}})
    streamed.put_item(TableName=STREAMED, Item={**_key("u1", "gone"), "n": {"N": "2"}})
    before, records_before = _items(streamed), _stream_records(aws)

    with pytest.raises(ClientError) as cancelled:
        streamed.transact_write_items(TransactItems=_writes("u1", failing=True))

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _items(streamed) == before
    assert _stream_records(aws) == records_before
    assert (
        streamed.query(
            TableName=STREAMED,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "u1-new"}},
        )["Items"]
        == []
    )


def test_a_committed_transaction_applies_every_write_once(aws: LocalAws, streamed: Any) -> None:
    streamed.put_item(TableName=STREAMED, Item={**_key("u2", "kept"), "n": {"N": "1"}, "tags": {"L": []}})
    streamed.put_item(TableName=STREAMED, Item={**_key("u2", "gone"), "n": {"N": "2"}})
    streamed.put_item(TableName=STREAMED, Item=_key("u2", "anchor"))
    records_before = len(_stream_records(aws))

    streamed.transact_write_items(TransactItems=_writes("u2", failing=False))

    kept = streamed.get_item(TableName=STREAMED, Key=_key("u2", "kept"), ConsistentRead=True)["Item"]
    assert (kept["n"], kept["tags"]) == ({"N": "2"}, {"L": [{"S": "new"}]})
    assert "Item" in streamed.get_item(TableName=STREAMED, Key=_key("u2-new", "added"), ConsistentRead=True)
    assert "Item" not in streamed.get_item(TableName=STREAMED, Key=_key("u2", "gone"), ConsistentRead=True)
    events = [record["eventName"] for record in _stream_records(aws)[records_before:]]
    assert events == ["MODIFY", "INSERT", "REMOVE"]
