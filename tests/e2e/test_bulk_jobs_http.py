"""Bulk jobs over HTTP against a stack of its own (``make run`` with this module's seed), so jobs may
change users: every action by each kind of administrator and by machines, dry runs, cancel, a reused
``Idempotency-Key``, and Auth0 answering 429 and 503 while a job runs. After every job, each item's
status and the user it names agree (SPEC section 14)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import LocalStackInfo, SeedLogin, request, running_stack, seed_of, user_path
from tests.e2e.test_bulk_http import machine_token

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-Bulk-Pass-01"
# each test its own users: the tests of this module may run on different workers, each with its own stack
TARGETS = [f"f{i:02d}" for i in range(30)]  # Auth0 faults
SINGLES = [f"b{i:02d}" for i in range(10)]  # actions by each kind of caller
CANCELLED = [f"c{i:02d}" for i in range(18)]  # cancel
NAMES = ["admin", "delegate", *TARGETS, *SINGLES, *CANCELLED, "g1", "g2"]
USERS = {
    n: SeedLogin(
        n,
        f"{n}.bulk@{'umbrella' if n.startswith('g') else 'initech'}.example",
        PASSWORD,
        n.title(),
        "Bulk",
    )
    for n in NAMES
}


def _extra(name: str) -> dict[str, Any]:
    if name == "delegate":
        return {"memberships": [{"accountId": "initech", "roles": ["Administrator", "Buyer"]}]}
    if name.startswith("g"):
        return {
            "memberships": [{"accountId": "umbrella", "roles": ["Buyer"]}],
            "defaultAccountId": "umbrella",
        }
    return {}


ALL_SCOPES = ["read:users", "update:users", "suspend:users", "delete:users", "create:users", "bulk:users"]
MACHINES = {
    "bulk-ops": ("bulk-ops-secret-000001", ALL_SCOPES),
    "bulk-narrow": ("bulk-narrow-secret-0001", ["read:users", "bulk:users"]),
}
SEED = {
    **seed_of(USERS, {"initech": "Initech", "umbrella": "Umbrella"}, extra=_extra),
    "machineClients": [
        {"clientId": c, "clientSecret": secret, "scopes": scopes} for c, (secret, scopes) in MACHINES.items()
    ],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackInfo]:
    env = {"SYNC_BASE_DELAY_SECONDS": "0", "SYNC_MAX_DELAY_SECONDS": "0", "AUTH0_TIMEOUT_SECONDS": "2"}
    with running_stack(tmp_path_factory.mktemp("bulk"), SEED, USERS, env) as info:
        yield info


@pytest.fixture(scope="module")
def admin(stack: LocalStackInfo) -> str:
    return stack.login(USERS["admin"].email, PASSWORD)


@pytest.fixture(scope="module")
def delegate(stack: LocalStackInfo) -> str:
    return stack.login(USERS["delegate"].email, PASSWORD)


@pytest.fixture(scope="module")
def ops(stack: LocalStackInfo) -> str:
    return machine_token(stack, "bulk-ops", MACHINES["bulk-ops"][0])


def ids(*names: str) -> list[str]:
    return [USERS[n].user_id for n in names]


def start(stack: LocalStackInfo, token: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    r = stack.api("POST", "/bulk-jobs", token, json=body, headers={"Idempotency-Key": key})
    assert r.status == 202, r
    job: dict[str, Any] = r.json()
    return job


def finished(stack: LocalStackInfo, token: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once no item is pending (a cancelled job may still finish items in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        r = stack.api("GET", f"/bulk-jobs/{job_id}", token)
        assert r.status == 200, r
        job: dict[str, Any] = r.json()
        if job["counts"]["pending"] == 0 and job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job['counts']}"
        time.sleep(0.3)


def items(stack: LocalStackInfo, token: str, job_id: str) -> dict[str, tuple[str, str | None]]:
    found: dict[str, tuple[str, str | None]] = {}
    cursor = ""
    while True:
        query = f"?limit=200&cursor={quote(cursor)}" if cursor else "?limit=200"
        r = stack.api("GET", f"/bulk-jobs/{job_id}/items{query}", token)
        assert r.status == 200, r
        found.update({i["userId"]: (i["status"], i["code"]) for i in r.json()["items"]})
        cursor = r.json()["nextCursor"] or ""
        if not cursor:
            return found


def user(stack: LocalStackInfo, token: str, name: str) -> dict[str, Any]:
    r = stack.api("GET", user_path(USERS[name]), token)
    assert r.status == 200, r
    body: dict[str, Any] = r.json()
    return body


def auth0_blocked(stack: LocalStackInfo, name: str) -> bool:
    r = request("GET", f"{stack.auth0_url}/_knobs/users/{quote(USERS[name].user_id, safe='')}")
    assert r.status == 200, r
    return bool(r.json().get("blocked"))


def fault(stack: LocalStackInfo, **knobs: Any) -> None:
    assert request("POST", f"{stack.auth0_url}/_knobs/faults", json=knobs).status in (200, 201)


def settle(stack: LocalStackInfo, token: str, names: list[str]) -> None:
    """Run sync-identity until every named user's Auth0 copy is in step (``idpSync`` synced)."""
    deadline = time.monotonic() + 60
    while any(user(stack, token, n)["idpSync"] != "synced" for n in names):
        assert time.monotonic() < deadline, "Auth0 sync did not settle"
        assert stack.api("POST", "/_local/schedules/SyncIdentityFunction").status == 200
        time.sleep(0.2)


