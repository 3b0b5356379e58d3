"""cleanup-links over moto: expired links go, valid ones stay, pending email changes end (SPEC 2, 6, 10).

Links are made the way the service makes them (``issue_link`` + ``transact``, or PATCH /me email), the
clock is moved past expiry and grace, and cleanup runs through the service or the handler.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import EVENTS, Env, LambdaContext
from usermgmt.errors import StoreUnavailable
from usermgmt.links import CANCEL, RESET, VERIFY
from usermgmt.models import User
from usermgmt.service.cleanup import EMAIL_CHANGE_EXPIRED, SYSTEM_ACTOR, CleanupResult, CleanupService

FN = "update-user"
TX_MAX = 100  # ops per transaction when seeding (the most DynamoDB takes)


# ------------------------------------------------------------------------------ helpers
def grace(env: Env) -> int:
    return env.container.settings.cleanup_grace_seconds


def verify_ttl(env: Env) -> int:
    return env.container.settings.verify_link_ttl_seconds


def issue(env: Env, user: User, n: int, *, at: float, ttl: int, purpose: str = RESET) -> list[str]:
    """``n`` links issued at ``at`` that expire at ``at + ttl``; returns their hashes."""
    writer = env.container.writer
    hashes: list[str] = []
    ops = []
    for _ in range(n):
        _url, links, link_ops = writer.issue_link(user, purpose, at, ttl)
        hashes.append(links[purpose])
        ops.extend(link_ops)
    for start in range(0, len(ops), TX_MAX):
        env.store.transact(ops[start : start + TX_MAX])
    return hashes


def existing(env: Env, hashes: list[str]) -> list[str]:
    return [h for h in hashes if env.store.get_link(h) is not None]


def cleanup(env: Env, **kwargs: Any) -> CleanupService:
    return CleanupService(env.container.deps, env.container.writer, **kwargs)


def start_email_change(env: Env, user: User, address: str) -> tuple[str, str]:
    """PATCH /me email as the user; returns the (verify, cancel) link hashes of the new change."""
    r = env.call(FN, "PATCH", "/me", as_user=user, body={"email": address})
    assert r.status == 200, r
    assert r.json()["pendingEmail"] == address
    links = env.user(user.id).links
    return links[VERIFY], links[CANCEL]


def me(env: Env, user: User) -> dict[str, Any]:
    r = env.call(FN, "GET", "/me", as_user=user)
    assert r.status == 200, r
    body: dict[str, Any] = r.json()
    return body


def past_expiry_and_grace(env: Env, ttl: int) -> None:
    env.clock.advance(ttl + grace(env) + 1)


@pytest.fixture
def bob(env: Env) -> User:
    return env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]})


@pytest.fixture
def admin(env: Env) -> User:
    return env.add_user("ada@example.com", first="Ada", last="Admin", profile="administrator")


@pytest.fixture
def dynamo_calls(env: Env) -> Iterator[list[str]]:
    """The DynamoDB operations the store makes (botocore events on its client)."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    events = env.store._client.meta.events
    events.register("before-call.dynamodb", record)
    yield calls
    events.unregister("before-call.dynamodb", record)


Mixed = Callable[[int], dict[str, list[str]]]


@pytest.fixture
def make_mixed(env: Env, bob: User) -> Mixed:
    """``n`` links expired beyond grace, 5 within grace, one exactly at the cutoff, 5 live."""
    return lambda n: _mixed(env, bob, n)


def _mixed(env: Env, bob: User, n: int) -> dict[str, list[str]]:
    t0 = env.clock.now()
    old = issue(env, bob, n, at=t0, ttl=600)  # expire t0 + 600
    at_cutoff = issue(env, bob, 1, at=t0 + 60, ttl=600)  # expires t0 + 660 = the cutoff below
    env.clock.advance(660 + grace(env))  # now - grace = t0 + 660
    now = env.clock.now()
    in_grace = issue(env, bob, 5, at=now - 3600, ttl=1800)  # expired half an hour ago
    live = issue(env, bob, 5, at=now, ttl=1800)
    return {"old": old, "at_cutoff": at_cutoff, "in_grace": in_grace, "live": live}


