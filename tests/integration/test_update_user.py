"""update-user end to end through lambda_handler, over moto, with fake Auth0/SES and an injected clock."""

from __future__ import annotations

import pytest

from tests.conftest import Env, add_cast
from usermgmt.errors import IdpRejected, IdpUnavailable

FN = "update-user"


@pytest.fixture
def people(env: Env) -> dict[str, object]:
    return {
        **add_cast(env),
    }


def test_get_me_returns_own_record_with_etag(env: Env, people: dict) -> None:
    r = env.call(FN, "GET", "/me", as_user=people["bob"])
    assert r.status == 200, r
    assert r.json()["email"] == "bob@acme.example"
    assert r.headers["etag"] == '"1"'
    assert r.headers["cache-control"] == "no-store"


def test_delegated_admin_sees_only_memberships_of_own_accounts(env: Env, people: dict) -> None:
    carol = people["carol"]
    r = env.call(FN, "GET", f"/users/{carol.id.replace('|', '%7C')}", as_user=people["dana"])
    assert r.status == 200, r
    assert [m["accountId"] for m in r.json()["memberships"]] == ["acme"]


def test_delegated_admin_out_of_scope_is_404(env: Env, people: dict) -> None:
    r = env.call(FN, "GET", f"/users/{people['gus'].id}", as_user=people["dana"])
    assert r.status == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "user_not_found"


def test_token_older_than_tokens_valid_after_is_refused(env: Env, people: dict) -> None:
    bob = people["bob"]
    env.store.put_user(bob.evolve(tokens_valid_after=int(env.clock.now()) + 1))
    r = env.call(FN, "GET", "/me", as_user=bob, iat=env.clock.now())
    assert r.status == 401 and r.json()["code"] == "token_revoked"


def test_patch_name_syncs_auth0_and_audits(env: Env, people: dict) -> None:
    bob = people["bob"]
    r = env.call(FN, "PATCH", "/me", as_user=bob, body={"firstName": "  Robert "})
    assert r.status == 200, r
    body = r.json()
    assert body["firstName"] == "Robert" and body["version"] == 2 and body["idpSync"] == "synced"
    assert r.headers["etag"] == '"2"'
    assert env.idp.users[bob.id].given_name == "Robert"
    assert env.idp.users[bob.id].name == "Robert Buyer"
    stored = env.user(bob.id)
    assert stored.first_name == "Robert" and stored.idp_sync == "synced" and not stored.sync_fields
    audit = env.call(FN, "GET", f"/users/{bob.id}/audit", as_user=people["admin"]).json()
    assert audit["items"][0]["changes"] == [{"field": "firstName", "from": "Bob", "to": "Robert"}]


def test_patch_rejects_unknown_readonly_and_forbidden_fields_and_changes_nothing(
    env: Env, people: dict
) -> None:
    bob = people["bob"]
    r = env.call(
        FN,
        "PATCH",
        "/me",
        as_user=bob,
        body={"firstName": "X", "status": "SUSPENDED", "profile": "administrator", "nope": 1},
    )
    assert r.status == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"status", "profile", "nope"}
    assert env.user(bob.id) == bob.evolve(links={}) or env.user(bob.id).version == 1


def test_pending_when_auth0_down_then_sync_run_finishes(env: Env, people: dict) -> None:
    bob = people["bob"]
    env.idp.fail_next(1, IdpUnavailable("http 503"))
    r = env.call(FN, "PATCH", "/me", as_user=bob, body={"lastName": "Builder"})
    assert r.status == 200 and r.json()["idpSync"] == "pending"
    assert env.idp.users[bob.id].family_name == "Buyer"

    outcome = env.run_sync()
    assert outcome["synced"] == 1
    assert env.idp.users[bob.id].family_name == "Builder"
    assert env.user(bob.id).idp_sync == "synced"


def test_permanent_auth0_refusal_is_failed(env: Env, people: dict) -> None:
    bob = people["bob"]
    env.idp.fail_next(1, IdpRejected(400, "invalid_body"))
    r = env.call(FN, "PATCH", "/me", as_user=bob, body={"lastName": "Builder"})
    assert r.status == 200 and r.json()["idpSync"] == "failed"
    assert env.user(bob.id).idp_sync == "failed"


def test_stale_if_match_is_412_and_changes_nothing(env: Env, people: dict) -> None:
    bob = people["bob"]
    r = env.call(
        FN,
        "PATCH",
        f"/users/{bob.id}",
        as_user=people["admin"],
        body={"firstName": "Z"},
        headers={"If-Match": '"7"'},
    )
    assert r.status == 412 and r.json()["code"] == "version_mismatch"
    assert env.user(bob.id).first_name == "Bob"


def test_email_change_sends_verify_and_notice(env: Env, people: dict) -> None:
    bob = people["bob"]
    r = env.call(FN, "PATCH", "/me", as_user=bob, body={"email": "Robert@New.Example"})
    assert r.status == 200, r
    assert r.json()["pendingEmail"] == "robert@new.example" and r.json()["email"] == "bob@acme.example"
    assert len(env.mailer.to("robert@new.example")) == 1
    assert "/email-verification/" in env.mailer.to("robert@new.example")[0].text
    assert "/email-change/" in env.mailer.to("bob@acme.example")[0].text
    assert not env.idp.calls_to("update_user")


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code"),
    [
        ("{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        ('{"firstName": "X"}', {"content-type": "text/plain"}, 415, "unsupported_media_type"),
        (
            '{"firstName": "' + "x" * 17_000 + '"}',
            {"content-type": "application/json"},
            413,
            "payload_too_large",
        ),
        ("[1, 2]", {"content-type": "application/json"}, 422, "validation_failed"),
    ],
    ids=["not-json", "not-json-media-type", "over-16KiB", "not-an-object"],
)
def test_bad_bodies_get_problem_details_and_change_nothing(
    env: Env, people: dict, raw: str, headers: dict, status: int, code: str
) -> None:
    bob = people["bob"]
    r = env.call(FN, "PATCH", "/me", as_user=bob, raw_body=raw, headers=headers)
    assert r.status == status, r
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code and r.json()["status"] == status
    assert env.user(bob.id) == people["bob"]


def test_table_down_is_503_with_retry_after_and_no_details(
    env: Env, people: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usermgmt.errors import StoreUnavailable

    def down(*_: object, **__: object) -> None:
        raise StoreUnavailable("ProvisionedThroughputExceededException")

    monkeypatch.setattr(env.store, "transact", down)
    r = env.call(FN, "PATCH", "/me", as_user=people["bob"], body={"firstName": "Robert"})
    assert r.status == 503 and r.json()["code"] == "dependency_unavailable"
    assert int(r.headers["retry-after"]) > 0
    assert "Throughput" not in r.text and "usermgmt-test" not in r.text
    monkeypatch.undo()
    assert env.user(people["bob"].id).first_name == "Bob"


def test_unexpected_error_is_a_plain_500_problem_without_a_stack(
    env: Env, people: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise KeyError("secret-internal-detail")

    monkeypatch.setattr(env.container.users, "get", broken)
    r = env.call(FN, "GET", "/me", as_user=people["bob"])
    assert r.status == 500 and r.headers["content-type"] == "application/problem+json"
    assert "secret-internal-detail" not in r.text and "Traceback" not in r.text
