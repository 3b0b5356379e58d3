"""IAM needs derived from what the code does (security notes T7), not restated by hand.

Every function is driven through its routes, events, schedules and queue messages by its real handler
over moto. Each AWS call its code makes (the container's clients, Powertools' idempotency and
parameters clients: every botocore client created while the test runs) is recorded per function through
botocore's ``before-call`` event, mapped to the IAM action that authorises it and checked against the
function's policy statements in ``template.yaml``, on the right resource (the table or one of its
indexes, the queue, the secret, the sender identity). A ``dynamodb:LeadingKeys`` condition on a
statement is checked against the partition keys the calls touched (for a query on an index, the
index's partition key).

SES, EventBridge, SQS and the Auth0 client secret run through their real adapters over moto; the
test's fakes (mailer, bus, queues, Auth0) still see the same traffic, so links and queued messages are
delivered as in the other integration tests.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import ROOT, Env, storefront_event, table_definition
from usermgmt import container as container_module
from usermgmt.errors import IdpUnavailable
from usermgmt.models import User

Resource = tuple[str, str]  # (kind, name): ("table", ""), ("index", "SyncIndex"), ("queue", "BulkJobsQueue")


# ------------------------------------------------------------------------------------------- recording
@dataclass(frozen=True)
class Need:
    """One IAM authorisation a call needs: the action, the resource, the partition key it touches."""

    action: str
    resource: Resource
    key: str | None = None


@dataclass
class Recorder:
    """AWS calls per function directory, recorded while that function's handler runs."""

    running: list[str] = field(default_factory=list)
    calls: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(default_factory=dict)

    def before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        if self.running:
            service = model.service_model.service_name
            # every service called here speaks JSON: the request body holds the call's parameters
            body = json.loads(params["body"] or b"{}")
            self.calls.setdefault(self.running[-1], []).append((service, model.name, body))

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call", self.before_call)
        return client

    @contextmanager
    def running_function(self, function: str) -> Iterator[None]:
        from aws_lambda_powertools.utilities.parameters import clear_caches

        clear_caches()  # every function runs in its own process: its first Auth0 call reads the secret
        self.running.append(function)
        try:
            yield
        finally:
            self.running.pop()

    def needs(self, function: str) -> set[Need]:
        return {n for service, op, body in self.calls.get(function, []) for n in needs_of(service, op, body)}


def _hash_keys() -> dict[str, str]:
    """Partition key attribute of the table ("") and of each index, from template.yaml."""
    props = table_definition()
    keys = {"": next(k["AttributeName"] for k in props["KeySchema"] if k["KeyType"] == "HASH")}
    for gsi in props.get("GlobalSecondaryIndexes") or []:
        keys[gsi["IndexName"]] = next(k["AttributeName"] for k in gsi["KeySchema"] if k["KeyType"] == "HASH")
    return keys


def _key_of(item: dict[str, Any] | None) -> str | None:
    value = (item or {}).get("pk") or {}
    return str(value["S"]) if isinstance(value, dict) and "S" in value else None


def _query_key(body: dict[str, Any]) -> str | None:
    """The partition key value a Query names (for an index: the index's partition key)."""
    attr = _hash_keys()[body.get("IndexName", "")]
    names = body.get("ExpressionAttributeNames") or {}
    values = body.get("ExpressionAttributeValues") or {}
    for name, placeholder in re.findall(r"(#?\w+)\s*=\s*(:\w+)", body.get("KeyConditionExpression", "")):
        if names.get(name, name) == attr:
            return str(values[placeholder]["S"])
    return None


TRANSACT_ACTIONS = {
    "Put": ("PutItem", "Item"),
    "Update": ("UpdateItem", "Key"),
    "Delete": ("DeleteItem", "Key"),
    "ConditionCheck": ("ConditionCheckItem", "Key"),
}
TABLE: Resource = ("table", "")


