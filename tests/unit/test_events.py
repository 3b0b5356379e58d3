"""Lifecycle events out (SPEC 15) and email deliverability (SPEC 16), on the in-memory store.

Every change a user can make shows up on the product's bus with its type, subject, sequence and actor,
in order per user, with no personal data; the outbox survives a publisher that dies or a bus that
refuses; SES bounces and complaints stop the mail an administrator would trigger.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat

from tests.conftest import EMAIL, Env, LambdaContext
from usermgmt.errors import IdpRejected
from usermgmt.models import User

UPDATE = "update-user"
LINK = re.compile(r"/(?:password-reset|email-verification|email-change)/([A-Za-z0-9_-]{20,})")


@pytest.fixture
def env(memory_env: Env) -> Env:
    return memory_env


@pytest.fixture
def admin(env: Env) -> User:
    return env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator")


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user(
        "bob@acme.example", first="Bobbington", last="Buyerson", memberships={"acme": ["Buyer"]}
    )


def types_of(env: Env, user: User) -> list[str]:
    return [e["type"] for e in env.bus.of(user.id)]


def assert_thin_and_valid(env: Env, *people: User) -> None:
    """Each event is a valid CloudEvent and carries no email address or name of anyone."""
    words = {w for p in people for w in (p.first_name, p.last_name, p.email)}
    for event in env.bus.events:
        text = json.dumps(event)
        JSONFormat().read(None, json.dumps(event["detail"]))  # raises on anything CloudEvents 1.0 refuses
        assert not EMAIL.search(text), text
        assert not any(w in text for w in words), text
        assert event["detail-type"] == event["detail"]["type"]


def link_in(env: Env, to: str) -> str:
    return str(LINK.findall(env.mailer.to(to)[-1].text)[0])


# ------------------------------------------------------------------------------ every change, its event
def test_every_kind_of_change_emits_its_event_in_order(env: Env, admin: User, bob: User) -> None:
    path = f"/users/{bob.id}"
    env.call(UPDATE, "PATCH", path, as_user=admin, body={"firstName": "Bob"})
    env.call(
        UPDATE,
        "PATCH",
        path,
        as_user=admin,
        body={"memberships": [{"accountId": "globex", "roles": ["Buyer"]}], "defaultAccountId": "globex"},
    )
    env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "bob@new.example"})
    cancel = link_in(env, bob.email)
    assert env.call("verify-email", "POST", f"/email-change/{cancel}/cancel", body={}).status == 200
    env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "bob@new.example"})
    assert (
        env.call(
            "verify-email", "POST", f"/email-verification/{link_in(env, 'bob@new.example')}", body={}
        ).status
        == 200
    )
    env.call("reset-password", "POST", f"/users/{bob.id}/password-reset", as_user=admin)
    token = link_in(env, "bob@new.example")
    assert (
        env.call(
            "reset-password", "POST", f"/password-reset/{token}", body={"newPassword": "N3w-Passw0rd!"}
        ).status
        == 200
    )
    env.call("suspend-user", "POST", f"{path}/suspend", as_user=admin)
    env.call("enable-user", "POST", f"{path}/enable", as_user=admin)
    assert env.call("delete-user", "DELETE", path, as_user=admin).status == 204
    env.publish()

    assert types_of(env, bob) == [
        "user.updated",
        "user.memberships_changed",
        "user.email_change_requested",
        "user.email_change_cancelled",
        "user.email_change_requested",
        "user.email_changed",
        "user.password_reset_requested",
        "user.password_changed",
        "user.suspended",
        "user.enabled",
        "user.deleted",
    ]
    events = env.bus.of(bob.id)
    assert [int(e["sequence"]) for e in events] == list(range(2, 13))  # one per version, no gap
    assert [e["data"]["version"] for e in events] == list(range(2, 13))
    assert events[0]["data"]["changedFields"] == ["firstName"]
    assert events[0]["data"]["actor"] == {"type": "platform_admin", "id": admin.id}
    assert events[2]["data"]["actor"] == {"type": "self", "id": bob.id}
    assert events[3]["data"]["actor"] == {"type": "self", "id": bob.id}  # a link the person received
    assert events[-1]["data"]["changedFields"] == [] and events[-1]["subject"] == bob.id
    assert {e["source"] for e in events} == {"usermgmt"}
    assert len({e["id"] for e in events}) == len(events)
    assert_thin_and_valid(env, bob, admin)
    assert env.store.outbox_of(bob.id, 100) == []  # published items are removed


def test_anonymous_requests_make_no_event_and_system_changes_name_their_actor(
    env: Env, admin: User, bob: User
) -> None:
    env.call("reset-password", "POST", "/password-reset", body={"email": bob.email})
    assert len(env.mailer.to(bob.email)) == 1  # the link went out, as no change of the user (L1)
    env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "bob@new.example"})
    env.clock.advance(
        env.container.settings.verify_link_ttl_seconds + env.container.settings.cleanup_grace_seconds + 1
    )
    env.container.cleanup.run()
    env.publish()
    actors = [(e["type"], e["data"]["actor"]) for e in env.bus.of(bob.id)]
    assert actors == [
        ("user.email_change_requested", {"type": "self", "id": bob.id}),
        ("user.email_change_cancelled", {"type": "system", "id": "cleanup"}),
    ]


def test_a_change_auth0_refuses_for_good_is_told_too(env: Env, admin: User, bob: User) -> None:
    env.idp.fail_next(1, IdpRejected(400, "invalid_body"), method="update_user")
    env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"lastName": "Refused"})
    env.publish()
    events = env.bus.of(bob.id)
    assert [e["type"] for e in events] == ["user.updated", "user.idp_sync_failed"]
    # the fields behind the refused push (Auth0 refuses a PATCH as a whole: both names), not its group
    assert events[1]["sequence"] == "2" and events[1]["data"]["changedFields"] == ["firstName", "lastName"]
    assert_thin_and_valid(env, bob, admin)


def test_creating_inviting_activating_and_signing_out_emit_their_events(
    env: Env, admin: User, bob: User
) -> None:
    invitation_link = re.compile(r"https://users\.example\.com/invitations/([A-Za-z0-9_-]+)")

    def invitation_to(address: str) -> str:
        return str(invitation_link.findall(env.mailer.to(address)[-1].text)[0])

    body = {"email": "nina@new.example", "firstName": "Nina", "lastName": "Newcomer"}
    created = env.call("create-user", "POST", "/users", as_user=admin, body=body)
    assert created.status == 201, created
    nina = env.user(created.json()["id"])
    assert nina is not None
    accepted = env.call(
        "create-user",
        "POST",
        f"/invitations/{invitation_to('nina@new.example')}",
        body={"newPassword": "N3w-Passw0rd!"},
    )
    assert accepted.status == 200, accepted
    revoked = env.call("suspend-user", "POST", f"/users/{nina.id}/sessions/revoke", as_user=admin)
    assert revoked.status == 200, revoked
    # an existing user invited into another account: invited, then a member on accepting
    invite = {"email": bob.email, "firstName": "B", "lastName": "B", "roles": ["Buyer"]}
    invited = env.call("create-user", "POST", "/accounts/globex/invitations", as_user=admin, body=invite)
    assert invited.status in (201, 202), invited
    assert env.call("create-user", "POST", f"/invitations/{invitation_to(bob.email)}", body={}).status == 200
    env.publish()

    assert types_of(env, nina) == ["user.created", "user.activated", "user.sessions_revoked"]
    nina_events = env.bus.of(nina.id)
    assert [e["sequence"] for e in nina_events] == ["1", "2", "3"]
    assert nina_events[0]["data"]["actor"] == {"type": "platform_admin", "id": admin.id}
    assert nina_events[1]["data"]["actor"] == {"type": "self", "id": nina.id}  # the link she received
    assert "status" in nina_events[1]["data"]["changedFields"]
    assert types_of(env, bob) == ["user.invited", "user.memberships_changed"]
    assert_thin_and_valid(env, bob, admin, nina)


# ------------------------------------------------------------------------------ never lost, in order
def test_a_publisher_that_dies_or_a_bus_that_refuses_only_delays_events(
    env: Env, admin: User, bob: User
) -> None:
    env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "One"})
    env.bus.down = True  # the bus refuses the whole call (or the publisher died before it)
    env.publish()
    env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Two"})
    env.publish()
    assert env.bus.events == [] and len(env.store.outbox_of(bob.id, 10)) == 2
    env.bus.down = False
    env.publish()
    assert [e["sequence"] for e in env.bus.of(bob.id)] == ["2", "3"]
    env.publish()  # published once per id: nothing left to send again
    assert len(env.bus.events) == 2


def test_a_refused_event_holds_back_only_its_own_users_later_events(env: Env, admin: User, bob: User) -> None:
    carol = env.add_user("carol@acme.example", first="Carol", memberships={"acme": ["Buyer"]})
    env.call("suspend-user", "POST", f"/users/{bob.id}/suspend", as_user=admin)
    env.call("enable-user", "POST", f"/users/{bob.id}/enable", as_user=admin)
    env.call("suspend-user", "POST", f"/users/{carol.id}/suspend", as_user=admin)
    env.bus.refusing = {"user.suspended"}
    for _ in range(env.container.settings.publish_max_attempts):
        env.publish()
    assert types_of(env, bob) == [] and types_of(env, carol) == []  # enable waits behind suspend
    assert len(env.store.outbox_of(bob.id, 10)) == 2
    assert env.metric_count("OutboxStuck") >= 1
    env.bus.refusing = set()
    env.publish()
    assert types_of(env, bob) == ["user.suspended", "user.enabled"]
    assert types_of(env, carol) == ["user.suspended"]


def test_many_interleaved_changes_arrive_in_order_per_user_with_no_gap(env: Env, admin: User) -> None:
    people = [env.add_user(f"p{n}@acme.example", memberships={"acme": ["Buyer"]}) for n in range(4)]
    rng = random.Random(7)
    for n in range(200):
        who = rng.choice(people)
        action = rng.choice(["name", "name", "suspend", "enable"])
        if action == "name":
            env.call(UPDATE, "PATCH", f"/users/{who.id}", as_user=admin, body={"lastName": f"L{n}"})
        else:
            env.call(f"{action}-user", "POST", f"/users/{who.id}/{action}", as_user=admin)
        if rng.random() < 0.2:
            env.bus.down = rng.random() < 0.5
            env.publish()
    env.bus.down = False
    env.publish()
    for who in people:
        sequence = [int(e["sequence"]) for e in env.bus.of(who.id)]
        current = env.user(who.id)
        assert current is not None
        assert sequence == list(range(2, current.version + 1))  # strictly increasing, no gap
    assert_thin_and_valid(env, admin, *people)


def test_the_stream_path_publishes_the_users_it_is_told_of(env: Env, admin: User, bob: User) -> None:
    env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Streamed"})
    record = {
        "eventSource": "aws:dynamodb",
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": f"OUTBOX#{bob.id}"}, "sk": {"S": "x"}}},
    }
    result = env.handler("publish-events").lambda_handler(
        {"Records": [record]}, LambdaContext("publish-events")
    )
    assert result == {"published": 1, "failed": 0}
    assert types_of(env, bob) == ["user.updated"]


# ------------------------------------------------------------------------------ deliverability
def ses_event(kind: str, address: str, *, permanent: bool = True, event_id: str = "ses-1") -> dict[str, Any]:
    if kind == "bounce":
        detail: dict[str, Any] = {
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent" if permanent else "Transient",
                "bouncedRecipients": [{"emailAddress": address}],
            },
            "mail": {"destination": [address]},
        }
        detail_type = "Email Bounced"
    else:
        detail = {
            "eventType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": address}]},
            "mail": {"destination": [address]},
        }
        detail_type = "Email Complaint Received"
    return {
        "version": "0",
        "id": event_id,
        "detail-type": detail_type,
        "source": "aws.ses",
        "account": "123456789012",
        "time": "2026-12-02T00:00:00Z",
        "region": "eu-central-1",
        "resources": [],
        "detail": detail,
    }


def ses(env: Env, event: dict[str, Any]) -> Any:
    return env.handler("email-events").lambda_handler(event, LambdaContext("email-events"))


def test_a_permanent_bounce_marks_the_user_and_stops_admin_mail(
    env: Env, admin: User, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("usermgmt.events.run_once", lambda _e, _c, _n, process: process())  # no DynamoDB here
    ses(env, ses_event("bounce", bob.email.upper()))
    assert env.user(bob.id).deliverability == "bounced"
    r = env.call(UPDATE, "GET", f"/users/{bob.id}", as_user=admin)
    assert r.json()["deliverability"] == "bounced"
    audit = env.call(UPDATE, "GET", f"/users/{bob.id}/audit", as_user=admin).json()["items"][0]
    assert (audit["actor"], audit["action"]) == ("system:ses", "user.deliverability_changed")
    sent = len(env.mailer.sent)
    # the routes whose purpose is an email answer 409 ...
    for path in (f"/users/{bob.id}/password-reset", "/me/password-reset"):
        who = admin if path.startswith("/users") else bob
        r = env.call("reset-password", "POST", path, as_user=who)
        assert r.status == 409 and r.json()["code"] == "email_undeliverable", r
    # ... the public route keeps its generic answer and sends nothing
    assert env.call("reset-password", "POST", "/password-reset", body={"email": bob.email}).status == 202
    assert len(env.mailer.sent) == sent
    env.publish()
    assert types_of(env, bob) == ["user.deliverability_changed"]
    assert env.bus.of(bob.id)[0]["data"]["actor"] == {"type": "system", "id": "ses"}

    # a platform administrator sets it back once the mailbox is fixed; nobody else may
    refused = env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"deliverability": "ok"})
    assert refused.status == 422
    r = env.call(UPDATE, "PATCH", f"/users/{bob.id}", as_user=admin, body={"deliverability": "ok"})
    assert r.status == 200 and r.json()["deliverability"] == "ok"
    assert env.call("reset-password", "POST", f"/users/{bob.id}/password-reset", as_user=admin).status == 202


def test_a_complaint_marks_and_a_confirmed_new_address_resets(
    env: Env, bob: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("usermgmt.events.run_once", lambda _e, _c, _n, process: process())
    ses(env, ses_event("complaint", bob.email))
    assert env.user(bob.id).deliverability == "complained"
    r = env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "bob@fixed.example"})
    assert r.status == 200
    assert env.mailer.to(bob.email) == []  # no notice to the address that complained
    token = link_in(env, "bob@fixed.example")  # the new address gets its link
    assert env.call("verify-email", "POST", f"/email-verification/{token}", body={}).status == 200
    assert env.user(bob.id).deliverability == "ok"


@pytest.mark.parametrize(
    "event",
    [
        ses_event("bounce", "bob@acme.example", permanent=False),  # transient
        ses_event("bounce", "nobody@acme.example"),  # no user's address
    ],
    ids=["transient", "unknown-address"],
)
def test_transient_bounces_and_unknown_addresses_change_nothing(
    env: Env, bob: User, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("usermgmt.events.run_once", lambda _e, _c, _n, process: process())
    before = env.user(bob.id)
    ses(env, event)
    assert env.user(bob.id) == before
    env.publish()
    assert env.bus.events == []
