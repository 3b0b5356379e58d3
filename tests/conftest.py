"""Shared fixtures: moto-backed table built from template.yaml, fakes, and a handler invoker."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Powertools reads these when its Logger/Metrics are created, which may happen at collection time.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "usermgmt")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "UserManagementTest")

from local.aws import make_dynamodb_atomic
from local.lambda_runtime import load_handler_module
from tests.fakes.fake_idp import FakeIdentityProvider
from usermgmt import container as container_module
from usermgmt.models import Membership, User
from usermgmt.ports import Email, MailUnavailable
from usermgmt.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
TABLE = "usermgmt-test"
START = 1_800_000_000.0


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "usermgmt")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "UserManagementTest")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.written: list[str] = []  # stdout and stderr of the test
        self.read_output: Any = None

    def output(self) -> str:
        """Everything written to stdout and stderr so far."""
        self.read_output()
        return "".join(self.written)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # pragma: no cover - a broken record is itself worth seeing
            self.lines.append(repr(record.__dict__))


_ENVS: list[Env] = []
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
LINK_TOKEN = re.compile(r"/(?:password-reset|email-verification|email-change)/([A-Za-z0-9_-]{20,})")


@pytest.fixture(autouse=True)
def log_canary(capsys: pytest.CaptureFixture[str]) -> Iterator[_Capture]:
    """Fails a test whose logs carry a token, a JWT, a password, an email address or a person's name
    (SPEC section 10; security notes T8). It reads Python logging and everything written to stdout and
    stderr (print, Powertools' log lines and metrics, a traceback), also what the test read itself."""
    from usermgmt.observability import logger

    capture = _Capture()
    capture.setFormatter(logger.registered_formatter)
    targets = [logging.getLogger(logger.name), logging.getLogger()]
    for target in targets:
        target.addHandler(capture)
    read = capsys.readouterr

    def read_and_keep() -> Any:
        result = read()
        capture.written.extend((result.out, result.err))
        return result

    capsys.readouterr = read_and_keep  # type: ignore[method-assign]
    capture.read_output = read_and_keep
    yield capture
    read_and_keep()
    for target in targets:
        target.removeHandler(capture)
    findings = canary_findings(capture.lines + capture.written, _ENVS)
    _ENVS.clear()
    assert not findings, f"log canary: {findings}"


def people_names(envs: list[Env]) -> set[str]:
    """The first and last names of the people of the test: those it created, set through the API,
    and those Auth0 holds."""
    names: set[str] = set()
    for e in envs:
        names |= e.names
        for user in e.idp.users.values():
            names |= {n for n in (user.given_name, user.family_name) if n}
    return {n for n in names if len(n.strip()) >= 3}


def canary_findings(lines: list[str], envs: list[Env]) -> list[str]:
    """What must never be logged: link tokens, passwords, JWTs, email addresses, people's names."""
    text = "\n".join(lines)
    secrets: set[str] = set()
    for e in envs:
        for email in e.mailer.sent:
            secrets.update(LINK_TOKEN.findall(email.text))
        secrets.update(e.idp.passwords.values())
    findings = ["a link token or password" for s in secrets if s and s in text]
    if JWT.search(text):
        findings.append("a JWT")
    if EMAIL.search(text):
        findings.append("an email address")
    named = sorted(n for n in people_names(envs) if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text))
    if named:
        findings.append(f"a person's name ({len(named)})")
    # Lifecycle events are as public as logs (SPEC 15: no personal data): the canary reads what the
    # test's bus received too.
    events = "\n".join(json.dumps(event) for e in envs for event in e.bus.events)
    if EMAIL.search(events) or any(s and s in events for s in secrets):
        findings.append("personal data or a secret in a lifecycle event")
    return findings


@pytest.fixture(autouse=True)
def _reset_metrics() -> Iterator[None]:
    from usermgmt.observability import metrics

    yield
    metrics.clear_metrics()


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class RecordingMailer:
    def __init__(self) -> None:
        self.sent: list[Email] = []
        self.failing = False

    def send(self, email: Email) -> None:
        if self.failing:
            raise MailUnavailable("MessageRejected")
        self.sent.append(email)

    def to(self, address: str) -> list[Email]:
        return [e for e in self.sent if e.to == address]


