"""The local Auth0 (``local/auth0.py``) through werkzeug's test client: no sockets."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from werkzeug.test import Client, TestResponse

from local.auth0 import LocalAuth0

ISSUER = "https://127.0.0.1:4000/"
PUBLIC_URL = "http://127.0.0.1:4000"
MGMT_AUD = ISSUER + "api/v2/"
API_AUD = "https://api.usermgmt.local"
LOGIN_CLIENT = "login-client"
M2M_CLIENT = "m2m-client"
M2M_SECRET = "m2m-secret-value"
CONNECTION = "Username-Password-Authentication"
PASSWORD = "Corr3ct-horse"


def make_app(**overrides: Any) -> LocalAuth0:
    kwargs: dict[str, Any] = {
        "issuer": ISSUER,
        "public_url": PUBLIC_URL,
        "api_audience": API_AUD,
        "login_client_id": LOGIN_CLIENT,
        "m2m_client_id": M2M_CLIENT,
        "m2m_client_secret": M2M_SECRET,
    }
    kwargs.update(overrides)
    return LocalAuth0(**kwargs)


@pytest.fixture
def app() -> LocalAuth0:
    app = make_app()
    app.add_user("auth0|alice", "Alice@Example.com", PASSWORD, given_name="Alice", family_name="Able")
    app.add_user("auth0|bob", "bob@example.com", PASSWORD, given_name="Bob", family_name="Baker")
    return app


@pytest.fixture
def client(app: LocalAuth0) -> Client:
    return Client(app)


def m2m_token(client: Client) -> str:
    r = client.post(
        "/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": M2M_CLIENT,
            "client_secret": M2M_SECRET,
            "audience": MGMT_AUD,
            "organization": None,
        },
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    token = j(r)["access_token"]
    assert isinstance(token, str)
    return token


def j(response: TestResponse) -> Any:
    """The JSON body (typed ``Any``; werkzeug's ``.json`` is optional)."""
    return json.loads(response.get_data())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def mgmt(client: Client) -> dict[str, str]:
    return auth(m2m_token(client))


def verify(client: Client, token: str, audience: str) -> dict[str, Any]:
    """Verify ``token`` the way a resource server would: keys from the served JWKS."""
    jwks = j(client.get("/.well-known/jwks.json"))
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=ISSUER
    )
    return claims


def password_login(client: Client, **params: Any) -> TestResponse:
    body: dict[str, Any] = {
        "grant_type": "password",
        "username": "alice@example.com",
        "password": PASSWORD,
        "client_id": LOGIN_CLIENT,
        "audience": API_AUD,
    }
    body.update(params)
    return client.post("/oauth/token", json={k: v for k, v in body.items() if v is not None})


# ---------------------------------------------------------------------------------------------
# /oauth/token: client credentials
# ---------------------------------------------------------------------------------------------


def test_client_credentials_token_verifies_against_jwks(client: Client) -> None:
    r = client.post(
        "/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": M2M_CLIENT,
            "client_secret": M2M_SECRET,
            "audience": MGMT_AUD,
            "organization": None,
        },
    )
    assert r.status_code == 200
    body = j(r)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert "read:users" in body["scope"].split() and "delete:refresh_tokens" in body["scope"].split()
    claims = verify(client, body["access_token"], MGMT_AUD)
    assert claims["sub"] == f"{M2M_CLIENT}@clients"
    assert claims["gty"] == "client-credentials"
    assert claims["azp"] == M2M_CLIENT
    assert claims["exp"] - claims["iat"] == 86400
    assert r.headers["Cache-Control"] == "no-store"


def test_client_credentials_form_encoded(client: Client) -> None:
    r = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": M2M_CLIENT,
            "client_secret": M2M_SECRET,
            "audience": MGMT_AUD,
        },
    )
    assert r.status_code == 200
    verify(client, j(r)["access_token"], MGMT_AUD)


@pytest.mark.parametrize(
    ("client_id", "secret"), [(M2M_CLIENT, "wrong"), ("someone-else", M2M_SECRET), (M2M_CLIENT, None)]
)
def test_client_credentials_wrong_client_or_secret(
    client: Client, client_id: str, secret: str | None
) -> None:
    body = {"grant_type": "client_credentials", "client_id": client_id, "audience": MGMT_AUD}
    if secret is not None:
        body["client_secret"] = secret
    r = client.post("/oauth/token", json=body)
    assert r.status_code == 401
    assert j(r) == {"error": "access_denied", "error_description": "Unauthorized"}


