"""The store port: what the services read and write, in the domain's words.

``UserStore`` is implemented by ``adapters.dynamo.DynamoStore`` (DynamoDB) and by
``adapters.memory.MemoryStore`` (in memory, for fast rule tests); one contract suite holds both to the
same behaviour. Services never see item shapes: they read records and commit *ops*, small values that
say what to write and on which condition. ``transact`` applies a list of ops all or nothing and raises
``ConditionFailed`` naming the op (its ``label``) whose condition failed.

Sync markers (the never-lost Auth0 sync, ``service/sync.py``) live on the user item (or, for a deleted
user, on its tombstone): ``fields`` still to push, the ``version`` they were committed at, ``failed``
fields Auth0 refused for good, attempts, a due time and a lease. A claimed password-reset link carries a
marker too (``ClaimedLink``): if nobody finishes or gives back the claim, the sync finishes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from usermgmt.models import User

# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Link:
    token_hash: str
    purpose: str
    user_id: str
    expires_at: int
    created_at: int
    address_hash: str | None = None
    status: str = "active"  # active | used
    claim_owner: str | None = None
    claim_until: int = 0
    # what the link is for beyond its purpose (an invitation link: its invitation id; None: none)
    ref: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    user_id: str
    at: str
    actor: str
    action: str
    request_id: str
    changes: tuple[dict[str, Any], ...] = ()
    # the version the entry records; part of the key so no two entries of a user ever collide
    seq: int = 0
    job_id: str | None = None  # the bulk job the change was an item of


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None


@dataclass(frozen=True)
class ExpiredLinkRef:
    """An expiry-index entry of a link: the index is eventually consistent, the item may be gone."""

    token_hash: str
    expires_at: int


@dataclass
class ExpiredPage:
    """One page of expired links. ``start_key`` (None on the last page) reads the next one."""

    links: list[ExpiredLinkRef] = field(default_factory=list)
    start_key: Any = None
    # entries of other kinds of expiring items (not links): left to whoever owns them
    others: int = 0


@dataclass(frozen=True)
class SyncState:
    """A sync marker as its lease holder sees it."""

    user_id: str
    version: int  # the version whose state is to be pushed
    fields: frozenset[str]
    failed: frozenset[str]
    attempts: int
    lease_owner: str
    lease_until: float
    deleted: bool


@dataclass(frozen=True)
class DueWork:
    """Something the sync must finish: a user's (or tombstone's) marker, or a claimed reset link."""

    kind: str  # "user" | "link"
    key: str  # user id or link token hash


@dataclass(frozen=True)
class OutboxEvent:
    """A lifecycle event waiting in the outbox (SPEC section 15), written with the change it tells of.

    ``key`` orders one user's events (``<version:012d>#<n>``); ``event`` is the CloudEvents ``detail``.
    """

    user_id: str
    key: str
    detail_type: str
    event: dict[str, Any]
    created_at: float
    attempts: int = 0


@dataclass(frozen=True)
class BulkJob:
    """A bulk job (SPEC section 14). ``caller`` is what rebuilds the creator's request context for
    each item (``sub``, ``gty``, ``scopes``); ``created_by`` is the creator's ``sub``."""

    id: str
    action: str
    status: str  # queued | running | succeeded | completed_with_errors | cancelled
    dry_run: bool
    created_by: str
    actor: dict[str, str]  # {"type", "id"} as audit and events name the creator
    created_at: str
    total: int
    params: dict[str, Any]
    caller: dict[str, Any]
    request_id: str
    expires_at: int  # epoch seconds: the job and its items are dropped after (DynamoDB TTL)
    idempotency_key: str
    body_hash: str
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True)
class BulkItem:
    """One target of a job: ``pending`` until decided once, then ``succeeded``/``skipped``/``failed``."""

    job_id: str
    user_id: str
    status: str = "pending"
    code: str | None = None
    detail: str | None = None


BULK_COUNT_SHARDS = 16  # a job's counts are split so concurrent items rarely touch the same counter


def bulk_shard(user_id: str) -> int:
    import hashlib

    return int(hashlib.sha256(user_id.encode()).hexdigest()[:8], 16) % BULK_COUNT_SHARDS


@dataclass(frozen=True)
class Lease:
    owner: str
    now: float
    until: float