class RecordingBus:
    """The product's event bus: records what was put on it; ``refusing`` makes entries fail."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []  # as EventBridge delivers them (detail-type + detail)
        self.refusing: set[str] = set()  # detail-types the bus refuses
        self.down = False
        self.calls = 0

    def put_events(self, entries: list[Any]) -> list[bool]:
        from usermgmt.ports import BusUnavailable

        self.calls += 1
        if self.down:
            raise BusUnavailable("down")
        taken: list[bool] = []
        for entry in entries:
            ok = entry.detail_type not in self.refusing
            if ok:
                self.events.append({"detail-type": entry.detail_type, "detail": entry.detail})
            taken.append(ok)
        return taken

    def of(self, user_id: str) -> list[dict[str, Any]]:
        return [e["detail"] for e in self.events if e["detail"]["subject"] == user_id]


PUBLIC_MAX_RECEIVES = 5  # the public requests' queue's maxReceiveCount in template.yaml


class RecordingQueue:
    """The bulk jobs' queue: messages kept in order; ``drain`` delivers them as the event source
    mapping would (batches of ``batch`` messages, failed ones back at the end)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []  # what the redrive policy moved to the dead-letter queue
        self.down = False
        self._ids = 0

    def send(self, bodies: list[dict[str, Any]]) -> None:
        from usermgmt.ports import QueueUnavailable

        if self.down:
            raise QueueUnavailable("down")
        for body in bodies:
            self._ids += 1
            self.messages.append({"messageId": f"m-{self._ids}", "body": json.dumps(body)})


@functools.cache
def table_definition() -> dict[str, Any]:
    """The table exactly as template.yaml defines it (never a hand copy)."""
    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    (table,) = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    return dict(table["Properties"])


def create_table(client: Any, name: str) -> None:
    props = table_definition()
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    client.create_table(**kwargs)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def user_id_for(email: str) -> str:
    return "auth0|" + hashlib.sha256(email.lower().encode()).hexdigest()[:24]


