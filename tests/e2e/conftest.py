"""The local stack, started exactly as ``make run`` starts it, for tests that drive it over HTTP.

``local_stack`` (session scope) runs ``python -m local`` with ``PYTHONPATH=layers/shared:.`` on free ports
and its own seed file (different users than the default ``local/seed.json``), waits for
``/_local/health`` and stops it with SIGTERM at the end. It yields a ``LocalStackInfo`` with the URLs, the
seeded users and two helpers other e2e tests can reuse:

* ``login(email, password) -> str``: an access token from the local Auth0's password grant.
* ``api(method, path, token=None, json=None, headers=None) -> ApiResponse``: one request to the gateway.
"""

from __future__ import annotations

import json as jsonlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from local.launch import StackFailed, launched_stack

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 120.0  # two stacks start at once under the test workers; a loaded machine is slow
AUDIENCE = "https://api.e2e.local"
LOGIN_CLIENT_ID = "e2e-login-client"


@dataclass(frozen=True)
class SeedLogin:
    key: str
    email: str
    password: str
    first_name: str
    last_name: str

    @property
    def user_id(self) -> str:
        import hashlib

        return "auth0|" + hashlib.sha256(self.email.lower().encode()).hexdigest()[:24]


# A seed unlike local/seed.json, so the tests prove SEED_FILE is honoured.
SEED_USERS = {
    "admin": SeedLogin("admin", "root.admin@e2e.example", "E2e-Admin-Pass1", "Rita", "Root"),
    "delegate": SeedLogin("delegate", "dora.delegate@initech.example", "E2e-Delegate-1", "Dora", "Delegate"),
    "buyer": SeedLogin("buyer", "vic.buyer@initech.example", "E2e-Buyer-Pass1", "Vic", "Buyer"),
    "suspended": SeedLogin(
        "suspended", "sid.suspended@initech.example", "E2e-Suspended-1", "Sid", "Suspended"
    ),
}
SEED = {
    "accounts": [{"id": "initech", "name": "Initech"}, {"id": "umbrella", "name": "Umbrella"}],
    "users": [
        {
            "email": SEED_USERS["admin"].email,
            "password": SEED_USERS["admin"].password,
            "firstName": "Rita",
            "lastName": "Root",
            "profile": "administrator",
        },
        {
            "email": SEED_USERS["delegate"].email,
            "password": SEED_USERS["delegate"].password,
            "firstName": "Dora",
            "lastName": "Delegate",
            "memberships": [{"accountId": "initech", "roles": ["Administrator", "Buyer"]}],
            "defaultAccountId": "initech",
        },
        {
            "email": SEED_USERS["buyer"].email,
            "password": SEED_USERS["buyer"].password,
            "firstName": "Vic",
            "lastName": "Buyer",
            "memberships": [
                {"accountId": "initech", "roles": ["Buyer"]},
                {"accountId": "umbrella", "roles": ["Buyer", "Approver"]},
            ],
            "defaultAccountId": "umbrella",
            "accountNumber": "E2E-1",
        },
        {
            "email": SEED_USERS["suspended"].email,
            "password": SEED_USERS["suspended"].password,
            "firstName": "Sid",
            "lastName": "Suspended",
            "memberships": [{"accountId": "initech", "roles": ["Buyer"]}],
            "defaultAccountId": "initech",
            "status": "SUSPENDED",
        },
    ],
    "machineClients": [
        {
            "clientId": "e2e-bulk-script",
            "clientSecret": "e2e-bulk-script-secret-1",
            "scopes": ["read:users", "suspend:users", "bulk:users"],
        },
        {"clientId": "e2e-reader", "clientSecret": "e2e-reader-secret-0001", "scopes": ["read:users"]},
    ],
}


@dataclass
class ApiResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"<ApiResponse {self.status} {self.text[:300]}>"