def needs_of(service: str, operation: str, body: dict[str, Any]) -> list[Need]:
    """The IAM authorisations one API call needs."""
    if service == "dynamodb":
        if operation == "TransactWriteItems":
            needs = []
            for entry in body["TransactItems"]:
                ((kind, item),) = entry.items()
                action, key_field = TRANSACT_ACTIONS[kind]
                needs.append(Need(f"dynamodb:{action}", TABLE, _key_of(item[key_field])))
            return needs
        if operation == "TransactGetItems":
            return [Need("dynamodb:GetItem", TABLE, _key_of(e["Get"]["Key"])) for e in body["TransactItems"]]
        if operation == "BatchGetItem":
            return [
                Need("dynamodb:BatchGetItem", TABLE, _key_of(k))
                for request in body["RequestItems"].values()
                for k in request["Keys"]
            ]
        if operation == "BatchWriteItem":
            return [
                Need("dynamodb:BatchWriteItem", TABLE, _key_of(r.get("PutRequest", {}).get("Item")))
                if "PutRequest" in r
                else Need("dynamodb:BatchWriteItem", TABLE, _key_of(r["DeleteRequest"]["Key"]))
                for requests in body["RequestItems"].values()
                for r in requests
            ]
        if operation in ("Query", "Scan"):
            index = body.get("IndexName")
            resource: Resource = ("index", index) if index else TABLE
            return [
                Need(f"dynamodb:{operation}", resource, _query_key(body) if operation == "Query" else None)
            ]
        return [Need(f"dynamodb:{operation}", TABLE, _key_of(body.get("Key") or body.get("Item")))]
    if service == "sesv2" and operation == "SendEmail":
        # IAM authorises SES v2 SendEmail as ses:SendEmail; with raw content it checks ses:SendRawEmail
        # too (reported by users of the v2 API): both are needed for the raw MIME messages sent here
        needs = [Need("ses:SendEmail", ("identity", ""))]
        if "Raw" in body.get("Content", {}):
            needs.append(Need("ses:SendRawEmail", ("identity", "")))
        return needs
    if service == "sqs" and operation in ("SendMessage", "SendMessageBatch"):
        return [Need("sqs:SendMessage", ("queue", str(body["QueueUrl"]).rsplit("/", 1)[-1]))]
    if service == "events" and operation == "PutEvents":
        return [Need("events:PutEvents", ("bus", ""))]
    if service == "secretsmanager" and operation == "GetSecretValue":
        return [Need("secretsmanager:GetSecretValue", ("secret", ""))]
    return [Need(f"{service}:{operation}", ("unknown", ""))]  # unmapped: never granted by accident


# ---------------------------------------------------------------------------------------- the template
@dataclass(frozen=True)
class Grant:
    actions: frozenset[str]
    resources: frozenset[Resource]
    leading_keys: tuple[str, ...] | None  # ForAllValues:StringLike on dynamodb:LeadingKeys


def _resource_kind(resource: Any) -> Resource:
    text = json.dumps(resource)
    if '"Fn::GetAtt": ["UsersTable", "Arn"]' in text:
        return TABLE
    index = re.search(r"\$\{UsersTable\.Arn\}/index/([A-Za-z0-9*]+)", text)
    if index:
        return ("index", index.group(1))
    queue = re.search(r'"Fn::GetAtt": \["(\w+Queue|\w+Dlq)", "Arn"\]', text)
    if queue:
        return ("queue", queue.group(1))
    if ":identity/" in text:
        return ("identity", "")
    if ":configuration-set/" in text:
        return ("configuration-set", "")
    if "Auth0ClientSecretArn" in text:
        return ("secret", "")
    if "event-bus" in text or "UserEventsBus" in text:
        return ("bus", "")
    return ("other", text)


def grants_of(properties: dict[str, Any]) -> list[Grant]:
    grants = []
    for policy in properties.get("Policies") or []:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            if statement.get("Effect") != "Allow":
                continue
            actions = statement["Action"]
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            like = (statement.get("Condition") or {}).get("ForAllValues:StringLike") or {}
            keys = like.get("dynamodb:LeadingKeys")
            grants.append(
                Grant(
                    frozenset([actions] if isinstance(actions, str) else actions),
                    frozenset(_resource_kind(r) for r in resources),
                    tuple(keys) if keys is not None else None,
                )
            )
    return grants


def template_functions() -> dict[str, tuple[str, dict[str, Any]]]:
    """Function directory -> (logical id, properties)."""
    from local.template import load_template

    resources = load_template(ROOT / "template.yaml")["Resources"]
    return {
        str(r["Properties"]["CodeUri"]).strip("/").removeprefix("functions/"): (logical_id, r["Properties"])
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }


def _matches(granted: Resource, needed: Resource) -> bool:
    return granted == needed or (granted == ("index", "*") and needed[0] == "index")


def _covers(grant: Grant, need: Need) -> bool:
    if need.action not in grant.actions or not any(_matches(r, need.resource) for r in grant.resources):
        return False
    if grant.leading_keys is not None:  # every partition key the call touches must match a pattern
        return need.key is not None and any(fnmatchcase(need.key, p) for p in grant.leading_keys)
    return True


def missing(grants: list[Grant], needs: set[Need]) -> list[Need]:
    return sorted((n for n in needs if not any(_covers(g, n) for g in grants)), key=repr)


def lambda_uses(properties: dict[str, Any]) -> set[Resource]:
    """What the Lambda service itself uses the role for: the failure destination of async invocations."""
    destination = (properties.get("EventInvokeConfig") or {}).get("DestinationConfig", {}).get("OnFailure")
    return {_resource_kind(destination["Destination"])} if destination else set()


def unused(grants: list[Grant], needs: set[Need], service_uses: set[Resource]) -> list[tuple[str, Resource]]:
    """Granted (action, resource) pairs no recorded call used."""
    out = []
    for g in grants:
        covered = [n for n in needs if _covers(g, n)]
        for action in sorted(g.actions):
            for resource in sorted(g.resources):
                if resource in service_uses or resource[0] == "configuration-set":
                    continue  # the configuration set is named only when one is deployed
                if not any(n.action == action and _matches(resource, n.resource) for n in covered):
                    out.append((action, resource))
    return out


# ---------------------------------------------------------------------------------------------- wiring
class Both:
    """Calls the real adapter (over moto: the AWS call is recorded) and then the test's fake."""

    def __init__(self, real: Any, fake: Any) -> None:
        self._real, self._fake = real, fake

    def __getattr__(self, name: str) -> Any:
        real, fake = getattr(self._real, name), getattr(self._fake, name)

        def both(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)
            return fake(*args, **kwargs)

        return both


class SecretReadingIdp:
    """The fake Auth0, reading the client secret the way the real adapter does before it calls Auth0."""

    def __init__(self, fake: Any, arn: str) -> None:
        import boto3

        from usermgmt.adapters.secrets import CachedSecret

        self._fake = fake
        self._secret = CachedSecret(arn, lambda: boto3.client("secretsmanager"), then_seconds=0, max_age=0)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._fake, name)
        if not callable(method):
            return method

        def with_secret(*args: Any, **kwargs: Any) -> Any:
            self._secret()  # as Container._auth0 reads it: a token needs the client secret
            return method(*args, **kwargs)

        return with_secret


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    import botocore.session

    rec = Recorder()
    create_client = botocore.session.Session.create_client

    def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        return rec.attach(create_client(self, *args, **kwargs))

    monkeypatch.setattr(botocore.session.Session, "create_client", recorded)
    return rec


@pytest.fixture
def wired(recorder: Recorder, env: Env) -> Env:
    """``env`` with SES, EventBridge, SQS and the secret on moto, every handler recorded."""
    import boto3

    recorder.attach(env.dynamodb)  # the store's client was created before the recorder
    sender = env.container.settings.ses_sender
    boto3.client("sesv2").create_email_identity(EmailIdentity=sender)
    boto3.client("events").create_event_bus(Name="UserEventsBus")
    sqs = boto3.client("sqs")
    bulk_url = sqs.create_queue(QueueName="BulkJobsQueue")["QueueUrl"]
    public_url = sqs.create_queue(QueueName="PublicRequestsQueue")["QueueUrl"]
    arn = boto3.client("secretsmanager").create_secret(Name="auth0-client-secret", SecretString="s")["ARN"]

    from usermgmt.adapters.eventbridge import EventBridgeBus
    from usermgmt.adapters.ses import SesMailer
    from usermgmt.adapters.sqs import SqsQueue

    aws = container_module.aws_client
    settings = env.container.settings.replace(
        auth0_client_secret_arn=arn,
        user_events_bus_name="UserEventsBus",
        bulk_queue_url=bulk_url,
        public_queue_url=public_url,
    )
    c = container_module.Container(
        settings,
        store=env.store,
        idp=SecretReadingIdp(env.idp, arn),  # type: ignore[arg-type]
        mailer=Both(SesMailer(lambda: aws("sesv2"), sender, ""), env.mailer),  # type: ignore[arg-type]
        clock=env.clock,
        bus=Both(EventBridgeBus(lambda: aws("events"), "UserEventsBus", "usermgmt"), env.bus),  # type: ignore[arg-type]
        queue=Both(SqsQueue(lambda: aws("sqs"), bulk_url), env.queue),  # type: ignore[arg-type]
        public_queue=Both(SqsQueue(lambda: aws("sqs"), public_url), env.public_queue),  # type: ignore[arg-type]
    )
    container_module.override(c)
    env.container = c
    for function in template_functions():
        module = env.handler(function)

        def run(event: Any, context: Any, _module: Any = module, _function: str = function) -> Any:
            with recorder.running_function(_function):
                return _module.lambda_handler(event, context)

        env.handlers[function] = SimpleNamespace(lambda_handler=run)  # type: ignore[assignment]
    return env


