"""Bulk jobs (SPEC section 14) over moto: each item is the single-user operation, decided once."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import Env, Response, add_cast
from usermgmt.errors import IdpUnavailable, StoreUnavailable
from usermgmt.models import User

MACHINE = "ops-script"
N_USERS = int(os.environ.get("BULK_TEST_USERS", "500"))


def start(
    env: Env,
    caller: User | str,
    body: dict[str, Any],
    *,
    key: str = "key-1",
    claims: dict[str, str] | None = None,
) -> Response:
    headers = {"idempotency-key": key} if key else {}
    if claims is None and isinstance(caller, User):
        claims = {"gty": "password"}  # as Auth0 issues a person's token (the job must not keep it)
    return env.call(
        "bulk-jobs", "POST", "/bulk-jobs", as_user=caller, body=body, headers=headers, claims=claims
    )


def job(env: Env, caller: User | str, job_id: str, claims: dict[str, str] | None = None) -> Response:
    return env.call("bulk-jobs", "GET", f"/bulk-jobs/{job_id}", as_user=caller, claims=claims)


def items(env: Env, caller: User, job_id: str, **query: str) -> dict[str, str]:
    r = env.call("bulk-jobs", "GET", f"/bulk-jobs/{job_id}/items", as_user=caller, query=query or None)
    assert r.status == 200, r
    return {i["userId"]: (i["status"], i["code"]) for i in r.json()["items"]}


def user_state(env: Env) -> list[dict[str, Any]]:
    """Everything but the bulk jobs' own records (what a job must not change in a dry run)."""
    own = ("JOB#", "JOBS#", "JOBKEY#", "OUTBOX#bulkjob|")  # the job, its items and its bulk_job.finished
    return [
        i
        for i in env.scan()
        if not i["pk"]["S"].startswith(own) and not i["sk"]["S"].startswith("JOBITEM#")  # the user's copy
    ]


@pytest.fixture
def cast(env: Env) -> dict[str, User]:
    return add_cast(env)


def test_a_delegated_administrators_job_changes_only_users_in_their_scope(
    env: Env, cast: dict[str, User]
) -> None:
    targets = [cast[n].id for n in ("bob", "carol", "gus", "admin")] + ["auth0|ffffffffffffffffffffffff"]
    r = start(env, cast["dana"], {"action": "suspend", "userIds": targets})
    assert r.status == 202, r
    view = r.json()
    assert r.headers["location"] == f"/bulk-jobs/{view['id']}"
    assert view["status"] == "queued"
    assert view["counts"] == {"total": 5, "pending": 5, "succeeded": 0, "skipped": 0, "failed": 0}
    assert view["createdBy"] == {"type": "delegated_admin", "id": cast["dana"].id}

    env.drain_bulk()

    final = job(env, cast["dana"], view["id"]).json()
    assert final["status"] == "completed_with_errors"
    assert final["counts"] == {"total": 5, "pending": 0, "succeeded": 2, "skipped": 0, "failed": 3}
    assert final["startedAt"] and final["finishedAt"]
    assert items(env, cast["dana"], view["id"]) == {
        cast["bob"].id: ("succeeded", None),
        cast["carol"].id: ("succeeded", None),
        cast["gus"].id: ("failed", "user_not_found"),
        cast["admin"].id: ("failed", "user_not_found"),
        "auth0|ffffffffffffffffffffffff": ("failed", "user_not_found"),
    }
    for name in ("bob", "carol"):
        user = env.user(cast[name].id)
        assert user is not None and user.status == "SUSPENDED"
        assert env.idp.users[cast[name].id].blocked
    for name in ("gus", "admin"):
        assert env.user(cast[name].id) == cast[name]  # exactly as it was
        assert not env.idp.users[cast[name].id].blocked
    # the same audit entry and event as a single suspend, naming the job
    audit = env.call("update-user", "GET", f"/users/{cast['bob'].id}/audit", as_user=cast["admin"]).json()
    assert audit["items"][0]["action"] == "user.suspended"
    assert audit["items"][0]["actor"] == cast["dana"].id
    assert audit["items"][0]["jobId"] == view["id"]
    env.publish()
    (event,) = [e for e in env.bus.of(cast["bob"].id) if e["type"] == "user.suspended"]
    assert event["data"]["origin"]["jobId"] == view["id"]
    assert event["data"]["actor"] == {"type": "delegated_admin", "id": cast["dana"].id}
    (finished,) = [e for e in env.bus.events if e["detail-type"] == "bulk_job.finished"]
    assert finished["detail"]["data"]["jobId"] == view["id"]
    assert finished["detail"]["data"]["status"] == "completed_with_errors"
    # a no-op is skipped, a forbidden action fails with the single call's code
    again = start(env, cast["dana"], {"action": "suspend", "userIds": [cast["bob"].id]}, key="key-2")
    delete = start(env, cast["dana"], {"action": "delete", "userIds": [cast["carol"].id]}, key="key-3")
    env.drain_bulk()
    assert items(env, cast["dana"], again.json()["id"]) == {cast["bob"].id: ("skipped", "no_change")}
    assert items(env, cast["dana"], delete.json()["id"]) == {cast["carol"].id: ("failed", "forbidden")}
    assert job(env, cast["dana"], again.json()["id"]).json()["status"] == "succeeded"