def test_auth0_429_and_503_during_a_job_fail_no_item(stack: LocalStackInfo, ops: str, admin: str) -> None:
    # Auth0 rate-limits, then fails, a dozen of the job's Management API calls
    fault(stack, status=429, count=6, ratelimit_reset_in=1, path_prefix="/api/v2/users")
    fault(stack, status=503, count=6, path_prefix="/api/v2/users")
    job = start(stack, ops, {"action": "suspend", "userIds": ids(*TARGETS)}, "faults-suspend")
    done = finished(stack, ops, job["id"])
    assert done["status"] == "succeeded", done
    assert done["counts"] == {"total": 30, "pending": 0, "succeeded": 30, "skipped": 0, "failed": 0}
    assert done["createdBy"] == {"type": "client", "id": "bulk-ops"}
    assert set(items(stack, ops, job["id"]).values()) == {("succeeded", None)}
    assert all(user(stack, admin, n)["status"] == "SUSPENDED" for n in TARGETS)
    assert request("GET", f"{stack.auth0_url}/_knobs/faults").json() == []  # the faults were met
    settle(stack, admin, TARGETS)
    assert all(auth0_blocked(stack, n) for n in TARGETS)

    # the same users back through a filter (a users-list query), under the same kind of faults
    fault(stack, status=503, count=4, path_prefix="/api/v2/users")
    back = {"accountId": "initech", "status": "SUSPENDED", "emailPrefix": "f"}
    job = start(stack, ops, {"action": "enable", "filter": back}, "faults-enable")
    assert job["counts"]["total"] == 30
    done = finished(stack, ops, job["id"])
    assert (done["status"], done["counts"]["succeeded"]) == ("succeeded", 30), done
    settle(stack, admin, TARGETS)
    assert not any(auth0_blocked(stack, n) for n in TARGETS)
    assert all(user(stack, admin, n)["status"] == "ACTIVE" for n in TARGETS)


def test_set_fields_dry_run_then_for_real_and_a_reused_key(stack: LocalStackInfo, admin: str) -> None:
    body = {"action": "set-fields", "userIds": ids("b00", "b01", "b02"), "params": {"lastName": "Renamed"}}
    dry = start(stack, admin, {**body, "dryRun": True}, "fields-dry")
    done = finished(stack, admin, dry["id"])
    assert (done["status"], done["dryRun"], done["counts"]["succeeded"]) == ("succeeded", True, 3)
    assert {user(stack, admin, n)["lastName"] for n in ("b00", "b01", "b02")} == {"Bulk"}

    real = start(stack, admin, body, "fields-real")
    again = stack.api("POST", "/bulk-jobs", admin, json=body, headers={"Idempotency-Key": "fields-real"})
    assert again.status == 202 and again.json()["id"] == real["id"]
    other = stack.api(
        "POST", "/bulk-jobs", admin, json={**body, "dryRun": True}, headers={"Idempotency-Key": "fields-real"}
    )
    assert other.status == 409 and other.json()["code"] == "idempotency_key_reused"
    done = finished(stack, admin, real["id"])
    assert done["counts"]["succeeded"] == 3
    assert {user(stack, admin, n)["lastName"] for n in ("b00", "b01", "b02")} == {"Renamed"}
    # the same change again: every item a no-op
    noop = finished(stack, admin, start(stack, admin, body, "fields-again")["id"])
    assert set(items(stack, admin, noop["id"]).values()) == {("skipped", "no_change")}
    audit = stack.api("GET", f"{user_path(USERS['b00'])}/audit", admin).json()["items"]
    assert audit[0]["action"] == "user.updated" and audit[0].get("jobId") == real["id"]


