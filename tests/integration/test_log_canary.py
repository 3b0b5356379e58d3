"""The log canary (autouse fixture ``log_canary`` in tests/conftest.py) must see the logs and must bite."""

from __future__ import annotations

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