def test_a_dry_run_decides_every_item_and_changes_no_user(env: Env, cast: dict[str, User]) -> None:
    targets = [cast[n].id for n in ("bob", "carol", "gus")]
    env.call("suspend-user", "POST", f"/users/{cast['carol'].id}/suspend", as_user=cast["admin"])
    before = user_state(env)
    calls, mails = len(env.idp.calls), len(env.mailer.sent)
    r = start(env, cast["dana"], {"action": "suspend", "userIds": targets, "dryRun": True})
    assert r.status == 202, r
    env.drain_bulk()
    assert user_state(env) == before
    assert (len(env.idp.calls), len(env.mailer.sent)) == (calls, mails)
    assert items(env, cast["dana"], r.json()["id"]) == {
        cast["bob"].id: ("succeeded", None),
        cast["carol"].id: ("skipped", "no_change"),
        cast["gus"].id: ("failed", "user_not_found"),
    }
    final = job(env, cast["dana"], r.json()["id"]).json()
    assert final["dryRun"] is True and final["status"] == "completed_with_errors"
    # a dry run of password resets takes no slot of the per-address limit either
    reset = start(
        env,
        cast["admin"],
        {"action": "password-reset", "userIds": [cast["bob"].id], "dryRun": True},
        key="k2",
    )
    env.drain_bulk()
    assert items(env, cast["admin"], reset.json()["id"]) == {cast["bob"].id: ("succeeded", None)}
    assert user_state(env) == before


