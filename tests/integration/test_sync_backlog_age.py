"""sync-identity tells how long the oldest due work has waited (security notes M8, L21).

``IdpSyncOldestDueAge`` (seconds) is published by every run and watched by ``SyncBacklogAgeAlarm``: a
sync that runs but falls behind is seen before people notice stale Auth0 data.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ROOT, Env, LambdaContext, add_cast
from usermgmt.errors import IdpUnavailable
from usermgmt.service.sync import BACKLOG_AGE_METRIC


def run_sync_identity(env: Env) -> Any:
    event = json.loads((ROOT / "events" / "schedule.json").read_text())
    return env.handler("sync-identity").lambda_handler(event, LambdaContext("sync-identity"))


def published(capsys: pytest.CaptureFixture[str], name: str) -> list[float]:
    """The values of metric ``name`` in the EMF records written since the last read."""
    values: list[float] = []
    for line in capsys.readouterr().out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or name not in record:
            continue
        value = record[name]
        values += [float(v) for v in (value if isinstance(value, list) else [value])]
    return values


def test_each_run_publishes_the_age_of_the_oldest_change_auth0_is_behind_on(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    people = add_cast(env)
    bob, admin = people["bob"], people["admin"]
    env.idp.fail_next(1, IdpUnavailable("x"))
    r = env.call("update-user", "PATCH", f"/users/{bob.id}", as_user=admin, body={"firstName": "Robert"})
    assert r.status == 200 and r.json()["idpSync"] == "pending"
    env.clock.advance(20 * 60)  # no run got to it for 20 minutes
    env.idp.fail_next(1, IdpUnavailable("x"))  # and this run's push fails again
    capsys.readouterr()

    assert run_sync_identity(env)["pending"] == 1

    assert published(capsys, BACKLOG_AGE_METRIC) == [20 * 60]
    # deferred by the failed push: not due until its retry time, so not waiting in the backlog
    run_sync_identity(env)
    assert published(capsys, BACKLOG_AGE_METRIC) == [0]
    env.clock.advance(env.container.settings.sync_max_delay_seconds + 120)

    assert run_sync_identity(env)["synced"] == 1

    (age,) = published(capsys, BACKLOG_AGE_METRIC)
    assert 120 <= age <= env.container.settings.sync_max_delay_seconds + 120
    assert env.idp.users[bob.id].given_name == "Robert"
    run_sync_identity(env)
    assert published(capsys, BACKLOG_AGE_METRIC) == [0]


def test_an_idle_run_publishes_zero(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()

    run_sync_identity(env)

    assert published(capsys, BACKLOG_AGE_METRIC) == [0]


class LambdaTimedOut(BaseException):
    """The Lambda runtime ends the invocation: nothing in the function can catch it."""


def test_a_change_whose_request_died_after_the_commit_is_due_since_its_commit(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    people = add_cast(env)

    def lambda_dies(*_args: Any, **_kwargs: Any) -> str:
        raise LambdaTimedOut

    monkeypatch.setattr(env.container.sync, "finish", lambda_dies)
    with pytest.raises(LambdaTimedOut):
        env.call("suspend-user", "POST", f"/users/{people['bob'].id}/suspend", as_user=people["admin"])
    monkeypatch.undo()
    env.clock.advance(30 * 60)
    capsys.readouterr()

    assert run_sync_identity(env)["synced"] == 1

    assert published(capsys, BACKLOG_AGE_METRIC) == [30 * 60]
    assert env.idp.users[people["bob"].id].blocked