def test_client_credentials_unknown_audience(client: Client) -> None:
    r = client.post(
        "/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": M2M_CLIENT,
            "client_secret": M2M_SECRET,
            "audience": "https://nope/",
        },
    )
    assert r.status_code == 403
    assert j(r) == {"error": "access_denied", "error_description": "Service not found: https://nope/"}


# ---------------------------------------------------------------------------------------------
# /oauth/token: password grants
# ---------------------------------------------------------------------------------------------


def test_password_grant_issues_api_token(client: Client) -> None:
    r = password_login(client, username="ALICE@example.COM")
    assert r.status_code == 200
    body = j(r)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    claims = verify(client, body["access_token"], API_AUD)
    assert claims["sub"] == "auth0|alice"
    assert claims["aud"] == API_AUD
    assert claims["azp"] == LOGIN_CLIENT


def test_password_grant_with_openid_scope_adds_userinfo_audience(client: Client) -> None:
    r = password_login(client, scope="openid profile")
    assert r.status_code == 200
    claims = verify(client, j(r)["access_token"], API_AUD)
    assert claims["aud"] == [API_AUD, ISSUER + "userinfo"]
    assert claims["scope"] == "openid profile"


def test_password_grant_defaults_audience(client: Client) -> None:
    r = password_login(client, audience=None)
    assert r.status_code == 200
    assert verify(client, j(r)["access_token"], API_AUD)["sub"] == "auth0|alice"


def test_password_realm_grant(client: Client) -> None:
    r = password_login(
        client, grant_type="http://auth0.com/oauth/grant-type/password-realm", realm=CONNECTION
    )
    assert r.status_code == 200
    assert verify(client, j(r)["access_token"], API_AUD)["sub"] == "auth0|alice"
    r = password_login(client, grant_type="http://auth0.com/oauth/grant-type/password-realm", realm="other")
    assert r.status_code == 400
    assert j(r)["error"] == "invalid_request"


@pytest.mark.parametrize(
    "params", [{"password": "Wr0ng-password"}, {"username": "nobody@example.com"}], ids=["password", "user"]
)
def test_password_grant_wrong_credentials(client: Client, params: dict[str, str]) -> None:
    r = password_login(client, **params)
    assert r.status_code == 403
    assert j(r) == {"error": "invalid_grant", "error_description": "Wrong email or password."}


def test_password_grant_blocked_user(app: LocalAuth0, client: Client) -> None:
    app.add_user("auth0|carol", "carol@example.com", PASSWORD, given_name="C", family_name="D", blocked=True)
    r = password_login(client, username="carol@example.com")
    assert r.status_code == 401
    assert j(r) == {"error": "unauthorized", "error_description": "user is blocked"}
    # A wrong password on a blocked account does not reveal the block.
    r = password_login(client, username="carol@example.com", password="Wr0ng-password")
    assert r.status_code == 403
    assert j(r)["error"] == "invalid_grant"


def test_password_grant_unknown_client(client: Client) -> None:
    r = password_login(client, client_id="who-is-this")
    assert r.status_code == 401
    assert j(r) == {"error": "access_denied", "error_description": "Unauthorized"}


def test_password_grant_other_audience(client: Client) -> None:
    r = password_login(client, audience="https://other-api/")
    assert r.status_code == 403
    assert j(r)["error"] == "access_denied"


def test_unsupported_grant_type(client: Client) -> None:
    r = client.post("/oauth/token", json={"grant_type": "authorization_code", "client_id": LOGIN_CLIENT})
    assert r.status_code == 403
    assert j(r) == {
        "error": "unsupported_grant_type",
        "error_description": "Unsupported grant type: authorization_code",
    }


@pytest.mark.parametrize("missing", ["username", "password", "client_id"])
def test_password_grant_missing_parameter(client: Client, missing: str) -> None:
    body = {"grant_type": "password", "username": "alice@example.com", "password": PASSWORD}
    body["client_id"] = LOGIN_CLIENT
    del body[missing]
    r = client.post("/oauth/token", json=body)
    assert r.status_code == 400
    assert j(r)["error"] == "invalid_request"
    assert missing in j(r)["error_description"]


def test_missing_grant_type(client: Client) -> None:
    r = client.post("/oauth/token", json={})
    assert r.status_code == 400
    assert j(r)["error"] == "invalid_request"


