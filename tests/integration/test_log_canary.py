"""The log canary (autouse fixture ``log_canary`` in tests/conftest.py) must see the logs and must bite."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import Env, canary_findings


def test_canary_recognises_what_must_never_be_logged(env: Env) -> None:
    assert canary_findings(['{"message":"sent to bob@acme.example"}'], [env]) == ["an email address"]
    assert canary_findings(["Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhdXRoMHwxIn0.c2ln"], [env]) == ["a JWT"]
    env.idp.passwords["u"] = "Sup3r-Secret!"
    assert canary_findings(['{"body":"Sup3r-Secret!"}'], [env]) == ["a link token or password"]
    env.idp.passwords.clear()


def test_an_edit_with_email_change_logs_but_no_personal_data(env: Env, log_canary: object) -> None:
    bob = env.add_user("bob@acme.example", first="Bob", last="Buyer", memberships={"acme": ["Buyer"]})
    assert (
        env.call(
            "update-user", "PATCH", "/me", as_user=bob, body={"firstName": "Rob", "email": "rob@new.example"}
        ).status
        == 200
    )
    assert (
        env.call(
            "update-user", "PATCH", "/me", as_user=bob, body={"email": "bad", "nope": "x@y.example"}
        ).status
        == 422
    )
    lines = log_canary.lines  # type: ignore[attr-defined]
    assert any("change committed" in line for line in lines), (
        "the canary saw no log line: it would miss leaks"
    )
    assert canary_findings(lines, [env]) == []


def test_canary_recognises_the_names_of_the_people_of_the_test(env: Env) -> None:
    env.add_user("bart@acme.example", first="Bartholomew", last="Quintavalle")
    env.call("update-user", "GET", "/me", body={"firstName": "Bartolo"})

    for line in ('{"message":"hello Quintavalle"}', "first=Bartholomew", "Bartolo!"):
        assert canary_findings([line], [env]) == ["a person's name (1)"], line
    # a name inside another word is not the name ("User" in "UserUpdated", "Test" in a namespace)
    assert canary_findings(['{"Quintavalles":1,"xBartolo":2}'], [env]) == []


def test_canary_reads_stdout_and_stderr_also_what_the_test_read_itself(
    log_canary: object, capsys: pytest.CaptureFixture[str]
) -> None:
    print("canary-marker-1")
    assert capsys.readouterr().out == "canary-marker-1\n"
    print("canary-marker-2")
    print("canary-marker-3", file=sys.stderr)

    output = log_canary.output()  # type: ignore[attr-defined]

    assert all(f"canary-marker-{n}" in output for n in (1, 2, 3)), output


def test_powertools_logs_and_metrics_reach_the_canary(env: Env, log_canary: object) -> None:
    bob = env.add_user("bob@acme.example", first="Bob", last="Buyer")

    assert env.call("update-user", "PATCH", "/me", as_user=bob, body={"lastName": "Byer"}).status == 200

    # Powertools' log lines through logging (its stream handler writes to the stdout of its creation),
    # its metrics (EMF) through stdout
    lines = "\n".join(log_canary.lines)  # type: ignore[attr-defined]
    output = log_canary.output()  # type: ignore[attr-defined]
    assert '"message":"change committed"' in lines and '"UserUpdated"' in output, (lines, output)