# ------------------------------------------------------------------------------ what goes, what stays
def test_removes_only_links_expired_beyond_grace_over_several_pages(
    env: Env, make_mixed: Mixed, dynamo_calls: list[str]
) -> None:
    mixed = make_mixed(250)
    pages: list[int] = []
    original = env.store.expired_links

    def spy(cutoff: int, limit: int, start_key: dict[str, Any] | None = None) -> Any:
        page = original(cutoff, limit, start_key)
        pages.append(len(page.links))
        return page

    env.store.expired_links = spy

    result = cleanup(env, page_size=40).run()

    assert result == CleanupResult(links_deleted=250, pending_email_changes_ended=0, skipped=0, complete=True)
    assert len(pages) >= 7 and max(pages) <= 40  # 250 entries in pages of 40: LastEvaluatedKey followed
    assert existing(env, mixed["old"]) == []
    kept = mixed["at_cutoff"] + mixed["in_grace"] + mixed["live"]
    assert existing(env, kept) == kept
    assert "Scan" not in dynamo_calls and "Query" in dynamo_calls

    again = cleanup(env, page_size=40).run()
    assert again == CleanupResult(complete=True)
    assert existing(env, kept) == kept


def test_links_in_grace_go_once_their_grace_is_over(env: Env, make_mixed: Mixed) -> None:
    mixed = make_mixed(10)
    cleanup(env).run()

    env.clock.advance(1)  # the cutoff passes the link that expired exactly at it
    assert cleanup(env).run().links_deleted == 1

    env.clock.advance(grace(env) - 1800)  # the in-grace ones expired grace + 1 s ago, the live ones not yet
    assert cleanup(env).run().links_deleted == 5
    assert existing(env, mixed["live"]) == mixed["live"]

    env.clock.advance(3600)  # and now the once-live ones are past expiry and grace too
    assert cleanup(env).run().links_deleted == 5
    assert existing(env, mixed["live"]) == []


# ------------------------------------------------------------------------------ pending email changes
def test_pending_change_whose_newest_link_expired_ends(env: Env, bob: User, admin: User) -> None:
    verify, cancel = start_email_change(env, bob, "robert@new.example")
    version = me(env, bob)["version"]
    past_expiry_and_grace(env, verify_ttl(env))

    result = cleanup(env).run()

    assert result == CleanupResult(links_deleted=2, pending_email_changes_ended=1, skipped=0, complete=True)
    view = me(env, bob)
    assert view["pendingEmail"] is None and view["email"] == "bob@acme.example"
    assert view["version"] == version + 1
    stored = env.user(bob.id)
    assert VERIFY not in stored.links and CANCEL not in stored.links
    assert existing(env, [verify, cancel]) == []
    audit = env.call(FN, "GET", f"/users/{bob.id}/audit", as_user=admin).json()["items"]
    assert (
        audit[0]["action"] == EMAIL_CHANGE_EXPIRED
        and audit[0]["actor"] == SYSTEM_ACTOR.audit_name == "system:cleanup"
    )
    assert audit[0]["changes"] == [{"field": "pendingEmail", "from": "robert@new.example", "to": None}]

    # the same address can be asked for again: a fresh change with a fresh email
    sent = len(env.mailer.to("robert@new.example"))
    start_email_change(env, bob, "robert@new.example")
    assert len(env.mailer.to("robert@new.example")) == sent + 1


def test_pending_change_still_in_grace_stays(env: Env, bob: User) -> None:
    start_email_change(env, bob, "robert@new.example")
    env.clock.advance(verify_ttl(env) + 60)  # expired, but within grace

    assert cleanup(env).run() == CleanupResult(complete=True)
    assert me(env, bob)["pendingEmail"] == "robert@new.example"


def test_pending_change_with_a_newer_link_survives(env: Env, bob: User) -> None:
    old_verify, old_cancel = start_email_change(env, bob, "first@new.example")
    past_expiry_and_grace(env, verify_ttl(env))
    new_verify, new_cancel = start_email_change(env, bob, "second@new.example")

    result = cleanup(env).run()

    assert result == CleanupResult(links_deleted=2, pending_email_changes_ended=0, skipped=0, complete=True)
    assert me(env, bob)["pendingEmail"] == "second@new.example"
    assert env.user(bob.id).links[VERIFY] == new_verify
    assert existing(env, [old_verify, old_cancel, new_verify, new_cancel]) == [new_verify, new_cancel]