def test_openid_configuration(client: Client) -> None:
    body = j(client.get("/.well-known/openid-configuration"))
    assert body["issuer"] == ISSUER
    assert body["jwks_uri"] == PUBLIC_URL + "/.well-known/jwks.json"


def test_sign_crafts_tokens_verifiable_with_jwks(app: LocalAuth0, client: Client) -> None:
    now = int(time.time())
    token = app.sign({"iss": ISSUER, "aud": API_AUD, "sub": "auth0|x", "iat": now, "exp": now + 60})
    assert verify(client, token, API_AUD)["sub"] == "auth0|x"
    assert app.jwks() == j(client.get("/.well-known/jwks.json"))


# ---------------------------------------------------------------------------------------------
# Management API: authentication
# ---------------------------------------------------------------------------------------------

INVALID_TOKEN = {"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"}


def test_management_requires_token(client: Client) -> None:
    r = client.get("/api/v2/users/auth0%7Calice")
    assert r.status_code == 401
    assert j(r) == INVALID_TOKEN


def test_management_refuses_api_token(client: Client) -> None:
    api_token = j(password_login(client))["access_token"]
    r = client.get("/api/v2/users/auth0%7Calice", headers=auth(api_token))
    assert r.status_code == 401
    assert j(r) == INVALID_TOKEN


def test_management_refuses_token_from_another_instance(client: Client) -> None:
    other = make_app()
    foreign = m2m_token(Client(other))
    r = client.get("/api/v2/users/auth0%7Calice", headers=auth(foreign))
    assert r.status_code == 401


def test_management_refuses_expired_token(app: LocalAuth0, client: Client) -> None:
    now = int(time.time())
    token = app.sign(
        {
            "iss": ISSUER,
            "aud": MGMT_AUD,
            "sub": "x@clients",
            "iat": now - 100,
            "exp": now - 10,
            "scope": "read:users",
        }
    )
    r = client.get("/api/v2/users/auth0%7Calice", headers=auth(token))
    assert r.status_code == 401
    assert j(r)["statusCode"] == 401


def test_management_checks_scope(app: LocalAuth0, client: Client) -> None:
    now = int(time.time())
    token = app.sign(
        {
            "iss": ISSUER,
            "aud": MGMT_AUD,
            "sub": "x@clients",
            "iat": now,
            "exp": now + 60,
            "scope": "read:users",
        }
    )
    assert client.get("/api/v2/users/auth0%7Calice", headers=auth(token)).status_code == 200
    r = client.delete("/api/v2/users/auth0%7Calice", headers=auth(token))
    assert r.status_code == 403
    assert j(r)["errorCode"] == "insufficient_scope"


# ---------------------------------------------------------------------------------------------
# Management API: users
# ---------------------------------------------------------------------------------------------


def test_get_user(client: Client, mgmt: dict[str, str]) -> None:
    r = client.get("/api/v2/users/auth0%7Calice", headers=mgmt)
    assert r.status_code == 200
    user = j(r)
    assert user["user_id"] == "auth0|alice"
    assert user["email"] == "alice@example.com"  # stored lower-case
    assert user["email_verified"] is True and user["blocked"] is False
    assert (user["given_name"], user["family_name"], user["name"]) == ("Alice", "Able", "Alice Able")
    assert user["identities"] == [
        {"connection": CONNECTION, "provider": "auth0", "user_id": "alice", "isSocial": False}
    ]
    assert "created_at" in user and "updated_at" in user
    assert "password" not in json.dumps(user)


def test_get_unknown_user(client: Client, mgmt: dict[str, str]) -> None:
    r = client.get("/api/v2/users/auth0%7Cnobody", headers=mgmt)
    assert r.status_code == 404
    assert j(r) == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "The user does not exist.",
        "errorCode": "inexistent_user",
    }


