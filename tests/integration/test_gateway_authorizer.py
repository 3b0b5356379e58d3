"""The local gateway's JWT authorizer, routing and payload 2.0 events, against a throwaway template.

A tiny template and handler in tmp_path isolate these tests from the product code: what is checked is the
gateway (what API Gateway would answer), not the functions. Tokens come from a ``LocalAuth0`` whose JWKS is
handed to the gateway directly (one test fetches it over HTTP instead). The last section drives the
``/_local`` endpoints (events, dead letters, schedules, outbox) with moto in-process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from werkzeug.test import Client, TestResponse

from local.auth0 import LocalAuth0, serve
from local.aws import create_stack_resources
from local.gateway import Gateway, matches_pattern
from local.template import load_stack

ISSUER = "https://127.0.0.1:4000/"
AUDIENCE = "https://api.test.local"
REGION = "eu-central-1"

TEMPLATE = """
Parameters:
  Auth0Domain: {Type: String}
  ApiAudience: {Type: String}
Globals:
  Function:
    Runtime: python3.13
    Timeout: 7
    MemorySize: 256
    Environment:
      Variables:
        GREETING: hello
        OVERRIDE: template
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            IdentitySource: $request.header.Authorization
            JwtConfiguration:
              issuer: !Sub "https://${Auth0Domain}/"
              audience: [!Ref ApiAudience]
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: echo_handler.handler
      Environment:
        Variables:
          FUNCTION_ONLY: "yes"
      Events:
        GetUser: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: "/users/{userId}"}}
        GetMe: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: /me}}
        Boom: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: /boom}}
        Admin:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: /admin, Auth: {AuthorizationScopes: [admin:all]}}
        Public:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: ANY, Path: "/public/{proxy+}", Auth: {Authorizer: NONE}}
"""

ECHO_HANDLER = """
import json
import os

CALLS = []


def handler(event, context):
    CALLS.append(event)
    if event["rawPath"] == "/boom":
        raise RuntimeError("internal detail that must not reach the client")
    names = ("GREETING", "FUNCTION_ONLY", "OVERRIDE", "AWS_PROFILE", "AWS_LAMBDA_FUNCTION_NAME")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-echo": "1"},
        "cookies": ["a=1; Path=/", "b=2; Path=/"],
        "body": json.dumps(
            {
                "event": event,
                "env": {name: os.environ.get(name) for name in names},
                "remaining": context.get_remaining_time_in_millis(),
                "function": context.function_name,
                "memory": context.memory_limit_in_mb,
            }
        ),
    }
