"""Over HTTP against the stack of ``make run``: every change shows up on ``/_local/bus`` as EventBridge
delivers it, in order per user, with no personal data; an SES bounce posted through ``/_local/events``
marks the user and stops the mail an administrator would trigger."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import LocalStackInfo, SeedLogin, request, running_stack, seed_of, user_path

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Evented-Pass1"
NAMES = ["admin", "olga", "pete", "quin"]
USERS = {n: SeedLogin(n, f"{n}.ev@umbrella.example", PASSWORD, n.title(), "Evented") for n in NAMES}
SEED = seed_of(USERS, {"umbrella": "Umbrella"})
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("events"), SEED, USERS) as info:
        yield info


@pytest.fixture(scope="module")
def admin(stack: LocalStackInfo) -> str:
    return stack.login(USERS["admin"].email, PASSWORD)


def bus(stack: LocalStackInfo, user: SeedLogin, count: int) -> list[dict[str, Any]]:
    """The events of ``user`` on the bus, once there are ``count`` of them (waits for the publisher)."""
    deadline = time.monotonic() + 30
    while True:
        response = stack.api("GET", "/_local/bus")
        assert response.status == 200
        events = [e for e in response.json() if e["detail"]["subject"] == user.user_id]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_changes_arrive_on_the_bus_in_order_with_no_personal_data(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["olga"]
    token = stack.login(user.email, PASSWORD)
    assert stack.api("PATCH", "/me", token=token, json={"firstName": "Olgaa"}).status == 200
    assert stack.api("PATCH", user_path(user), token=admin, json={"lastName": "Changed"}).status == 200
    assert stack.api("POST", user_path(user) + "/suspend", token=admin).status == 200
    assert stack.api("POST", user_path(user) + "/enable", token=admin).status == 200
    # an anonymous request is no change of the user (no version, no event: L1); an administrator's is
    assert request("POST", f"{stack.api_url}/password-reset", json={"email": user.email}).status == 202
    assert stack.api("POST", user_path(user) + "/password-reset", token=admin).status == 202

    events = bus(stack, user, 5)
    assert [e["detail-type"] for e in events] == [
        "user.updated",
        "user.updated",
        "user.suspended",
        "user.enabled",
        "user.password_reset_requested",
    ]
    assert [e["detail"]["sequence"] for e in events] == ["2", "3", "4", "5", "6"]
    assert [e["detail"]["data"]["actor"]["type"] for e in events] == [
        "self",
        "platform_admin",
        "platform_admin",
        "platform_admin",
        "platform_admin",
    ]
    for event in events:  # as EventBridge delivers it, with the CloudEvents detail
        assert {"version", "id", "detail-type", "source", "account", "time", "region", "detail"} <= set(event)
        assert event["source"] == "usermgmt" and event["detail"]["specversion"] == "1.0"
        text = json.dumps(event)
        assert not EMAIL.search(text) and "Olga" not in text and "Evented" not in text


def test_a_deletion_is_told_by_id_only(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["quin"]
    assert stack.api("DELETE", user_path(user), token=admin).status == 204
    (event,) = bus(stack, user, 1)
    assert event["detail-type"] == "user.deleted"
    assert event["detail"]["data"]["changedFields"] == [] and event["detail"]["subject"] == user.user_id


def test_a_bounce_marks_the_user_and_stops_admin_mail(stack: LocalStackInfo, admin: str) -> None:
    user = USERS["pete"]
    ses = {
        "Source": "aws.ses",
        "DetailType": "Email Bounced",
        "Detail": {
            "eventType": "Bounce",
            "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": user.email}]},
            "mail": {"destination": [user.email]},
        },
    }
    routed = stack.api("POST", "/_local/events", json=ses)
    assert routed.status == 200 and routed.json()["matched"] == ["EmailEventsFunction"], routed
    shown = stack.api("GET", user_path(user), token=admin).json()
    assert shown["deliverability"] == "bounced"
    refused = stack.api("POST", user_path(user) + "/password-reset", token=admin)
    assert refused.status == 409 and refused.json()["code"] == "email_undeliverable"
    (event,) = bus(stack, user, 1)
    assert event["detail-type"] == "user.deliverability_changed"
    assert event["detail"]["data"]["actor"] == {"type": "system", "id": "ses"}
    fixed = stack.api("PATCH", user_path(user), token=admin, json={"deliverability": "ok"})
    assert fixed.status == 200 and fixed.json()["deliverability"] == "ok"
    assert stack.api("POST", user_path(user) + "/password-reset", token=admin).status == 202