def test_a_duplicated_message_and_a_killed_worker_apply_each_item_once(
    env: Env, cast: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = [cast[n].id for n in ("bob", "carol", "gus")]
    r = start(
        env, cast["admin"], {"action": "set-fields", "userIds": targets, "params": {"lastName": "Bulk"}}
    )
    job_id = r.json()["id"]
    (message,) = env.queue.messages
    env.queue.messages.append(dict(message, messageId="duplicate"))  # SQS delivers it twice

    # the worker dies after the first item's commit (the table fails for the next one)
    store = env.container.store
    real = store.transact
    seen = {"n": 0}

    def dying(ops: Any) -> None:
        if any(type(op).__name__ == "UpdateUser" for op in ops):
            seen["n"] += 1
            if seen["n"] == 2:
                raise StoreUnavailable("worker killed")
        real(ops)

    monkeypatch.setattr(store, "transact", dying)
    env.drain_bulk()

    assert job(env, cast["admin"], job_id).json()["counts"]["succeeded"] == 3
    for name in ("bob", "carol", "gus"):
        user = env.user(cast[name].id)
        assert user is not None and user.last_name == "Bulk"
        assert user.version == cast[name].version + 1, name  # applied once
        audit = env.call("update-user", "GET", f"/users/{cast[name].id}/audit", as_user=cast["admin"]).json()
        assert [e["action"] for e in audit["items"]] == ["user.updated"]
    env.publish()
    finished = [e for e in env.bus.events if e["detail-type"] == "bulk_job.finished"]
    assert len(finished) == 1


def test_auth0_429_and_503_slow_a_500_item_job_and_fail_no_item(memory_env: Env) -> None:
    # the in-memory store (the same wiring; the store contract holds it to DynamoDB's behaviour): 500
    # items over moto take minutes on a loaded machine
    env = memory_env
    admin = env.add_user("ada@example.com", profile="administrator")
    users = [env.add_user(f"u{i:03d}@acme.example", memberships={"acme": ["Buyer"]}) for i in range(N_USERS)]
    pauses: list[float] = []
    env.container.bulk.pause = pauses.append
    # Auth0's rate limit asks for 3 s (x-ratelimit-reset), or more than the pause's cap; 5xx ask nothing
    env.idp.fail_next(30, IdpUnavailable("rate_limited", retry_after=3.0), method="update_user")
    env.idp.fail_next(30, IdpUnavailable("rate_limited", retry_after=120.0), method="update_user")
    env.idp.fail_next(40, IdpUnavailable("server_error"), method="update_user")
    r = start(env, admin, {"action": "suspend", "userIds": [u.id for u in users]})
    assert r.status == 202, r
    env.drain_bulk()
    final = job(env, admin, r.json()["id"]).json()
    assert final["status"] == "succeeded"
    assert final["counts"] == {
        "total": N_USERS,
        "pending": 0,
        "succeeded": N_USERS,
        "skipped": 0,
        "failed": 0,
    }
    assert len(pauses) == 100, "each refusal of Auth0 slows the job"
    assert sorted(set(pauses)) == [1.0, 3.0, 5.0]  # as long as Auth0 asked, within 1 to 5 s
    assert (pauses.count(3.0), pauses.count(5.0), pauses.count(1.0)) == (30, 30, 40)
    assert all((user := env.user(u.id)) is not None and user.status == "SUSPENDED" for u in users)
    for _ in range(60):  # the never-lost sync finishes what Auth0 refused
        env.clock.advance(3600)
        env.run_sync()
    assert all(env.idp.users[u.id].blocked for u in users)
    assert all((user := env.user(u.id)) is not None and user.idp_sync == "synced" for u in users)


def test_idempotency_key(env: Env, cast: dict[str, User]) -> None:
    body = {"action": "enable", "userIds": [cast["bob"].id]}
    first = start(env, cast["admin"], body)
    again = start(env, cast["admin"], body)
    assert first.status == again.status == 202
    assert again.json()["id"] == first.json()["id"]
    other = start(env, cast["admin"], {**body, "dryRun": True})
    assert other.status == 409 and other.json()["code"] == "idempotency_key_reused"
    missing = start(env, cast["admin"], body, key="")
    assert missing.status == 422 and missing.json()["errors"][0]["field"] == "Idempotency-Key"
    # another caller's same key is their own
    assert start(env, cast["dana"], body).json()["id"] != first.json()["id"]


def test_cancel_skips_items_not_started(env: Env, cast: dict[str, User]) -> None:
    targets = [cast[n].id for n in ("bob", "carol")]
    r = start(env, cast["dana"], {"action": "suspend", "userIds": targets})
    job_id = r.json()["id"]
    c = env.call("bulk-jobs", "POST", f"/bulk-jobs/{job_id}/cancel", as_user=cast["dana"])
    assert c.status == 200, c
    assert c.json()["status"] == "cancelled" and c.json()["finishedAt"]
    env.drain_bulk()
    assert items(env, cast["dana"], job_id) == {t: ("skipped", "cancelled") for t in targets}
    assert all((u := env.user(t)) is not None and u.status == "ACTIVE" for t in targets)
    again = env.call("bulk-jobs", "POST", f"/bulk-jobs/{job_id}/cancel", as_user=cast["dana"])
    assert again.status == 409 and again.json()["code"] == "job_finished"
    assert items(env, cast["dana"], job_id, status="succeeded") == {}


def test_only_the_creator_and_platform_administrators_see_a_job(env: Env, cast: dict[str, User]) -> None:
    other = env.add_user("olga@globex.example", memberships={"globex": ["Administrator"]})
    r = start(env, cast["dana"], {"action": "enable", "userIds": [cast["bob"].id]})
    job_id = r.json()["id"]
    assert job(env, cast["admin"], job_id).status == 200
    for path in (f"/bulk-jobs/{job_id}", f"/bulk-jobs/{job_id}/items"):
        refused = env.call("bulk-jobs", "GET", path, as_user=other)
        assert refused.status == 404 and refused.json()["code"] == "job_not_found"
    cancel = env.call("bulk-jobs", "POST", f"/bulk-jobs/{job_id}/cancel", as_user=other)
    assert cancel.status == 404
    assert job(env, cast["dana"], "nope").status == 404
    mine = env.call("bulk-jobs", "GET", "/bulk-jobs", as_user=other).json()
    assert mine == {"items": [], "nextCursor": None}
    everyone = env.call("bulk-jobs", "GET", "/bulk-jobs", as_user=cast["admin"]).json()
    assert [j["id"] for j in everyone["items"]] == [job_id]
    plain = env.call("bulk-jobs", "GET", "/bulk-jobs", as_user=cast["bob"])
    assert plain.status == 403 and plain.json()["code"] == "forbidden"


def test_limits(env: Env, cast: dict[str, User]) -> None:
    too_many = start(
        env, cast["admin"], {"action": "suspend", "userIds": [f"auth0|{i}" for i in range(10001)]}
    )
    assert too_many.status == 422, too_many
    assert too_many.json()["errors"][0]["field"] == "userIds"
    env.configure(bulk_max_active_jobs=1)
    assert start(env, cast["admin"], {"action": "enable", "userIds": [cast["bob"].id]}, key="a").status == 202
    second = start(env, cast["admin"], {"action": "enable", "userIds": [cast["bob"].id]}, key="b")
    assert second.status == 429 and second.json()["code"] == "too_many_jobs"
    assert second.headers["retry-after"]
    env.drain_bulk()
    assert start(env, cast["admin"], {"action": "enable", "userIds": [cast["bob"].id]}, key="b").status == 202
    bad = start(
        env, cast["admin"], {"action": "set-fields", "userIds": [cast["bob"].id], "params": {"email": "x"}}
    )
    assert bad.status == 422


def test_role_changes_and_set_fields_follow_the_patch_rules(env: Env, cast: dict[str, User]) -> None:
    add = start(
        env,
        cast["dana"],
        {
            "action": "add-roles",
            "userIds": [cast["carol"].id],
            "params": {"accountId": "acme", "roles": ["Approver"]},
        },
        key="add",
    )
    remove = start(
        env,
        cast["dana"],
        {
            "action": "remove-roles",
            "userIds": [cast["bob"].id],
            "params": {"accountId": "acme", "roles": ["Buyer"]},
        },
        key="remove",
    )
    other_account = start(
        env,
        cast["dana"],
        {
            "action": "add-roles",
            "userIds": [cast["carol"].id],
            "params": {"accountId": "globex", "roles": ["Buyer"]},
        },
        key="globex",
    )
    fields = start(
        env,
        cast["dana"],
        {"action": "set-fields", "userIds": [cast["bob"].id], "params": {"profile": "partner"}},
        key="f",
    )
    env.drain_bulk()
    carol = env.user(cast["carol"].id)
    assert carol is not None
    assert {m.account_id: m.roles for m in carol.memberships} == {
        "acme": ("Buyer", "Approver"),
        "globex": ("Approver",),  # untouched: outside the delegated administrator's accounts
    }
    assert items(env, cast["dana"], add.json()["id"]) == {cast["carol"].id: ("succeeded", None)}
    # a membership without roles is refused as in a PATCH
    assert items(env, cast["dana"], remove.json()["id"]) == {cast["bob"].id: ("failed", "validation_failed")}
    assert items(env, cast["dana"], other_account.json()["id"]) == {
        cast["carol"].id: ("failed", "validation_failed")
    }
    # profile is not a field a delegated administrator may write
    assert items(env, cast["dana"], fields.json()["id"]) == {cast["bob"].id: ("failed", "validation_failed")}


def test_a_filter_is_resolved_under_the_callers_scope(env: Env, cast: dict[str, User]) -> None:
    r = start(env, cast["dana"], {"action": "suspend", "filter": {"namePrefix": "b"}, "dryRun": True})
    assert r.status == 202, r
    env.drain_bulk()
    # Bob Buyer and Carol Both (acme) match
    assert items(env, cast["dana"], r.json()["id"]) == {
        cast["bob"].id: ("succeeded", None),
        cast["carol"].id: ("succeeded", None),
    }
    # Gus Globex matches "g" but is outside dana's accounts: not a target at all
    outside = start(env, cast["dana"], {"action": "suspend", "filter": {"namePrefix": "g"}}, key="k3")
    assert outside.json()["counts"]["total"] == 0 and outside.json()["status"] == "succeeded"
    everyone = start(env, cast["admin"], {"action": "suspend", "filter": {"namePrefix": "g"}, "dryRun": True})
    assert everyone.json()["counts"]["total"] == 1
    bad = start(env, cast["dana"], {"action": "suspend", "filter": {"colour": "red"}}, key="k2")
    assert bad.status == 400 and bad.json()["code"] == "invalid_filter"
    for wrong in ({"cursor": "x"}, {"status": {"a": 1}}, {"status": "GONE"}, {"role": "Buyer"}):
        refused = start(env, cast["admin"], {"action": "suspend", "filter": wrong}, key=f"w-{wrong}")
        assert refused.status == 400 and refused.json()["code"] == "invalid_filter", (wrong, refused)
    # the list's own parameters, typed as JSON: a list of statuses, a boolean, an account and a role
    typed = {"status": ["ACTIVE", "INVITED"], "emailVerified": True, "accountId": "acme", "role": "Buyer"}
    both = start(env, cast["admin"], {"action": "suspend", "filter": typed, "dryRun": True}, key="k4")
    assert both.status == 202, both
    env.drain_bulk()
    assert set(items(env, cast["admin"], both.json()["id"])) == {
        u.id for u in (cast["bob"], cast["carol"], cast["dana"]) if u.email_verified
    }


def test_a_filter_over_many_pages_finds_every_user_once(env: Env, cast: dict[str, User]) -> None:
    made = {env.add_user(f"many{i:03d}@acme.example", first="Many", last=f"M{i:03d}").id for i in range(230)}
    r = start(env, cast["admin"], {"action": "suspend", "filter": {"emailPrefix": "many"}, "dryRun": True})
    assert r.status == 202, r
    assert r.json()["counts"]["total"] == 230
    env.drain_bulk()
    found: set[str] = set()
    cursor: str | None = None
    while True:
        page = env.call(
            "bulk-jobs",
            "GET",
            f"/bulk-jobs/{r.json()['id']}/items",
            as_user=cast["admin"],
            query={"limit": "200", **({"cursor": cursor} if cursor else {})},
        ).json()
        found |= {i["userId"] for i in page["items"]}
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert found == made
    # a cursor or status the lists cannot take: 400 with the list codes of every other list
    job_items = f"/bulk-jobs/{r.json()['id']}/items"
    for path, query, code in (
        (job_items, {"cursor": "bm9wZQ"}, "invalid_cursor"),
        (job_items, {"status": "GONE"}, "invalid_filter"),
        ("/bulk-jobs", {"cursor": "bm9wZQ"}, "invalid_cursor"),
    ):
        refused = env.call("bulk-jobs", "GET", path, as_user=cast["admin"], query=query)
        assert (refused.status, refused.json()["code"]) == (400, code), (path, query)
    env.configure(bulk_max_targets=229)
    over = start(env, cast["admin"], {"action": "suspend", "filter": {"emailPrefix": "many"}}, key="over")
    assert over.status == 422 and over.json()["errors"][0]["field"] == "filter"


def test_revoke_sessions_signs_every_target_out(env: Env, cast: dict[str, User]) -> None:
    issued = env.clock.now()
    env.clock.advance(2)
    r = start(
        env, cast["admin"], {"action": "revoke-sessions", "userIds": [cast["bob"].id, cast["carol"].id]}
    )
    assert r.status == 202, r
    env.drain_bulk()
    final = job(env, cast["admin"], r.json()["id"]).json()
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] == 2
    for name in ("bob", "carol"):  # a token issued before the job is refused
        me = env.call("update-user", "GET", "/me", as_user=cast[name], iat=issued)
        assert me.status == 401 and me.json()["code"] == "token_revoked", me
    assert env.call("update-user", "GET", "/me", as_user=cast["dana"], iat=issued).status == 200