"""


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def auth0() -> LocalAuth0:
    return LocalAuth0(
        issuer=ISSUER,
        public_url="http://127.0.0.1:4000",
        api_audience=AUDIENCE,
        login_client_id="login-client",
        m2m_client_id="m2m-client",
        m2m_client_secret="m2m-secret",
    )


@pytest.fixture(scope="module")
def other_auth0() -> LocalAuth0:
    """Same issuer string, different signing key: its tokens must never pass."""
    return LocalAuth0(
        issuer=ISSUER,
        public_url="http://127.0.0.1:4000",
        api_audience=AUDIENCE,
        login_client_id="login-client",
        m2m_client_id="m2m-client",
        m2m_client_secret="m2m-secret",
    )


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "echo_handler.py").write_text(ECHO_HANDLER)
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    return tmp_path


@pytest.fixture
def gateway(template_dir: Path, auth0: LocalAuth0) -> Gateway:
    stack = load_stack(
        template_dir / "template.yaml", parameters={"Auth0Domain": "127.0.0.1:4000", "ApiAudience": AUDIENCE}
    )
    return Gateway(
        stack,
        jwks=auth0.jwks,
        environment={"OVERRIDE": "local"},
        base_environment={"PATH": "/usr/bin", "AWS_PROFILE": "must-not-leak"},
    )


@pytest.fixture
def client(gateway: Gateway) -> Client:
    return Client(gateway)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "auth0|abc123",
        "aud": [AUDIENCE, f"{ISSUER}userinfo"],
        "iat": now,
        "exp": now + 600,
        "scope": "openid profile",
        "azp": "login-client",
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(payload).encode())
    return f"{head}.{body}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def echo_calls() -> list[dict[str, Any]]:
    module = sys.modules.get("echo_handler")
    return list(module.CALLS) if module is not None else []


def assert_unauthorized(response: TestResponse) -> None:
    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized"}
    assert response.headers["www-authenticate"].startswith("Bearer")


# ------------------------------------------------------------------------------------------------ 401 cases


def test_a_valid_token_reaches_the_function(client: Client, auth0: LocalAuth0) -> None:
    response = client.get("/users/auth0%7Cxyz", headers=bearer(auth0.sign(claims())))
    assert response.status_code == 200
    assert response.headers["x-echo"] == "1"
    assert response.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    event = response.get_json()["event"]
    assert event["routeKey"] == "GET /users/{userId}"
    assert event["pathParameters"] == {"userId": "auth0|xyz"}
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "auth0|abc123"


def test_no_token_is_401_and_the_function_is_not_invoked(client: Client, auth0: LocalAuth0) -> None:
    client.get("/me", headers=bearer(auth0.sign(claims())))
    before = len(echo_calls())
    response = client.get("/me")
    assert_unauthorized(response)
    assert response.headers["www-authenticate"] == "Bearer"
    assert len(echo_calls()) == before


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt", "Bearer a.b.c"]
)
def test_malformed_authorization_is_401(client: Client, header: str) -> None:
    assert_unauthorized(client.get("/me", headers={"Authorization": header}))


def test_bad_signature_is_401(client: Client, auth0: LocalAuth0, other_auth0: LocalAuth0) -> None:
    # signed by another key but claiming ours
    forged = other_auth0.sign(claims(), headers={"kid": auth0.kid})
    assert_unauthorized(client.get("/me", headers=bearer(forged)))
    # a genuine token with its signature tampered with
    head, body, signature = auth0.sign(claims()).split(".")
    tampered = f"{head}.{body}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"
    assert_unauthorized(client.get("/me", headers=bearer(tampered)))
    # a genuine signature over changed claims
    other_body = _b64(json.dumps(claims(sub="auth0|someone-else")).encode())
    assert_unauthorized(client.get("/me", headers=bearer(f"{head}.{other_body}.{signature}")))


def test_alg_none_is_401(client: Client, auth0: LocalAuth0) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": auth0.kid}, claims())
    assert_unauthorized(client.get("/me", headers=bearer(token)))
    token = unsigned({"alg": "None", "typ": "JWT", "kid": auth0.kid}, claims())
    assert_unauthorized(client.get("/me", headers=bearer(token)))


def test_hs256_signed_with_the_public_key_is_401(client: Client, auth0: LocalAuth0) -> None:
    # the key-confusion attack: HMAC with the RSA public key (PEM) as the shared secret
    import jwt

    public_key = jwt.PyJWK(auth0.jwks()["keys"][0]).key
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": auth0.kid}
    signing_input = unsigned(header, claims()).rsplit(".", 1)[0]
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert_unauthorized(client.get("/me", headers=bearer(f"{signing_input}.{_b64(signature)}")))


def test_wrong_issuer_is_401(client: Client, auth0: LocalAuth0) -> None:
    for issuer in ("https://evil.example/", "https://127.0.0.1:4000", "http://127.0.0.1:4000/"):
        assert_unauthorized(client.get("/me", headers=bearer(auth0.sign(claims(iss=issuer)))))


def test_wrong_audience_is_401(client: Client, auth0: LocalAuth0) -> None:
    for audience in ("https://other-api", ["https://other-api", f"{ISSUER}userinfo"], "login-client"):
        response = client.get("/me", headers=bearer(auth0.sign(claims(aud=audience))))
        assert_unauthorized(response)
        assert "audience" in response.headers["www-authenticate"]


def test_audience_falls_back_to_client_id_when_there_is_no_aud(client: Client, auth0: LocalAuth0) -> None:
    # API Gateway checks client_id only when the token has no aud claim
    assert (
        client.get("/me", headers=bearer(auth0.sign(claims(aud=None, client_id=AUDIENCE)))).status_code == 200
    )
    assert_unauthorized(client.get("/me", headers=bearer(auth0.sign(claims(aud=None, client_id="x")))))


def test_expired_and_not_yet_valid_tokens_are_401(client: Client, auth0: LocalAuth0) -> None:
    now = int(time.time())
    expired = auth0.sign(claims(iat=now - 3600, exp=now - 60))
    response = client.get("/me", headers=bearer(expired))
    assert_unauthorized(response)
    assert "expired" in response.headers["www-authenticate"]
    assert_unauthorized(client.get("/me", headers=bearer(auth0.sign(claims(nbf=now + 600)))))


def test_unknown_kid_is_401(client: Client, auth0: LocalAuth0) -> None:
    assert_unauthorized(
        client.get("/me", headers=bearer(auth0.sign(claims(), headers={"kid": "rotated-away"})))
    )
    token = auth0.sign(claims())
    _, body, signature = token.split(".")
    no_kid = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    assert_unauthorized(client.get("/me", headers=bearer(f"{no_kid}.{body}.{signature}")))


@pytest.mark.parametrize("missing", ["exp", "iat", "iss", "sub"])
def test_required_claims_are_required(client: Client, auth0: LocalAuth0, missing: str) -> None:
    assert_unauthorized(client.get("/me", headers=bearer(auth0.sign(claims(**{missing: None})))))


def test_jwks_can_be_fetched_over_http(template_dir: Path, auth0: LocalAuth0) -> None:
    handle = serve(auth0, "127.0.0.1", 0)
    try:
        stack = load_stack(
            template_dir / "template.yaml",
            parameters={"Auth0Domain": "127.0.0.1:4000", "ApiAudience": AUDIENCE},
        )
        client = Client(Gateway(stack, jwks=f"{handle.url}/.well-known/jwks.json", base_environment={}))
        assert client.get("/me", headers=bearer(auth0.sign(claims()))).status_code == 200
        assert_unauthorized(client.get("/me", headers=bearer(auth0.sign(claims(), headers={"kid": "nope"}))))
    finally:
        handle.shutdown()


# -------------------------------------------------------------------------------------- 403 / 404 / 500


def test_route_scopes_are_enforced_with_403(client: Client, auth0: LocalAuth0) -> None:
    response = client.post("/admin", headers=bearer(auth0.sign(claims(scope="openid read:users"))))
    assert response.status_code == 403
    assert response.get_json() == {"message": "Forbidden"}
    allowed = client.post("/admin", headers=bearer(auth0.sign(claims(scope="openid admin:all"))))
    assert allowed.status_code == 200
    assert allowed.get_json()["event"]["requestContext"]["authorizer"]["jwt"]["scopes"] == [
        "openid",
        "admin:all",
    ]
    # an invalid token on a scoped route is still 401, not 403
    assert_unauthorized(client.post("/admin"))


def test_unknown_route_or_method_is_404(client: Client, auth0: LocalAuth0) -> None:
    token = bearer(auth0.sign(claims()))
    for method, path in (("GET", "/nope"), ("DELETE", "/me"), ("GET", "/users"), ("GET", "/users/a/b")):
        response = client.open(path, method=method, headers=token)
        assert response.status_code == 404, (method, path)
        assert response.get_json() == {"message": "Not Found"}


def test_public_routes_need_no_token_and_greedy_paths_match(client: Client) -> None:
    response = client.post(
        "/public/a/b%20c", data=b"x=1&y=2", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    event = response.get_json()["event"]
    assert event["routeKey"] == "ANY /public/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b c"}
    assert "authorizer" not in event["requestContext"]
    # HTTP APIs base64-encode form posts
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"x=1&y=2"


def test_a_handler_exception_is_500_without_details(client: Client, auth0: LocalAuth0) -> None:
    response = client.get("/boom", headers=bearer(auth0.sign(claims())))
    assert response.status_code == 500
    assert response.get_json() == {"message": "Internal Server Error"}
    assert b"internal detail" not in response.data


# ------------------------------------------------------------------------------------------------ the event


def test_payload_2_0_event_shape(client: Client, auth0: LocalAuth0) -> None:
    iat = int(time.time())
    token = auth0.sign(claims(iat=iat, exp=iat + 600, email_verified=True, amount=1.0))
    client.set_cookie("session", "s1")  # werkzeug's client sends its own jar as the Cookie header
    client.set_cookie("theme", "dark")
    response = client.get(
        "/users/auth0%7Cxyz?b=2&a=1&a=3",
        headers={
            **bearer(token),
            "X-Custom": "v1",
            "User-Agent": "pytest-agent",
        },
    )
    body = response.get_json()
    event = body["event"]
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/users/auth0|xyz"
    assert event["rawQueryString"] == "b=2&a=1&a=3"
    assert event["queryStringParameters"] == {"a": "1,3", "b": "2"}
    assert event["cookies"] == ["session=s1", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-custom"] == "v1"
    assert event["headers"]["authorization"].startswith("Bearer ")
    assert event["isBase64Encoded"] is False and "body" not in event
    context = event["requestContext"]
    assert context["routeKey"] == "GET /users/{userId}"
    assert context["stage"] == "$default"
    assert context["accountId"] == "123456789012"
    assert context["http"] == {
        "method": "GET",
        "path": "/users/auth0|xyz",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "pytest-agent",
    }
    assert isinstance(context["timeEpoch"], int) and context["requestId"]
    jwt_context = context["authorizer"]["jwt"]
    # API Gateway hands every claim over as a string
    assert jwt_context["claims"]["iat"] == str(iat)
    assert jwt_context["claims"]["aud"] == f"[{AUDIENCE} {ISSUER}userinfo]"
    assert jwt_context["claims"]["email_verified"] == "true"
    assert jwt_context["claims"]["amount"] == "1"
    assert jwt_context["scopes"] is None  # the route has no authorization scopes


def test_json_bodies_are_text(client: Client, auth0: LocalAuth0) -> None:
    response = client.post("/public/x", json={"a": "ü"})
    event = response.get_json()["event"]
    assert event["isBase64Encoded"] is False
    assert json.loads(event["body"]) == {"a": "ü"}


def test_source_ip_ignores_x_forwarded_for_unless_trusted(gateway: Gateway, auth0: LocalAuth0) -> None:
    client = Client(gateway)
    spoofed = {"X-Forwarded-For": "198.51.100.7"}
    assert client.get("/public/x", headers=spoofed).get_json()["event"]["requestContext"]["http"][
        "sourceIp"
    ] == ("127.0.0.1")
    gateway.trust_forwarded_for = True
    trusted = client.get("/public/x", headers=spoofed).get_json()["event"]
    assert trusted["requestContext"]["http"]["sourceIp"] == "198.51.100.7"


def test_function_environment_and_context(client: Client, auth0: LocalAuth0) -> None:
    body = client.get("/me", headers=bearer(auth0.sign(claims()))).get_json()
    assert body["env"] == {
        "GREETING": "hello",  # Globals
        "FUNCTION_ONLY": "yes",  # the function's own
        "OVERRIDE": "local",  # local override wins over the template
        "AWS_PROFILE": None,  # AWS_* of the base environment never leak in
        "AWS_LAMBDA_FUNCTION_NAME": "usermgmt-local-EchoFunction",
    }
    assert "FUNCTION_ONLY" not in os.environ  # the process environment is put back afterwards
    assert body["function"] == "usermgmt-local-EchoFunction"
    assert body["memory"] == 256
    assert 0 < body["remaining"] <= 7000


def test_container_is_reset_when_the_environment_changes(
    gateway: Gateway, auth0: LocalAuth0, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usermgmt import container

    resets: list[int] = []
    monkeypatch.setattr(container, "reset", lambda: resets.append(1))
    client = Client(gateway)
    token = bearer(auth0.sign(claims()))
    client.get("/me", headers=token)
    client.get("/me", headers=token)
    assert len(resets) == 1
    gateway.overrides["OVERRIDE"] = "changed"
    assert client.get("/me", headers=token).get_json()["env"]["OVERRIDE"] == "changed"
    assert len(resets) == 2


def test_health_is_503_until_ready(gateway: Gateway) -> None:
    client = Client(gateway)
    assert client.get("/_local/health").status_code == 503
    gateway.mark_ready()
    response = client.get("/_local/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# ------------------------------------------------------------------------------------------------ /_local


WORKER_TEMPLATE = """
Resources:
  DeadLetters:
    Type: AWS::SQS::Queue
    Properties: {QueueName: local-test-dlq}
  Bus:
    Type: AWS::Events::EventBus
    Properties: {Name: storefront-test}
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: worker_handler.on_event
      Runtime: python3.13
      Events:
        ResetRequested:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern:
              source: [storefront]
              detail-type: [PasswordResetRequested]
              detail: {email: [{exists: true}]}
            RetryPolicy: {MaximumRetryAttempts: 2}
            DeadLetterConfig: {Arn: !GetAtt DeadLetters.Arn}
  CleanupFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: worker_handler.on_schedule
      Runtime: python3.13
      Events:
        Hourly: {Type: Schedule, Properties: {Schedule: rate(1 hour)}}
