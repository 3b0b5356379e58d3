"""The local stack of ``make run``, driven over HTTP like a client would."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.conftest import ROOT, LocalStackInfo

pytestmark = pytest.mark.e2e


def test_health(local_stack: LocalStackInfo) -> None:
    response = local_stack.api("GET", "/_local/health")
    assert response.status == 200
    assert response.json() == {"status": "ok"}


def test_admin_logs_in_and_reads_own_record(local_stack: LocalStackInfo, admin_token: str) -> None:
    admin = local_stack.users["admin"]
    response = local_stack.api("GET", "/me", token=admin_token)
    assert response.status == 200, response
    body = response.json()
    assert body["id"] == admin.user_id
    assert body["email"] == admin.email
    assert (body["firstName"], body["lastName"]) == (admin.first_name, admin.last_name)
    assert body["profile"] == "administrator"
    assert response.headers["etag"] == f'"{body["version"]}"'


def test_admin_reads_another_user(local_stack: LocalStackInfo, admin_token: str) -> None:
    buyer = local_stack.users["buyer"]
    response = local_stack.api("GET", f"/users/{quote(buyer.user_id, safe='')}", token=admin_token)
    assert response.status == 200, response
    body = response.json()
    assert body["id"] == buyer.user_id
    assert body["email"] == buyer.email
    assert body["defaultAccountId"] == "umbrella"
    assert {m["accountId"] for m in body["memberships"]} == {"initech", "umbrella"}


def test_a_suspended_user_cannot_log_in(local_stack: LocalStackInfo) -> None:
    suspended = local_stack.users["suspended"]
    response = local_stack.token_response(suspended.email, suspended.password)
    assert response.status == 401
    assert response.json()["error"] == "unauthorized"


def test_a_wrong_password_is_refused(local_stack: LocalStackInfo) -> None:
    buyer = local_stack.users["buyer"]
    response = local_stack.token_response(buyer.email, buyer.password + "x")
    assert response.status == 403
    assert response.json()["error"] == "invalid_grant"


def test_no_token_is_unauthorized(local_stack: LocalStackInfo) -> None:
    for path in ("/me", "/users/auth0%7Cabc"):
        response = local_stack.api("GET", path)
        assert response.status == 401
        assert response.json() == {"message": "Unauthorized"}


def test_a_tampered_token_is_unauthorized(local_stack: LocalStackInfo, admin_token: str) -> None:
    tampered = admin_token[:-6] + ("AAAAAA" if not admin_token.endswith("AAAAAA") else "BBBBBB")
    assert local_stack.api("GET", "/me", token=tampered).status == 401


def test_unknown_route_is_404(local_stack: LocalStackInfo, admin_token: str) -> None:
    response = local_stack.api("GET", "/nothing-here", token=admin_token)
    assert response.status == 404
    assert response.json() == {"message": "Not Found"}


def test_outbox_is_a_json_list(local_stack: LocalStackInfo) -> None:
    response = local_stack.api("GET", "/_local/outbox")
    assert response.status == 200
    assert isinstance(response.json(), list)
    page = local_stack.api("GET", "/_local/outbox", headers={"Accept": "text/html"})
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")


def test_unknown_schedule_is_404(local_stack: LocalStackInfo) -> None:
    response = local_stack.api("POST", "/_local/schedules/Nope")
    assert response.status == 404
    assert response.json() == {"message": "no schedule"}


def test_local_aws_resources_come_from_the_template(local_stack: LocalStackInfo) -> None:
    import boto3

    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    (table,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=local_stack.aws_url,
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (name,) = dynamodb.list_tables()["TableNames"]
    description = dynamodb.describe_table(TableName=name)["Table"]
    assert description["KeySchema"] == table["KeySchema"]
    assert {i["IndexName"] for i in description.get("GlobalSecondaryIndexes", [])} == {
        i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])
    }
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == table["TimeToLiveSpecification"]["AttributeName"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"


LOCAL_ORIGIN = "http://localhost:8080"  # make run's default LOCAL_CORS_ORIGINS


def test_cors_preflight_is_answered_by_the_gateway_without_a_token(local_stack: LocalStackInfo) -> None:
    ask = {
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,if-match",
    }
    # no OPTIONS route exists and no token is sent: API Gateway answers the preflight itself
    response = local_stack.api("OPTIONS", "/users/auth0%7Cabc", headers={"Origin": LOCAL_ORIGIN, **ask})
    assert response.status == 204, response
    assert response.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    assert "PATCH" in response.headers["access-control-allow-methods"].split(",")
    assert {"authorization", "if-match"} <= set(response.headers["access-control-allow-headers"].split(","))
    assert int(response.headers["access-control-max-age"]) > 0
    other = local_stack.api("OPTIONS", "/me", headers={"Origin": "http://evil.example", **ask})
    assert other.status == 204
    assert not [h for h in other.headers if h.startswith("access-control-")]


def test_cors_headers_on_responses_for_allowed_origins_only(
    local_stack: LocalStackInfo, admin_token: str
) -> None:
    allowed = local_stack.api("GET", "/me", token=admin_token, headers={"Origin": LOCAL_ORIGIN})
    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    assert "etag" in allowed.headers["access-control-expose-headers"].split(",")
    refused = local_stack.api("GET", "/me", headers={"Origin": LOCAL_ORIGIN})
    assert refused.status == 401 and refused.headers["access-control-allow-origin"] == LOCAL_ORIGIN
    other = local_stack.api("GET", "/me", token=admin_token, headers={"Origin": "http://evil.example"})
    assert other.status == 200
    assert not [h for h in other.headers if h.startswith("access-control-")]