def test_a_machine_caller_needs_bulk_users_and_the_actions_scope(env: Env, cast: dict[str, User]) -> None:
    env.configure(machine_client_ids=MACHINE)

    def claims(scope: str) -> dict[str, str]:
        return {"gty": "client-credentials", "scope": scope}

    body = {"action": "suspend", "userIds": [cast["bob"].id]}
    sub = f"{MACHINE}@clients"
    no_bulk = start(env, sub, body, claims=claims("suspend:users"))
    assert no_bulk.status == 403 and no_bulk.json()["code"] == "insufficient_scope"
    no_action = start(env, sub, body, claims=claims("bulk:users"))
    assert no_action.status == 403 and no_action.json()["code"] == "insufficient_scope"
    r = start(env, sub, body, claims=claims("bulk:users suspend:users"))
    assert r.status == 202, r
    assert r.json()["createdBy"] == {"type": "client", "id": MACHINE}
    env.drain_bulk()
    user = env.user(cast["bob"].id)
    assert user is not None and user.status == "SUSPENDED"
    env.publish()
    (event,) = [e for e in env.bus.of(cast["bob"].id) if e["type"] == "user.suspended"]
    assert event["data"]["actor"] == {"type": "client", "id": MACHINE}
    assert job(env, sub, r.json()["id"], claims=claims("bulk:users")).status == 200
    assert job(env, cast["admin"], r.json()["id"]).status == 200
    assert job(env, cast["dana"], r.json()["id"]).status == 404