# --------------------------------------------------------------------------------------------- driving
LINK = re.compile(r"/(password-reset|email-verification|email-change|invitations)/([A-Za-z0-9_-]{20,})")
STRONG = {"newPassword": "N3w-Secret!pass"}


def token(env: Env, address: str, kind: str) -> str:
    for email in reversed(env.mailer.to(address)):
        for found_kind, value in LINK.findall(email.text):
            if found_kind == kind:
                return str(value)
    raise AssertionError(f"no {kind} link was sent")


def ok(response: Any) -> None:
    assert response.status < 400, response


def pid(user: User) -> str:
    return user.id.replace("|", "%7C")


def schedule() -> dict[str, Any]:
    return dict(json.loads((ROOT / "events" / "schedule.json").read_text()))


def drive_update_user(env: Env, cast: dict[str, User]) -> None:
    admin, bob, carol = cast["admin"], cast["bob"], cast["carol"]
    ok(env.call("update-user", "GET", "/me", as_user=bob))
    ok(env.call("update-user", "GET", f"/users/{pid(bob)}", as_user=admin))
    ok(env.call("update-user", "PATCH", f"/users/{pid(bob)}", as_user=admin, body={"firstName": "Robert"}))
    ok(env.call("update-user", "PATCH", "/me", as_user=carol, body={"email": "carol.new@other.example"}))
    ok(env.call("update-user", "PATCH", "/me", as_user=bob, body={"lastName": "Buyers"}))
    ok(env.call("update-user", "GET", f"/users/{pid(bob)}/audit", as_user=admin))


def drive_suspend_and_enable(env: Env, cast: dict[str, User]) -> None:
    admin, bob = cast["admin"], cast["bob"]
    ok(env.call("suspend-user", "POST", f"/users/{pid(bob)}/suspend", as_user=admin))
    ok(env.call("enable-user", "POST", f"/users/{pid(bob)}/enable", as_user=admin))
    ok(env.call("suspend-user", "POST", f"/users/{pid(bob)}/sessions/revoke", as_user=admin))
    env.clock.advance(1)  # a token issued after the revocation
    ok(env.call("suspend-user", "POST", "/me/sessions/revoke", as_user=bob))


def drive_export_and_lists(env: Env, cast: dict[str, User]) -> None:
    admin, dana, bob = cast["admin"], cast["dana"], cast["bob"]
    ok(env.call("export-user", "GET", f"/users/{pid(bob)}/export", as_user=admin))
    ok(env.call("export-user", "GET", "/me/export", as_user=bob))
    for query in (
        None,
        {"sort": "lastName"},
        {"sort": "-createdAt"},
        {"sort": "-updatedAt"},
        {"status": "ACTIVE"},
    ):
        ok(env.call("list-users", "GET", "/users", as_user=admin, query=query))
    ok(env.call("list-users", "GET", "/users", as_user=admin, query={"namePrefix": "Bo"}))
    ok(env.call("list-users", "GET", "/accounts/acme/users", as_user=dana))
    ok(env.call("list-users", "GET", "/accounts", as_user=admin))
    ok(env.call("list-users", "GET", "/accounts/acme", as_user=dana))