@dataclass(frozen=True)
class Invitation:
    """An invitation of a user into an account (SPEC section 13), pending until accepted or revoked.

    ``id`` is ``<accountId>~<random>``: the account it belongs to is part of its id, so one strongly
    consistent read finds it and one query lists an account's invitations. ``token_hash`` names the
    current link (a resend replaces it); ``created_user`` says that the invitation created its user.
    """

    id: str
    account_id: str
    user_id: str
    roles: tuple[str, ...]
    created_at: int
    expires_at: int
    token_hash: str
    invited_by: str
    created_user: bool = False


INVITATION_ID_SEPARATOR = "~"


def split_invitation_id(invitation_id: str) -> tuple[str, str] | None:
    """``(account_id, key)`` of an invitation id, or None for a string no invitation id has."""
    account_id, sep, key = invitation_id.rpartition(INVITATION_ID_SEPARATOR)
    if not sep or not account_id or not key or len(invitation_id) > 200:
        return None
    if not key.isalnum() or not all(c.isalnum() or c in "._-" for c in account_id):
        return None
    return account_id, key


# ------------------------------------------------------------------------------------------------ ops


@dataclass(frozen=True)
class UpdateUser:
    """Write ``after`` over ``before`` on condition that nobody changed ``before.version``.

    ``sync`` names fields to push to Auth0 at ``after.version`` (added to any still pending; removed
    from the failed ones); ``lease`` also takes the sync lease, on condition that it is free.
    """

    before: User
    after: User
    sync: frozenset[str] = frozenset()
    lease: Lease | None = None
    label: str = "user"
    # when ``sync`` is due (epoch seconds): the commit time, so the oldest due marker tells how long
    # the oldest change has waited for its push (0: due since ever)
    due: float = 0


@dataclass(frozen=True)
class SetLinks:
    """Move ``before``'s links map to ``links`` *without* a new version (security notes L1): what an
    anonymous request (a public route, a storefront event) changes when it issues a link. Holds only
    while the user is still at ``before``'s version and status; from an empty map, only while no link
    was added meanwhile. ``UpdateUser`` writes only the link slots it changes, so neither loses the
    other's link (a write that ends every link ends this one too)."""

    before: User
    links: tuple[tuple[str, str], ...]  # (slot, token hash), the whole map after the change
    label: str = "user"


