"""One contract for the store port, run against the in-memory store and the DynamoDB adapter on moto.

Every rule test that runs on ``MemoryStore`` relies on it behaving as ``DynamoStore`` does; this suite is
what keeps the two the same. A behaviour added to one store is added here, for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TABLE, create_table
from usermgmt.errors import ConditionFailed
from usermgmt.models import Membership, User
from usermgmt.store import (
    AccountExists,
    AuditEntry,
    ClaimEmail,
    CreateUser,
    DeleteExpiredLink,
    DeleteInvitation,
    DeleteLink,
    DeleteUser,
    DueWork,
    Invitation,
    Lease,
    Link,
    PutAudit,
    PutInvitation,
    PutLink,
    PutTombstone,
    RecordLink,
    ReleaseEmail,
    UpdateUser,
    UseLink,
    UserStore,
)

NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "dynamo"])
def store(request: pytest.FixtureRequest) -> Iterator[UserStore]:
    if request.param == "memory":
        from usermgmt.adapters.memory import MemoryStore

        yield MemoryStore()
        return
    from moto import mock_aws

    with mock_aws():
        import boto3

        from usermgmt.adapters.dynamo import DynamoStore

        client = boto3.client("dynamodb", region_name="eu-central-1")
        create_table(client, TABLE)
        yield DynamoStore(client, TABLE)


def user(n: int = 1, **changes: Any) -> User:
    base = User(
        id=f"auth0|u{n}",
        email=f"u{n}@example.com",
        first_name="Una",
        last_name=f"User{n}",
        memberships=(Membership("acme", ("Buyer",)),),
        default_account_id="acme",
        created_at="2026-01-01T00:00:00.000Z",
        updated_at="2026-01-01T00:00:00.000Z",
    )
    return base.evolve(**changes)


def link(n: int = 1, *, expires_at: int = int(NOW) + 600, user_id: str = "auth0|u1") -> Link:
    return Link(
        token_hash=f"{n:064x}", purpose="reset", user_id=user_id, expires_at=expires_at, created_at=int(NOW)
    )


def audit(
    user_id: str, seq: int, action: str = "user.updated", at: str = "2026-12-01T00:00:00.000Z"
) -> AuditEntry:
    return AuditEntry(
        user_id=user_id, at=at, actor="auth0|admin", action=action, request_id=f"r{seq}", seq=seq
    )


def bump(store: UserStore, before: User, sync: frozenset[str] = frozenset(), **changes: Any) -> User:
    after = before.evolve(version=before.version + 1, **changes)
    store.transact([UpdateUser(before, after, sync)])
    got = store.get_user(before.id)
    assert got is not None
    return got


# ------------------------------------------------------------------------------ records and reads
def test_a_user_reads_back_as_written_with_its_email(store: UserStore) -> None:
    u = user(pending_email="new@example.com", links={"reset": "ab"}, tokens_valid_after=5)
    store.put_user(u)
    assert store.get_user(u.id) == u
    assert store.get_users([u.id, "auth0|nobody", u.id]) == {u.id: u}
    assert store.user_id_for_email(u.email) == u.id
    assert store.get_user("auth0|nobody") is None and store.user_id_for_email("no@example.com") is None


def test_many_users_read_back_at_once_past_a_batch_of_100(store: UserStore) -> None:
    users = [user(id=f"auth0|many{i:03d}", email=f"many{i:03d}@example.com") for i in range(130)]
    for u in users:
        store.put_user(u)
    asked = [u.id for u in reversed(users)] + ["auth0|nobody"]
    assert store.get_users(asked) == {u.id: u for u in users}
    # suspended in the record, so a later enable can give the invitation state back
    invited = user(
        id="auth0|was-invited", email="was@example.com", status="SUSPENDED", suspended_from="INVITED"
    )
    store.put_user(invited)
    assert store.get_user(invited.id) == invited


def test_update_is_conditional_on_the_version_and_a_failure_applies_nothing(store: UserStore) -> None:
    store.put_account("acme", "Acme")
    u = user()
    store.put_user(u)
    stale = u.evolve(version=7)
    with pytest.raises(ConditionFailed) as failed:
        store.transact([PutAudit(audit(u.id, 2)), UpdateUser(stale, stale.evolve(version=8, first_name="X"))])
    assert failed.value.label == "user"
    assert store.get_user(u.id) == u and store.audit_page(u.id, 10, None).items == []  # all or nothing
    changed = bump(store, u, first_name="Ulla", account_number=None)
    assert (changed.first_name, changed.version) == ("Ulla", 2)


def test_sync_marker_and_lease_are_taken_with_the_change(store: UserStore) -> None:
    u = user()
    store.put_user(u)
    after = u.evolve(version=2, last_name="New", idp_sync="pending")
    store.transact([UpdateUser(u, after, frozenset({"profile"}), Lease("me", NOW, NOW + 30))])
    got = store.get_user(u.id)
    assert got is not None
    assert (got.sync_fields, got.sync_version, got.lease_until, got.idp_sync) == (
        {"profile"},
        2,
        NOW + 30,
        "pending",
    )
    # while the lease is held, a write that also wants the lease is refused; one that does not is fine
    with pytest.raises(ConditionFailed):
        store.transact(
            [
                UpdateUser(
                    got, got.evolve(version=3), frozenset({"blocked"}), Lease("other", NOW + 1, NOW + 31)
                )
            ]
        )
    later = bump(store, got, frozenset({"blocked"}))
    assert (later.sync_fields, later.sync_version) == ({"profile", "blocked"}, 3)


def test_create_delete_email_account_and_audit_conditions(store: UserStore) -> None:
    store.put_account("acme", "Acme")
    u = user()
    store.transact([CreateUser(u), ClaimEmail(u.email, u.id), AccountExists("acme")])
    with pytest.raises(ConditionFailed) as failed:
        store.transact([CreateUser(u)])
    assert failed.value.label == "user"
    with pytest.raises(ConditionFailed) as failed:
        store.transact([ClaimEmail(u.email, "auth0|other")])
    assert failed.value.label == "email"
    with pytest.raises(ConditionFailed) as failed:
        store.transact([AccountExists("nowhere")])
    assert failed.value.label == "account:nowhere"
    store.transact([PutAudit(audit(u.id, 2))])
    with pytest.raises(ConditionFailed) as failed:
        store.transact([PutAudit(audit(u.id, 2))])  # the same sequence of a user is never written twice
    assert failed.value.label == "audit"
    with pytest.raises(ConditionFailed):
        store.transact([DeleteUser(u.evolve(version=9))])
    store.transact([DeleteUser(u), ReleaseEmail(u.email, u.id)])
    assert store.get_user(u.id) is None and store.user_id_for_email(u.email) is None


def test_audit_pages_newest_first_and_refuses_foreign_cursors(store: UserStore) -> None:
    u = user()
    store.put_user(u)
    for seq in range(2, 7):
        store.transact([PutAudit(audit(u.id, seq, at=f"2026-12-01T00:00:0{seq}.000Z"))])
    first = store.audit_page(u.id, 2, None)
    assert [i["requestId"] for i in first.items] == ["r6", "r5"] and first.cursor
    second = store.audit_page(u.id, 2, first.cursor)
    third = store.audit_page(u.id, 2, second.cursor)
    assert [i["requestId"] for i in second.items + third.items] == ["r4", "r3", "r2"] and third.cursor is None
    for bad in ("not-a-cursor", "e30"):
        with pytest.raises(ValueError):
            store.audit_page(u.id, 2, bad)
    store.put_user(user(2))
    with pytest.raises(ValueError):
        store.audit_page("auth0|u2", 2, first.cursor)  # a cursor of another user's trail


# ------------------------------------------------------------------------------ links
def test_a_link_is_used_once_and_a_claim_is_exclusive_until_it_lapses(store: UserStore) -> None:
    store.transact([PutLink(link(), ttl=int(NOW) + 9999)])
    with pytest.raises(ConditionFailed):
        store.transact([PutLink(link(), ttl=int(NOW) + 9999)])
    h = link().token_hash
    assert store.claim_link(h, "c1", int(NOW), int(NOW) + 60)
    assert not store.claim_link(h, "c2", int(NOW) + 1, int(NOW) + 61)  # held
    assert not store.release_link_claim(h, "c2")  # only the holder gives it back
    with pytest.raises(ConditionFailed):
        store.transact([UseLink(h, int(NOW), claim="c2")])
    assert store.claim_link(h, "c2", int(NOW) + 61, int(NOW) + 121)  # lapsed: taken over
    store.transact([UseLink(h, int(NOW), claim="c2")])
    used = store.get_link(h)
    assert used is not None and used.status == "used" and used.claim_owner is None
    with pytest.raises(ConditionFailed) as failed:
        store.transact([UseLink(h, int(NOW))])
    assert failed.value.label == "link"
    assert not store.claim_link(h, "c3", int(NOW) + 200, int(NOW) + 260)


def test_an_expired_link_cannot_be_used_or_claimed(store: UserStore) -> None:
    store.transact([PutLink(link(expires_at=int(NOW)), ttl=int(NOW) + 9999)])
    h = link().token_hash
    assert not store.claim_link(h, "c", int(NOW), int(NOW) + 60)
    with pytest.raises(ConditionFailed):
        store.transact([UseLink(h, int(NOW))])


def test_a_lapsed_claim_is_due_work_and_a_finished_one_is_not(store: UserStore) -> None:
    store.transact([PutLink(link(1), ttl=int(NOW) + 9999), PutLink(link(2), ttl=int(NOW) + 9999)])
    h1, h2 = link(1).token_hash, link(2).token_hash
    assert store.claim_link(h1, "c1", int(NOW), int(NOW) + 60)
    assert store.claim_link(h2, "c2", int(NOW), int(NOW) + 60)
    assert store.due_work(NOW + 30, 10) == []
    store.transact([UseLink(h2, int(NOW), claim="c2")])
    assert store.due_work(NOW + 61, 10) == [DueWork("link", h1)]
    assert store.release_link_claim(h1, "c1")
    assert store.due_work(NOW + 61, 10) == []


def test_expired_links_page_by_expiry_and_delete_only_while_expired(store: UserStore) -> None:
    store.transact([PutLink(link(n, expires_at=int(NOW) - 100 + n), ttl=int(NOW)) for n in range(1, 6)])
    store.transact([PutLink(link(9, expires_at=int(NOW) + 100), ttl=int(NOW) + 999)])
    first = store.expired_links(int(NOW), 3)
    assert [r.token_hash for r in first.links] == [link(n).token_hash for n in (1, 2, 3)]
    second = store.expired_links(int(NOW), 3, first.start_key)
    assert [r.token_hash for r in second.links] == [link(n).token_hash for n in (4, 5)]
    assert not store.delete_expired_link(link(9).token_hash, int(NOW))
    assert store.delete_expired_link(link(1).token_hash, int(NOW))
    assert not store.delete_expired_link(link(1).token_hash, int(NOW))
    with pytest.raises(ConditionFailed):
        store.transact([DeleteExpiredLink(link(9).token_hash, int(NOW))])
    store.transact([DeleteLink(link(9).token_hash)])
    assert store.get_link(link(9).token_hash) is None


# ------------------------------------------------------------------------------ sync markers
def test_the_sync_lifecycle_pending_deferred_settled(store: UserStore) -> None:
    u = user()
    store.put_user(u)
    pending = bump(store, u, frozenset({"profile", "blocked"}), idp_sync="pending")
    assert store.due_work(NOW, 10) == [DueWork("user", u.id)]
    taken = store.acquire_lease(u.id, "o1", NOW, NOW + 30, due_only=True)
    assert taken is not None
    state, current = taken
    assert (state.version, state.fields, state.attempts, state.deleted) == (
        2,
        {"profile", "blocked"},
        0,
        False,
    )
    assert current == store.get_user(u.id)
    assert store.acquire_lease(u.id, "o2", NOW + 1, NOW + 31, due_only=True) is None  # held
    store.defer_sync(u.id, "o1", due=NOW + 100, attempts=1)
    assert (
        store.due_work(NOW + 50, 10) == []
        and store.acquire_lease(u.id, "o2", NOW + 50, NOW + 80, due_only=True) is None
    )
    state, _ = store.acquire_lease(u.id, "o2", NOW + 100, NOW + 130, due_only=True) or (None, None)
    assert state is not None and state.attempts == 1
    # a newer version committed meanwhile: settling the old one is refused
    newer = bump(store, pending, frozenset({"profile"}))
    assert not store.settle_sync(u.id, 2, "o2", frozenset())
    assert store.settle_sync(u.id, newer.version, "o2", frozenset())
    done = store.get_user(u.id)
    assert done is not None and (done.idp_sync, done.sync_fields, done.sync_failed) == (
        "synced",
        set(),
        set(),
    )
    assert store.due_work(NOW + 1000, 10) == []


def test_the_oldest_due_time_is_that_of_the_oldest_waiting_work(store: UserStore) -> None:
    a, b, c = user(1), user(2), user(3)
    for u in (a, b, c):
        store.put_user(u)
    assert store.oldest_due(NOW + 1000) is None
    store.transact([UpdateUser(a, a.evolve(version=2), frozenset({"profile"}), due=NOW + 10)])
    store.transact([UpdateUser(b, b.evolve(version=2), frozenset({"profile"}), due=NOW + 20)])
    assert store.oldest_due(NOW + 5) is None  # committed later than "now": not due yet
    assert store.oldest_due(NOW + 15) == NOW + 10
    assert store.oldest_due(NOW + 30) == NOW + 10
    # the oldest is pushed: the next one is the oldest
    state, _ = store.acquire_lease(a.id, "o", NOW + 30, NOW + 60, due_only=True) or (None, None)
    assert state is not None and store.settle_sync(a.id, 2, "o", frozenset())
    assert store.oldest_due(NOW + 30) == NOW + 20
    # a deferred marker is not due until its retry time, then due since it
    state, _ = store.acquire_lease(b.id, "o", NOW + 30, NOW + 60, due_only=True) or (None, None)
    assert state is not None
    store.defer_sync(b.id, "o", due=NOW + 100, attempts=1)
    assert store.oldest_due(NOW + 50) is None
    assert store.oldest_due(NOW + 150) == NOW + 100
    # a reset-link claim that lapsed unfinished is due work too, since its claim ended
    store.transact([PutLink(link(7, user_id=c.id), ttl=int(NOW) + 9999)])
    assert store.claim_link(link(7).token_hash, "c", int(NOW), int(NOW) + 60)
    assert store.oldest_due(NOW + 150) == NOW + 60
    # a deletion is due since it was committed; a re-drive since it was asked for
    lease = Lease("d", NOW + 40, NOW + 70)
    tombstone = PutTombstone(c.id, 2, "2026-12-01T00:00:00.000Z", frozenset({"delete"}), lease)
    store.transact([DeleteUser(c), tombstone])
    assert store.oldest_due(NOW + 150) == NOW + 40
    assert store.release_link_claim(link(7).token_hash, "c")
    state, _ = store.acquire_lease(c.id, "s", NOW + 150, NOW + 180, due_only=True) or (None, None)
    assert state is not None and store.settle_sync(c.id, 2, "s", frozenset(), deleted=True)
    assert store.oldest_due(NOW + 150) == NOW + 100
    state, _ = store.acquire_lease(b.id, "o", NOW + 150, NOW + 180, due_only=True) or (None, None)
    assert state is not None and store.settle_sync(b.id, 2, "o", frozenset({"profile"}))
    assert store.oldest_due(NOW + 500) is None  # a failed marker waits for an operator, not the sync
    assert store.redrive_failed(b.id, NOW + 400)
    assert store.oldest_due(NOW + 500) == NOW + 400


def test_failed_fields_stay_visible_until_changed_or_redriven(store: UserStore) -> None:
    u = user()
    store.put_user(u)
    v2 = bump(store, u, frozenset({"profile", "email"}))
    state, _ = store.acquire_lease(u.id, "o", NOW, NOW + 30, due_only=True) or (None, None)
    assert state is not None
    assert store.settle_sync(u.id, 2, "o", frozenset({"email"}))
    failed = store.get_user(u.id)
    assert failed is not None and (failed.idp_sync, failed.sync_failed, failed.sync_fields) == (
        "failed",
        {"email"},
        set(),
    )
    assert store.failed_syncs(10) == [u.id] and store.due_work(NOW, 10) == []
    # another field changes: pushed, the failed one is not re-queued by it
    v3 = bump(store, v2.evolve(idp_sync="failed"), frozenset({"profile"}))
    assert (v3.sync_fields, v3.sync_failed) == ({"profile"}, {"email"})
    store.acquire_lease(u.id, "o", NOW, NOW + 30, due_only=True)
    assert store.settle_sync(u.id, 3, "o", frozenset({"email"}))
    # the operator re-drives it
    assert store.redrive_failed(u.id, NOW)
    again = store.get_user(u.id)
    assert again is not None and (again.sync_fields, again.sync_failed, again.idp_sync) == (
        {"email"},
        set(),
        "pending",
    )
    assert store.due_work(NOW, 10) == [DueWork("user", u.id)] and store.failed_syncs(10) == []
    assert not store.redrive_failed(u.id, NOW)
    # changing the failed field itself re-queues it too
    state, _ = store.acquire_lease(u.id, "o", NOW, NOW + 30, due_only=True) or (None, None)
    assert state is not None and store.settle_sync(u.id, state.version, "o", frozenset({"email"}))
    current = store.get_user(u.id)
    assert current is not None
    requeued = bump(store, current, frozenset({"email"}))
    assert (requeued.sync_fields, requeued.sync_failed) == ({"email"}, set())


def test_a_tombstone_carries_the_deletion_until_settled_and_erasure_keeps_its_audit(store: UserStore) -> None:
    u = user()
    store.put_user(u)
    store.transact([PutAudit(audit(u.id, 2))])
    lease = Lease("d", NOW, NOW + 30)
    store.transact(
        [
            DeleteUser(u),
            ReleaseEmail(u.email, u.id),
            PutTombstone(u.id, 2, "2026-12-01T00:00:00.000Z", frozenset({"delete"}), lease),
            PutAudit(audit(u.id, 3, "user.deleted"), keep=True),
        ]
    )
    assert store.erase_deleted_user(u.id) == 1
    assert [i["action"] for i in store.audit_page(u.id, 10, None).items] == ["user.deleted"]
    assert store.due_work(NOW + 31, 10) == [DueWork("user", u.id)]
    assert store.acquire_lease(u.id, "s", NOW + 1, NOW + 31, due_only=True) is None  # the deleter holds it
    state, current = store.acquire_lease(u.id, "s", NOW + 31, NOW + 61, due_only=True) or (None, None)
    assert state is not None and state.deleted and current is None and state.fields == {"delete"}
    assert store.settle_sync(u.id, 2, "s", frozenset(), deleted=True)
    assert store.due_work(NOW + 100, 10) == [] and store.failed_syncs(10) == []
    assert [i["action"] for i in store.audit_page(u.id, 10, None).items] == ["user.deleted"]


def test_erasure_deletes_every_link_recorded_for_the_user_not_only_current_ones(store: UserStore) -> None:
    u, other = user(1), user(2)
    store.put_user(u)
    store.put_user(other)
    ttl = int(NOW) + 9999
    mine = [link(n, user_id=u.id) for n in (1, 2, 3)]
    theirs = link(4, user_id=other.id)
    for lk in [*mine, theirs]:
        store.transact([PutLink(lk, ttl=ttl), RecordLink(lk.user_id, lk.token_hash, ttl)])
    store.transact([UseLink(mine[1].token_hash, int(NOW))])  # used; mine[0] superseded, say
    store.transact([PutAudit(audit(u.id, 2))])
    assert store.erase_deleted_user(u.id) == 0  # the user still exists: nothing is erased
    assert all(store.get_link(lk.token_hash) for lk in mine)
    store.transact([DeleteUser(u), DeleteLink(mine[2].token_hash)])  # the current one goes with the user

    assert store.erase_deleted_user(u.id) == 4  # one audit entry, three link records

    assert [store.get_link(lk.token_hash) for lk in mine] == [None, None, None]
    assert store.get_link(theirs.token_hash) == theirs
    assert store.erase_deleted_user(u.id) == 0


def test_counters_can_be_deleted(store: UserStore) -> None:
    store.incr_counter("a", int(NOW) + 60)
    store.incr_counter("b", int(NOW) + 60)

    store.delete_counters(["a", "never-counted"])

    assert (store.read_counter("a"), store.read_counter("b")) == (0, 1)


def test_counters_count(store: UserStore) -> None:
    assert [store.incr_counter("k", int(NOW) + 60) for _ in range(3)] == [1, 2, 3]
    assert store.incr_counter("other", int(NOW) + 60) == 1


def test_every_transaction_carries_a_client_request_token() -> None:
    """A botocore retry of a transaction that did commit (its answer was lost) is recognised by
    DynamoDB as the same request: each ``transact`` sends one token, the same on every retry."""
    from usermgmt.adapters.dynamo import DynamoStore

    class Recording:
        class exceptions:
            TransactionCanceledException = type("TransactionCanceledException", (Exception,), {})
            ClientError = type("ClientError", (Exception,), {})

        def __init__(self) -> None:
            self.tokens: list[str] = []

        def transact_write_items(self, **kwargs: Any) -> None:
            self.tokens.append(kwargs["ClientRequestToken"])

    client = Recording()
    store = DynamoStore(client, TABLE)  # type: ignore[arg-type]
    store.transact([ClaimEmail("a@example.com", "auth0|a")])
    store.transact([ClaimEmail("b@example.com", "auth0|b")])
    assert len(client.tokens) == 2 and len(set(client.tokens)) == 2
    assert all(1 <= len(t) <= 36 for t in client.tokens)


# ------------------------------------------------------------------------------ creation, invitations
def test_a_created_user_carries_its_sync_marker_and_lease(store: UserStore) -> None:
    u = user(7, status="INVITED")
    lease = Lease("owner-1", NOW, NOW + 60)
    store.transact([CreateUser(u, sync=frozenset({"create"}), lease=lease), ClaimEmail(u.email, u.id)])
    got = store.get_user(u.id)
    assert got is not None and got.status == "INVITED"
    assert (got.sync_fields, got.sync_version, got.lease_until) == ({"create"}, 1, NOW + 60)
    assert store.due_work(NOW + 1, 10) == [DueWork("user", u.id)]
    assert store.acquire_lease(u.id, "owner-2", NOW + 1, NOW + 61, due_only=True) is None  # leased
    taken = store.acquire_lease(u.id, "owner-2", NOW + 61, NOW + 121, due_only=True)
    assert taken is not None and taken[0].fields == {"create"}


def _invitation(key: str = "a1", *, account: str = "acme", token: str = "t1", at: int = 100) -> Invitation:
    return Invitation(
        id=f"{account}~{key}",
        account_id=account,
        user_id="auth0|u1",
        roles=("Buyer", "Approver"),
        created_at=at,
        expires_at=int(NOW) + 600,
        token_hash=token,
        invited_by="auth0|admin",
        created_user=True,
    )


def test_invitations_are_written_replaced_listed_and_ended_on_their_conditions(store: UserStore) -> None:
    first, second, other = _invitation("b2", at=200), _invitation("a1", at=100), _invitation(account="globex")
    store.transact([PutInvitation(first, ttl=0), PutInvitation(second, ttl=0), PutInvitation(other, ttl=0)])
    assert store.get_invitation(first.id) == first
    assert store.get_invitation("acme~nothere") is None
    assert store.get_invitation("not an id") is None
    assert store.account_invitations("acme", 10) == ([second, first], False)  # in id order
    assert store.account_invitations("nowhere", 10) == ([], False)
    with pytest.raises(ConditionFailed) as failed:
        store.transact([PutInvitation(first, ttl=0)])  # a new one never overwrites
    assert failed.value.label == "invitation"
    resent = Invitation(**{**first.__dict__, "token_hash": "t2"})
    with pytest.raises(ConditionFailed):
        store.transact([PutInvitation(resent, ttl=0, expected_token="stale")])
    store.transact([PutInvitation(resent, ttl=0, expected_token="t1")])
    assert store.get_invitation(first.id) == resent
    with pytest.raises(ConditionFailed):
        store.transact([DeleteInvitation(first.id, "t1")])  # its link moved on
    store.transact([DeleteInvitation(first.id, "t2")])
    assert store.get_invitation(first.id) is None
    assert store.account_invitations("acme", 10) == ([second], False)


def test_an_accounts_invitations_page_in_id_order_after_any_id(store: UserStore) -> None:
    keys = [f"{n:03d}" for n in range(7)]
    invitations = [_invitation(k, token=f"t{k}") for k in keys]
    store.transact([PutInvitation(inv, ttl=0) for inv in reversed(invitations)])
    store.transact([PutInvitation(_invitation("000", account="acme2"), ttl=0)])  # another account
    assert store.account_invitations("acme", 3) == (invitations[:3], True)
    assert store.account_invitations("acme", 3, invitations[2].id) == (invitations[3:6], True)
    assert store.account_invitations("acme", 3, invitations[5].id) == (invitations[6:], False)
    assert store.account_invitations("acme", 1, invitations[6].id) == ([], False)
    # after an id no invitation has (any more): the ones after its place
    assert store.account_invitations("acme", 2, "acme~0025") == (invitations[3:5], True)
    assert store.account_invitations("acme", 6, invitations[0].id) == (invitations[1:], False)


def test_a_users_invitations_are_found_and_erased_through_their_link_records(store: UserStore) -> None:
    u, other = user(1), user(2)
    store.put_user(u)
    store.put_user(other)
    mine, accepted = _invitation("a1", token="t1"), _invitation("c3", token="t3")
    theirs = Invitation(**{**_invitation("b2", account="globex", token="t2").__dict__, "user_id": other.id})
    ttl = int(NOW) + 9999
    for n, inv in enumerate((mine, theirs, accepted), start=1):
        lk = Link(f"{n:064x}", "invite", inv.user_id, inv.expires_at, int(NOW), ref=inv.id)
        store.transact(
            [
                PutInvitation(inv, ttl=ttl),
                PutLink(lk, ttl=ttl),
                RecordLink(inv.user_id, lk.token_hash, ttl, inv.id),
            ]
        )
    store.transact([RecordLink(u.id, f"{9:064x}", ttl)])  # a link about no invitation
    store.transact([DeleteInvitation(accepted.id, "t3")])  # accepted: its record stays, it is gone
    assert store.user_invitations(u.id) == [mine]
    assert store.user_invitations(other.id) == [theirs]
    store.transact([DeleteUser(u)])

    assert store.erase_deleted_user(u.id) == 3  # three link records

    assert store.get_invitation(mine.id) is None and store.user_invitations(u.id) == []
    assert store.get_invitation(theirs.id) == theirs


def test_a_link_keeps_its_ref(store: UserStore) -> None:
    lk = Link(
        token_hash="f" * 64,
        purpose="invite",
        user_id="auth0|u1",
        expires_at=int(NOW),
        created_at=0,
        ref="acme~a1",
    )
    store.transact([PutLink(lk, ttl=0)])
    assert store.get_link(lk.token_hash) == lk


# ------------------------------------------------------------------------------ the users list
def test_list_entries_read_in_key_order_by_prefix_and_position(store: UserStore) -> None:
    from usermgmt.store import LIST_ALL, account_scope

    store.put_account("acme", "Acme")
    users = [
        user(
            n, email=f"{name}@example.com", first_name=name.title(), created_at=f"2026-01-0{n}T00:00:00.000Z"
        )
        for n, name in ((1, "anna"), (2, "anton"), (3, "bert"), (4, "ann"))
    ]
    for u in users:
        store.put_user(u)
    emails = [e.key.split("\x1f")[0] for e in store.list_read("email", LIST_ALL, limit=10).entries]
    assert emails == sorted(u.email for u in users)
    first = store.list_read("email", LIST_ALL, prefix="an", limit=2)
    assert [e.user_id for e in first.entries] == ["auth0|u4", "auth0|u1"] and first.more
    rest = store.list_read("email", LIST_ALL, prefix="an", after=first.entries[-1].key, limit=2)
    assert [e.user_id for e in rest.entries] == ["auth0|u2"] and not rest.more
    newest = store.list_read("created", account_scope("acme"), descending=True, limit=2)
    assert [e.user_id for e in newest.entries] == ["auth0|u4", "auth0|u3"]
    assert newest.entries[0].roles == ("Buyer",) and newest.entries[0].status == "ACTIVE"
    older = store.list_read("created", account_scope("acme"), descending=True, after=newest.entries[-1].key)
    assert [e.user_id for e in older.entries] == ["auth0|u2", "auth0|u1"]
    assert store.list_read("status", LIST_ALL, status="SUSPENDED").entries == []


def test_membership_entries_and_counts_move_with_their_ops(store: UserStore) -> None:
    from usermgmt.store import AdjustCounts, DeleteMember, PutMember, account_scope, index_ops

    store.put_account("acme", "Acme")
    store.put_account("globex", "Globex")
    u = user()
    store.put_user(u)  # seeding writes the entries and counts too
    assert store.get_accounts(["acme", "nowhere"])["acme"].counts == {"ACTIVE": 1}
    moved = u.evolve(version=2, status="SUSPENDED", memberships=(Membership("globex", ("Approver",)),))
    ops = index_ops(u, moved)
    assert ops == [
        DeleteMember("acme", u.id),
        AdjustCounts("acme", (("ACTIVE", -1),)),
        PutMember("globex", moved),
        AdjustCounts("globex", (("SUSPENDED", 1),)),
    ]
    store.transact([UpdateUser(u, moved), *ops])
    assert store.list_read("email", account_scope("acme")).entries == []
    (entry,) = store.list_read("status", account_scope("globex"), status="SUSPENDED").entries
    assert (entry.user_id, entry.roles) == (u.id, ("Approver",))
    accounts = store.get_accounts(["acme", "globex"])
    assert (accounts["acme"].counts.get("ACTIVE"), accounts["globex"].counts) == (0, {"SUSPENDED": 1})
    assert store.account_ids(None, 1) == (["acme"], True) and store.account_ids("acme", 5) == (
        ["globex"],
        False,
    )
    store.transact([AdjustCounts("globex", (("SUSPENDED", 5),))])  # drifted
    assert store.recount_account("globex") == {"INVITED": 0, "ACTIVE": 0, "SUSPENDED": 1}
    assert store.get_accounts(["globex"])["globex"].counts["SUSPENDED"] == 1


def test_the_active_administrator_count_never_drops_below_one(store: UserStore) -> None:
    from usermgmt.store import AdjustAdminCount

    store.put_user(user(1, profile="administrator"))
    store.put_user(user(2, profile="administrator"))
    store.put_user(user(3))  # not an administrator
    store.put_user(user(2, profile="administrator"))  # a re-seed counts once
    assert store.active_admin_count() == 2
    store.transact([AdjustAdminCount(-1)])
    with pytest.raises(ConditionFailed) as failed:
        store.transact([AdjustAdminCount(-1)])
    assert failed.value.label == "last-admin"
    assert store.active_admin_count() == 1
    store.transact([AdjustAdminCount(1)])
    assert store.active_admin_count() == 2
    store.put_user(user(1, profile="administrator", status="SUSPENDED"))
    assert store.active_admin_count() == 1


def _job(job_id: str, created_by: str = "auth0|creator", at: str = "2026-12-02T10:00:00.000Z") -> Any:
    from usermgmt.store import BulkJob

    return BulkJob(
        id=job_id,
        action="suspend",
        status="queued",
        dry_run=False,
        created_by=created_by,
        actor={"type": "platform_admin", "id": created_by},
        created_at=at,
        total=2,
        params={},
        caller={"sub": created_by, "gty": None, "scopes": []},
        request_id="r1",
        expires_at=2_000_000_000,
        idempotency_key="k",
        body_hash="h",
    )


def test_a_bulk_job_its_key_items_counts_and_lists(store: UserStore) -> None:
    from usermgmt.store import (
        BulkItem,
        ClaimJobKey,
        PutJob,
        PutJobEntry,
        SetJobStatus,
        finish_item_ops,
    )

    job = _job("j1")
    store.put_job_items(job, ["auth0|a", "auth0|b"])
    store.transact(
        [PutJob(job), ClaimJobKey(job.created_by, "k", job.id, 2_000_000_000), PutJobEntry("*", job)]
    )
    with pytest.raises(ConditionFailed) as reused:
        store.transact([PutJob(_job("j2")), ClaimJobKey(job.created_by, "k", "j2", 2_000_000_000)])
    assert reused.value.label == "idempotency-key"
    assert store.get_job("j2") is None
    assert store.job_for_key(job.created_by, "k") == "j1"
    assert store.get_job("j1") == job
    # an item is decided once; its counts move with it
    store.transact(finish_item_ops(BulkItem("j1", "auth0|a", "succeeded"), job.expires_at))
    with pytest.raises(ConditionFailed) as twice:
        store.transact(finish_item_ops(BulkItem("j1", "auth0|a", "failed", "x", "y"), job.expires_at))
    assert twice.value.label == "bulk-item"
    store.transact(
        finish_item_ops(BulkItem("j1", "auth0|b", "failed", "user_not_found", "User not found"), 1)
    )
    assert store.job_counts("j1") == {"succeeded": 1, "failed": 1}
    found = store.job_items("j1", ["auth0|a", "auth0|b", "auth0|c"])
    assert found["auth0|b"] == BulkItem("j1", "auth0|b", "failed", "user_not_found", "User not found")
    assert set(found) == {"auth0|a", "auth0|b"}
    page, cursor = store.job_items_page("j1", None, 1, None)
    assert [i.user_id for i in page] == ["auth0|a"] and cursor
    rest, _end = store.job_items_page("j1", None, 1, cursor)
    assert [i.user_id for i in rest] == ["auth0|b"]
    failed, _ = store.job_items_page("j1", "failed", 10, None)
    assert [i.user_id for i in failed] == ["auth0|b"]
    # status moves only from the statuses named
    store.transact([SetJobStatus("j1", "running", ("queued",), "2026-12-02T10:00:01.000Z")])
    with pytest.raises(ConditionFailed):
        store.transact([SetJobStatus("j1", "running", ("queued",), "2026-12-02T10:00:02.000Z")])
    store.transact([SetJobStatus("j1", "succeeded", ("queued", "running"), "2026-12-02T10:00:03.000Z")])
    done = store.get_job("j1")
    assert done is not None and done.status == "succeeded"
    assert (done.started_at, done.finished_at) == ("2026-12-02T10:00:01.000Z", "2026-12-02T10:00:03.000Z")
    later = _job("j3", at="2026-12-02T11:00:00.000Z")
    store.transact([PutJob(later), PutJobEntry("*", later)])
    jobs, next_cursor = store.jobs_page(None, 1, None)
    assert [j.id for j in jobs] == ["j3"]
    older, _ = store.jobs_page(None, 1, next_cursor)
    assert [j.id for j in older] == ["j1"]
    with pytest.raises(ValueError):
        store.jobs_page("auth0|someone", 1, next_cursor)


# ------------------------------------------------------------------------------ links without a version (L1)
def test_links_set_without_a_version_and_the_writes_around_them(store: UserStore) -> None:
    from usermgmt.store import SetLinks

    u = user(1, version=3)
    store.put_user(u)
    # an anonymous request's link: no new version
    store.transact([SetLinks(u, (("reset", "h1"),))])
    got = store.get_user(u.id)
    assert got is not None and got.links == {"reset": "h1"} and got.version == 3
    # a versioned write planned before it, from the empty map: refused (read again), nothing lost
    with pytest.raises(ConditionFailed) as stale:
        store.transact([UpdateUser(u, u.evolve(version=4, links={"verify": "v1"}))])
    assert stale.value.label == "user"
    # planned after it, changing another slot: both links stay
    store.transact([UpdateUser(got, got.evolve(version=4, links={"reset": "h1", "verify": "v1"}))])
    got = store.get_user(u.id)
    assert got is not None and got.links == {"reset": "h1", "verify": "v1"}
    # a link added while a versioned write (planned on the old map) changes another slot: both stay
    store.transact([SetLinks(got, (("reset", "h2"), ("verify", "v1")))])
    store.transact([UpdateUser(got, got.evolve(version=5, links={"reset": "h1"}, first_name="Renamed"))])
    latest = store.get_user(u.id)
    assert latest is not None and latest.links == {"reset": "h2"} and latest.first_name == "Renamed"
    # a write that ends every link ends the one added meanwhile too
    store.transact([SetLinks(latest, (("reset", "h2"), ("cancel", "c1")))])
    store.transact([UpdateUser(latest, latest.evolve(version=6, status="SUSPENDED", links={}))])
    ended = store.get_user(u.id)
    assert ended is not None and ended.links == {} and ended.version == 6
    # refused at another version or status
    for stale_user in (latest, ended.evolve(status="ACTIVE")):
        with pytest.raises(ConditionFailed):
            store.transact([SetLinks(stale_user, (("reset", "h3"),))])
    assert (store.get_user(u.id) or u).links == {}


def _whole_pass(store: UserStore, limit: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from usermgmt.store import ListPass

    users: dict[str, Any] = {}
    members: list[tuple[str, str]] = []
    segment, segments = ListPass(cursor=None), 0
    while True:
        segment = store.list_pass(limit, segment.cursor if segments else None)
        segments += 1
        assert len(segment.users) + len(segment.members) <= limit
        for passed in segment.users:
            assert passed.user.id not in users  # each user once
            users[passed.user.id] = passed
        members += segment.members
        if segment.cursor is None:
            return users, sorted(members)
        assert segments < 50


def test_a_list_pass_meets_every_user_and_entry_once_and_tells_what_is_out_of_step(store: UserStore) -> None:
    from usermgmt.store import DeleteMember, NoUser, PutMember, account_scope

    store.put_account("acme", "Acme")
    store.put_account("globex", "Globex")
    u1 = user(1)
    u2 = user(2, memberships=(Membership("acme", ("Buyer",)), Membership("globex", ("Buyer",))))
    u3 = user(3, memberships=(), default_account_id=None)
    for u in (u1, u2, u3):
        store.put_user(u)
    store.transact([PutLink(link(1), ttl=int(NOW) + 3600)])  # other items are not met
    users, members = _whole_pass(store, 2)
    assert sorted(users) == [u1.id, u2.id, u3.id]
    assert users[u2.id].user == store.get_user(u2.id)
    assert all(not p.out_of_step for p in users.values())
    assert members == [("acme", u1.id), ("acme", u2.id), ("globex", u2.id)]

    # records changed without their entries (as before the list, or after a restore)
    renamed = u1.evolve(version=2, first_name="Zed")
    moved = u2.evolve(version=2, status="SUSPENDED", memberships=(Membership("globex", ("Approver",)),))
    store.transact([UpdateUser(u1, renamed), UpdateUser(u2, moved)])
    users, members = _whole_pass(store, 3)
    assert users[u1.id].out_of_step == {account_scope("acme")}
    assert users[u2.id].out_of_step == {account_scope("globex")}
    assert not users[u3.id].out_of_step
    assert ("acme", u2.id) in members  # the stale entry is still stored: the pass reports it
    with pytest.raises(ValueError):
        store.list_pass(2, "not-a-cursor")

    # entries of no user are removed only while there is none
    with pytest.raises(ConditionFailed) as failed:
        store.transact([NoUser(u1.id), DeleteMember("acme", u1.id)])
    assert failed.value.label == "no-user"
    store.transact(
        [
            *(UpdateUser(renamed, renamed), PutMember("acme", renamed), NoUser("auth0|ghost")),
            *(UpdateUser(moved, moved), PutMember("globex", moved), DeleteMember("acme", u2.id)),
        ]
    )
    users, members = _whole_pass(store, 10)
    assert all(not p.out_of_step for p in users.values())
    assert members == [("acme", u1.id), ("globex", u2.id)]
    assert store.get_user(u1.id) == renamed and store.get_user(u2.id) == moved  # versions unchanged


# ------------------------------------------------------------------------ DynamoDB's unprocessed batches
class _Withholding:
    """The moto client, except that a batch read or write processes only its first key or request and
    leaves the rest unprocessed, ``times`` times, as DynamoDB does when a partition is throttled."""

    def __init__(self, client: Any, times: int) -> None:
        self._client, self.times, self.calls = client, times, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, request),) = RequestItems.items()
        if self.times <= 0:
            return dict(self._client.batch_get_item(RequestItems=RequestItems))
        self.times -= 1
        first, rest = request["Keys"][:1], request["Keys"][1:]
        resp = dict(self._client.batch_get_item(RequestItems={table: {**request, "Keys": first}}))
        return {**resp, "UnprocessedKeys": {table: {**request, "Keys": rest}} if rest else {}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, requests),) = RequestItems.items()
        if self.times <= 0:
            return dict(self._client.batch_write_item(RequestItems=RequestItems))
        self.times -= 1
        return {"UnprocessedItems": {table: requests}}  # nothing written this time


@pytest.fixture
def throttled(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, _Withholding, list[float]]]:
    from moto import mock_aws

    import usermgmt.adapters.dynamo as dynamo

    waits: list[float] = []
    monkeypatch.setattr(dynamo.time, "sleep", waits.append)
    with mock_aws():
        import boto3

        client = boto3.client("dynamodb", region_name="eu-central-1")
        create_table(client, TABLE)
        withholding = _Withholding(client, 0)
        yield dynamo.DynamoStore(withholding, TABLE), withholding, waits  # type: ignore[arg-type]


def test_unprocessed_keys_are_asked_again_with_backoff(throttled: Any) -> None:
    store, client, waits = throttled
    users = [user(id=f"auth0|t{i}", email=f"t{i}@example.com") for i in range(5)]
    for u in users:
        store.put_user(u)
    client.times, client.calls = 3, 0
    assert store.get_users([u.id for u in users]) == {u.id: u for u in users}
    assert client.calls == 4 and waits == [0.05, 0.1, 0.2]  # one key a time, then the rest; backoff doubles


def test_unprocessed_writes_are_sent_again_and_give_up_as_a_503(throttled: Any) -> None:
    from usermgmt.errors import StoreUnavailable

    store, client, waits = throttled
    client.times = 2
    for key in ("k1", "k2"):
        store.incr_counter(key, int(NOW) + 60)
    store.delete_counters(["k1", "k2"])  # withheld twice, deleted on the third request
    assert waits == [0.05, 0.1]
    assert store.read_counter("k1") == 0 and store.read_counter("k2") == 0
    client.times, client.calls = 100, 0
    waits.clear()
    with pytest.raises(StoreUnavailable):
        store.delete_counters(["a", "b", "c"])
    assert client.calls == 6 and waits == [0.05, 0.1, 0.2, 0.4, 0.8]  # no wait after the last request


def test_a_request_key_is_claimed_once_until_it_ends(store: UserStore) -> None:
    from usermgmt.store import ClaimRequestKey, RequestKey

    def claim(target: str, now: int) -> ClaimRequestKey:
        return ClaimRequestKey("create-user", "auth0|ada", "k1", target, "h1", now + 100, now)

    store.transact([claim("auth0|first", 1000)])
    assert store.request_key("create-user", "auth0|ada", "k1") == RequestKey("auth0|first", "h1", 1100)
    with pytest.raises(ConditionFailed) as held:
        store.transact([claim("auth0|second", 1050)])
    assert held.value.label == "idempotency-key"
    assert store.request_key("create-user", "auth0|ada", "other") is None
    assert store.request_key("invite", "auth0|ada", "k1") is None  # scopes and callers are apart
    store.transact([claim("auth0|third", 1101)])  # ended (not yet removed by TTL): free again
    assert store.request_key("create-user", "auth0|ada", "k1") == RequestKey("auth0|third", "h1", 1201)