def drive_passwords(env: Env, cast: dict[str, User]) -> None:
    admin, bob, gus = cast["admin"], cast["bob"], cast["gus"]
    ok(env.call("reset-password", "POST", f"/users/{pid(bob)}/password-reset", as_user=admin))
    ok(env.call("reset-password", "POST", "/me/password-reset", as_user=gus))
    ok(env.call("reset-password", "POST", "/password-reset", body={"email": bob.email}))  # -> public-requests
    link = token(env, bob.email, "password-reset")
    ok(env.call("reset-password", "GET", f"/password-reset/{link}"))
    ok(env.call("reset-password", "POST", f"/password-reset/{link}", body=STRONG))
    expired = token(env, gus.email, "password-reset")
    env.clock.advance(env.container.settings.reset_link_ttl_seconds + 1)
    ok(env.call("reset-password", "POST", f"/password-reset/{expired}/renew"))  # -> public-requests
    event = storefront_event(
        "PasswordResetRequested", {"email": bob.email}, "7d0c3a4e-0000-4000-8000-0000000000a1"
    )
    env.send_event("reset-password", event)


def drive_verification(env: Env, cast: dict[str, User]) -> None:
    admin, bob, carol, dana, gus = (cast[n] for n in ("admin", "bob", "carol", "dana", "gus"))
    for user in (bob, dana, gus):
        env.store.put_user(user.evolve(email_verified=False))
    ok(env.call("verify-email", "POST", f"/users/{pid(bob)}/verification-email", as_user=admin))
    ok(env.call("verify-email", "POST", "/me/verification-email", as_user=dana))
    link = token(env, bob.email, "email-verification")
    ok(env.call("verify-email", "GET", f"/email-verification/{link}"))
    ok(env.call("verify-email", "POST", f"/email-verification/{link}", body={}))
    # an email change: its verify link (new address) is confirmed, a second one cancelled from the old
    ok(env.call("update-user", "PATCH", "/me", as_user=carol, body={"email": "carol.two@other.example"}))
    ok(
        env.call(
            "verify-email",
            "POST",
            f"/email-verification/{token(env, 'carol.two@other.example', 'email-verification')}",
            body={},
        )
    )
    carol_now = env.user(carol.id)
    assert carol_now is not None
    ok(
        env.call(
            "update-user", "PATCH", "/me", as_user=carol_now, body={"email": "carol.three@other.example"}
        )
    )
    cancel = token(env, "carol.two@other.example", "email-change")
    ok(env.call("verify-email", "GET", f"/email-change/{cancel}/cancel"))
    ok(env.call("verify-email", "POST", f"/email-change/{cancel}/cancel", body={}))
    ok(env.call("verify-email", "POST", "/me/verification-email", as_user=gus))
    stale = token(env, gus.email, "email-verification")
    env.clock.advance(env.container.settings.verify_link_ttl_seconds + 1)
    ok(env.call("verify-email", "POST", f"/email-verification/{stale}/renew"))  # -> public-requests
    event = storefront_event(
        "VerificationEmailRequested", {"userId": dana.id}, "7d0c3a4e-0000-4000-8000-0000000000b1"
    )
    env.send_event("verify-email", event)


def drive_invitations(env: Env, cast: dict[str, User]) -> None:
    admin, dana = cast["admin"], cast["dana"]
    body = {"email": "nina@new.example", "firstName": "Nina", "lastName": "Newcomer"}
    ok(env.call("create-user", "POST", "/users", as_user=admin, body=body))
    invite = {"email": "otto@new.example", "firstName": "Otto", "lastName": "Other", "roles": ["Buyer"]}
    sent = env.call("create-user", "POST", "/accounts/acme/invitations", as_user=dana, body=invite)
    ok(sent)
    ok(env.call("create-user", "GET", "/accounts/acme/invitations", as_user=dana))
    ok(env.call("create-user", "POST", f"/invitations/{sent.json()['invitationId']}/resend", as_user=dana))
    link = token(env, "nina@new.example", "invitations")
    ok(env.call("create-user", "GET", f"/invitations/{link}"))
    ok(env.call("create-user", "POST", f"/invitations/{link}", body=STRONG))
    join = env.call(
        "create-user",
        "POST",
        "/accounts/acme/invitations",
        as_user=dana,
        body={**invite, "email": cast["gus"].email},
    )
    ok(join)
    ok(
        env.call(
            "create-user", "POST", f"/invitations/{token(env, cast['gus'].email, 'invitations')}", body={}
        )
    )
    ok(env.call("create-user", "DELETE", f"/invitations/{sent.json()['invitationId']}", as_user=dana))
    late = env.call(
        "create-user",
        "POST",
        "/accounts/acme/invitations",
        as_user=dana,
        body={**invite, "email": "lara@new.example"},
    )
    ok(late)
    stale = token(env, "lara@new.example", "invitations")
    env.clock.advance(env.container.settings.invite_link_ttl_seconds + 1)
    ok(env.call("create-user", "POST", f"/invitations/{stale}/renew"))  # -> public-requests
    env.idp.add_user("auth0|registered0000000000000", "reg@new.example", given_name="Rhea", family_name="Reg")
    env.names |= {"Rhea"}
    detail = {"userId": "auth0|registered0000000000000"}
    env.send_event(
        "create-user", storefront_event("UserRegistered", detail, "7d0c3a4e-0000-4000-8000-0000000000c1")
    )