def test_the_worker_reports_only_failed_messages(env: Env, cast: dict[str, User]) -> None:
    r = start(env, cast["admin"], {"action": "enable", "userIds": [cast["bob"].id]})
    records = [
        {"messageId": "bad", "body": "not json"},
        {"messageId": "gone", "body": json.dumps({"jobId": "unknown", "userIds": ["x"]})},
        *env.queue.messages,
    ]
    env.queue.messages.clear()
    result = env.send_event("bulk-worker", {"Records": records})
    assert result == {"batchItemFailures": []}
    assert items(env, cast["admin"], r.json()["id"]) == {cast["bob"].id: ("skipped", "no_change")}


def test_a_job_and_everything_it_wrote_expire_after_the_retention(env: Env, cast: dict[str, User]) -> None:
    env.configure(bulk_retention_days=3)
    started = int(env.clock.now())
    r = start(env, cast["admin"], {"action": "suspend", "userIds": [cast["bob"].id, cast["carol"].id]})
    assert r.status == 202, r
    env.drain_bulk()
    job_id = r.json()["id"]
    written = [
        item
        for item in env.scan()
        if item["pk"]["S"].startswith(("JOB#", "JOBKEY#", "JOBS#")) or item["sk"]["S"].startswith("JOBITEM#")
    ]
    kinds = {item["pk"]["S"].split("#")[0] + "/" + item["sk"]["S"].split("#")[0] for item in written}
    # the job, its counts, its items, its key, its list entries and each person's copy of their item
    assert {"JOB/JOB", "JOB/COUNT", "JOB/ITEM", "JOBKEY/KEY", "USER/JOBITEM"} <= kinds, kinds
    assert sum(kind.startswith("JOBS/") for kind in kinds) == 1, kinds
    assert all(job_id in json.dumps(item) for item in written if not item["pk"]["S"].startswith("JOBKEY#"))
    # DynamoDB's TTL removes each of them once the retention (BULK_RETENTION_DAYS) has passed
    assert {int(item["ttl"]["N"]) for item in written} == {started + 3 * 86400}, written