def test_change_superseded_between_read_and_commit_survives(env: Env, bob: User) -> None:
    # Given a pending change whose link expired, and a newer change made while cleanup is on it
    old_verify, _ = start_email_change(env, bob, "first@new.example")
    past_expiry_and_grace(env, verify_ttl(env))
    original = env.store.get_user
    raced: list[str] = []

    def get_user_then_race(user_id: str) -> User | None:
        user = original(user_id)
        if not raced:
            raced.append(user_id)
            start_email_change(env, bob, "second@new.example")  # reads go through here too
        return user  # cleanup sees the state from before the newer change

    env.store.get_user = get_user_then_race

    # When cleanup runs
    result = cleanup(env).run()

    # Then the newer change is untouched and only the expired links went
    assert raced and result.pending_email_changes_ended == 0
    assert result.links_deleted == 2 and result.skipped == 0
    assert me(env, bob)["pendingEmail"] == "second@new.example"
    new_verify = env.user(bob.id).links[VERIFY]
    assert existing(env, [old_verify, new_verify]) == [new_verify]


def test_verification_link_of_an_unverified_current_address_is_just_deleted(env: Env, bob: User) -> None:
    verify = issue(env, bob, 1, at=env.clock.now(), ttl=verify_ttl(env), purpose=VERIFY)
    env.store.put_user(env.user(bob.id).evolve(email_verified=False, links={VERIFY: verify[0]}))
    version = env.user(bob.id).version
    past_expiry_and_grace(env, verify_ttl(env))

    assert cleanup(env).run() == CleanupResult(links_deleted=1, complete=True)
    assert env.user(bob.id).version == version  # no pending change: the user is not written


# ------------------------------------------------------------------------------ concurrency
@pytest.fixture
def busy(env: Env, bob: User) -> dict[str, Any]:
    """Expired links, an expired pending change of Carol, a surviving newer change of Bob, live links."""
    carol = env.add_user("carol@example.com", first="Carol", last="Both")
    t0 = env.clock.now()
    expired = issue(env, bob, 40, at=t0 - 3600, ttl=600)
    carol_links = start_email_change(env, carol, "carol@new.example")
    bob_old = start_email_change(env, bob, "bob@old-change.example")
    past_expiry_and_grace(env, verify_ttl(env))
    bob_new = start_email_change(env, bob, "bob@new-change.example")
    live = issue(env, bob, 10, at=env.clock.now(), ttl=1800)
    return {
        "carol": carol,
        "expired": expired + list(carol_links) + list(bob_old),
        "valid": list(bob_new) + live,
    }


def assert_busy_cleaned(env: Env, bob: User, busy: dict[str, Any]) -> None:
    assert existing(env, busy["expired"]) == []
    assert existing(env, busy["valid"]) == busy["valid"]
    assert me(env, busy["carol"])["pendingEmail"] is None
    assert me(env, bob)["pendingEmail"] == "bob@new-change.example"


def test_two_runs_interleaved_after_listing(env: Env, bob: User, busy: dict[str, Any]) -> None:
    # Run A lists a page, run B runs fully, run A carries on: both succeed, nothing valid is lost.
    original = env.store.expired_links
    results: dict[str, CleanupResult] = {}

    def list_then_let_b_run(cutoff: int, limit: int, start_key: dict[str, Any] | None = None) -> Any:
        page = original(cutoff, limit, start_key)
        if "B" not in results:
            env.store.expired_links = original  # B (and the rest of A) list as usual
            results["B"] = cleanup(env, page_size=25).run()
        return page

    env.store.expired_links = list_then_let_b_run
    results["A"] = cleanup(env, page_size=25).run()

    a, b = results["A"], results["B"]
    total = len(busy["expired"])
    assert b == CleanupResult(links_deleted=total, pending_email_changes_ended=1, skipped=0, complete=True)
    assert a == CleanupResult(links_deleted=0, pending_email_changes_ended=0, skipped=25, complete=True)
    assert_busy_cleaned(env, bob, busy)


def test_two_runs_interleaved_between_read_and_write(env: Env, bob: User, busy: dict[str, Any]) -> None:
    # Run A has read Carol's pending change when run B ends it: A's conditional writes do nothing.
    original = env.store.get_user
    results: dict[str, CleanupResult] = {}

    def read_then_let_b_run(user_id: str) -> User | None:
        user = original(user_id)
        if "B" not in results and user is not None and user.id == busy["carol"].id:
            env.store.get_user = original
            results["B"] = cleanup(env).run()
        return user

    env.store.get_user = read_then_let_b_run
    results["A"] = cleanup(env).run()

    a, b = results["A"], results["B"]
    assert "B" in results
    assert a.pending_email_changes_ended + b.pending_email_changes_ended == 1
    assert a.links_deleted + b.links_deleted == len(busy["expired"])
    assert a.skipped >= 1 and a.complete and b.complete
    assert_busy_cleaned(env, bob, busy)