def merge_links(current: dict[str, str], before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """``current`` moved by the change ``before`` -> ``after`` of one writer: its slots only; an empty
    ``after`` ends every link, also those another writer added meanwhile."""
    if before == after:
        return dict(current)
    if not after:
        return {}
    merged = dict(current)
    for slot in set(before) | set(after):
        if before.get(slot) == after.get(slot):
            continue  # not this writer's change: whatever is there now stays
        if slot in after:
            merged[slot] = after[slot]
        else:
            merged.pop(slot, None)
    return merged


@dataclass(frozen=True)
class CreateUser:
    """A new record, on condition that no user has its id; ``sync``/``lease`` as in ``UpdateUser``."""

    user: User
    label: str = "user"
    sync: frozenset[str] = frozenset()
    lease: Lease | None = None
    due: float = 0  # as in ``UpdateUser``


@dataclass(frozen=True)
class DeleteUser:
    """Remove the record, on condition that it is still at ``user.version``."""

    user: User
    label: str = "user"


@dataclass(frozen=True)
class ClaimEmail:
    """Reserve a login email for a user (fails when another user holds it)."""

    email: str
    user_id: str
    label: str = "email"


@dataclass(frozen=True)
class ReleaseEmail:
    email: str
    user_id: str
    label: str = "release-email"


@dataclass(frozen=True)
class AccountExists:
    account_id: str

    @property
    def label(self) -> str:
        return f"account:{self.account_id}"


@dataclass(frozen=True)
class PutAudit:
    """An audit entry; ``keep`` marks the tombstone entry a deletion leaves (never erased)."""

    entry: AuditEntry
    keep: bool = False
    label: str = "audit"


@dataclass(frozen=True)
class PutLink:
    link: Link
    ttl: int  # epoch seconds after which the store may drop the item
    label: str = "link"


@dataclass(frozen=True)
class UseLink:
    """Consume a link exactly once (exists, active, unexpired at ``now``; held by ``claim`` when
    given); ends any claim on it."""

    token_hash: str
    now: int
    claim: str | None = None
    label: str = "link"


@dataclass(frozen=True)
class DeleteLink:
    token_hash: str
    label: str = "delete-link"


@dataclass(frozen=True)
class DeleteExpiredLink:
    """Delete a link only while it exists and expired before ``cutoff``."""

    token_hash: str
    cutoff: int
    label: str = "link"


@dataclass(frozen=True)
class PutTombstone:
    """What stays of a deleted user until Auth0 has deleted it too: the sync marker, no personal data."""

    user_id: str
    version: int
    deleted_at: str
    sync: frozenset[str]
    lease: Lease
    label: str = "tombstone"


@dataclass(frozen=True)
class PutEvent:
    """An outbox event, in the transaction of the change it tells of."""

    event: OutboxEvent
    label: str = "event"


@dataclass(frozen=True)
class PutInvitation:
    """Write an invitation: a new one (``expected_token`` None: none may exist with its id), or a
    resent one over the pending one whose link is ``expected_token``."""

    invitation: Invitation
    ttl: int  # epoch seconds after which the store may drop the item
    expected_token: str | None = None
    label: str = "invitation"


@dataclass(frozen=True)
class DeleteInvitation:
    """End a pending invitation (accepted or revoked), on condition that its link is still ``token_hash``."""

    invitation_id: str
    token_hash: str
    label: str = "invitation"


@dataclass(frozen=True)
class PutMember:
    """The membership entry of ``user`` in ``account_id`` (created or brought in step)."""

    account_id: str
    user: User
    label: str = "member"


@dataclass(frozen=True)
class DeleteMember:
    account_id: str
    user_id: str
    label: str = "member"


@dataclass(frozen=True)
class AdjustCounts:
    """Add ``deltas`` ((status, n), ...) to an account's counts: one op per account per change."""

    account_id: str
    deltas: tuple[tuple[str, int], ...]
    label: str = "counts"


@dataclass(frozen=True)
class AdjustAdminCount:
    """Add ``delta`` to the count of ACTIVE platform administrators (SPEC section 3).

    A negative ``delta`` holds only while the count stays at least 1: the last one cannot go, and of
    two transactions removing the last two administrators, one fails its condition.
    """

    delta: int
    label: str = "last-admin"


@dataclass(frozen=True)
class PutJob:
    """A new bulk job (fails when the id is taken)."""

    job: BulkJob
    label: str = "job"


@dataclass(frozen=True)
class ClaimJobKey:
    """The creator's ``Idempotency-Key`` for the job; fails when the creator used the key already."""

    created_by: str
    key: str
    job_id: str
    expires_at: int
    label: str = "idempotency-key"


@dataclass(frozen=True)
class ClaimRequestKey:
    """A caller's ``Idempotency-Key`` on a route (``scope``) for the request that made ``target``; fails
    when the caller holds the key there already, unless that claim ended before ``now``."""

    scope: str
    caller: str
    key: str
    target: str
    body_hash: str
    expires_at: int
    now: int
    label: str = "idempotency-key"


@dataclass(frozen=True)
class RequestKey:
    """What an ``Idempotency-Key`` was used for: the target it made, its body's hash, until when."""

    target: str
    body_hash: str
    expires_at: int


@dataclass(frozen=True)
class PutJobEntry:
    """The job in a list of jobs, newest first: its creator's (``owner`` = creator) or everyone's (``*``)."""

    owner: str
    job: BulkJob
    label: str = "job-entry"


@dataclass(frozen=True)
class FinishItem:
    """Decide a job item once: from ``pending`` to its status (fails when it is decided already)."""

    item: BulkItem
    expires_at: int
    label: str = "bulk-item"


@dataclass(frozen=True)
class CountItem:
    """One more decided item of ``status`` in the job's counts (goes with its ``FinishItem``)."""

    job_id: str
    user_id: str
    status: str
    expires_at: int
    label: str = "bulk-count"


@dataclass(frozen=True)
class SetJobStatus:
    """Move a job to ``status`` while it is in one of ``current``; ``at`` is its start or finish time."""

    job_id: str
    status: str
    current: tuple[str, ...]
    at: str
    label: str = "job"


@dataclass(frozen=True)
class RecordLink:
    """Remember that ``user_id`` was issued the link ``token_hash`` (the hash only), until ``ttl``: so
    erasure (``erase_deleted_user``) also finds the links the user no longer holds (superseded, used,
    expired), not only those in ``user.links`` (security notes L15). Goes with every ``PutLink``.

    ``ref`` is the link's (an invitation link: its invitation id, whose item has the same ``ttl``), so
    the user's invitations are found from their own partition, for the export and the erasure, even
    after a suspension ended their links."""

    user_id: str
    token_hash: str
    ttl: int
    ref: str | None = None
    label: str = "link-record"


@dataclass(frozen=True)
class NoUser:
    """A condition only: no user record has ``user_id`` (what removing an orphaned list entry needs)."""

    user_id: str
    label: str = "no-user"


@dataclass(frozen=True)
class RecordJobItem:
    """A decided item of a bulk job, also kept with the user it named (until ``expires_at``): what an
    export lists (SPEC section 18) and a deletion erases with the user's partition. The job's own item
    (``JOB#``) keeps only the user's id and the outcome, like the deletion's tombstone."""

    item: BulkItem
    expires_at: int
    label: str = "job-item-record"


def finish_item_ops(item: BulkItem, expires_at: int) -> list[Op]:
    """The ops that decide one item: its status, the job's counts and the user's record of it, in one
    transaction."""
    return [
        FinishItem(item, expires_at),
        CountItem(item.job_id, item.user_id, item.status, expires_at),
        RecordJobItem(item, expires_at),
    ]


Op = (
    UpdateUser
    | SetLinks
    | CreateUser
    | DeleteUser
    | ClaimEmail
    | ReleaseEmail
    | AccountExists
    | PutAudit
    | PutLink
    | UseLink
    | DeleteLink
    | DeleteExpiredLink
    | PutTombstone
    | PutEvent
    | PutInvitation
    | DeleteInvitation
    | PutMember
    | DeleteMember
    | AdjustCounts
    | AdjustAdminCount
    | PutJob
    | ClaimJobKey
    | ClaimRequestKey
    | PutJobEntry
    | FinishItem
    | CountItem
    | SetJobStatus
    | RecordLink
    | RecordJobItem
    | NoUser
)

# ------------------------------------------------------------------------------------------------ the port


class UserStore(Protocol):
    """Raises ``StoreUnavailable`` when the store cannot be reached and ``ConditionFailed`` from
    ``transact``; nothing else."""

    # reads (strongly consistent)
    def get_user(self, user_id: str) -> User | None: ...

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]: ...

    def user_id_for_email(self, email: str) -> str | None: ...

    def get_link(self, token_hash: str) -> Link | None: ...

    def audit_page(self, user_id: str, limit: int, cursor: str | None) -> Page:
        """Newest first. Raises ``ValueError`` for a cursor this store did not issue for this user."""
        ...

    # the one commit
    def transact(self, ops: Sequence[Op]) -> None: ...

    # link claims (a short lease on a reset link while Auth0 sets the password)
    def claim_link(self, token_hash: str, claim: str, now: int, until: int) -> bool:
        """Hold an active, unexpired, unclaimed (or lapsed) link; it is due for the sync at ``until``."""
        ...

    def release_link_claim(self, token_hash: str, claim: str) -> bool: ...

    # rate counters
    def incr_counter(self, counter_key: str, ttl: int) -> int: ...

    def read_counter(self, counter_key: str) -> int:
        """A counter's count, strongly consistent (0 when there is none)."""
        ...

    def active_admin_count(self) -> int:
        """The count of ACTIVE platform administrators that ``AdjustAdminCount`` keeps (0 when unset)."""
        ...

    # sync markers
    def due_work(self, now: float, limit: int) -> list[DueWork]: ...

    def oldest_due(self, now: float) -> float | None:
        """When the oldest work due at ``now`` (a pending marker or a lapsed reset-link claim) became
        due; None when nothing is due. A marker's due time is its commit, retry or re-drive time."""
        ...

    def failed_syncs(self, limit: int) -> list[str]:
        """Users with fields Auth0 refused for good (for an operator's re-drive)."""
        ...

    def acquire_lease(
        self, user_id: str, owner: str, now: float, until: float, *, due_only: bool
    ) -> tuple[SyncState, User | None] | None: ...

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
        """Auth0 holds ``version`` (but for ``failed``): end the marker, keep the lease holder's word.

        ``event`` (the news that a value was refused) is written in the same transaction. False when a
        newer version was committed meanwhile or the lease moved on.
        """
        ...

    def defer_sync(
        self, user_id: str, owner: str, *, due: float, attempts: int, deleted: bool = False
    ) -> None: ...

    def release_lease(self, user_id: str, owner: str, *, deleted: bool = False) -> None: ...

    def redrive_failed(self, user_id: str, now: float) -> bool:
        """Move the failed fields back to the pending ones, due now. False when there were none."""
        ...

    # the outbox
    def outbox_users(self, created_before: float, limit: int) -> list[str]:
        """Users with outbox events written before ``created_before`` (what the sweep publishes)."""
        ...

    def outbox_of(self, user_id: str, limit: int) -> list[OutboxEvent]:
        """A user's waiting events, oldest first."""
        ...

    def remove_events(self, events: Sequence[OutboxEvent]) -> None: ...

    def count_publish_attempt(self, event: OutboxEvent) -> int:
        """One more failed attempt to publish ``event``; returns the attempts so far."""
        ...

    # erasure and expiry
    def erase_deleted_user(self, user_id: str) -> int:
        """Delete what is left of a deleted user but the tombstone and its audit entry: older audit
        entries, every link recorded for them (``RecordLink``) and the invitations those records name.
        Returns how many items of the user's partition went."""
        ...

    def delete_counters(self, counter_keys: Sequence[str]) -> None:
        """Delete rate counters (missing ones are fine): a deleted user's, named from their addresses."""
        ...

    def expired_links(self, cutoff: int, limit: int, start_key: Any = None) -> ExpiredPage: ...

    def delete_expired_link(self, token_hash: str, cutoff: int) -> bool: ...

    # invitations (SPEC section 13)
    def get_invitation(self, invitation_id: str) -> Invitation | None: ...

    def user_invitations(self, user_id: str) -> list[Invitation]:
        """The invitations naming ``user_id``, found through the user's link records (``RecordLink``
        ``ref``): one Query of the user's partition and one batch read. By id."""
        ...

    def account_invitations(
        self, account_id: str, limit: int, after: str | None = None
    ) -> tuple[list[Invitation], bool]:
        """At most ``limit`` of the account's invitations (expired ones too) in id order (oldest first:
        an id's key starts with its creation time), after the invitation id ``after``; True when more
        follow. One strongly consistent Query of the account's partition."""
        ...

    # bulk jobs (SPEC section 14)
    def put_job_items(self, job: BulkJob, user_ids: Sequence[str]) -> None:
        """Write a job's items (pending), before the job itself (``PutJob``); idempotent."""
        ...

    def get_job(self, job_id: str) -> BulkJob | None: ...

    def job_for_key(self, created_by: str, key: str) -> str | None:
        """The id of the job ``created_by`` started with ``Idempotency-Key`` ``key``."""
        ...

    def request_key(self, scope: str, caller: str, key: str) -> RequestKey | None:
        """The claim of ``ClaimRequestKey`` (strongly consistent; it may have ended: see ``expires_at``)."""
        ...

    def jobs_page(
        self, created_by: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkJob], str | None]:
        """Newest first: one creator's jobs, or everyone's (``None``). ``ValueError`` for a bad cursor."""
        ...

    def job_counts(self, job_id: str) -> dict[str, int]:
        """Decided items so far: ``succeeded``, ``skipped``, ``failed`` (strongly consistent)."""
        ...

    def job_items(self, job_id: str, user_ids: Sequence[str]) -> dict[str, BulkItem]: ...

    def user_job_items(self, user_id: str) -> list[BulkItem]:
        """The decided bulk-job items that named ``user_id`` (``RecordJobItem``), by job id."""
        ...

    def job_items_page(
        self, job_id: str, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkItem], str | None]:
        """In user id order. ``ValueError`` for a bad cursor."""
        ...

    # seeding
    def put_account(self, account_id: str, name: str) -> None: ...

    def put_user(self, user: User) -> None:
        """Write a user as it is (seeding, imports) with its membership entries and counts."""
        ...

    # the users list (SPEC section 12)
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
        """Entries of ``scope`` in ``index`` order whose key starts with ``prefix``, after ``after``
        (before it when ``descending``); index ``status`` reads the entries of one ``status`` only.
        Eventually consistent, like a GSI."""
        ...

    def get_accounts(self, account_ids: Iterable[str]) -> dict[str, Account]:
        """Accounts with their counts."""
        ...

    def account_ids(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Every account id in order, ``limit`` after ``after``; True when there are more."""
        ...

    def recount_account(self, account_id: str) -> dict[str, int]:
        """Set an account's counts from its membership entries and the users' records (repair)."""
        ...

    def list_pass(self, limit: int, cursor: str | None) -> ListPass:
        """One segment of a pass over every user record and membership entry, in storage order (the
        list's backfill): at most ``limit`` stored items read, strongly consistent. Each user comes with
        the scopes whose entry is missing or is not what the write path writes for the record now.
        ``ValueError`` for a cursor this store did not issue."""
        ...


# -------------------------------------------------------------------------------------------- the users list
# The list (SPEC section 12) reads *list entries*: the user's own record (scope ``ALL``, platform
# administrators) and one membership entry per account the user is in (scope ``ACC#<accountId>``,
# read by that account's administrators). Each entry carries one sort key per order below and the
# attributes a page is pre-filtered on; the list renders every item from the user's record itself.
# Membership entries and per-account counts are written in the same transaction as the change that
# moves them (``index_ops``: the writer asks for them with every commit, ``put_user`` writes them too).

LIST_ALL = "ALL"
COUNTED_STATUSES = ("INVITED", "ACTIVE", "SUSPENDED")
# platform administrators are also counted apart (ADMIN#<status>): delegated administrators do not see them
ADMIN_BUCKET = "ADMIN#"
# index -> (order, ascending); "status" is the email order inside one status partition
LIST_INDEXES = ("email", "status", "lastName", "firstName", "created", "updated")
KEY_SEP = "\x1f"  # never in an email or a name (control characters are refused)


def account_scope(account_id: str) -> str:
    return f"ACC#{account_id}"


def list_keys(user: User) -> dict[str, str]:
    """The sort key of ``user`` in each list index (lower-cased: prefix searches ignore case)."""
    first, last, sep = user.first_name.lower(), user.last_name.lower(), KEY_SEP
    return {
        "email": f"{user.email.lower()}{sep}{user.id}",
        "status": f"{user.email.lower()}{sep}{user.id}",
        "lastName": f"{last}{sep}{first}{sep}{user.id}",
        "firstName": f"{first}{sep}{last}{sep}{user.id}",
        "created": f"{user.created_at}{sep}{user.id}",
        "updated": f"{user.updated_at}{sep}{user.id}",
    }


def key_user_id(key: str) -> str:
    return key.rsplit(KEY_SEP, 1)[-1]


@dataclass(frozen=True)
class ListEntry:
    """One entry read from a list index: its key and what a page is pre-filtered on."""

    user_id: str
    key: str
    status: str
    profile: str
    email_verified: bool
    updated_at: str
    roles: tuple[str, ...] = ()  # the user's roles in the account (membership entries)


@dataclass
class ListRead:
    entries: list[ListEntry] = field(default_factory=list)
    more: bool = False  # the index holds entries after the last one read
    units: float = 0.0  # read capacity the read consumed (DynamoDB's figure; 0 in memory)


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)


def member_roles(user: User, account_id: str) -> tuple[str, ...]:
    for m in user.memberships:
        if m.account_id == account_id:
            return m.roles
    return ()


def count_buckets(user: User) -> tuple[str, ...]:
    """The counters of an account a member adds one to."""
    if user.is_platform_admin:
        return (user.status, ADMIN_BUCKET + user.status)
    return (user.status,)


def index_ops(before: User | None, after: User | None) -> list[Op]:
    """What keeps the membership entries and the account counts in step with a change of a user.

    ``before`` None: the user is new; ``after`` None: the user is gone. One ``PutMember`` or
    ``DeleteMember`` per account the user is (or was) in, and at most one ``AdjustCounts`` per account.
    """
    old = {m.account_id for m in before.memberships} if before else set()
    new = {m.account_id for m in after.memberships} if after else set()
    ops: list[Op] = []
    for account_id in sorted(old | new):
        if after is not None and account_id in new:
            ops.append(PutMember(account_id, after))
        elif before is not None:
            ops.append(DeleteMember(account_id, before.id))
        deltas: dict[str, int] = {}
        if before is not None and account_id in old:
            for bucket in count_buckets(before):
                deltas[bucket] = deltas.get(bucket, 0) - 1
        if after is not None and account_id in new:
            for bucket in count_buckets(after):
                deltas[bucket] = deltas.get(bucket, 0) + 1
        moved = tuple((s, n) for s, n in sorted(deltas.items()) if n)
        if moved:
            ops.append(AdjustCounts(account_id, moved))
    return ops


@dataclass(frozen=True)
class PassedUser:
    """A user record met by ``UserStore.list_pass`` and its list entries that are not in step."""

    user: User
    # LIST_ALL and/or account_scope(a) for the accounts of the record: entry missing or not what
    # ``index_ops`` / the user's own update would write for the record as it is
    out_of_step: frozenset[str] = frozenset()


@dataclass
class ListPass:
    """One segment of ``UserStore.list_pass``: its users, the membership entries stored in it
    (``(account_id, user_id)``, whether or not the user is still in the account) and the cursor of
    the next segment (None: the pass is over)."""

    users: list[PassedUser] = field(default_factory=list)
    members: list[tuple[str, str]] = field(default_factory=list)
    cursor: str | None = None
