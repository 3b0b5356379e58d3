"""The sample events in events/ are real inputs: each one runs through its function's lambda_handler."""

from __future__ import annotations

import json

from tests.conftest import EVENTS, Env, LambdaContext


def _event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def test_password_reset_requested_sample_sends_one_link(env: Env) -> None:
    env.add_user("bob@acme.example", memberships={"acme": ["Buyer"]})
    result = env.handler("reset-password").lambda_handler(
        _event("storefront-password-reset-requested.json"), LambdaContext("r")
    )
    assert result == {"result": "accepted"}
    assert [m.subject for m in env.mailer.to("bob@acme.example")] == ["Reset your password"]


def test_verification_email_requested_sample_sends_to_an_unverified_address(env: Env) -> None:
    bob = env.add_user("bob@acme.example", memberships={"acme": ["Buyer"]})
    env.store.put_user(env.user(bob.id).evolve(email_verified=False))
    result = env.handler("verify-email").lambda_handler(
        _event("storefront-verification-email-requested.json"), LambdaContext("v")
    )
    assert result == {"result": "accepted"}
    assert [m.subject for m in env.mailer.to("bob@acme.example")] == ["Confirm your email address"]


def test_user_registered_sample_creates_the_user_from_auth0(env: Env) -> None:
    env.idp.add_user(
        "auth0|5f0c1aa0000000000000beef", "shopper@example.com", given_name="Sho", family_name="P"
    )
    result = env.handler("create-user").lambda_handler(
        _event("storefront-user-registered.json"), LambdaContext("c")
    )
    assert result == {"result": "accepted"}
    user = env.user("auth0|5f0c1aa0000000000000beef")
    assert user is not None and user.status == "ACTIVE"


def test_schedule_sample_runs_both_scheduled_functions(env: Env) -> None:
    for function in ("sync-identity", "cleanup-links"):
        result = env.handler(function).lambda_handler(_event("schedule.json"), LambdaContext(function))
        assert isinstance(result, dict), function


def test_http_sample_is_a_valid_payload_2_0_request(env: Env) -> None:
    bob = env.add_user("bob@acme.example", memberships={"acme": ["Buyer"]})
    event = _event("http-get-me.json")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = bob.id
    result = env.handler("update-user").lambda_handler(event, LambdaContext("u"))
    assert result["statusCode"] == 200 and json.loads(result["body"])["email"] == "bob@acme.example"