def test_patch_updates_and_returns_user(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch(
        "/api/v2/users/auth0%7Calice",
        headers=mgmt,
        json={"given_name": "Alicia", "family_name": "Zed", "name": "Alicia Zed", "blocked": True},
    )
    assert r.status_code == 200
    assert (j(r)["given_name"], j(r)["family_name"], j(r)["name"]) == ("Alicia", "Zed", "Alicia Zed")
    state = app.get_user("auth0|alice")
    assert state is not None and state["blocked"] is True and state["name"] == "Alicia Zed"


def test_patch_email_is_stored_lower_case(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch(
        "/api/v2/users/auth0%7Calice",
        headers=mgmt,
        json={"email": "New.Alice@Example.com", "email_verified": False, "connection": CONNECTION},
    )
    assert r.status_code == 200
    assert j(r)["email"] == "new.alice@example.com"
    assert j(r)["email_verified"] is False
    found = client.get(
        "/api/v2/users-by-email", query_string={"email": "NEW.alice@example.com"}, headers=mgmt
    )
    assert [u["user_id"] for u in j(found)] == ["auth0|alice"]


def test_patch_rejects_additional_property(client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"name": "X", "user_id": "auth0|evil"})
    assert r.status_code == 400
    assert j(r) == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "Payload validation error: 'Additional properties not allowed: user_id'.",
        "errorCode": "invalid_body",
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("password", "email"),
        ("password", "email_verified"),
        ("username", "password"),
        ("username", "email"),
        ("username", "email_verified"),
    ],
)
def test_patch_refuses_combinations(
    app: LocalAuth0, client: Client, mgmt: dict[str, str], first: str, second: str
) -> None:
    values = {
        "password": "N3w-password!",
        "email": "x@example.com",
        "email_verified": True,
        "username": "alice",
    }
    r = client.patch(
        "/api/v2/users/auth0%7Calice", headers=mgmt, json={first: values[first], second: values[second]}
    )
    assert r.status_code == 400
    assert j(r)["message"] == f"Cannot update {first} and {second} simultaneously"
    state = app.get_user("auth0|alice")
    assert state is not None and state["email"] == "alice@example.com" and state["_password_changes"] == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "x" * 301), ("name", ""), ("given_name", "x" * 151), ("family_name", ""), ("family_name", 5)],
)
def test_patch_validates_names(client: Client, mgmt: dict[str, str], key: str, value: object) -> None:
    r = client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={key: value})
    assert r.status_code == 400
    assert j(r)["errorCode"] == "invalid_body"
    assert j(r)["message"].startswith("Payload validation error:")


def test_patch_accepts_limits(client: Client, mgmt: dict[str, str]) -> None:
    body = {"name": "x" * 300, "given_name": "g" * 150, "family_name": "f"}
    r = client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json=body)
    assert r.status_code == 200


def test_patch_duplicate_email(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch(
        "/api/v2/users/auth0%7Calice",
        headers=mgmt,
        json={"email": "BOB@example.com", "connection": CONNECTION},
    )
    assert r.status_code == 400
    assert j(r) == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "The specified new email already exists",
        "errorCode": "auth0_idp_error",
    }
    state = app.get_user("auth0|alice")
    assert state is not None and state["email"] == "alice@example.com"
    # Re-setting one's own address is not a duplicate.
    r = client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"email": "ALICE@example.com"})
    assert r.status_code == 200


@pytest.mark.parametrize("password", ["Sh0rt!", "alllowercase1", "NoDigitsHere", "12345678!"])
def test_patch_weak_password(app: LocalAuth0, client: Client, mgmt: dict[str, str], password: str) -> None:
    r = client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"password": password})
    assert r.status_code == 400
    assert j(r) == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": "PasswordStrengthError: Password is too weak",
        "errorCode": "invalid_body",
    }
    assert app.check_password("auth0|alice", PASSWORD)


def test_password_change_lifts_block(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    assert (
        client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"blocked": True}).status_code == 200
    )
    assert password_login(client).status_code == 401
    r = client.patch(
        "/api/v2/users/auth0%7Calice",
        headers=mgmt,
        json={"password": "N3w-password!", "connection": CONNECTION},
    )
    assert r.status_code == 200
    assert j(r)["blocked"] is False
    state = app.get_user("auth0|alice")
    assert state is not None and state["blocked"] is False and state["_password_changes"] == 1
    assert "password" not in state
    assert password_login(client, password="N3w-password!").status_code == 200
    assert password_login(client).status_code == 403