# ------------------------------------------------------------------------------ bounded work, crashes
def test_work_per_run_is_bounded_and_the_next_runs_finish(env: Env, make_mixed: Mixed) -> None:
    mixed = make_mixed(100)
    first = cleanup(env, page_size=15).run(max_items=40)
    assert first == CleanupResult(links_deleted=40, complete=False)
    assert len(existing(env, mixed["old"])) == 60

    second = cleanup(env, page_size=15).run(max_items=40)
    third = cleanup(env, page_size=15).run(max_items=40)
    assert (second.links_deleted, second.complete) == (40, False)
    assert (third.links_deleted, third.complete) == (20, True)
    assert existing(env, mixed["old"]) == []
    assert len(existing(env, mixed["live"] + mixed["in_grace"] + mixed["at_cutoff"])) == 11


def test_settings_bound_the_run(env: Env, make_mixed: Mixed, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mixed(40)
    env.configure(cleanup_max_items=30)

    assert cleanup(env).run() == CleanupResult(links_deleted=30, complete=False)


def test_run_stops_when_the_lambda_runs_out_of_time(env: Env, make_mixed: Mixed) -> None:
    mixed = make_mixed(80)
    remaining = iter(range(60_000, 0, -1_000))  # one second less at every look

    def time_left() -> int:
        return next(remaining)

    first = cleanup(env, page_size=40, time_reserve_ms=10_000).run(time_left)

    assert not first.complete and 0 < first.links_deleted < 80
    second = cleanup(env, page_size=40).run()
    assert second.links_deleted == 80 - first.links_deleted and second.complete
    assert existing(env, mixed["live"]) == mixed["live"]


def test_crash_mid_page_then_rerun_completes(env: Env, bob: User, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given expired links around an expired pending change, so that its transaction is mid-page
    t0 = env.clock.now()
    before = issue(env, bob, 30, at=t0 - 60, ttl=600)
    change = start_email_change(env, bob, "robert@new.example")
    after = issue(env, bob, 30, at=t0 + 60, ttl=verify_ttl(env))
    live = issue(env, bob, 5, at=t0, ttl=verify_ttl(env) + 10 * grace(env))
    past_expiry_and_grace(env, verify_ttl(env) + 60)
    original = env.store.transact
    failures: list[int] = []

    def fail_once(ops: Any) -> None:
        if not failures:
            failures.append(len(ops))
            raise StoreUnavailable("ProvisionedThroughputExceededException")
        original(ops)

    monkeypatch.setattr(env.store, "transact", fail_once)

    # When the first run dies on that transaction
    with pytest.raises(StoreUnavailable):
        cleanup(env, page_size=25).run()
    assert failures == [5]  # user update, audit entry, link deletion, outbox event, his membership entry
    assert existing(env, before) == [] and existing(env, after) == after
    assert me(env, bob)["pendingEmail"] == "robert@new.example"

    # Then the next run completes the work, and nothing valid went
    result = cleanup(env, page_size=25).run()
    assert result.complete and result.pending_email_changes_ended == 1
    assert existing(env, before + after + list(change)) == []
    assert existing(env, live) == live
    assert me(env, bob)["pendingEmail"] is None


# ------------------------------------------------------------------------------ the handler
def test_handler_runs_on_the_schedule_event(env: Env, make_mixed: Mixed, capsys: Any) -> None:
    make_mixed(30)
    event = json.loads((EVENTS / "schedule.json").read_text())

    result = env.handler("cleanup-links").lambda_handler(event, LambdaContext("cleanup-links"))

    assert result == {"linksDeleted": 30, "pendingEmailChangesEnded": 0, "skipped": 0, "complete": True}
    json.dumps(result)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    metrics = {m["Name"] for e in emitted for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"LinksDeleted", "PendingEmailChangesEnded", "CleanupSkipped"} <= metrics
    assert emitted[-1]["LinksDeleted"] == [30]  # EMF values are lists