def request(
    method: str,
    url: str,
    *,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> ApiResponse:
    """One HTTP request with the standard library; 4xx/5xx come back as responses, not exceptions."""
    data = None
    all_headers = dict(headers or {})
    if json is not None:
        data = jsonlib.dumps(json).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - http only
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 - loopback only
            return ApiResponse(
                response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
            )
    except urllib.error.HTTPError as error:
        with error:
            return ApiResponse(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@dataclass
class LocalStackInfo:
    api_url: str
    auth0_url: str
    aws_url: str
    audience: str
    client_id: str
    users: dict[str, SeedLogin] = field(default_factory=dict)
    log_dir: Path | None = None

    def token_response(self, email: str, password: str) -> ApiResponse:
        """The raw answer of Auth0's password grant (for tests of refused logins)."""
        return request(
            "POST",
            f"{self.auth0_url}/oauth/token",
            json={
                "grant_type": "password",
                "username": email,
                "password": password,
                "audience": self.audience,
                "client_id": self.client_id,
                "scope": "openid",
            },
        )

    def login(self, email: str, password: str) -> str:
        response = self.token_response(email, password)
        assert response.status == 200, f"login of {email} failed: {response}"
        token = response.json()["access_token"]
        assert isinstance(token, str)
        return token

    def settle_queues(self, timeout: float = 30.0) -> None:
        """Wait until every queue of the local AWS is empty and nothing is in flight: the work queued by
        public requests (reset, renew) and bulk jobs is done, as it is a moment later in AWS."""
        import time

        from local.aws import client as aws_client

        sqs = aws_client("sqs", self.aws_url, "eu-central-1")
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:  # twice in a row: a message received between two reads is not missed
            busy = 0
            for url in sqs.list_queues().get("QueueUrls", []):
                if "dlq" in url.lower():
                    continue
                attributes = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                busy += sum(int(v) for v in attributes.values())
            quiet = quiet + 1 if busy == 0 else 0
            assert time.monotonic() < deadline, "queued work did not finish"
            time.sleep(0.1)

    def api(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return request(method, f"{self.api_url}{path}", json=json, headers=all_headers)


def seed_of(
    users: Mapping[str, SeedLogin],
    accounts: Mapping[str, str],
    *,
    extra: Callable[[str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A seed file of ``users``: the one keyed ``admin`` a platform administrator with no accounts, every
    other a Buyer in the first of ``accounts`` (id -> name); ``extra(key)`` adds or overrides fields."""
    home = next(iter(accounts))
    entries = []
    for key, user in users.items():
        entry: dict[str, Any] = {
            "email": user.email,
            "password": user.password,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "profile": "administrator" if key == "admin" else "customer",
            "memberships": [] if key == "admin" else [{"accountId": home, "roles": ["Buyer"]}],
            "defaultAccountId": None if key == "admin" else home,
        }
        entry.update(extra(key) if extra else {})
        entries.append(entry)
    return {"accounts": [{"id": i, "name": n} for i, n in accounts.items()], "users": entries}


def user_path(user: SeedLogin) -> str:
    """``/users/{userId}`` with the id percent-encoded, as clients send it."""
    return "/users/" + quote(user.user_id, safe="")


@contextmanager
def running_stack(
    workdir: Path,
    seed: Mapping[str, Any],
    users: Mapping[str, SeedLogin],
    extra_env: Mapping[str, str] | None = None,
    ports: tuple[int, int, int] | None = None,
) -> Iterator[LocalStackInfo]:
    """Start ``python -m local`` as ``make run`` does, with ``seed`` and ``extra_env``; stop it after.

    ``ports``: (API, Auth0, AWS), default free ones.
    """
    try:
        with launched_stack(
            workdir,
            seed,
            audience=AUDIENCE,
            client_id=LOGIN_CLIENT_ID,
            env=extra_env,
            ports=ports,
            startup_timeout=STARTUP_TIMEOUT,
        ) as launched:
            yield LocalStackInfo(
                api_url=launched.api_url,
                auth0_url=launched.auth0_url,
                aws_url=launched.aws_url,
                audience=AUDIENCE,
                client_id=LOGIN_CLIENT_ID,
                users=dict(users),
                log_dir=workdir,
            )
    except StackFailed as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("local-stack"), SEED, SEED_USERS) as info:
        yield info


@pytest.fixture(scope="session")
def admin_token(local_stack: LocalStackInfo) -> str:
    admin = local_stack.users["admin"]
    return local_stack.login(admin.email, admin.password)