def test_a_delegated_administrators_roles_resets_and_deletes(
    stack: LocalStackInfo, delegate: str, admin: str
) -> None:
    roles = {"action": "add-roles", "userIds": ids("b03", "b04", "g1"), "params": {"accountId": "initech"}}
    job = start(
        stack, delegate, {**roles, "params": {"accountId": "initech", "roles": ["Approver"]}}, "d-roles"
    )
    done = finished(stack, delegate, job["id"])
    assert done["status"] == "completed_with_errors"
    assert items(stack, delegate, job["id"]) == {
        USERS["b03"].user_id: ("succeeded", None),
        USERS["b04"].user_id: ("succeeded", None),
        USERS["g1"].user_id: ("failed", "user_not_found"),  # outside dana's accounts
    }
    for name in ("b03", "b04"):
        (membership,) = user(stack, admin, name)["memberships"]
        assert membership["roles"] == ["Buyer", "Approver"]
    assert user(stack, admin, "g1")["memberships"][0]["roles"] == ["Buyer"]

    reset = start(stack, delegate, {"action": "password-reset", "userIds": ids("b05", "g2")}, "d-reset")
    assert items(stack, delegate, finished(stack, delegate, reset["id"])["id"]) == {
        USERS["b05"].user_id: ("succeeded", None),
        USERS["g2"].user_id: ("failed", "user_not_found"),
    }
    mail = stack.api("GET", "/_local/outbox").json()
    assert any(USERS["b05"].email in m["to"] for m in mail)
    assert not any(USERS["g2"].email in m["to"] for m in mail)

    delete = start(stack, delegate, {"action": "delete", "userIds": ids("b06")}, "d-delete")
    assert items(stack, delegate, finished(stack, delegate, delete["id"])["id"]) == {
        USERS["b06"].user_id: ("failed", "forbidden")
    }
    assert user(stack, admin, "b06")["status"] == "ACTIVE"


def test_machines_need_each_actions_scope(stack: LocalStackInfo, ops: str, admin: str) -> None:
    narrow = machine_token(stack, "bulk-narrow", MACHINES["bulk-narrow"][0])
    refused = stack.api(
        "POST",
        "/bulk-jobs",
        narrow,
        json={"action": "suspend", "userIds": ids("b07")},
        headers={"Idempotency-Key": "narrow-1"},
    )
    assert refused.status == 403 and refused.json()["code"] == "insufficient_scope"
    assert user(stack, admin, "b07")["status"] == "ACTIVE"
    approver = {"accountId": "initech", "roles": ["Approver"]}
    for action in ("add-roles", "remove-roles"):
        job = start(stack, ops, {"action": action, "userIds": ids("b08"), "params": approver}, f"m-{action}")
        assert finished(stack, ops, job["id"])["counts"]["succeeded"] == 1
        roles = user(stack, admin, "b08")["memberships"][0]["roles"]
        assert roles == (["Buyer", "Approver"] if action == "add-roles" else ["Buyer"])
    gone = start(stack, ops, {"action": "delete", "userIds": ids("b09")}, "m-delete")
    assert finished(stack, ops, gone["id"])["counts"]["succeeded"] == 1
    assert stack.api("GET", user_path(USERS["b09"]), admin).status == 404


def test_cancel_leaves_items_and_users_in_agreement(stack: LocalStackInfo, admin: str) -> None:
    names = CANCELLED
    # slow Auth0 down so the job is still running when the cancel arrives
    fault(stack, status=None, delay=0.3, count=-1, path_prefix="/api/v2/users")
    try:
        job = start(stack, admin, {"action": "suspend", "userIds": ids(*names)}, "cancel-me")
        cancelled = stack.api("POST", f"/bulk-jobs/{job['id']}/cancel", admin)
        assert cancelled.status == 200, cancelled
        assert cancelled.json()["status"] == "cancelled"
        done = finished(stack, admin, job["id"])
    finally:
        assert request("DELETE", f"{stack.auth0_url}/_knobs/faults").status in (200, 204)
    assert done["status"] == "cancelled"
    decided = items(stack, admin, job["id"])
    assert any(v == ("skipped", "cancelled") for v in decided.values()), decided
    for name in names:
        status = user(stack, admin, name)["status"]
        expected = "SUSPENDED" if decided[USERS[name].user_id] == ("succeeded", None) else "ACTIVE"
        assert decided[USERS[name].user_id] in {("succeeded", None), ("skipped", "cancelled")}
        assert status == expected, (name, decided[USERS[name].user_id])
    again = stack.api("POST", f"/bulk-jobs/{job['id']}/cancel", admin)
    assert again.status == 409 and again.json()["code"] == "job_finished"
