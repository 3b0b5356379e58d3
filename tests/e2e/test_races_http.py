"""Races over HTTP against the stack of ``make run``: what a lost update would look like to a client.

The stack serves requests in parallel (several execution environments per function) and its local AWS
applies each DynamoDB request atomically, as DynamoDB does; so these races happen here as they would
in production. Each race runs several rounds: a lost update shows within them when atomicity is broken
(checked by removing the lock of ``local.aws.make_dynamodb_atomic``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import ApiResponse, LocalStackInfo, SeedLogin, request, running_stack, seed_of

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Races-Pass1"
NAMES = ["admin", "pat", "sus", "rst", "eva", "evb", "ifm"]
USERS = {n: SeedLogin(n, f"{n}.race@initech.example", PASSWORD, n.title(), "Race") for n in NAMES}
SEED = seed_of(USERS, {"initech": "Initech", "umbrella": "Umbrella"})
ENV = {
    "LOCAL_LAMBDA_CONCURRENCY": "4",
    "RESET_LIMIT_PER_ADDRESS": "1000",
    "RESET_LIMIT_PER_ADDRESS_AUTHENTICATED": "1000",
    "RESET_LIMIT_PER_IP": "1000",
    "VERIFY_LIMIT_PER_USER": "1000",
    "VERIFY_LIMIT_PER_ADDRESS": "1000",
}
ROUNDS_LINKS = 10
RETRIES = 20  # a client retries 503 "being changed by others", as the answer asks


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    with running_stack(tmp_path_factory.mktemp("races"), SEED, USERS, ENV) as info:
        yield info


@pytest.fixture(scope="module")
def admin(stack: LocalStackInfo) -> str:
    return stack.login(USERS["admin"].email, PASSWORD)


def path_of(key: str) -> str:
    return "/users/" + quote(USERS[key].user_id, safe="")


def at_once(calls: Sequence[Callable[[], ApiResponse]]) -> list[ApiResponse]:
    """Run every call in its own thread, released together; answers in the order of ``calls``."""
    barrier = threading.Barrier(len(calls))
    answers: list[ApiResponse | BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = calls[index]()
        except BaseException as exc:
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return [a for a in answers if isinstance(a, ApiResponse)]


def retrying(call: Callable[[], ApiResponse]) -> Callable[[], ApiResponse]:
    def attempt() -> ApiResponse:
        for _ in range(RETRIES):
            response = call()
            if response.status != 503:
                return response
        return response

    return attempt


def user(stack: LocalStackInfo, admin: str, key: str) -> dict[str, Any]:
    response = stack.api("GET", path_of(key), token=admin)
    assert response.status == 200, response
    body: dict[str, Any] = response.json()
    return body


def audit(stack: LocalStackInfo, admin: str, key: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = stack.api("GET", f"{path_of(key)}/audit?limit=100{cursor}", token=admin)
        assert response.status == 200, response
        body = response.json()
        entries += body["items"]
        if not body.get("nextCursor"):
            return entries
        cursor = "&cursor=" + quote(body["nextCursor"], safe="")


def outbox_link(stack: LocalStackInfo, to: str, path: str, count: int) -> list[str]:
    """The ``path`` links of the emails sent to ``to``, oldest first; there must be ``count``."""
    links = []
    for message in stack.api("GET", "/_local/outbox").json():
        if to in message["to"]:
            match = re.search(r"https?://[^\s\"<>]+" + re.escape(path) + r"[^\s\"<>]*", message["text"])
            if match:
                links.append(match.group(0))
    assert len(links) == count, f"{len(links)} {path} links to {to}, expected {count}"
    return links


# ------------------------------------------------------------------------------------------------ PATCH


FIELDS = ("firstName", "lastName", "accountNumber")


def test_twenty_concurrent_patches_of_one_user_lose_nothing(stack: LocalStackInfo, admin: str) -> None:
    for round_no in range(3):
        before = user(stack, admin, "pat")
        changes = [
            {FIELDS[i % 3]: f"R{round_no}-{FIELDS[i % 3][:4]}-{i:02d}"} for i in range(20)
        ]  # every value distinct: each PATCH is a real change

        def patch(change: dict[str, str]) -> Callable[[], ApiResponse]:
            return retrying(lambda: stack.api("PATCH", path_of("pat"), token=admin, json=change))

        answers = at_once([patch(change) for change in changes])
        assert [a.status for a in answers] == [200] * 20, [a for a in answers if a.status != 200]
        versions = [a.json()["version"] for a in answers]
        # each PATCH made its own version: one after the other, none on top of a stale read
        assert sorted(versions) == list(range(before["version"] + 1, before["version"] + 21))
        by_version = dict(zip(versions, changes, strict=True))
        # every answer shows every change committed up to its version (a lost one would be missing)
        for answer in answers:
            body = answer.json()
            for field in FIELDS:
                latest = [
                    c[field] for v, c in sorted(by_version.items()) if field in c and v <= body["version"]
                ]
                assert body[field] == (latest[-1] if latest else before[field]), (field, body["version"])
        after = user(stack, admin, "pat")
        assert after["version"] == before["version"] + 20
        for field in FIELDS:
            assert after[field] == [c[field] for _, c in sorted(by_version.items()) if field in c][-1]
        # the audit trail holds each PATCH once, and per field its entries chain from the value before
        # to the final one: two writers that read the same state would leave two entries with one "from"
        prefix = f"R{round_no}-"
        entries = [
            c for e in audit(stack, admin, "pat") for c in e["changes"] if str(c["to"]).startswith(prefix)
        ]
        assert sorted((c["field"], c["to"]) for c in entries) == sorted(
            next(iter(c.items())) for c in changes
        )
        for field in FIELDS:
            steps = {c["from"]: c["to"] for c in entries if c["field"] == field}
            assert len(steps) == sum(1 for c in entries if c["field"] == field), f"{field}: a lost update"
            value, walked = before[field], 0
            while value in steps:
                value, walked = steps[value], walked + 1
            assert (value, walked) == (after[field], len(steps)), field


def test_a_patch_racing_a_suspend_both_take_effect(stack: LocalStackInfo, admin: str) -> None:
    for round_no in range(8):
        before = user(stack, admin, "sus")
        if before["status"] == "SUSPENDED":
            assert stack.api("POST", f"{path_of('sus')}/enable", token=admin).status == 200
            before = user(stack, admin, "sus")
        name = f"Raced-{round_no}"
        answers = at_once(
            [
                retrying(partial(stack.api, "PATCH", path_of("sus"), token=admin, json={"lastName": name})),
                retrying(partial(stack.api, "POST", f"{path_of('sus')}/suspend", token=admin)),
            ]
        )
        assert [a.status for a in answers] == [200, 200], answers
        after = user(stack, admin, "sus")
        assert (after["status"], after["lastName"]) == ("SUSPENDED", name)
        assert after["version"] == before["version"] + 2


# ------------------------------------------------------------------------------------------------ If-Match


def test_if_match_writers_one_wins_per_version_the_rest_are_412(stack: LocalStackInfo, admin: str) -> None:
    for round_no in range(8):
        before = user(stack, admin, "ifm")
        etag = f'"{before["version"]}"'
        answers = at_once(
            [
                partial(
                    stack.api,
                    "PATCH",
                    path_of("ifm"),
                    token=admin,
                    json={"firstName": f"Ifm-{round_no}-{i}"},
                    headers={"If-Match": etag},
                )
                for i in range(6)
            ]
        )
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] + [412] * 5, answers
        winner = next(i for i, a in enumerate(answers) if a.status == 200)
        after = user(stack, admin, "ifm")
        assert after["version"] == before["version"] + 1
        assert after["firstName"] == f"Ifm-{round_no}-{winner}"


# ------------------------------------------------------------------------------------------------ links


def _auth0_password_patches(stack: LocalStackInfo, user_id: str) -> int:
    calls = request("GET", f"{stack.auth0_url}/_knobs/requests").json()
    return sum(1 for c in calls if c["method"] == "PATCH" and c["path"].endswith(user_id))


def test_two_submits_of_one_reset_link_change_the_password_once(stack: LocalStackInfo, admin: str) -> None:
    person = USERS["rst"]
    for round_no in range(ROUNDS_LINKS):
        asked = stack.api("POST", f"{path_of('rst')}/password-reset", token=admin)
        assert asked.status == 202, asked
        link = outbox_link(stack, person.email, "/password-reset/", round_no + 1)[-1]
        assert request("DELETE", f"{stack.auth0_url}/_knobs/requests").status in (200, 204)
        new = f"Race-Reset-{round_no}-Pass9"
        body = {"newPassword": new, "confirmPassword": new}
        answers = at_once([partial(request, "POST", link, json=body) for _ in range(2)])
        statuses = sorted(a.status for a in answers)
        assert statuses[0] == 200 and statuses[1] in (409, 410), answers
        assert _auth0_password_patches(stack, person.user_id) == 1
        stack.login(person.email, new)  # the new password is the one Auth0 holds


def test_two_users_confirming_one_new_address_at_once_one_wins(stack: LocalStackInfo, admin: str) -> None:
    for round_no in range(ROUNDS_LINKS):
        wanted = f"wanted-{round_no}@initech.example"
        links = []
        for key in ("eva", "evb"):
            response = stack.api("PATCH", path_of(key), token=admin, json={"email": wanted})
            assert response.status == 200 and response.json()["pendingEmail"] == wanted, response
            links.append(outbox_link(stack, wanted, "/email-verification/", len(links) + 1)[-1])
        answers = at_once([partial(request, "POST", link, json={}) for link in links])
        assert sorted(a.status for a in answers) == [200, 409], answers
        loser = next(a for a in answers if a.status == 409)
        assert loser.json()["code"] == "email_taken"
        owners = [key for key in ("eva", "evb") if user(stack, admin, key)["email"] == wanted]
        assert len(owners) == 1
