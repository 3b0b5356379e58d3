"""Personal data export (SPEC section 18).

The completeness test does not list what an export must hold: it deletes a user who has one of
everything, reads from the table which items the deletion removed, and requires each kind of them to
have its place in the export taken before. A new kind of item that a deletion erases (invitations, bulk
job items, deliverability, ...) fails here until the export carries it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from unittest.mock import ANY

import pytest

from tests.conftest import Env, add_cast
from usermgmt.models import User

EXPORT, UPDATE, DELETE, RESET = "export-user", "update-user", "delete-user", "reset-password"

# kind of item (as the table names it) -> where the export carries it
EXPORT_SECTION = {
    "USER/PROFILE": "user",
    "EMAIL/EMAIL": "user",  # the login email's reservation: user.email
    "LINK/LINK": "links",
    "USER/AUDIT": "audit",
    "ACCOUNT/MEMBER": "user",  # a membership entry of the users list: a copy of user.memberships
    "USER/LINKREF": "links",  # the record of a link issued to the user (its hash only), for erasure
    "USER/JOBITEM": "bulkJobItems",  # a bulk job's decided item that named the user
    "ACCOUNT/INVITATION": "invitations",  # an invitation naming the user (in its account's partition)
}
# Erased with the user but not exported: the send-limit counters of the user's addresses and id (a
# keyed hash and a count of recent requests; they expire within three windows anyway)
NOT_EXPORTED = {"RATE/RATE"}


def kind(item: dict[str, Any]) -> str:
    """``<pk prefix>/<sk prefix>``: what an item is, without whose it is."""
    return f"{item['pk']['S'].split('#', 1)[0]}/{item['sk']['S'].split('#', 1)[0]}"


@pytest.fixture
def people(env: Env) -> dict[str, User]:
    return add_cast(env)


def one_of_everything(env: Env, people: dict[str, User]) -> User:
    bob, ada = people["bob"], people["admin"]
    assert env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"firstName": "Robert"}).status == 200
    assert env.call(UPDATE, "PATCH", "/me", as_user=bob, body={"email": "rob@new.example"}).status == 200
    assert env.call(RESET, "POST", f"/users/{bob.id}/password-reset", as_user=ada).status == 202
    body = {"email": bob.email, "firstName": "Bob", "lastName": "Buyer", "roles": ["Approver", "Buyer"]}
    invited = env.call("create-user", "POST", "/accounts/globex/invitations", as_user=ada, body=body)
    assert invited.status == 202, invited
    job = env.call(
        "bulk-jobs",
        "POST",
        "/bulk-jobs",
        as_user=ada,
        body={"action": "enable", "userIds": [bob.id]},
        headers={"idempotency-key": "export"},
    )
    assert job.status == 202, job
    env.drain_bulk()
    user = env.user(bob.id)
    invitation = invited.json()["invitationId"]
    assert user is not None and set(user.links) == {"verify", "cancel", "reset", f"invite:{invitation}"}
    return user


def test_an_export_holds_every_kind_of_item_a_deletion_erases(env: Env, people: dict[str, User]) -> None:
    bob, ada = one_of_everything(env, people), people["admin"]
    r = env.call(EXPORT, "GET", "/me/export", as_user=bob)
    assert r.status == 200, r
    document = r.json()
    from usermgmt.schemas import UserExport

    UserExport.model_validate(document)  # the shape docs/openapi.json describes
    before = {json.dumps(i, sort_keys=True): i for i in env.scan()}
    r = env.call(DELETE, "DELETE", f"/users/{bob.id}", as_user=ada)
    assert r.status in (202, 204), r
    env.run_sync()
    # erased: items whose key is gone (an account's counts only move: an aggregate, nobody's data)
    remaining = {(i["pk"]["S"], i["sk"]["S"]) for i in env.scan()}
    erased = [i for i in before.values() if (i["pk"]["S"], i["sk"]["S"]) not in remaining]
    kinds = {kind(i) for i in erased}
    assert {"USER/PROFILE", "LINK/LINK", "USER/AUDIT"} <= kinds  # the deletion did its work
    missing = sorted(
        k for k in kinds - NOT_EXPORTED if k not in EXPORT_SECTION or EXPORT_SECTION[k] not in document
    )
    assert not missing, (
        f"a deletion erases these kinds of items, but the export does not carry them: {missing}"
    )
    # and each erased item is there: every link, every audit entry (the export's own one included)
    links = [i for i in erased if kind(i) == "LINK/LINK"]
    assert sorted(x["kind"] for x in document["links"]) == sorted(i["purpose"]["S"] for i in links)
    audits = [i for i in erased if kind(i) == "USER/AUDIT"]
    assert len(document["audit"]) == len(audits)
    assert document["user"]["email"] == "bob@acme.example"
    assert document["user"]["pendingEmail"] == "rob@new.example"
    assert document["invitations"] == [
        {
            "accountId": "globex",
            "roles": ["Buyer", "Approver"],
            "createdAt": ANY,
            "expiresAt": ANY,
            "status": "pending",
        }
    ]
    assert document["bulkJobItems"] == [
        {
            "jobId": document["bulkJobItems"][0]["jobId"],
            "status": "skipped",
            "code": "no_change",
            "detail": ANY,
        }
    ]


def test_an_export_is_an_audited_attachment_with_no_token_and_nothing_of_another_user(
    env: Env, people: dict[str, User]
) -> None:
    bob = one_of_everything(env, people)
    tokens = re.findall(
        r"/(?:email-verification|email-change|password-reset)/([A-Za-z0-9_-]{20,})",
        "".join(m.text for m in env.mailer.sent),
    )
    assert tokens
    r = env.call(EXPORT, "GET", f"/users/{bob.id}/export", as_user=people["admin"])
    assert r.status == 200, r
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["content-type"].startswith("application/json")
    text = r.text
    for token in tokens:
        assert token not in text
    assert not [h for h in bob.links.values() if h in text]  # nor their hashes
    for other in ("dana", "carol", "gus"):
        assert people[other].email not in text and people[other].id not in text
        assert people[other].last_name not in text
    audit = env.call(UPDATE, "GET", f"/users/{bob.id}/audit", as_user=people["admin"]).json()["items"]
    assert audit[0]["action"] == "user.exported" and audit[0]["actor"] == people["admin"].id
    assert r.json()["audit"][0]["action"] == "user.exported"
    env.publish()  # its version's event says what happened; nothing changed to re-read
    last = env.bus.of(bob.id)[-1]
    assert (last["type"], last["data"]["changedFields"]) == ("user.exported", [])


def test_an_invited_persons_export_lists_their_invitations_and_erasure_removes_them(
    env: Env, people: dict[str, User]
) -> None:
    """Found through the person's own link records: also an invitation a suspension ended (no longer in
    ``user.links``), and one that has expired; a deletion leaves no invitation item naming them."""
    ada, dana = people["admin"], people["dana"]
    body = {"email": "nina@new.example", "firstName": "Nina", "lastName": "New", "roles": ["Buyer"]}
    first = env.call("create-user", "POST", "/accounts/acme/invitations", as_user=dana, body=body)
    nina = env.user(env.store.user_id_for_email("nina@new.example") or "")
    assert first.status == 202 and nina is not None
    # suspended and enabled: the first invitation's link ended; a second one, into globex, is pending
    for action in ("suspend", "enable"):
        assert env.call(f"{action}-user", "POST", f"/users/{nina.id}/{action}", as_user=ada).status == 200
    second = env.call("create-user", "POST", "/accounts/globex/invitations", as_user=ada, body=body)
    assert second.status == 202
    r = env.call(EXPORT, "GET", f"/users/{nina.id}/export", as_user=ada)
    assert r.status == 200, r
    from usermgmt.schemas import UserExport

    UserExport.model_validate(r.json())
    assert [(i["accountId"], i["status"]) for i in r.json()["invitations"]] == [
        ("acme", "ended"),
        ("globex", "pending"),
    ]
    assert [link["kind"] for link in r.json()["links"]] == ["invite"]
    env.clock.advance(env.container.settings.invite_link_ttl_seconds + 1)
    later = env.call(EXPORT, "GET", f"/users/{nina.id}/export", as_user=ada).json()["invitations"]
    assert [i["status"] for i in later] == ["ended", "expired"]
    for invitation in (first.json()["invitationId"], second.json()["invitationId"]):
        assert env.store.get_invitation(invitation) is not None

    assert env.call(DELETE, "DELETE", f"/users/{nina.id}", as_user=ada).status in (202, 204)
    env.run_sync()
    env.publish()

    for invitation in (first.json()["invitationId"], second.json()["invitationId"]):
        assert env.store.get_invitation(invitation) is None
    holding = [i for i in env.scan() if nina.id in json.dumps(i)]
    assert [(i["pk"]["S"], i["sk"]["S"].split("#")[0], i["action"]["S"]) for i in holding] == [
        (f"USER#{nina.id}", "AUDIT", "user.deleted")  # the tombstone audit entry SPEC section 7 keeps
    ]


@pytest.mark.parametrize(
    ("caller", "target", "status"),
    [
        ("admin", "bob", 200),
        ("admin", "admin", 200),
        ("dana", "bob", 403),  # a delegated administrator in scope
        ("dana", "gus", 404),
        ("bob", "carol", 404),
    ],
)
def test_who_may_export_whom(
    env: Env, people: dict[str, User], caller: str, target: str, status: int
) -> None:
    before = env.scan()
    r = env.call(EXPORT, "GET", f"/users/{people[target].id}/export", as_user=people[caller])
    assert r.status == status, r
    if status != 200:
        assert env.scan() == before
    assert env.call(EXPORT, "GET", "/me/export", as_user=people[caller]).status == 200