"""

WORKER_HANDLER = """
from email.message import EmailMessage

import boto3


def on_event(event, context):
    if event["detail"].get("fail"):
        raise ValueError("secret internal detail")
    message = EmailMessage()
    message["From"] = "no-reply@example.com"
    message["To"] = event["detail"]["email"]
    message["Subject"] = "Reset your password"
    message.set_content("Open https://users.example.com/password-reset/abc?x=1&y=2 to continue.")
    message.add_alternative("<p>Open <a href='https://users.example.com/r'>this</a></p>", subtype="html")
    boto3.client("sesv2").send_email(
        FromEmailAddress="no-reply@example.com",
        Destination={"ToAddresses": [event["detail"]["email"]]},
        Content={"Raw": {"Data": message.as_bytes()}},
    )
    return {"seen": event["detail-type"], "bus-event-id": event["id"]}


def on_schedule(event, context):
    return {"kind": event["detail-type"], "source": event["source"], "detail": event["detail"]}
"""


@pytest.fixture
def worker(tmp_path: Path, auth0: LocalAuth0) -> Iterator[Gateway]:
    from moto import mock_aws

    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "worker_handler.py").write_text(WORKER_HANDLER)
    (tmp_path / "template.yaml").write_text(WORKER_TEMPLATE)
    with mock_aws():

        def aws(service: str) -> Any:
            return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]

        stack = load_stack(tmp_path / "template.yaml")
        create_stack_resources(stack, aws, sender_identity="example.com", configuration_set="test-set")
        gateway = Gateway(
            stack,
            jwks=auth0.jwks,
            aws=aws,
            environment={"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        )
        gateway.clear_outbox()
        yield gateway


def test_events_are_routed_by_the_template_rules(worker: Gateway) -> None:
    client = Client(worker)
    entry = {
        "Source": "storefront",
        "DetailType": "PasswordResetRequested",
        "Detail": json.dumps({"email": "jane@acme.example"}),
        "Id": "fixed-id",
    }
    response = client.post("/_local/events", json=entry)
    assert response.status_code == 200
    assert response.get_json() == {
        "matched": ["WorkerFunction"],
        "results": [
            {
                "function": "WorkerFunction",
                "rule": "ResetRequested",
                "result": {"seen": "PasswordResetRequested", "bus-event-id": "fixed-id"},
            }
        ],
    }
    # no match: other detail-type, other bus, missing detail key
    for other in (
        {**entry, "DetailType": "OrderPlaced"},
        {**entry, "EventBusName": "default"},
        {**entry, "Detail": {"name": "x"}},
    ):
        assert client.post("/_local/events", json=other).get_json() == {"matched": [], "results": []}
    assert client.post("/_local/events", json={"Source": "storefront"}).status_code == 400
    assert client.post("/_local/events", data=b"{", content_type="application/json").status_code == 400


def test_a_failing_target_goes_to_the_rules_dead_letter_queue(worker: Gateway) -> None:
    client = Client(worker)
    entry = {
        "Source": "storefront",
        "DetailType": "PasswordResetRequested",
        "Detail": {"email": "a@b.c", "fail": 1},
    }
    result = client.post("/_local/events", json=entry).get_json()
    assert result["results"] == [
        {"function": "WorkerFunction", "rule": "ResetRequested", "error": "ValueError", "deadLettered": True}
    ]
    assert "secret internal detail" not in json.dumps(result)  # exception type only, never its text
    (message,) = client.get("/_local/dlq").get_json()
    assert message["queue"] == "local-test-dlq"
    assert message["body"]["detail"] == {"email": "a@b.c", "fail": 1}
    assert message["body"]["detail-type"] == "PasswordResetRequested"
    assert message["attributes"]["ERROR_MESSAGE"] == "ValueError"
    assert message["attributes"]["RETRY_ATTEMPTS"] == "2"
    assert len(client.get("/_local/dlq").get_json()) == 1  # reading does not consume


def test_schedules_run_on_demand(worker: Gateway) -> None:
    client = Client(worker)
    response = client.post("/_local/schedules/CleanupFunction")
    assert response.status_code == 200
    assert response.get_json() == {"kind": "Scheduled Event", "source": "aws.events", "detail": {}}
    for unknown in ("WorkerFunction", "Nope"):
        response = client.post(f"/_local/schedules/{unknown}")
        assert response.status_code == 404
        assert response.get_json() == {"message": "no schedule"}


def test_the_outbox_shows_sent_mail_as_json_and_html(worker: Gateway) -> None:
    client = Client(worker)
    assert client.get("/_local/outbox").get_json() == []
    entry = {
        "Source": "storefront",
        "DetailType": "PasswordResetRequested",
        "Detail": {"email": "jane@acme.example"},
    }
    client.post("/_local/events", json=entry)
    (mail,) = client.get("/_local/outbox").get_json()
    assert mail["to"] == "jane@acme.example"
    assert mail["subject"] == "Reset your password"
    assert "https://users.example.com/password-reset/abc?x=1&y=2" in mail["text"]
    assert "<a href='https://users.example.com/r'>" in mail["html"]
    assert mail["sentAt"].endswith("Z")
    page = client.get("/_local/outbox", headers={"Accept": "text/html"})
    assert page.content_type.startswith("text/html")
    text = page.get_data(as_text=True)
    assert '<a href="https://users.example.com/password-reset/abc?x=1&amp;y=2"' in text
    assert "<a href='https://users.example.com/r'>" not in text  # the HTML part is escaped into srcdoc
    assert client.delete("/_local/outbox").status_code == 204
    assert client.get("/_local/outbox").get_json() == []


def test_simple_messages_show_in_the_outbox_too(worker: Gateway) -> None:
    boto3.client("sesv2", region_name=REGION).send_email(
        FromEmailAddress="no-reply@example.com",
        Destination={"ToAddresses": ["Jane Doe <jane@acme.example>"]},
        Content={"Simple": {"Subject": {"Data": "Hi"}, "Body": {"Text": {"Data": "plain words"}}}},
    )
    (mail,) = Client(worker).get("/_local/outbox").get_json()
    assert (mail["to"], mail["subject"], mail["text"], mail["html"]) == (
        "jane@acme.example",
        "Hi",
        "plain words",
        None,
    )


def test_raw_mime_parsing_keeps_both_parts() -> None:
    message = EmailMessage()
    message["To"] = "x@y.example"
    message["Subject"] = "S"
    message.set_content("text part")
    message.add_alternative("<b>html part</b>", subtype="html")
    from local.outbox import parse_sent

    class Raw:
        id = "m1"
        source = "no-reply@example.com"
        destinations = ("x@y.example",)
        raw_data = message.as_string()

    Raw.__name__ = "RawMessage"
    parsed = parse_sent(Raw())
    assert parsed["text"].strip() == "text part"
    assert parsed["html"].strip() == "<b>html part</b>"


def test_pattern_matching_operators() -> None:
    event = {
        "source": "storefront",
        "detail-type": "X",
        "detail": {"email": "a@b.c", "n": 5, "tags": ["p", "q"]},
    }
    assert matches_pattern({"detail": {"email": [{"prefix": "a@"}]}}, event)
    assert not matches_pattern({"detail": {"email": [{"prefix": "b@"}]}}, event)
    assert matches_pattern({"detail": {"missing": [{"exists": False}]}}, event)
    assert not matches_pattern({"detail": {"email": [{"exists": False}]}}, event)
    assert matches_pattern({"detail": {"tags": ["q"]}}, event)
    assert matches_pattern({"detail": {"n": [{"numeric": [">", 1, "<=", 5]}]}}, event)
    assert matches_pattern({"source": [{"anything-but": ["aws.events"]}]}, event)
    assert not matches_pattern({"detail": {"email": ["A@B.C"]}}, event)
    assert matches_pattern({"detail": {"email": [{"equals-ignore-case": "A@B.C"}]}}, event)
