"""AWS and Auth0 calls per operation, counted from the clients.

Every operation runs through its real ``lambda_handler`` with the real adapters: DynamoDB, SES and
Secrets Manager on moto (in process), Auth0 through auth0-python against the local Auth0 over HTTP.
AWS calls are counted from botocore's ``before-call`` events (one per API call, retries included);
Auth0 calls from the local Auth0's request log. The container is warm (as in a Lambda that already
served a request): the one-time Secrets Manager read and M2M token fetch of a cold container are
reported separately.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-Passw0rd!"  # noqa: S105 - a local test user


def _setup_env() -> None:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "POWERTOOLS_SERVICE_NAME": "usermgmt",
            "POWERTOOLS_METRICS_NAMESPACE": "UserManagementBench",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)


class Bench:
    def __init__(self) -> None:
        import boto3
        from botocore.handlers import BUILTIN_HANDLERS

        from local.auth0 import LocalAuth0, serve
        from tests.conftest import FakeClock, create_table
        from usermgmt import container
        from usermgmt.settings import Settings

        self.aws_calls: Counter[str] = Counter()
        # every botocore session created from now on (boto3's default one and Powertools' own for
        # Secrets Manager) emits before-call to this counter
        BUILTIN_HANDLERS.append(("before-call.*.*", self._count_aws))
        boto3.setup_default_session()

        self.auth0 = LocalAuth0(
            issuer="https://bench.auth0.local/",
            public_url="http://127.0.0.1",
            api_audience="https://api.bench",
            login_client_id="bench-login",
            m2m_client_id="bench-m2m",
            m2m_client_secret="bench-secret",  # noqa: S106 - the local Auth0 only
        )
        self.server = serve(self.auth0, "127.0.0.1", 0)
        table = "usermgmt-bench"
        create_table(boto3.client("dynamodb"), table)
        boto3.client("sesv2").create_email_identity(EmailIdentity="bench.example")
        arn = boto3.client("secretsmanager").create_secret(Name="bench/m2m", SecretString="bench-secret")[
            "ARN"
        ]
        settings = Settings(
            table_name=table,
            auth0_domain="bench.auth0.local",
            auth0_base_url=self.server.url,
            auth0_client_id="bench-m2m",
            auth0_client_secret_arn=arn,
            ses_sender="no-reply@bench.example",
            public_base_url="https://users.bench.example",
        )
        self.clock = FakeClock()
        self.container = container.Container(settings, clock=self.clock)
        container.override(self.container)
        self.store = self.container.store
        self.store.put_account("acme", "Acme")
        self.handlers: dict[str, Any] = {}

    def _count_aws(self, model: Any, **_: Any) -> None:
        self.aws_calls[f"{model.service_model.service_name}.{model.name}"] += 1

    def add_user(self, key: str, *, admin: bool = False) -> Any:
        from tests.conftest import user_id_for
        from usermgmt.models import Membership, User

        email = f"{key}@acme.example"
        user = User(
            id=user_id_for(email),
            email=email,
            email_verified=True,
            first_name=key.title(),
            last_name="Bench",
            profile="administrator" if admin else "customer",
            memberships=() if admin else (Membership("acme", ("Buyer",)),),
            default_account_id=None if admin else "acme",
        )
        self.store.put_user(user)
        self.auth0.add_user(user.id, email, PASSWORD, given_name=user.first_name, family_name="Bench")
        return user

    def call(
        self, function: str, method: str, path: str, *, user: Any = None, body: Any = None
    ) -> dict[str, Any]:
        from tests.conftest import LambdaContext, http_event, load_handler

        if function not in self.handlers:
            self.handlers[function] = load_handler(function)
        event = http_event(method, path, body=body)
        if user is None:
            event["requestContext"].pop("authorizer", None)
        else:
            claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
            claims["sub"] = user.id
            claims["iat"] = str(int(self.clock.now()))
        result: dict[str, Any] = self.handlers[function].lambda_handler(event, LambdaContext(function))
        assert result["statusCode"] < 300, result
        return result

    def measure(self, name: str, operation: Callable[[], Any]) -> dict[str, Any]:
        self.aws_calls.clear()
        self.auth0.clear_requests()
        operation()
        auth0 = Counter(
            f"{r['method']} {re.sub(r'/users/[^/]+', '/users/{id}', r['path'])}"
            for r in self.auth0.requests()
        )
        return {
            "operation": name,
            "aws": dict(sorted(self.aws_calls.items())),
            "auth0": dict(sorted(auth0.items())),
        }

    def last_link(self, path: str) -> str:
        from email import message_from_string, policy

        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        messages = ses_backends[DEFAULT_ACCOUNT_ID]["eu-central-1"].sent_messages
        for message in reversed(messages):
            parsed = message_from_string(getattr(message, "raw_data", "") or "", policy=policy.default)
            body = parsed.get_body(("plain",))
            text = body.get_content() if body is not None else ""
            match = re.search(re.escape(path) + r"([A-Za-z0-9_-]{20,})", text)
            if match:
                return match.group(1)
        raise AssertionError(f"no {path} link sent")


def run() -> dict[str, Any]:
    _setup_env()
    from moto import mock_aws

    with mock_aws():
        b = Bench()
        admin = b.add_user("ada", admin=True)
        users = {k: b.add_user(k) for k in ("warm", "nina", "eve", "sue", "dan", "rex")}
        cold = b.measure(
            "first Auth0 call of a cold container (name change)",
            lambda: b.call("update-user", "PATCH", "/me", user=users["warm"], body={"firstName": "Warmer"}),
        )
        rows = [
            b.measure("GET /me", lambda: b.call("update-user", "GET", "/me", user=users["nina"])),
            b.measure(
                "name change (PATCH /me firstName)",
                lambda: b.call("update-user", "PATCH", "/me", user=users["nina"], body={"firstName": "Nora"}),
            ),
            b.measure(
                "email change requested (PATCH /me email)",
                lambda: b.call(
                    "update-user", "PATCH", "/me", user=users["eve"], body={"email": "eve.new@acme.example"}
                ),
            ),
        ]
        token = b.last_link("/email-verification/")
        rows.append(
            b.measure(
                "email change confirmed (POST /email-verification/{token})",
                lambda: b.call("verify-email", "POST", f"/email-verification/{token}", body={}),
            )
        )
        sue = "/users/" + users["sue"].id
        rows.append(
            b.measure("suspend", lambda: b.call("suspend-user", "POST", sue + "/suspend", user=admin))
        )
        rows.append(b.measure("enable", lambda: b.call("enable-user", "POST", sue + "/enable", user=admin)))
        rows.append(
            b.measure(
                "delete", lambda: b.call("delete-user", "DELETE", "/users/" + users["dan"].id, user=admin)
            )
        )
        rows.append(
            b.measure(
                "password reset requested (public POST /password-reset)",
                lambda: b.call(
                    "reset-password", "POST", "/password-reset", body={"email": users["rex"].email}
                ),
            )
        )
        token = b.last_link("/password-reset/")
        rows.append(
            b.measure(
                "password reset completed (POST /password-reset/{token})",
                lambda: b.call(
                    "reset-password",
                    "POST",
                    f"/password-reset/{token}",
                    body={"newPassword": "N3w-Bench-Pass!"},
                ),
            )
        )
        rows.append(
            b.measure(
                "password reset requested for an unknown address",
                lambda: b.call(
                    "reset-password", "POST", "/password-reset", body={"email": "nobody@acme.example"}
                ),
            )
        )
        # SPEC 13: create, invite (a new address and an existing user: the same work) and accept
        b.store.put_account("acme", "Acme")
        rows.append(
            b.measure(
                "create a user (POST /users)",
                lambda: b.call(
                    "create-user",
                    "POST",
                    "/users",
                    user=admin,
                    body={"email": "newbie@acme.example", "firstName": "New", "lastName": "Bie"},
                ),
            )
        )
        token = b.last_link("/invitations/")
        rows.append(
            b.measure(
                "accept as a new user (POST /invitations/{token} newPassword)",
                lambda: b.call(
                    "create-user", "POST", f"/invitations/{token}", body={"newPassword": "N3w-Bench-Pass!"}
                ),
            )
        )
        for label, address in (
            ("a new address", "fresh@new.example"),
            ("an existing user", users["nina"].email),
        ):
            invite_body = {"email": address, "firstName": "In", "lastName": "Vitee", "roles": ["Buyer"]}
            rows.append(
                b.measure(
                    f"invite {label} (POST /accounts/{{id}}/invitations)",
                    lambda body=invite_body: b.call(
                        "create-user", "POST", "/accounts/acme/invitations", user=admin, body=body
                    ),
                )
            )
        token = b.last_link("/invitations/")
        rows.append(
            b.measure(
                "accept as an existing user (POST /invitations/{token} {})",
                lambda: b.call("create-user", "POST", f"/invitations/{token}", body={}),
            )
        )
        b.server.shutdown()
    return {"cold_container": cold, "operations": rows}


def markdown(result: dict[str, Any]) -> str:
    def fmt(calls: dict[str, int]) -> str:
        return ", ".join(f"{n}x {k}" for k, n in calls.items()) or "none"

    lines = ["| operation | AWS calls | Auth0 calls |", "|---|---|---|"]
    for row in result["operations"]:
        lines.append(f"| {row['operation']} | {fmt(row['aws'])} | {fmt(row['auth0'])} |")
    cold = result["cold_container"]
    lines += [
        "",
        f"The same name change in a cold container: {fmt(cold['aws'])} / {fmt(cold['auth0'])}; "
        "the difference is the Secrets Manager read and the M2M token fetch, both cached per container.",
    ]
    return "\n".join(lines)


def main() -> None:
    result = run()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "calls.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