def test_patch_wrong_connection(client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch(
        "/api/v2/users/auth0%7Calice", headers=mgmt, json={"email": "a@b.co", "connection": "nope"}
    )
    assert r.status_code == 400


def test_patch_unknown_user(client: Client, mgmt: dict[str, str]) -> None:
    r = client.patch("/api/v2/users/auth0%7Cnobody", headers=mgmt, json={"name": "X"})
    assert r.status_code == 404
    assert j(r)["errorCode"] == "inexistent_user"


def test_patch_metadata_merges_first_level(client: Client, mgmt: dict[str, str]) -> None:
    url = "/api/v2/users/auth0%7Calice"
    client.patch(url, headers=mgmt, json={"app_metadata": {"a": 1, "b": {"x": 1}}})
    r = client.patch(url, headers=mgmt, json={"app_metadata": {"a": None, "b": {"y": 2}, "c": 3}})
    assert j(r)["app_metadata"] == {"b": {"y": 2}, "c": 3}


def test_delete_user(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    r = client.delete("/api/v2/users/auth0%7Calice", headers=mgmt)
    assert r.status_code == 204
    assert app.get_user("auth0|alice") is None
    assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 404


def test_delete_unknown_user_is_204(client: Client, mgmt: dict[str, str]) -> None:
    assert client.delete("/api/v2/users/auth0%7Cnobody", headers=mgmt).status_code == 204


def test_users_by_email(client: Client, mgmt: dict[str, str]) -> None:
    r = client.get("/api/v2/users-by-email", query_string={"email": "Alice@EXAMPLE.com"}, headers=mgmt)
    assert r.status_code == 200
    assert [u["user_id"] for u in j(r)] == ["auth0|alice"]
    r = client.get("/api/v2/users-by-email", query_string={"email": "nobody@example.com"}, headers=mgmt)
    assert j(r) == []


# ---------------------------------------------------------------------------------------------
# Tickets, sessions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "page"), [("password-change", "/lo/reset"), ("email-verification", "/lo/verify")]
)
def test_tickets(client: Client, mgmt: dict[str, str], endpoint: str, page: str) -> None:
    r = client.post(
        f"/api/v2/tickets/{endpoint}", headers=mgmt, json={"user_id": "auth0|alice", "ttl_sec": 60}
    )
    assert r.status_code == 201
    url = j(r)["ticket"]
    assert url.startswith(f"{PUBLIC_URL}{page}?ticket=") and url.endswith("#")
    shown = client.get(url[len(PUBLIC_URL) :].rstrip("#"))
    assert shown.status_code == 200
    assert shown.mimetype == "text/html"
    assert client.get(f"{page}?ticket=forged").status_code == 404
    r = client.post(f"/api/v2/tickets/{endpoint}", headers=mgmt, json={"user_id": "auth0|nobody"})
    assert r.status_code == 404
    assert j(r)["errorCode"] == "inexistent_user"


def test_verification_ticket_page_verifies_email(
    app: LocalAuth0, client: Client, mgmt: dict[str, str]
) -> None:
    client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"email_verified": False})
    r = client.post("/api/v2/tickets/email-verification", headers=mgmt, json={"user_id": "auth0|alice"})
    url = j(r)["ticket"]
    client.get(url[len(PUBLIC_URL) :].rstrip("#"))
    state = app.get_user("auth0|alice")
    assert state is not None and state["email_verified"] is True
    assert state["_tickets"]["email_verification"] == 1


def test_session_and_refresh_token_revocation(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    assert client.delete("/api/v2/users/auth0%7Calice/sessions", headers=mgmt).status_code == 204
    assert client.delete("/api/v2/users/auth0%7Calice/refresh-tokens", headers=mgmt).status_code == 204
    assert client.post("/api/v2/users/auth0%7Calice/revoke-access", headers=mgmt, json={}).status_code == 202
    state = app.get_user("auth0|alice")
    assert state is not None
    assert state["_revocations"] == {"sessions": 1, "refresh_tokens": 1, "revoke_access": 1}
    for method, path in [("DELETE", "sessions"), ("DELETE", "refresh-tokens")]:
        r = client.open(f"/api/v2/users/auth0%7Cnobody/{path}", method=method, headers=mgmt)
        assert r.status_code == 404
        assert j(r)["errorCode"] == "inexistent_user"


# ---------------------------------------------------------------------------------------------
# Faults and the request log
# ---------------------------------------------------------------------------------------------


def test_fault_429_with_ratelimit_headers(client: Client, mgmt: dict[str, str]) -> None:
    r = client.post("/_knobs/faults", json={"status": 429, "ratelimit_reset_in": 5})
    assert r.status_code == 201
    before = time.time()
    r = client.get("/api/v2/users/auth0%7Calice", headers=mgmt)
    assert r.status_code == 429
    assert j(r) == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Global limit has been reached",
        "errorCode": "too_many_requests",
    }
    reset = int(r.headers["x-ratelimit-reset"])
    assert before + 4 <= reset <= before + 7
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert "x-ratelimit-limit" in r.headers
    # count defaults to 1
    assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 200


