"""``UserStore`` in memory: the same behaviour as ``DynamoStore``, for fast rule tests.

One lock makes every call atomic, as DynamoDB makes each request atomic. A transaction checks every
op's condition first and applies nothing when one fails. The contract suite
(``tests/unit/test_store_contract.py``) runs the same checks against this store and against
``DynamoStore`` on moto, so the two cannot drift. Not used in Lambda.
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from usermgmt.errors import ConditionFailed
from usermgmt.models import User
from usermgmt.store import (
    COUNTED_STATUSES,
    LIST_ALL,
    Account,
    AccountExists,
    AdjustAdminCount,
    AdjustCounts,
    AuditEntry,
    BulkItem,
    BulkJob,
    ClaimEmail,
    ClaimJobKey,
    ClaimRequestKey,
    CountItem,
    CreateUser,
    DeleteExpiredLink,
    DeleteInvitation,
    DeleteLink,
    DeleteMember,
    DeleteUser,
    DueWork,
    ExpiredLinkRef,
    ExpiredPage,
    FinishItem,
    Invitation,
    Link,
    ListEntry,
    ListPass,
    ListRead,
    NoUser,
    Op,
    OutboxEvent,
    Page,
    PassedUser,
    PutAudit,
    PutEvent,
    PutInvitation,
    PutJob,
    PutJobEntry,
    PutLink,
    PutMember,
    PutTombstone,
    RecordJobItem,
    RecordLink,
    ReleaseEmail,
    RequestKey,
    SetJobStatus,
    SetLinks,
    SyncState,
    UpdateUser,
    UseLink,
    UserStore,
    account_scope,
    count_buckets,
    index_ops,
    list_keys,
    member_roles,
    merge_links,
    split_invitation_id,
)

SYNC, FAILED, CLAIM = "SYNC", "FAILED", "CLAIM"


@dataclass
class _Marker:
    """The sync marker of a user or tombstone (the attributes ``DynamoStore`` keeps on the item)."""

    partition: str | None = None  # SYNC | FAILED | None
    due: float = 0
    version: int = 0
    fields: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: float = 0


@dataclass
class _Record:
    user: User
    marker: _Marker = field(default_factory=_Marker)

    def view(self) -> User:
        m = self.marker
        return replace(
            self.user,
            sync_fields=frozenset(m.fields),
            sync_version=m.version,
            sync_failed=frozenset(m.failed),
            lease_until=m.lease_until,
        )


@dataclass
class _LinkRecord:
    link: Link
    ttl: int
    used_at: int | None = None
    claim_due: int | None = None  # set while claimed: the CLAIM partition


@dataclass
class _Tombstone:
    deleted_at: str
    idp_sync: str
    marker: _Marker


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.users: dict[str, _Record] = {}
        self.tombstones: dict[str, _Tombstone] = {}
        self.emails: dict[str, str] = {}
        self.links: dict[str, _LinkRecord] = {}
        self.accounts: dict[str, str] = {}
        self.audit: dict[str, dict[str, tuple[AuditEntry, bool]]] = {}
        self.counters: dict[str, int] = {}
        self.outbox: dict[str, dict[str, OutboxEvent]] = {}
        self.invitations: dict[str, Invitation] = {}
        # the users list: account -> user id -> the user as its membership entry was last written
        self.members: dict[str, dict[str, User]] = {}
        self.account_counts: dict[str, dict[str, int]] = {}
        self.admin_count = 0
        self.jobs: dict[str, BulkJob] = {}
        self.job_keys: dict[tuple[str, str], str] = {}
        self.request_keys: dict[tuple[str, str, str], RequestKey] = {}
        self.job_entries: dict[str, dict[str, str]] = {}  # owner -> "<createdAt>#<id>" -> job id
        self.job_item_records: dict[str, dict[str, BulkItem]] = {}
        self.job_count_records: dict[str, dict[str, int]] = {}
        self.link_records: dict[str, set[str]] = {}  # user id -> token hashes (``RecordLink``)
        self.invitation_refs: dict[str, set[str]] = {}  # user id -> invitation ids (``RecordLink.ref``)
        self.job_item_refs: dict[
            str, dict[str, BulkItem]
        ] = {}  # user id -> job id -> item (``RecordJobItem``)

    # -------------------------------------------------------------------------------- reads
    def get_user(self, user_id: str) -> User | None:
        with self._lock:
            record = self.users.get(user_id)
            return record.view() if record else None

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        with self._lock:
            return {uid: r.view() for uid in dict.fromkeys(user_ids) if (r := self.users.get(uid))}

    def user_id_for_email(self, email: str) -> str | None:
        with self._lock:
            return self.emails.get(email)

    def get_link(self, token_hash: str) -> Link | None:
        with self._lock:
            record = self.links.get(token_hash)
            return record.link if record else None

    def audit_page(self, user_id: str, limit: int, cursor: str | None) -> Page:
        with self._lock:
            keys = sorted(self.audit.get(user_id, {}), reverse=True)
            if cursor:
                start = _decode_cursor(cursor)
                if not start.startswith("AUDIT#") or start not in self.audit.get(user_id, {}):
                    raise ValueError("invalid cursor")
                keys = [k for k in keys if k < start]
            page = keys[:limit]
            entries = [self.audit[user_id][k][0] for k in page]
            more = len(keys) > limit
            return Page(
                items=[
                    {
                        "at": e.at,
                        "actor": e.actor,
                        "action": e.action,
                        "changes": [dict(c) for c in e.changes],
                        "requestId": e.request_id,
                        **({"jobId": e.job_id} if e.job_id else {}),
                    }
                    for e in entries
                ],
                cursor=_encode_cursor(page[-1]) if more and page else None,
            )

    # -------------------------------------------------------------------------------- the commit
    def transact(self, ops: Sequence[Op]) -> None:
        with self._lock:
            for op in ops:
                if not self._holds(op):
                    raise ConditionFailed(op.label)
            for op in ops:
                self._apply(op)

    def _holds(self, op: Op) -> bool:
        match op:
            case UpdateUser(before=before, after=after, lease=lease):
                record = self.users.get(before.id)
                if record is None or record.user.version != before.version:
                    return False
                if not before.links and after.links and record.user.links:
                    return False  # a link was added meanwhile (SetLinks): read again
                return lease is None or record.marker.lease_until < lease.now
            case SetLinks(before=before, links=links):
                record = self.users.get(before.id)
                if record is None or record.user.version != before.version:
                    return False
                if record.user.status != before.status:
                    return False
                return not (not before.links and links and record.user.links)
            case CreateUser(user=user):
                return user.id not in self.users
            case DeleteUser(user=user):
                record = self.users.get(user.id)
                return record is not None and record.user.version == user.version
            case ClaimEmail(email=email, user_id=uid) | ReleaseEmail(email=email, user_id=uid):
                return self.emails.get(email, uid) == uid
            case AccountExists(account_id=account_id):
                return account_id in self.accounts
            case PutAudit(entry=entry):
                return _audit_key(entry) not in self.audit.get(entry.user_id, {})
            case PutLink(link=link):
                return link.token_hash not in self.links
            case PutEvent(event=event):
                return event.key not in self.outbox.get(event.user_id, {})
            case UseLink(token_hash=token_hash, now=now, claim=claim):
                rec = self.links.get(token_hash)
                if rec is None or rec.link.status != "active" or rec.link.expires_at <= now:
                    return False
                return claim is None or rec.link.claim_owner == claim
            case DeleteExpiredLink(token_hash=token_hash, cutoff=cutoff):
                rec = self.links.get(token_hash)
                return rec is not None and rec.link.expires_at < cutoff
            case DeleteLink() | PutTombstone() | PutMember() | DeleteMember() | AdjustCounts():
                return True
            case PutInvitation(invitation=inv, expected_token=expected):
                current = self.invitations.get(inv.id)
                if expected is None:
                    return current is None
                return current is not None and current.token_hash == expected
            case DeleteInvitation(invitation_id=iid, token_hash=token_hash):
                current = self.invitations.get(iid)
                return current is not None and current.token_hash == token_hash
            case AdjustAdminCount(delta=delta):
                return delta >= 0 or self.admin_count + delta >= 1
            case PutJob(job=job):
                return job.id not in self.jobs
            case ClaimJobKey(created_by=created_by, key=key):
                return (created_by, key) not in self.job_keys
            case ClaimRequestKey():
                held = self.request_keys.get((op.scope, op.caller, op.key))
                return held is None or held.expires_at < op.now
            case PutJobEntry() | CountItem() | RecordLink() | RecordJobItem():
                return True
            case FinishItem(item=item):
                decided = self.job_item_records.get(item.job_id, {}).get(item.user_id)
                return decided is not None and decided.status == "pending"
            case SetJobStatus(job_id=job_id, current=current_statuses):
                found = self.jobs.get(job_id)
                return found is not None and found.status in current_statuses
            case NoUser(user_id=user_id):
                return user_id not in self.users
        raise TypeError(f"not an op of this store: {type(op).__name__}")

    def _apply(self, op: Op) -> None:
        match op:
            case UpdateUser(before=before, after=after, sync=sync, lease=lease, due=due):
                record = self.users[after.id]
                record.user = _stored(
                    after.evolve(links=merge_links(record.user.links, before.links, after.links))
                )
                m = record.marker
                if sync:
                    m.partition, m.due, m.version, m.attempts = SYNC, due, after.version, 0
                    m.fields |= sync
                    m.failed -= sync
                if lease is not None:
                    m.lease_owner, m.lease_until = lease.owner, lease.until
            case SetLinks(before=before, links=links):
                record = self.users[before.id]
                merged = merge_links(record.user.links, before.links, dict(links))
                record.user = _stored(record.user.evolve(links=merged))
            case CreateUser(user=user, sync=sync, lease=lease, due=due):
                record = _Record(_stored(user))
                if sync:
                    m = record.marker
                    m.partition, m.due, m.version, m.attempts = SYNC, due, user.version, 0
                    m.fields = set(sync)
                if lease is not None:
                    record.marker.lease_owner, record.marker.lease_until = lease.owner, lease.until
                self.users[user.id] = record
            case DeleteUser(user=user):
                del self.users[user.id]
            case ClaimEmail(email=email, user_id=uid):
                self.emails[email] = uid
            case ReleaseEmail(email=email):
                self.emails.pop(email, None)
            case PutAudit(entry=entry, keep=keep):
                self.audit.setdefault(entry.user_id, {})[_audit_key(entry)] = (entry, keep)
            case PutLink(link=link, ttl=ttl):
                self.links[link.token_hash] = _LinkRecord(link, ttl)
            case UseLink(token_hash=token_hash, now=now):
                rec = self.links[token_hash]
                rec.link = replace(rec.link, status="used", claim_owner=None, claim_until=0)
                rec.used_at, rec.claim_due = now, None
            case DeleteLink(token_hash=token_hash) | DeleteExpiredLink(token_hash=token_hash):
                self.links.pop(token_hash, None)
            case PutTombstone():
                lease = op.lease
                marker = _Marker(
                    SYNC, lease.now, op.version, set(op.sync), set(), 0, lease.owner, lease.until
                )
                self.tombstones[op.user_id] = _Tombstone(op.deleted_at, "pending", marker)
            case PutEvent(event=event):
                self.outbox.setdefault(event.user_id, {})[event.key] = event
            case AccountExists() | NoUser():
                pass
            case PutInvitation(invitation=inv):
                self.invitations[inv.id] = inv
            case DeleteInvitation(invitation_id=iid):
                self.invitations.pop(iid, None)
            case PutMember(account_id=account_id, user=user):
                self.members.setdefault(account_id, {})[user.id] = _stored(user)
            case DeleteMember(account_id=account_id, user_id=uid):
                self.members.get(account_id, {}).pop(uid, None)
            case AdjustCounts(account_id=account_id, deltas=deltas):
                counts = self.account_counts.setdefault(account_id, {})
                for status, n in deltas:
                    counts[status] = counts.get(status, 0) + n
            case AdjustAdminCount(delta=delta):
                self.admin_count += delta
            case PutJob(job=job):
                self.jobs[job.id] = job
            case ClaimJobKey(created_by=created_by, key=key, job_id=job_id):
                self.job_keys[(created_by, key)] = job_id
            case ClaimRequestKey():
                claim = RequestKey(op.target, op.body_hash, op.expires_at)
                self.request_keys[(op.scope, op.caller, op.key)] = claim
            case PutJobEntry(owner=owner, job=job):
                self.job_entries.setdefault(owner, {})[f"{job.created_at}#{job.id}"] = job.id
            case FinishItem(item=item):
                self.job_item_records[item.job_id][item.user_id] = item
            case CountItem(job_id=job_id, status=status):
                counts = self.job_count_records.setdefault(job_id, {})
                counts[status] = counts.get(status, 0) + 1
            case RecordJobItem(item=item):
                self.job_item_refs.setdefault(item.user_id, {})[item.job_id] = item
            case RecordLink(user_id=uid, token_hash=token_hash, ref=ref):
                self.link_records.setdefault(uid, set()).add(token_hash)
                if ref:
                    self.invitation_refs.setdefault(uid, set()).add(ref)
            case SetJobStatus(job_id=job_id, status=status, at=at):
                job = self.jobs[job_id]
                if status == "running":
                    self.jobs[job_id] = replace(job, status=status, started_at=job.started_at or at)
                else:
                    self.jobs[job_id] = replace(job, status=status, finished_at=at)

    # -------------------------------------------------------------------------------- bulk jobs
    def put_job_items(self, job: BulkJob, user_ids: Sequence[str]) -> None:
        with self._lock:
            items = self.job_item_records.setdefault(job.id, {})
            for user_id in user_ids:
                items.setdefault(user_id, BulkItem(job.id, user_id))

    def get_job(self, job_id: str) -> BulkJob | None:
        with self._lock:
            return self.jobs.get(job_id)

    def request_key(self, scope: str, caller: str, key: str) -> RequestKey | None:
        with self._lock:
            return self.request_keys.get((scope, caller, key))

    def job_for_key(self, created_by: str, key: str) -> str | None:
        with self._lock:
            return self.job_keys.get((created_by, key))

    def jobs_page(
        self, created_by: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkJob], str | None]:
        with self._lock:
            entries = self.job_entries.get(created_by or "*", {})
            keys = sorted(entries, reverse=True)
            if cursor:
                start = _decode_cursor(cursor)
                if start not in entries:
                    raise ValueError("invalid cursor")
                keys = [k for k in keys if k < start]
            page = keys[:limit]
            more = len(keys) > limit
            return [self.jobs[entries[k]] for k in page], (_encode_cursor(page[-1]) if more else None)

    def job_counts(self, job_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self.job_count_records.get(job_id, {}))

    def job_items(self, job_id: str, user_ids: Sequence[str]) -> dict[str, BulkItem]:
        with self._lock:
            items = self.job_item_records.get(job_id, {})
            return {u: items[u] for u in user_ids if u in items}

    def user_job_items(self, user_id: str) -> list[BulkItem]:
        with self._lock:
            return [item for _, item in sorted(self.job_item_refs.get(user_id, {}).items())]

    def job_items_page(
        self, job_id: str, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkItem], str | None]:
        with self._lock:
            items = self.job_item_records.get(job_id, {})
            keys = sorted(items)
            if cursor:
                start = _decode_cursor(cursor)
                if start not in items:
                    raise ValueError("invalid cursor")
                keys = [k for k in keys if k > start]
            page = keys[:limit]
            more = len(keys) > limit
            found = [items[k] for k in page if status is None or items[k].status == status]
            return found, (_encode_cursor(page[-1]) if more else None)

    # -------------------------------------------------------------------------------- link claims
    def claim_link(self, token_hash: str, claim: str, now: int, until: int) -> bool:
        with self._lock:
            rec = self.links.get(token_hash)
            if rec is None or rec.link.status != "active" or rec.link.expires_at <= now:
                return False
            if rec.link.claim_owner is not None and rec.link.claim_until >= now:
                return False
            rec.link = replace(rec.link, claim_owner=claim, claim_until=until)
            rec.claim_due = until
            return True

    def release_link_claim(self, token_hash: str, claim: str) -> bool:
        with self._lock:
            rec = self.links.get(token_hash)
            if rec is None or rec.link.claim_owner != claim:
                return False
            rec.link = replace(rec.link, claim_owner=None, claim_until=0)
            rec.claim_due = None
            return True

    # -------------------------------------------------------------------------------- rate counters
    def read_counter(self, counter_key: str) -> int:
        with self._lock:
            return self.counters.get(counter_key, 0)

    def active_admin_count(self) -> int:
        with self._lock:
            return self.admin_count

    def incr_counter(self, counter_key: str, ttl: int) -> int:
        with self._lock:
            self.counters[counter_key] = self.counters.get(counter_key, 0) + 1
            return self.counters[counter_key]

    # -------------------------------------------------------------------------------- sync markers
    def _marker(self, user_id: str, deleted: bool) -> _Marker | None:
        if deleted:
            tomb = self.tombstones.get(user_id)
            return tomb.marker if tomb else None
        record = self.users.get(user_id)
        return record.marker if record else None

    def due_work(self, now: float, limit: int) -> list[DueWork]:
        with self._lock:
            due = [
                (m.due, uid)
                for uid, m in [(u, r.marker) for u, r in self.users.items()]
                + [(u, t.marker) for u, t in self.tombstones.items()]
                if m.partition == SYNC and m.due <= now
            ]
            work = [DueWork("user", uid) for _, uid in sorted(due)][:limit]
            claims = sorted(
                (r.claim_due, h)
                for h, r in self.links.items()
                if r.claim_due is not None and r.claim_due <= now
            )
            work += [DueWork("link", h) for _, h in claims][: limit - len(work)]
            return work

    def oldest_due(self, now: float) -> float | None:
        with self._lock:
            markers = [r.marker for r in self.users.values()] + [t.marker for t in self.tombstones.values()]
            due = [m.due for m in markers if m.partition == SYNC and m.due <= now]
            due += [
                r.claim_due for r in self.links.values() if r.claim_due is not None and r.claim_due <= now
            ]
            return min(due, default=None)

    def failed_syncs(self, limit: int) -> list[str]:
        with self._lock:
            found = [u for u, r in self.users.items() if r.marker.partition == FAILED]
            found += [u for u, t in self.tombstones.items() if t.marker.partition == FAILED]
            return sorted(found)[:limit]

    def acquire_lease(
        self, user_id: str, owner: str, now: float, until: float, *, due_only: bool
    ) -> tuple[SyncState, User | None] | None:
        with self._lock:
            for deleted in (False, True):
                m = self._marker(user_id, deleted)
                if m is None or m.partition != SYNC or m.lease_until >= now or (due_only and m.due > now):
                    continue
                m.lease_owner, m.lease_until = owner, until
                state = SyncState(
                    user_id=user_id,
                    version=m.version,
                    fields=frozenset(m.fields),
                    failed=frozenset(m.failed),
                    attempts=m.attempts,
                    lease_owner=owner,
                    lease_until=until,
                    deleted=deleted,
                )
                return state, (None if deleted else self.users[user_id].view())
            return None

    def settle_sync(
        self,
        user_id: str,
        version: int,
        owner: str,
        failed: frozenset[str],
        *,
        deleted: bool = False,
        event: OutboxEvent | None = None,
    ) -> bool:
        with self._lock:
            m = self._marker(user_id, deleted)
            if m is None or m.partition is None or m.version != version or m.lease_owner != owner:
                return False
            if event is not None:
                self.outbox.setdefault(event.user_id, {})[event.key] = event
            if deleted and not failed:
                del self.tombstones[user_id]
                return True
            fresh = _Marker(partition=FAILED if failed else None, failed=set(failed))
            if deleted:
                self.tombstones[user_id].marker = fresh
                self.tombstones[user_id].idp_sync = "failed"
            else:
                record = self.users[user_id]
                record.marker = fresh
                record.user = replace(record.user, idp_sync="failed" if failed else "synced")
            return True

    def defer_sync(
        self, user_id: str, owner: str, *, due: float, attempts: int, deleted: bool = False
    ) -> None:
        with self._lock:
            m = self._marker(user_id, deleted)
            if m is None or m.lease_owner != owner:
                return
            m.due, m.attempts, m.lease_owner, m.lease_until = due, attempts, None, 0
            if deleted:
                self.tombstones[user_id].idp_sync = "pending"
            else:
                record = self.users[user_id]
                record.user = replace(record.user, idp_sync="pending")

    def release_lease(self, user_id: str, owner: str, *, deleted: bool = False) -> None:
        with self._lock:
            m = self._marker(user_id, deleted)
            if m is not None and m.lease_owner == owner:
                m.lease_owner, m.lease_until = None, 0

    def redrive_failed(self, user_id: str, now: float) -> bool:
        with self._lock:
            for deleted in (False, True):
                m = self._marker(user_id, deleted)
                if m is None or not m.failed:
                    continue
                if not m.version:
                    m.version = self.users[user_id].user.version if not deleted else 0
                m.partition, m.due, m.attempts = SYNC, now, 0
                m.fields |= m.failed
                m.failed = set()
                if deleted:
                    self.tombstones[user_id].idp_sync = "pending"
                else:
                    record = self.users[user_id]
                    record.user = replace(record.user, idp_sync="pending")
                return True
            return False

    # -------------------------------------------------------------------------------- the outbox
    def outbox_users(self, created_before: float, limit: int) -> list[str]:
        with self._lock:
            waiting = sorted(
                (min(e.created_at for e in events.values()), uid)
                for uid, events in self.outbox.items()
                if events and min(e.created_at for e in events.values()) < created_before
            )
            return [uid for _, uid in waiting][:limit]

    def outbox_of(self, user_id: str, limit: int) -> list[OutboxEvent]:
        with self._lock:
            events = self.outbox.get(user_id, {})
            return [events[k] for k in sorted(events)][:limit]

    def remove_events(self, events: Sequence[OutboxEvent]) -> None:
        with self._lock:
            for e in events:
                self.outbox.get(e.user_id, {}).pop(e.key, None)

    def count_publish_attempt(self, event: OutboxEvent) -> int:
        with self._lock:
            stored = self.outbox.get(event.user_id, {}).get(event.key)
            if stored is None:
                return 0
            counted = replace(stored, attempts=stored.attempts + 1)
            self.outbox[event.user_id][event.key] = counted
            return counted.attempts

    # -------------------------------------------------------------------------------- erasure and expiry
    def erase_deleted_user(self, user_id: str) -> int:
        with self._lock:
            if user_id in self.users:
                return 0
            entries = self.audit.get(user_id, {})
            gone = [k for k, (_, keep) in entries.items() if not keep]
            for k in gone:
                del entries[k]
            records = self.link_records.pop(user_id, set())
            job_items = self.job_item_refs.pop(user_id, {})
            for token_hash in records:
                self.links.pop(token_hash, None)
            for invitation_id in self.invitation_refs.pop(user_id, set()):
                self.invitations.pop(invitation_id, None)
            return len(gone) + len(records) + len(job_items)

    def delete_counters(self, counter_keys: Sequence[str]) -> None:
        with self._lock:
            for key in counter_keys:
                self.counters.pop(key, None)

    def expired_links(self, cutoff: int, limit: int, start_key: Any = None) -> ExpiredPage:
        with self._lock:
            expired = sorted(
                (r.link.expires_at, h) for h, r in self.links.items() if r.link.expires_at < cutoff
            )
            if start_key is not None:
                expired = [e for e in expired if e > tuple(start_key)]
            page = expired[:limit]
            more = len(expired) > limit
            return ExpiredPage(
                links=[ExpiredLinkRef(h, at) for at, h in page],
                start_key=list(page[-1]) if more and page else None,
            )

    def delete_expired_link(self, token_hash: str, cutoff: int) -> bool:
        with self._lock:
            rec = self.links.get(token_hash)
            if rec is None or rec.link.expires_at >= cutoff:
                return False
            del self.links[token_hash]
            return True

    # -------------------------------------------------------------------------------- seeding
    # -------------------------------------------------------------------------------- invitations
    def get_invitation(self, invitation_id: str) -> Invitation | None:
        with self._lock:
            return self.invitations.get(invitation_id)

    def user_invitations(self, user_id: str) -> list[Invitation]:
        with self._lock:
            found = (self.invitations.get(iid) for iid in sorted(self.invitation_refs.get(user_id, ())))
            return [inv for inv in found if inv is not None and inv.user_id == user_id]

    def account_invitations(
        self, account_id: str, limit: int, after: str | None = None
    ) -> tuple[list[Invitation], bool]:
        with self._lock:
            start = (split_invitation_id(after) or ("", ""))[1] if after is not None else ""
            keyed = sorted(
                (
                    (parts[1], inv)
                    for iid, inv in self.invitations.items()
                    if (parts := split_invitation_id(iid)) is not None and parts[0] == account_id
                ),
                key=lambda pair: pair[0],
            )
            rest = [inv for key, inv in keyed if key > start]
            return rest[:limit], len(rest) > limit

    def put_account(self, account_id: str, name: str) -> None:
        with self._lock:
            self.accounts[account_id] = name

    def put_user(self, user: User) -> None:
        with self._lock:
            old = self.users.get(user.id)
            for op in index_ops(old.user if old else None, user):
                self._apply(op)
            self.admin_count += int(_is_active_admin(user)) - int(_is_active_admin(old.user if old else None))
            self.users[user.id] = _Record(_stored(user))
            self.emails[user.email] = user.id

    # -------------------------------------------------------------------------------- the users list
    def list_read(
        self,
        index: str,
        scope: str,
        *,
        status: str | None = None,
        prefix: str = "",
        after: str | None = None,
        descending: bool = False,
        limit: int = 50,
    ) -> ListRead:
        with self._lock:
            users: list[tuple[User, tuple[str, ...]]]
            if scope == LIST_ALL:
                users = [(r.user, ()) for r in self.users.values()]
            else:
                account_id = scope.removeprefix("ACC#")
                users = [(u, member_roles(u, account_id)) for u in self.members.get(account_id, {}).values()]
            entries = []
            for user, roles in users:
                if index == "status" and user.status != status:
                    continue
                key = list_keys(user)[index]
                if not key.startswith(prefix):
                    continue
                if after is not None and (key >= after if descending else key <= after):
                    continue
                entries.append(
                    ListEntry(
                        user.id, key, user.status, user.profile, user.email_verified, user.updated_at, roles
                    )
                )
            entries.sort(key=lambda e: e.key, reverse=descending)
            return ListRead(entries[:limit], more=len(entries) > limit)

    def get_accounts(self, account_ids: Iterable[str]) -> dict[str, Account]:
        with self._lock:
            return {
                a: Account(a, self.accounts[a], dict(self.account_counts.get(a, {})))
                for a in dict.fromkeys(account_ids)
                if a in self.accounts
            }

    def account_ids(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        with self._lock:
            ids = sorted(a for a in self.accounts if after is None or a > after)
            return ids[:limit], len(ids) > limit

    def recount_account(self, account_id: str) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(COUNTED_STATUSES, 0)
            for uid in self.members.get(account_id, {}):
                record = self.users.get(uid)
                if record and account_id in record.user.account_ids:
                    for bucket in count_buckets(record.user):
                        counts[bucket] = counts.get(bucket, 0) + 1
            self.account_counts[account_id] = dict(counts)
            return counts

    def list_pass(self, limit: int, cursor: str | None) -> ListPass:
        """Storage order as in DynamoDB's key order of one partition: ``ACCOUNT#<a>#MEMBER#<u>`` then
        ``USER#<u>``. The ``ALL`` entries are the records themselves here: always in step."""
        with self._lock:
            start = _decode_cursor(cursor) if cursor else ""
            if cursor and not start.startswith(("USER#", "ACCOUNT#")):
                raise ValueError("invalid cursor")
            keys = sorted(
                [f"ACCOUNT#{a}#MEMBER#{u}" for a, entries in self.members.items() for u in entries]
                + [f"USER#{u}" for u in self.users]
            )
            rest = [k for k in keys if k > start]
            page = rest[:limit]
            found = ListPass(cursor=_encode_cursor(page[-1]) if len(rest) > limit else None)
            for key in page:
                if key.startswith("USER#"):
                    user = self.users[key.removeprefix("USER#")].view()
                    out = frozenset(
                        account_scope(a)
                        for a in user.account_ids
                        if (entry := self.members.get(a, {}).get(user.id)) is None
                        or _entry_of(entry, a) != _entry_of(user, a)
                    )
                    found.users.append(PassedUser(user, out))
                else:
                    account_id, _, user_id = key.removeprefix("ACCOUNT#").partition("#MEMBER#")
                    found.members.append((account_id, user_id))
            return found

    # -------------------------------------------------------------------------------- for tests
    def snapshot(self) -> dict[str, Any]:
        """Everything the store holds, as plain values (to compare before and after a request)."""
        with self._lock:
            return copy.deepcopy(
                {
                    "users": {u: (r.user, r.marker) for u, r in self.users.items()},
                    "tombstones": dict(self.tombstones),
                    "emails": dict(self.emails),
                    "links": {h: (r.link, r.used_at, r.claim_due) for h, r in self.links.items()},
                    "audit": {u: dict(e) for u, e in self.audit.items()},
                    "counters": dict(self.counters),
                    "link_records": {u: set(r) for u, r in self.link_records.items()},
                    "invitation_refs": {u: set(r) for u, r in self.invitation_refs.items()},
                    "job_item_refs": {u: dict(r) for u, r in self.job_item_refs.items()},
                    "members": {a: dict(m) for a, m in self.members.items()},
                    "account_counts": {a: dict(c) for a, c in self.account_counts.items()},
                    "admin_count": self.admin_count,
                }
            )


def _entry_of(user: User, account_id: str) -> tuple[Any, ...]:
    """What a membership entry holds of its user (what ``list_read`` answers from it)."""
    return (
        list_keys(user),
        user.status,
        user.profile,
        user.email_verified,
        user.updated_at,
        member_roles(user, account_id),
    )


def _is_active_admin(user: User | None) -> bool:
    return user is not None and user.is_platform_admin and user.status == "ACTIVE"


def _stored(user: User) -> User:
    """The record without the marker fields (the store keeps those itself)."""
    return replace(user, sync_fields=frozenset(), sync_version=0, sync_failed=frozenset(), lease_until=0)


def _audit_key(entry: AuditEntry) -> str:
    return f"AUDIT#{entry.at}#{entry.seq:012d}#{entry.request_id}"


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


if TYPE_CHECKING:
    _conforms: UserStore = MemoryStore()