def drive_bulk(env: Env, cast: dict[str, User]) -> None:
    admin, bob, carol = cast["admin"], cast["bob"], cast["carol"]
    for n, action in enumerate(("suspend", "enable", "password-reset", "revoke-sessions", "delete")):
        body = {"action": action, "userIds": [bob.id] if action != "delete" else [carol.id]}
        r = env.call(
            "bulk-jobs", "POST", "/bulk-jobs", as_user=admin, body=body, headers={"idempotency-key": f"k{n}"}
        )
        ok(r)
        env.drain_bulk()  # -> bulk-worker
        ok(env.call("bulk-jobs", "GET", f"/bulk-jobs/{r.json()['id']}", as_user=admin))
        ok(env.call("bulk-jobs", "GET", f"/bulk-jobs/{r.json()['id']}/items", as_user=admin))
    r = env.call(
        "bulk-jobs",
        "POST",
        "/bulk-jobs",
        as_user=admin,
        body={"action": "set-fields", "filter": {"accountId": "acme"}, "params": {"profile": "customer"}},
        headers={"idempotency-key": "k9"},
    )
    ok(r)
    ok(env.call("bulk-jobs", "POST", f"/bulk-jobs/{r.json()['id']}/cancel", as_user=admin))
    env.drain_bulk()
    ok(env.call("bulk-jobs", "GET", "/bulk-jobs", as_user=admin))


def drive_background(env: Env, cast: dict[str, User]) -> None:
    admin, bob, dana = cast["admin"], cast["bob"], cast["dana"]
    # Auth0 down: the change is deferred; sync-identity pushes it on its schedule
    env.idp.fail_next(-1, IdpUnavailable("down"))
    ok(env.call("update-user", "PATCH", f"/users/{pid(dana)}", as_user=admin, body={"firstName": "Danielle"}))
    ok(env.call("delete-user", "DELETE", f"/users/{pid(bob)}", as_user=admin))
    env.idp.clear_failures()
    env.clock.advance(3600)
    env.send_event("sync-identity", schedule())
    env.send_event("sync-identity", {"redrive": "failed"})
    # the outbox: the stream path and the schedule's sweep
    stream = {
        "Records": [{"eventSource": "aws:dynamodb", "dynamodb": {"Keys": {"pk": {"S": f"OUTBOX#{dana.id}"}}}}]
    }
    env.bus.refusing = {"user.updated"}  # a refused entry counts an attempt on its outbox item
    env.send_event("publish-events", stream)
    env.bus.refusing = set()
    env.clock.advance(env.container.settings.outbox_sweep_grace_seconds + 1)
    env.send_event("publish-events", schedule())
    # links expire; cleanup-links removes them and ends the email changes they leave pending
    ok(env.call("reset-password", "POST", f"/users/{pid(dana)}/password-reset", as_user=admin))
    ok(
        env.call(
            "update-user",
            "PATCH",
            f"/users/{pid(admin)}",
            as_user=admin,
            body={"email": "ada.new@example.com"},
        )
    )
    env.clock.advance(30 * 86400)
    env.send_event("cleanup-links", schedule())
    # SES feedback: a bounce marks the address undeliverable
    bounce = {
        "version": "0",
        "id": "ses-bounce-1",
        "source": "aws.ses",
        "detail-type": "Email Bounced",
        "account": "123456789012",
        "region": "eu-central-1",
        "detail": {
            "eventType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": cast["gus"].email}]},
        },
    }
    env.send_event("email-events", bounce)