@dataclass
class Env:
    """A wired container over moto with fakes for Auth0, SES and the clock."""

    container: container_module.Container
    idp: FakeIdentityProvider
    mailer: RecordingMailer
    clock: FakeClock
    dynamodb: Any
    bus: RecordingBus = field(default_factory=RecordingBus)
    queue: RecordingQueue = field(default_factory=RecordingQueue)
    # public requests (POST /password-reset, renew routes): by default delivered to public-requests as
    # soon as the HTTP call that queued them returns, as the event source mapping does a moment later;
    # ``public_auto = False`` keeps them queued (``drain_public``)
    public_queue: RecordingQueue = field(default_factory=RecordingQueue)
    public_auto: bool = True
    handlers: dict[str, ModuleType] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # people's names the test gave (the canary's)
    # the timeout of each invocation, on ``clock`` (None: 15 s that never run out)
    time_limit: float | None = None

    def context(self, function: str) -> LambdaContext:
        """The Lambda context of one invocation, its remaining time counted down on ``clock``."""
        if self.time_limit is None:
            return LambdaContext(function)
        deadline = self.clock.now() + self.time_limit
        return LambdaContext(function, lambda: int((deadline - self.clock.now()) * 1000))

    @property
    def store(self) -> Any:
        return self.container.store

    def configure(self, **changes: Any) -> None:
        """Change settings: a new container over the same store, fakes and clock (as a new deploy)."""
        self.container = self.build(self.container.settings.replace(**changes), self.container.store)

    def build(self, settings: Settings, store: Any) -> container_module.Container:
        """A container of ``settings`` over ``store`` and this environment's fakes, made the current one."""
        c = container_module.Container(
            settings,
            store=store,
            idp=self.idp,
            mailer=self.mailer,
            clock=self.clock,
            bus=self.bus,
            queue=self.queue,
            public_queue=self.public_queue,
        )
        container_module.override(c)
        return c

    @staticmethod
    def metric_count(name: str) -> float:
        """The sum of a metric emitted since the last flush (handlers flush at the end of an invocation)."""
        from usermgmt.observability import metrics

        values = metrics.metric_set.get(name, {}).get("Value", [])
        return float(sum(values if isinstance(values, list) else [values]))

    def publish(self) -> dict[str, Any]:
        """One publish-events sweep (whatever waits in the outbox)."""
        self.clock.advance(self.container.settings.outbox_sweep_grace_seconds + 0.001)
        return self.container.publisher.sweep()

    def drain_bulk(self, *, batch: int = 10, max_rounds: int = 1000) -> int:
        """Deliver the bulk queue to bulk-worker until it is empty, as the event source mapping would;
        returns the number of deliveries. A failed message goes back to the end of the queue."""
        deliveries = 0
        for _ in range(max_rounds):
            if not self.queue.messages:
                return deliveries
            records = self.queue.messages[:batch]
            del self.queue.messages[:batch]
            result = self.send_event("bulk-worker", {"Records": records})
            deliveries += len(records)
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            self.queue.messages.extend(r for r in records if r["messageId"] in failed)
        raise AssertionError("the bulk queue never drained")

    def drain_public(self) -> int:
        """Deliver the public requests' queue to public-requests (one batch at a time) until it is
        empty; returns the number of deliveries. A failed message comes back, and after its fifth
        delivery goes to ``public_queue.dead`` (the queue's redrive policy)."""
        delivered = 0
        received: dict[str, int] = {}
        while self.public_queue.messages:
            records = self.public_queue.messages[:10]
            del self.public_queue.messages[:10]
            for r in records:  # as SQS counts them
                r["attributes"] = {"ApproximateReceiveCount": str(received.get(r["messageId"], 0) + 1)}
            result = self.send_event("public-requests", {"Records": records})
            delivered += len(records)
            failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
            for r in records:
                if r["messageId"] in failed:
                    received[r["messageId"]] = received.get(r["messageId"], 0) + 1
                    again = received[r["messageId"]] < PUBLIC_MAX_RECEIVES
                    (self.public_queue.messages if again else self.public_queue.dead).append(r)
        return delivered

    def run_sync(self) -> dict[str, Any]:
        """One sync-identity run."""
        return self.container.sync.run_due(self.container.passwords)

    def add_account(self, account_id: str, name: str | None = None) -> None:
        self.store.put_account(account_id, name or account_id.title())

    def add_user(
        self,
        email: str,
        *,
        first: str = "Test",
        last: str = "User",
        profile: str = "customer",
        memberships: dict[str, list[str]] | None = None,
        status: str = "ACTIVE",
        default: str | None = None,
        account_number: str | None = None,
    ) -> User:
        memberships = memberships or {}
        self.names |= {first, last}
        user = User(
            id=user_id_for(email),
            email=email.lower(),
            email_verified=True,
            first_name=first,
            last_name=last,
            profile=profile,
            status=status,
            memberships=tuple(Membership(a, tuple(r)) for a, r in memberships.items()),
            default_account_id=default or (next(iter(memberships)) if memberships else None),
            account_number=account_number,
            created_at="2026-01-01T00:00:00.000Z",
            updated_at="2026-01-01T00:00:00.000Z",
        )
        self.store.put_user(user)
        self.idp.add_user(
            user.id,
            user.email,
            given_name=first,
            family_name=last,
            blocked=status != "ACTIVE",
            password="Passw0rd!x",
        )
        return user

    def user(self, user_id: str) -> User | None:
        return self.store.get_user(user_id)

    def scan(self) -> list[dict[str, Any]]:
        """Every item of the table (strongly consistent), in key order."""
        if self.dynamodb is None:
            raise TypeError("scan() reads DynamoDB: use env.store.snapshot() with the memory store")
        items: list[dict[str, Any]] = []
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=TABLE, ConsistentRead=True):
            items.extend(page["Items"])
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def send_event(self, function: str, event: dict[str, Any]) -> Any:
        return self.handler(function).lambda_handler(event, self.context(function))

    def handler(self, name: str) -> ModuleType:
        if name not in self.handlers:
            self.handlers[name] = load_handler(name)
        return self.handlers[name]

    def call(
        self,
        function: str,
        method: str,
        path: str,
        *,
        as_user: User | str | None = None,
        iat: float | None = None,
        auth_time: float | str | None = None,
        body: Any = None,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        source_ip: str = "203.0.113.10",
        claims: dict[str, str] | None = None,
    ) -> Response:
        """``claims`` adds to (or replaces) the verified token's claims (``gty``, ``scope``, ...)."""
        extra_claims = dict(claims or {})
        if isinstance(body, dict):
            self.names |= {
                v for k, v in body.items() if k in ("firstName", "lastName") and isinstance(v, str)
            }
        event = http_event(
            method, path, body=body, raw_body=raw_body, headers=headers, query=query, source_ip=source_ip
        )
        if as_user is None:
            event["requestContext"].pop("authorizer", None)
        else:
            sub = as_user if isinstance(as_user, str) else as_user.id
            claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
            claims["sub"] = sub
            claims["iat"] = str(int(self.clock.now() if iat is None else iat))
            # the sign-in behind the token: as recent as the token unless a test says otherwise
            # ("absent": a token without the claim)
            if auth_time != "absent":
                claims["auth_time"] = str(int(float(claims["iat"] if auth_time is None else auth_time)))
            claims.update(extra_claims)
        result = self.handler(function).lambda_handler(event, self.context(function))
        if self.public_auto and self.public_queue.messages:
            self.drain_public()
        return Response(result)


