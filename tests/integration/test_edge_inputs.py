"""Inputs found by schemathesis (make conformance): they are client errors, never 5xx.

* A body that is not UTF-8 (API Gateway passes it base64-encoded) is 400 ``invalid_json`` when it says
  it is JSON and 415 ``unsupported_media_type`` otherwise, and changes nothing.
* A path id longer than any user id is 404 ``user_not_found`` (DynamoDB refuses keys over 2048 bytes;
  that must not read as an outage, 503).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Env, LambdaContext, Response, add_cast, http_event
from usermgmt.models import User

NOT_UTF8 = base64.b64encode(b'{"firstName": "\xff\xfe"}').decode()
LONG_ID = "auth0|" + "x" * 3000


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    return add_cast(env)


@pytest.fixture
def key_limit(env: Env) -> None:
    """DynamoDB's key size limit on every operation (moto checks it on PutItem only)."""

    def too_long(value: object) -> bool:
        if isinstance(value, dict):
            if "S" in value and isinstance(value["S"], str):
                return len(value["S"].encode("utf-8", errors="surrogatepass")) > 2048
            return any(too_long(v) for v in value.values())
        if isinstance(value, list):
            return any(too_long(v) for v in value)
        return False

    def check(params: dict[str, Any], model: Any, **_: Any) -> None:
        if too_long(params):
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": "key too long"}}, model.name
            )

    env.dynamodb.meta.events.register("provide-client-params.dynamodb.*", check)


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [("application/json", 400, "invalid_json"), ("application/octet-stream", 415, "unsupported_media_type")],
)
def test_a_body_that_is_not_utf8_is_a_client_error(
    env: Env, people: dict[str, User], content_type: str, status: int, code: str
) -> None:
    before = users(env)
    answers = {
        "PATCH /me": call_b64(env, "update-user", "PATCH", "/me", people["bob"], content_type),
        "PATCH /users/{id}": call_b64(
            env, "update-user", "PATCH", f"/users/{people['bob'].id}", people["admin"], content_type
        ),
        "POST /password-reset": call_b64(
            env, "reset-password", "POST", "/password-reset", None, content_type
        ),
    }
    for route, r in answers.items():
        assert r.status == status, (route, r)
        assert r.headers["content-type"] == "application/problem+json", route
        assert r.json()["code"] == code, route
    assert users(env) == before