def test_a_job_whose_messages_were_queued_in_part_finishes_when_the_request_is_repeated(
    env: Env, cast: dict[str, User]
) -> None:
    users = [env.add_user(f"part{i:02d}@acme.example", memberships={"acme": ["Buyer"]}) for i in range(25)]
    body = {"action": "suspend", "userIds": [u.id for u in users]}
    queue = env.queue
    original = queue.send

    def first_message_only(bodies: list[dict[str, Any]]) -> None:
        from usermgmt.ports import QueueUnavailable

        original(bodies[:1])
        raise QueueUnavailable("the connection dropped")

    queue.send = first_message_only  # type: ignore[method-assign]
    r = start(env, cast["admin"], body, key="partly")
    queue.send = original  # type: ignore[method-assign]
    assert r.status == 503 and r.json()["code"] == "dependency_unavailable", r
    env.drain_bulk()  # the one queued message (10 items) runs: the job is running, 15 items pending
    job_id = env.store.job_for_key(cast["admin"].id, "partly")
    assert job_id is not None
    assert job(env, cast["admin"], job_id).json()["counts"]["pending"] == 15
    again = start(env, cast["admin"], body, key="partly")  # as the 503 said: repeat the request
    assert again.status == 202 and again.json()["id"] == job_id
    env.drain_bulk()
    final = job(env, cast["admin"], job_id).json()
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] == 25, final
    assert all((u2 := env.user(u.id)) is not None and u2.status == "SUSPENDED" for u in users)
