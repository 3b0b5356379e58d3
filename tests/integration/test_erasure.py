"""Erasure leaves nothing of a deleted person in the table (SPEC section 7; security notes L15, T2).

The search covers what a table copy could be searched for: the user's id, names, account number and
every address they had, in clear and in every hashed form the code stores (a plain SHA-256 and the
HMAC under ``HASH_PEPPER``, with each prefix the code hashes them with). The person has links of every
kind a user gathers (current, superseded, used, ended by a suspension), invitations (one a suspension
ended, one pending) and rate counters. Only the tombstone audit entry (user id, actor, time, action)
may remain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from tests.conftest import Env, add_cast
from usermgmt import ratelimit
from usermgmt.links import hash_token
from usermgmt.models import User
from usermgmt.service import invitations, verification

PEPPER = "a-pepper-for-the-test"
NAMES = ("Bartholomew", "Bartolo", "Quintavalle", "C-77123")
ADDRESSES = ("bart@acme.example", "bart@new.example", "bart@other.example")


def hashed_forms(value: str) -> set[str]:
    """``value`` hashed as the code might store it: plain and peppered, bare and with each prefix."""
    forms: set[str] = set()
    for v in {value, value.lower()}:
        for prefix in _prefixes():
            message = (prefix + v).encode()
            forms.add(hashlib.sha256(message).hexdigest())
            forms.add(hmac.new(PEPPER.encode(), message, hashlib.sha256).hexdigest())
    return forms


def residue(env: Env, user: User) -> list[dict[str, Any]]:
    """Every item holding anything of the person, but the tombstone audit entry SPEC section 7 keeps."""
    needles = {user.id.lower(), *(n.lower() for n in NAMES), *ADDRESSES}
    for value in (user.id, *ADDRESSES):
        needles |= hashed_forms(value)
    found = []
    for item in env.scan():
        if item["pk"]["S"] == f"USER#{user.id}" and item.get("tombstone", {}).get("BOOL"):
            continue
        text = json.dumps(item).lower()
        if any(n in text for n in needles):
            found.append(item)
    return found


@pytest.fixture
def bart(env: Env) -> tuple[User, User]:
    """A user with distinctive data, audit entries holding it, links of every state and rate counters."""
    env.configure(hash_pepper=PEPPER)
    admin = add_cast(env)["admin"]
    user = env.add_user(
        ADDRESSES[0],
        first="Bartholomew",
        last="Quintavalle",
        memberships={"acme": ["Buyer"]},
        account_number="C-77123",
    )

    def ok(r: Any) -> None:
        assert r.status < 300, r

    ok(env.call("update-user", "PATCH", "/me", as_user=user, body={"firstName": "Bartolo"}))
    # two email changes: the first change's verification and cancel links are superseded
    ok(env.call("update-user", "PATCH", "/me", as_user=user, body={"email": ADDRESSES[2]}))
    ok(env.call("update-user", "PATCH", "/me", as_user=user, body={"email": ADDRESSES[1]}))
    # resets: from the public route (per-address counter), twice by an administrator (the first link
    # superseded), and one link used to set a password
    ok(env.call("reset-password", "POST", "/password-reset", body={"email": ADDRESSES[0]}))
    ok(env.call("reset-password", "POST", f"/users/{user.id}/password-reset", as_user=admin))
    token = env.mailer.to(ADDRESSES[0])[-1].text.split("/password-reset/")[1].split()[0]
    ok(env.call("reset-password", "POST", f"/password-reset/{token}", body={"newPassword": "N3w-passw0rd!x"}))
    assert env.store.get_link(hash_token(token)).status == "used"
    ok(env.call("reset-password", "POST", f"/users/{user.id}/password-reset", as_user=admin))
    ok(env.call("reset-password", "POST", f"/users/{user.id}/password-reset", as_user=admin))
    invitation = {"email": ADDRESSES[0], "firstName": "Bartolo", "lastName": "Q", "roles": ["Buyer"]}
    ok(env.call("create-user", "POST", "/accounts/globex/invitations", as_user=admin, body=invitation))
    # a suspension ends every link the user holds (they stay in the table as dead links)
    ok(env.call("suspend-user", "POST", f"/users/{user.id}/suspend", as_user=admin))
    ok(env.call("enable-user", "POST", f"/users/{user.id}/enable", as_user=admin))
    ok(env.call("create-user", "POST", "/accounts/globex/invitations", as_user=admin, body=invitation))
    ok(env.call("reset-password", "POST", f"/users/{user.id}/password-reset", as_user=admin))
    env.clock.advance(2)  # a token issued after the suspension
    ok(env.call("update-user", "PATCH", "/me", as_user=user, body={"email": ADDRESSES[1]}))
    before = env.scan()
    dead = [
        i
        for i in before
        if i["pk"]["S"].startswith("LINK#")
        and i["pk"]["S"].removeprefix("LINK#") not in env.user(user.id).links.values()
    ]
    assert len(dead) >= 5, "the person has dead links"
    assert any(i["pk"]["S"].startswith("RATE#") for i in residue(env, user)), "and rate counters"
    invitations = [i for i in before if i["sk"]["S"].startswith("INVITATION#")]
    assert len(invitations) == 2 and all(i["userId"]["S"] == user.id for i in invitations)
    return user, admin


def test_a_deleted_user_leaves_nothing_but_the_tombstone_audit_entry(
    env: Env, bart: tuple[User, User]
) -> None:
    user, admin = bart

    r = env.call("delete-user", "DELETE", f"/users/{user.id}", as_user=admin)
    env.publish()  # the user.deleted event leaves the outbox

    assert r.status == 204, r
    assert residue(env, user) == []
    (kept,) = [i for i in env.scan() if i["pk"]["S"] == f"USER#{user.id}"]
    assert kept["action"]["S"] == "user.deleted" and kept["changes"] == {"L": []}


def test_a_deletion_finished_by_sync_identity_leaves_nothing_either(
    env: Env, bart: tuple[User, User]
) -> None:
    from usermgmt.errors import IdpUnavailable

    user, admin = bart
    env.idp.fail_next(1, IdpUnavailable("x"))
    assert env.call("delete-user", "DELETE", f"/users/{user.id}", as_user=admin).status == 202

    assert env.run_sync()["synced"] == 1
    env.publish()

    assert residue(env, user) == []


def test_with_a_pepper_no_item_holds_an_unkeyed_hash_of_an_address_or_id(
    env: Env, bart: tuple[User, User]
) -> None:
    """A table copy without the pepper cannot be searched for a guessed address (links, counters)."""
    user, _ = bart
    plain: set[str] = set()
    for value in (user.id, *ADDRESSES):
        plain |= {f for f in hashed_forms(value) if not _peppered(f, value)}

    holding = [i for i in env.scan() if any(p in json.dumps(i) for p in plain)]

    assert holding == []
    assert any("addressHash" in i for i in env.scan()), "the user has a verification link bound to an address"


def _peppered(form: str, value: str) -> bool:
    plain = {
        hashlib.sha256((p + v).encode()).hexdigest() for v in {value, value.lower()} for p in _prefixes()
    }
    return form not in plain


def _prefixes() -> set[str]:
    scopes = {v for k, v in vars(ratelimit).items() if k.isupper() and isinstance(v, str)}
    scopes |= {invitations.INVITE_PER_ADDRESS, verification.VERIFY_RENEW_PER_IP}
    return {"", "address:"} | {f"{scope}:" for scope in scopes}