def users(env: Env) -> list[dict[str, object]]:
    """Every user item (the per-IP counter of the public route counts any request, by design)."""
    return [i for i in env.scan() if str(i["pk"]["S"]).startswith("USER#")]


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [
        ("application/json", 400, "invalid_json"),
        ("application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
@pytest.mark.parametrize(
    ("function", "path"),
    [
        ("reset-password", "/password-reset/{token}"),
        ("verify-email", "/email-verification/{token}"),
        ("verify-email", "/email-change/{token}/cancel"),
    ],
)
def test_link_posts_refuse_a_body_that_is_not_utf8(
    env: Env, function: str, path: str, content_type: str, status: int, code: str
) -> None:
    token = "A" * 43
    r = call_b64(env, function, "POST", path.format(token=token), None, content_type)
    assert r.status == status, r
    assert r.json()["code"] == code
    assert r.headers["cache-control"] == "no-store"


def call_b64(
    env: Env, function: str, method: str, path: str, user: User | None, content_type: str
) -> Response:
    """One request whose body API Gateway passed base64-encoded (as it does for non-text bodies)."""
    event = http_event(method, path, raw_body=NOT_UTF8, headers={"content-type": content_type})
    event["isBase64Encoded"] = True
    if user is None:
        event["requestContext"].pop("authorizer", None)
    else:
        claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
        claims["sub"] = user.id
        claims["iat"] = str(int(env.clock.now()))
    return Response(env.handler(function).lambda_handler(event, LambdaContext(function)))


@pytest.mark.parametrize(
    ("function", "method", "suffix", "body"),
    [
        ("update-user", "GET", "", None),
        ("update-user", "PATCH", "", {"firstName": "Long"}),
        ("update-user", "GET", "/audit", None),
        ("suspend-user", "POST", "/suspend", None),
        ("enable-user", "POST", "/enable", None),
        ("delete-user", "DELETE", "", None),
        ("reset-password", "POST", "/password-reset", None),
        ("verify-email", "POST", "/verification-email", None),
    ],
)
@pytest.mark.parametrize("encoded", [False, True], ids=["decoded", "percent-encoded"])
@pytest.mark.usefixtures("key_limit")
def test_an_over_long_user_id_is_not_found(
    env: Env, people: dict[str, User], function: str, method: str, suffix: str, body: object, encoded: bool
) -> None:
    user_id = LONG_ID.replace("|", "%7C") if encoded else LONG_ID
    r = env.call(function, method, f"/users/{user_id}{suffix}", as_user=people["admin"], body=body)
    assert r.status == 404, r
    assert r.json()["code"] == "user_not_found"
    assert "retry-after" not in r.headers


@pytest.mark.parametrize(
    ("function", "method", "route", "status", "code"),
    [
        ("update-user", "GET", "/users/{userId}", 404, "user_not_found"),
        ("update-user", "PATCH", "/users/{userId}", 404, "user_not_found"),
        ("suspend-user", "POST", "/users/{userId}/suspend", 404, "user_not_found"),
        ("delete-user", "DELETE", "/users/{userId}", 404, "user_not_found"),
        ("reset-password", "GET", "/password-reset/{token}", 410, "link_invalid"),
        ("reset-password", "POST", "/password-reset/{token}", 410, "link_invalid"),
        ("reset-password", "POST", "/password-reset/{token}/renew", 202, None),
        ("verify-email", "POST", "/email-verification/{token}/renew", 202, None),
        ("verify-email", "POST", "/email-verification/{token}", 410, "link_invalid"),
        ("verify-email", "GET", "/email-change/{token}/cancel", 410, "link_invalid"),
        ("create-user", "GET", "/invitations/{invitation}", 410, "link_invalid"),
        ("create-user", "POST", "/invitations/{invitation}", 410, "link_invalid"),
        ("create-user", "POST", "/invitations/{invitation}/renew", 202, None),
        ("create-user", "POST", "/invitations/{invitation}/resend", 404, "invitation_not_found"),
        ("create-user", "DELETE", "/invitations/{invitation}", 404, "invitation_not_found"),
        ("bulk-jobs", "GET", "/bulk-jobs/{jobId}", 404, "job_not_found"),
        ("bulk-jobs", "GET", "/bulk-jobs/{jobId}/items", 404, "job_not_found"),
        ("bulk-jobs", "POST", "/bulk-jobs/{jobId}/cancel", 404, "job_not_found"),
    ],
)
def test_path_parameters_the_router_refuses_name_nothing(
    env: Env, people: dict[str, User], function: str, method: str, route: str, status: int, code: str | None
) -> None:
    """API Gateway routes any characters to the function; its router matches word characters and URI
    punctuation only. Such an id or token names no user or link (not a generic ``not_found``); renew
    answers its generic 202 whatever the token."""
    odd = "odd\x0bid\x81"
    path = route.replace("{userId}", odd).replace("{token}", odd).replace("{invitation}", odd)
    path = path.replace("{jobId}", odd)
    event = http_event(method, path, body={} if method == "PATCH" else None)
    event["routeKey"] = f"{method} {route}"  # what API Gateway matched
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    claims["sub"] = people["admin"].id
    claims["iat"] = str(int(env.clock.now()))
    r = Response(env.handler(function).lambda_handler(event, LambdaContext(function)))
    assert r.status == status, r
    assert r.headers["cache-control"] == "no-store"
    if code is None:
        assert r.json() == {"status": "accepted"}
        return
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code