SCENARIOS: list[Callable[[Env, dict[str, User]], None]] = [
    drive_update_user,
    drive_suspend_and_enable,
    drive_export_and_lists,
    drive_passwords,
    drive_verification,
    drive_invitations,
    drive_bulk,
    drive_background,
]


def cast_for(env: Env, n: int) -> dict[str, User]:
    """The usual people (as ``add_cast``), with addresses of their own in each scenario."""
    admin, delegate, buyer = ["Administrator"], ["Administrator", "Buyer"], ["Buyer"]
    return {
        "admin": env.add_user(
            f"ada{n}@example.com",
            first="Ada",
            last="Admin",
            profile="administrator",
            memberships={"acme": admin},
        ),
        "dana": env.add_user(
            f"dana{n}@acme.example", first="Dana", last="Delegate", memberships={"acme": delegate}
        ),
        "bob": env.add_user(f"bob{n}@acme.example", first="Bob", last="Buyer", memberships={"acme": buyer}),
        "carol": env.add_user(
            f"carol{n}@example.com",
            first="Carol",
            last="Both",
            memberships={"acme": buyer, "globex": ["Approver"]},
        ),
        "gus": env.add_user(
            f"gus{n}@globex.example", first="Gus", last="Globex", memberships={"globex": buyer}
        ),
    }


@pytest.fixture
def recorded(wired: Env, recorder: Recorder) -> Recorder:
    """Every scenario, each with people of its own (a scenario's deletions do not starve the next one)."""
    for n, scenario in enumerate(SCENARIOS):
        scenario(wired, cast_for(wired, n))
    return recorder


# ------------------------------------------------------------------------------------------- the tests
@pytest.mark.filterwarnings("default::tests.integration.test_iam_needs.UnusedGrants")
def test_every_function_is_granted_every_call_its_code_makes(recorded: Recorder) -> None:
    functions = template_functions()
    gaps: dict[str, list[Need]] = {}
    report: list[str] = []
    for function, (logical_id, props) in sorted(functions.items()):
        needs = recorded.needs(function)
        grants = grants_of(props)
        if missing(grants, needs):
            gaps[logical_id] = missing(grants, needs)
        extra = unused(grants, needs, lambda_uses(props))
        if extra:
            report.append(f"{logical_id}: " + ", ".join(f"{a} on {r[0]} {r[1]}".strip() for a, r in extra))
    if report:
        warnings.warn(
            UnusedGrants("granted but no recorded call used it:\n" + "\n".join(report)), stacklevel=1
        )
    assert not gaps, f"calls the policy does not allow: {gaps}"


def test_every_function_was_driven(recorded: Recorder) -> None:
    """Each function of the template made AWS calls through its handler (else its needs are unknown)."""
    silent = sorted(f for f in template_functions() if not recorded.calls.get(f))
    assert not silent


class UnusedGrants(UserWarning):
    """A report, never a failure: a grant no recorded call used (a path the scenarios miss, or unused)."""


def test_the_check_fails_when_a_needed_action_or_index_is_taken_away() -> None:
    """The checker itself: a policy without an action (or with the table instead of the index) misses it."""
    policy = {
        "Policies": [
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                        "Resource": [{"Fn::GetAtt": ["UsersTable", "Arn"]}],
                        "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["USER#*"]}},
                    }
                ]
            }
        ]
    }
    grants = grants_of(policy)
    get = Need("dynamodb:GetItem", TABLE, "USER#a")
    assert missing(grants, {get}) == []
    assert missing(grants, {Need("dynamodb:GetItem", TABLE, "LINK#x")})  # outside the leading keys
    assert missing(grants, {Need("dynamodb:PutItem", TABLE, "USER#a")})  # action taken away
    assert missing(grants, {Need("dynamodb:Query", ("index", "SyncIndex"), "USER#a")})  # table, not index
    transact = needs_of(
        "dynamodb",
        "TransactWriteItems",
        {
            "TransactItems": [
                {"Put": {"Item": {"pk": {"S": "USER#a"}}}},
                {"Delete": {"Key": {"pk": {"S": "LINK#b"}}}},
            ]
        },
    )
    assert transact == [
        Need("dynamodb:PutItem", TABLE, "USER#a"),
        Need("dynamodb:DeleteItem", TABLE, "LINK#b"),
    ]