class Response:
    def __init__(self, result: dict[str, Any]) -> None:
        self.raw = result
        self.status: int = result["statusCode"]
        self.headers = {k.lower(): v for k, v in (result.get("headers") or {}).items()}
        self.text: str = result.get("body") or ""

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:300]}>"


class LambdaContext:
    """``remaining_ms``: the invocation's remaining time (default: 15 s that never run out)."""

    def __init__(self, name: str, remaining_ms: Callable[[], int] | None = None) -> None:
        self._remaining_ms = remaining_ms
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:eu-central-1:123456789012:function:{name}"
        self.aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return self._remaining_ms() if self._remaining_ms else 15_000


def http_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    source_ip: str = "203.0.113.10",
) -> dict[str, Any]:
    event = copy.deepcopy(json.loads((EVENTS / "http-get-me.json").read_text()))
    event["routeKey"] = f"{method} {path}"
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["sourceIp"] = source_ip
    event["headers"].pop("authorization", None)
    if query:
        from urllib.parse import urlencode

        event["rawQueryString"] = urlencode(query)
        event["queryStringParameters"] = dict(query)
    if body is not None:
        event["body"] = json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    if raw_body is not None:
        event["body"] = raw_body
    for k, v in (headers or {}).items():
        event["headers"][k.lower()] = v
    return event


def load_handler(function_dir: str) -> ModuleType:
    """Import ``functions/<dir>/<dir_with_underscores>.py`` by path, as the Lambda runtime would."""
    return load_handler_module(ROOT / "functions" / function_dir / f"{function_dir.replace('-', '_')}.py")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    from moto import mock_aws

    make_dynamodb_atomic()  # each DynamoDB request runs alone, as in DynamoDB (moto does not lock)
    with mock_aws():
        import boto3

        from usermgmt.adapters.dynamo import DynamoStore

        dynamodb = boto3.client("dynamodb", region_name="eu-central-1")
        create_table(dynamodb, TABLE)
        with wired_env(DynamoStore(dynamodb, TABLE), dynamodb) as e:
            yield e


@pytest.fixture
def memory_env() -> Iterator[Env]:
    """The same wiring as ``env`` over the in-memory store: no moto, no sockets (the unit tier)."""
    from usermgmt.adapters.memory import MemoryStore

    with wired_env(MemoryStore(), None) as e:
        yield e


@contextmanager
def wired_env(store: Any, dynamodb: Any) -> Iterator[Env]:
    """A container over ``store`` with fakes for Auth0, SES and the clock, and two accounts."""
    settings = Settings(
        table_name=TABLE, public_base_url="https://users.example.com", auth0_domain="tenant.example"
    )
    e = Env(
        container=None,  # type: ignore[arg-type] - built just below, over the fakes
        idp=FakeIdentityProvider(),
        mailer=RecordingMailer(),
        clock=FakeClock(),
        dynamodb=dynamodb,
        bus=RecordingBus(),
        queue=RecordingQueue(),
        public_queue=RecordingQueue(),
    )
    e.container = e.build(settings, store)
    _ENVS.append(e)
    e.add_account("acme", "Acme Corp")
    e.add_account("globex", "Globex Inc")
    try:
        yield e
    finally:
        container_module.reset()


def storefront_event(detail_type: str, detail: Any, event_id: str) -> dict[str, Any]:
    """An EventBridge event from the storefront bus, as the rule delivers it."""
    event = json.loads((EVENTS / "storefront-password-reset-requested.json").read_text())
    event.update({"id": event_id, "detail-type": detail_type, "detail": detail})
    return dict(event)


def add_cast(env: Env) -> dict[str, User]:
    """The usual people: a platform admin, a delegated admin of acme, users in acme, both, globex."""
    admin, delegate, buyer = ["Administrator"], ["Administrator", "Buyer"], ["Buyer"]
    return {
        "admin": env.add_user(
            "ada@example.com", first="Ada", last="Admin", profile="administrator", memberships={"acme": admin}
        ),
        "dana": env.add_user(
            "dana@acme.example", first="Dana", last="Delegate", memberships={"acme": delegate}
        ),
        "bob": env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": buyer}),
        "carol": env.add_user(
            "carol@example.com",
            first="Carol",
            last="Both",
            memberships={"acme": buyer, "globex": ["Approver"]},
        ),
        "gus": env.add_user("gus@globex.example", first="Gus", last="Globex", memberships={"globex": buyer}),
    }