def test_fault_500_count_and_clear(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    app.inject_fault(500, count=2)
    for _ in range(2):
        r = client.get("/api/v2/users/auth0%7Calice", headers=mgmt)
        assert r.status_code == 500
        assert j(r) == {"statusCode": 500, "error": "Internal Server Error", "message": "Internal error"}
    assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 200

    client.post("/_knobs/faults", json={"status": 503, "count": -1})
    for _ in range(3):
        assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 503
    assert client.delete("/_knobs/faults").status_code == 204
    assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 200


def test_fault_filters(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    app.inject_fault(500, method="PATCH")
    assert client.get("/api/v2/users/auth0%7Calice", headers=mgmt).status_code == 200
    assert client.get("/_knobs/requests").status_code == 200  # knobs are never faulted
    assert client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"name": "A"}).status_code == 500
    # The token endpoint is untouched by the default prefix, and faulted when the prefix matches it.
    app.inject_fault(503, count=-1)
    assert m2m_token(client)
    app.clear_faults()
    app.inject_fault(429, path_prefix="/oauth/token")
    r = client.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 429
    assert j(r)["error"] == "too_many_requests"


def test_fault_delay_only(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    client.post("/_knobs/faults", json={"status": None, "delay": 0.3})
    started = time.monotonic()
    r = client.get("/api/v2/users/auth0%7Calice", headers=mgmt)
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_knob_rejects_nonsense(client: Client) -> None:
    assert client.post("/_knobs/faults", json={"status": 200}).status_code == 400
    assert client.post("/_knobs/faults", json={"status": None}).status_code == 400


def test_request_log(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"password": "Sup3r-secret!"})
    client.get("/api/v2/users/auth0%7Cnobody", headers=mgmt)
    log = j(client.get("/_knobs/requests"))
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/oauth/token", 200),
        ("PATCH", "/api/v2/users/auth0|alice", 200),
        ("GET", "/api/v2/users/auth0|nobody", 404),
    ]
    assert all(set(e) == {"method", "path", "status", "at"} for e in log)
    assert app.request_log[:3] == log
    dumped = json.dumps(log)
    assert (
        "Sup3r-secret!" not in dumped and M2M_SECRET not in dumped and mgmt["Authorization"][7:] not in dumped
    )
    assert client.delete("/_knobs/requests").status_code == 204
    assert [e["path"] for e in app.request_log] == ["/_knobs/requests"]  # only the DELETE itself


def test_knob_user_state(app: LocalAuth0, client: Client, mgmt: dict[str, str]) -> None:
    client.patch("/api/v2/users/auth0%7Calice", headers=mgmt, json={"password": "Sup3r-secret!"})
    r = client.get("/_knobs/users/auth0%7Calice")
    assert r.status_code == 200
    state = j(r)
    assert state["email"] == "alice@example.com" and state["blocked"] is False
    assert state["_password_changes"] == 1
    assert "Sup3r-secret!" not in json.dumps(state) and "password" not in state
    assert client.get("/_knobs/users/auth0%7Cnobody").status_code == 404


def test_tokens_issued_counter(app: LocalAuth0, client: Client) -> None:
    m2m_token(client)
    m2m_token(client)
    password_login(client)
    assert app.tokens_issued() == 2
    assert app.tokens_issued("password") == 1


def test_machine_clients_get_api_tokens_with_their_scopes(app: LocalAuth0, client: Client) -> None:
    import jwt as pyjwt

    app.add_machine_client("ops-script", "ops-script-secret-value", ["read:users", "bulk:users"])
    body = {"grant_type": "client_credentials", "client_id": "ops-script", "audience": API_AUD}
    r = client.post("/oauth/token", json={**body, "client_secret": "ops-script-secret-value"})
    assert r.status_code == 200, r.get_data(as_text=True)
    claims = pyjwt.decode(j(r)["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "ops-script@clients"
    assert claims["aud"] == API_AUD
    assert claims["gty"] == "client-credentials"
    assert claims["scope"] == "read:users bulk:users"
    assert claims["permissions"] == ["read:users", "bulk:users"]
    assert client.post("/oauth/token", json={**body, "client_secret": "wrong"}).status_code == 401
    wrong_audience = {**body, "client_secret": "ops-script-secret-value", "audience": MGMT_AUD}
    assert client.post("/oauth/token", json=wrong_audience).status_code == 403
