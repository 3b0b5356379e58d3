"""Machine callers and bulk jobs over HTTP against the stack ``make run`` starts (its SQS mapping too).

The session's stack is shared: these jobs change nothing other tests rely on (dry runs and no-ops).
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import LocalStackInfo, request


def machine_token(stack: LocalStackInfo, client_id: str, secret: str) -> str:
    r = request(
        "POST",
        f"{stack.auth0_url}/oauth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "audience": stack.audience,
        },
    )
    assert r.status == 200, r
    token = r.json()["access_token"]
    assert isinstance(token, str)
    return token


def wait_finished(stack: LocalStackInfo, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        r = stack.api("GET", f"/bulk-jobs/{job_id}", token)
        assert r.status == 200, r
        job: dict[str, Any] = r.json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def items(stack: LocalStackInfo, token: str, job_id: str) -> dict[str, tuple[str, str | None]]:
    r = stack.api("GET", f"/bulk-jobs/{job_id}/items", token)
    assert r.status == 200, r
    return {i["userId"]: (i["status"], i["code"]) for i in r.json()["items"]}


def test_a_machine_with_scopes_runs_a_job_and_one_without_is_refused(local_stack: LocalStackInfo) -> None:
    stack = local_stack
    reader = machine_token(stack, "e2e-reader", "e2e-reader-secret-0001")
    buyer = stack.users["buyer"].user_id
    assert stack.api("GET", f"/users/{buyer.replace('|', '%7C')}", reader).status == 200
    refused = stack.api("POST", f"/users/{buyer.replace('|', '%7C')}/suspend", reader)
    assert refused.status == 403 and refused.json()["code"] == "insufficient_scope"
    assert stack.api("GET", "/me", reader).json()["code"] == "forbidden"
    script = machine_token(stack, "e2e-bulk-script", "e2e-bulk-script-secret-1")
    body = {"action": "suspend", "filter": {"accountId": "initech"}, "dryRun": True}
    started = stack.api("POST", "/bulk-jobs", script, json=body, headers={"Idempotency-Key": "e2e-m-1"})
    assert started.status == 202, started
    assert started.headers["location"] == f"/bulk-jobs/{started.json()['id']}"
    again = stack.api("POST", "/bulk-jobs", script, json=body, headers={"Idempotency-Key": "e2e-m-1"})
    assert again.json()["id"] == started.json()["id"]
    other = stack.api(
        "POST", "/bulk-jobs", script, json={**body, "dryRun": False}, headers={"Idempotency-Key": "e2e-m-1"}
    )
    assert other.status == 409 and other.json()["code"] == "idempotency_key_reused"
    job = wait_finished(stack, script, started.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["createdBy"] == {"type": "client", "id": "e2e-bulk-script"}
    decided = items(stack, script, job["id"])
    assert decided[buyer] == ("succeeded", None)  # would be suspended
    assert decided[stack.users["suspended"].user_id] == ("skipped", "no_change")
    assert stack.api("GET", f"/users/{buyer.replace('|', '%7C')}", reader).json()["status"] == "ACTIVE"


def test_a_delegated_administrators_job_across_scopes(local_stack: LocalStackInfo) -> None:
    stack = local_stack
    delegate = stack.users["delegate"]
    token = stack.login(delegate.email, delegate.password)
    admin = stack.users["admin"].user_id
    buyer = stack.users["buyer"].user_id
    body = {"action": "enable", "userIds": [buyer, admin]}
    started = stack.api("POST", "/bulk-jobs", token, json=body, headers={"Idempotency-Key": "e2e-d-1"})
    assert started.status == 202, started
    job = wait_finished(stack, token, started.json()["id"])
    assert job["status"] == "completed_with_errors", job
    assert items(stack, token, job["id"]) == {
        buyer: ("skipped", "no_change"),
        admin: ("failed", "user_not_found"),
    }
    assert job["counts"] == {"total": 2, "pending": 0, "succeeded": 0, "skipped": 1, "failed": 1}
    finished = stack.api("POST", f"/bulk-jobs/{job['id']}/cancel", token)
    assert finished.status == 409 and finished.json()["code"] == "job_finished"
