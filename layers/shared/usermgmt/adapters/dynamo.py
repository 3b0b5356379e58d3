"""``UserStore`` on DynamoDB: the record of users, accounts, links, audit entries and rate counters.

Item shapes are private to this module (see docs/decisions.md, "Table layout"). The service commits
lists of ops (``usermgmt.store``); ``transact`` turns each into one item of a ``TransactWriteItems``
(``write_request``), so a state change, its audit entry, its sync marker, its uniqueness items and its links
commit together or not at all. Every transaction carries a ``ClientRequestToken``: a retry of a
transaction that did commit (a timeout on the way back) is recognised by DynamoDB instead of failing
its conditions. Vendor errors are translated in one place (``_call``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from usermgmt.errors import ConditionFailed, StoreError, StoreUnavailable
from usermgmt.models import Membership, User
from usermgmt.store import (
    BULK_COUNT_SHARDS,
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
    account_scope,
    bulk_shard,
    count_buckets,
    index_ops,
    key_user_id,
    list_keys,
    member_roles,
    split_invitation_id,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

# partitions of the sparse SyncIndex: pending markers, failed markers, claimed reset links
SYNC_PK = "SYNC"
FAILED_PK = "FAILED"
CLAIM_PK = "CLAIM"
OUTBOX_PK = "OUTBOX"  # events waiting to be published, by the time they were written
EXP_PK = "EXP"
SYNC_INDEX = "SyncIndex"
EXPIRY_INDEX = "ExpiryIndex"
# marks the audit entry a deletion leaves behind (kept when the partition is erased)
_KEEP_ATTR = "tombstone"
# sort key prefix of a link's record in its user's partition (``RecordLink``)
_LINK_RECORD = "LINKREF#"
_JOB_ITEM_RECORD = "JOBITEM#"  # a bulk job's decided item, in the partition of the user it named
_BATCH_WRITE_MAX = 25
_BATCH_GET_MAX = 100
_BATCH_ATTEMPTS = 6  # a batch's unprocessed keys or items are asked again this often, with backoff

_USER_FIELDS: dict[str, str] = {
    # domain attribute -> item attribute
    "id": "id",
    "email": "email",
    "email_verified": "emailVerified",
    "pending_email": "pendingEmail",
    "first_name": "firstName",
    "last_name": "lastName",
    "profile": "profile",
    "status": "status",
    "account_number": "accountNumber",
    "default_account_id": "defaultAccountId",
    "memberships": "memberships",
    "idp_sync": "idpSync",
    "deliverability": "deliverability",
    "version": "version",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "tokens_valid_after": "tokensValidAfter",
    "suspended_from": "suspendedFrom",
    "links": "links",
}


def _user_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "PROFILE"}}


def _tombstone_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "TOMBSTONE"}}


def _email_key(email: str) -> dict[str, Any]:
    return {"pk": {"S": f"EMAIL#{email}"}, "sk": {"S": "EMAIL"}}


def _link_key(token_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"LINK#{token_hash}"}, "sk": {"S": "LINK"}}


def _admin_count_key() -> dict[str, Any]:
    return {"pk": {"S": "COUNTER#ADMINS"}, "sk": {"S": "COUNTER"}}


def _adjust_admin_count(table: str, delta: int) -> dict[str, Any]:
    update: dict[str, Any] = {
        "TableName": table,
        "Key": _admin_count_key(),
        "UpdateExpression": "ADD #n :delta",
        "ExpressionAttributeNames": {"#n": "count"},
        "ExpressionAttributeValues": {":delta": {"N": str(delta)}},
    }
    if delta < 0:  # the count stays at least 1 after the change
        update["ConditionExpression"] = "#n >= :min"
        update["ExpressionAttributeValues"][":min"] = {"N": str(1 - delta)}
    return update


def _is_active_admin(user: User | None) -> bool:
    return user is not None and user.is_platform_admin and user.status == "ACTIVE"


def _account_key(account_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": "ACCOUNT"}}


def _invitation_key(invitation_id: str) -> dict[str, Any]:
    """An invitation lives in its account's partition (``<accountId>~<key>``: see ``Invitation``)."""
    parts = split_invitation_id(invitation_id)
    if parts is None:
        raise ValueError("not an invitation id")
    account_id, key = parts
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": f"INVITATION#{key}"}}


def _invitation_item(inv: Invitation, ttl: int) -> dict[str, Any]:
    return {
        **_invitation_key(inv.id),
        "invitationId": {"S": inv.id},
        "userId": {"S": inv.user_id},
        "roles": {"L": [{"S": r} for r in inv.roles]},
        "createdAt": {"N": str(inv.created_at)},
        "expiresAt": {"N": str(inv.expires_at)},
        "tokenHash": {"S": inv.token_hash},
        "invitedBy": {"S": inv.invited_by},
        "createdUser": {"BOOL": inv.created_user},
        "ttl": {"N": str(ttl)},
    }


def _invitation_from_item(item: dict[str, Any]) -> Invitation:
    data = _plain(item)
    invitation_id = str(data["invitationId"])
    parts = split_invitation_id(invitation_id)
    return Invitation(
        id=invitation_id,
        account_id=parts[0] if parts else "",
        user_id=data["userId"],
        roles=tuple(data.get("roles") or ()),
        created_at=int(data["createdAt"]),
        expires_at=int(data["expiresAt"]),
        token_hash=data["tokenHash"],
        invited_by=data.get("invitedBy", ""),
        created_user=bool(data.get("createdUser", False)),
    )


def _invitation_refs(records: Sequence[dict[str, Any]]) -> list[str]:
    """The invitation ids that link records (``RecordLink``) name, each once."""
    refs = (str(r["ref"]["S"]) for r in records if "ref" in r)
    return list(dict.fromkeys(ref for ref in refs if split_invitation_id(ref) is not None))


def _member_key(account_id: str, user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": f"MEMBER#{user_id}"}}


def _counts_key(account_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": "COUNTS"}}


# The users list (SPEC section 12): the GSIs of template.yaml, their key attributes, and the partition
# attribute ``lp`` (``ALL`` on user items, ``ACC#<accountId>`` on membership items, ``ACCOUNTS`` on
# account items; ``lps`` = ``lp#status``). Every list GSI projects _LIST_PROJECTED only.
LIST_GSIS: dict[str, tuple[str, str, str]] = {
    # index -> (GSI name, partition attribute, sort attribute)
    "email": ("ListEmailIndex", "lp", "le"),
    "status": ("ListStatusIndex", "lps", "le"),
    "lastName": ("ListLastNameIndex", "lp", "ln"),
    "firstName": ("ListFirstNameIndex", "lp", "lf"),
    "created": ("ListCreatedIndex", "lp", "lc"),
    "updated": ("ListUpdatedIndex", "lp", "lu"),
}
_LIST_SORT_ATTRS = {"email": "le", "lastName": "ln", "firstName": "lf", "created": "lc", "updated": "lu"}
_LIST_ATTRS = ("lp", "lps", *_LIST_SORT_ATTRS.values())  # every list attribute of an item
ACCOUNTS_LP = "ACCOUNTS"
_PREFIX_END = "\U0010ffff"  # sorts after every character a key holds


def _list_attrs(user: User, scope: str) -> dict[str, Any]:
    """The list index attributes of a user item (scope ALL) or a membership item (ACC#...)."""
    keys = list_keys(user)
    attrs: dict[str, Any] = {"lp": scope, "lps": f"{scope}#{user.status}"}
    for index, attr in _LIST_SORT_ATTRS.items():
        attrs[attr] = keys[index]
    return attrs


def _member_item(account_id: str, user: User) -> dict[str, Any]:
    attrs = {
        **_list_attrs(user, account_scope(account_id)),
        "userId": user.id,
        "status": user.status,
        "profile": user.profile,
        "emailVerified": user.email_verified,
        "updatedAt": user.updated_at,
        "roles": list(member_roles(user, account_id)),
    }
    return {**_member_key(account_id, user.id), **{k: _to_av(v) for k, v in attrs.items()}}


def _adjust_counts(table: str, op: AdjustCounts) -> dict[str, Any]:
    names = {f"#s{i}": status for i, (status, _) in enumerate(op.deltas)}
    values = {f":d{i}": {"N": str(n)} for i, (_, n) in enumerate(op.deltas)}
    return {
        "TableName": table,
        "Key": _counts_key(op.account_id),
        "UpdateExpression": "ADD " + ", ".join(f"#s{i} :d{i}" for i in range(len(op.deltas))),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


# ------------------------------------------------------------------------------------------------
# (de)serialisation of attribute values, small and explicit
# ------------------------------------------------------------------------------------------------


def _to_av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float | Decimal):
        return {"N": str(value)}
    if isinstance(value, frozenset | set):
        return {"SS": sorted(value)}
    if isinstance(value, dict):
        return {"M": {k: _to_av(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_to_av(v) for v in value]}
    if value is None:
        return {"NULL": True}
    raise TypeError(f"cannot store {type(value).__name__}")


def _from_av(av: dict[str, Any]) -> Any:
    ((kind, value),) = av.items()
    if kind == "S":
        return value
    if kind == "N":
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: _from_av(v) for k, v in value.items()}
    if kind == "L":
        return [_from_av(v) for v in value]
    if kind == "SS":
        return set(value)
    raise TypeError(f"unexpected attribute type {kind}")


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_av(v) for k, v in item.items()}


def _user_attrs(user: User) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, attr in _USER_FIELDS.items():
        value = getattr(user, name)
        if name == "memberships":
            value = [{"accountId": m.account_id, "roles": list(m.roles)} for m in value]
        attrs[attr] = value
    return attrs


def user_from_item(item: dict[str, Any]) -> User:
    data = _plain(item)
    kwargs: dict[str, Any] = {}
    for name, attr in _USER_FIELDS.items():
        if attr in data:
            kwargs[name] = data[attr]
    kwargs["memberships"] = tuple(
        Membership(m["accountId"], tuple(m["roles"])) for m in data.get("memberships") or []
    )
    kwargs["links"] = dict(data.get("links") or {})
    kwargs["sync_fields"] = frozenset(data.get("syncFields") or ())
    kwargs["sync_failed"] = frozenset(data.get("syncFailed") or ())
    kwargs["sync_version"] = int(data.get("syncVersion") or 0)
    kwargs["lease_until"] = float(data.get("leaseUntil") or 0)
    return User(**kwargs)


# ------------------------------------------------------------------------------------------------
# item shapes and write requests
# ------------------------------------------------------------------------------------------------


def _user_item(user: User) -> dict[str, Any]:
    attrs = {**_user_attrs(user), **_list_attrs(user, LIST_ALL)}
    return {k: _to_av(v) for k, v in attrs.items() if v is not None}


def _update_user(table: str, op: UpdateUser) -> dict[str, Any]:
    """``op.after`` over ``op.before`` on condition of the version; sync marker and lease as asked."""
    before, after = op.before, op.after
    names: dict[str, str] = {}
    values: dict[str, Any] = {":expected": {"N": str(before.version)}}
    sets: list[str] = []
    removes: list[str] = []
    adds: list[str] = []
    deletes: list[str] = []
    new_attrs = {**_user_attrs(after), **_list_attrs(after, LIST_ALL)}
    old_attrs = _user_attrs(before)  # list attributes always written (items older than the list gain them)
    for i, (attr, value) in enumerate(new_attrs.items()):
        if attr in ("id", "links") or (value == old_attrs.get(attr) and attr != "version"):
            continue
        names[f"#a{i}"] = attr
        if value is None:
            removes.append(f"#a{i}")
        else:
            values[f":v{i}"] = _to_av(value)
            sets.append(f"#a{i} = :v{i}")
    condition = "version = :expected"
    links_condition = _links_update(before.links, after.links, names, values, sets, removes)
    if links_condition:
        condition += f" AND {links_condition}"
    if op.sync:
        values.update(
            {
                ":sync": {"S": SYNC_PK},
                ":due": {"N": repr(op.due)},
                ":target": {"N": str(after.version)},
                ":zero": {"N": "0"},
                ":fields": {"SS": sorted(op.sync)},
            }
        )
        sets += ["syncPk = :sync", "syncDue = :due", "syncVersion = :target", "syncAttempts = :zero"]
        adds.append("syncFields :fields")
        deletes.append("syncFailed :fields")  # a field pushed again is not failed any more
    if op.lease is not None:
        values.update(
            {
                ":owner": {"S": op.lease.owner},
                ":now": {"N": repr(op.lease.now)},
                ":until": {"N": repr(op.lease.until)},
            }
        )
        sets += ["leaseOwner = :owner", "leaseUntil = :until"]
        condition += " AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)"
    expression = ""
    for keyword, parts in (("SET", sets), ("REMOVE", removes), ("ADD", adds), ("DELETE", deletes)):
        if parts:
            expression += f" {keyword} " + ", ".join(parts)
    request: dict[str, Any] = {
        "TableName": table,
        "Key": _user_key(before.id),
        "UpdateExpression": expression.strip(),
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }
    if names:
        request["ExpressionAttributeNames"] = names
    return request


def _links_update(
    before: dict[str, str],
    after: dict[str, str],
    names: dict[str, str],
    values: dict[str, Any],
    sets: list[str],
    removes: list[str],
) -> str | None:
    """The links map moved from ``before`` to ``after`` slot by slot, so a link another writer added
    meanwhile (``SetLinks``, which takes no version) stays; an empty ``after`` ends every link. From an
    empty map the whole map is written, on condition that it is still empty (returned)."""
    if before == after:
        return None
    names["#lk"] = "links"
    if not after:
        values[":nolinks"] = {"M": {}}
        sets.append("#lk = :nolinks")
        return None
    if not before:
        values[":links"] = _to_av(dict(after))
        values[":lzero"] = {"N": "0"}
        sets.append("#lk = :links")
        return "(attribute_not_exists(#lk) OR size(#lk) = :lzero)"
    for i, slot in enumerate(sorted(set(before) | set(after))):
        if before.get(slot) == after.get(slot):
            continue
        names[f"#ls{i}"] = slot
        if slot in after:
            values[f":ls{i}"] = {"S": after[slot]}
            sets.append(f"#lk.#ls{i} = :ls{i}")
        else:
            removes.append(f"#lk.#ls{i}")
    return None


def _set_links(table: str, op: SetLinks) -> dict[str, Any]:
    before = op.before
    names: dict[str, str] = {"#st": "status"}
    values: dict[str, Any] = {":expected": {"N": str(before.version)}, ":st": {"S": before.status}}
    sets: list[str] = []
    removes: list[str] = []
    condition = "version = :expected AND #st = :st"
    extra = _links_update(before.links, dict(op.links), names, values, sets, removes)
    if extra:
        condition += f" AND {extra}"
    expression = " ".join(
        f"{keyword} {', '.join(parts)}" for keyword, parts in (("SET", sets), ("REMOVE", removes)) if parts
    )
    request: dict[str, Any] = {
        "TableName": table,
        "Key": _user_key(before.id),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
    if expression:
        request["UpdateExpression"] = expression
    else:  # nothing to move: only the condition
        return {"ConditionCheck": request}
    return {"Update": request}


def _audit_item(entry: AuditEntry) -> dict[str, Any]:
    return {
        "pk": {"S": f"USER#{entry.user_id}"},
        "sk": {"S": f"AUDIT#{entry.at}#{entry.seq:012d}#{entry.request_id}"},
        "at": {"S": entry.at},
        "actor": {"S": entry.actor},
        "action": {"S": entry.action},
        "requestId": {"S": entry.request_id},
        "changes": _to_av(list(entry.changes)),
        **({"jobId": {"S": entry.job_id}} if entry.job_id else {}),
    }


def _link_item(link: Link, ttl: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        **_link_key(link.token_hash),
        "purpose": {"S": link.purpose},
        "userId": {"S": link.user_id},
        "expiresAt": {"N": str(link.expires_at)},
        "createdAt": {"N": str(link.created_at)},
        "status": {"S": link.status},
        "expPk": {"S": EXP_PK},
        "expAt": {"N": str(link.expires_at)},
        "ttl": {"N": str(ttl)},
    }
    if link.address_hash:
        item["addressHash"] = {"S": link.address_hash}
    if link.ref:
        item["ref"] = {"S": link.ref}
    return item


def _tombstone_item(op: PutTombstone) -> dict[str, Any]:
    """The tombstone carries the deletion's sync marker and lease; ``settle_sync`` removes it."""
    return {
        **_tombstone_key(op.user_id),
        "deletedAt": {"S": op.deleted_at},
        "idpSync": {"S": "pending"},
        "syncPk": {"S": SYNC_PK},
        "syncDue": {"N": repr(op.lease.now)},  # due since the deletion
        "syncVersion": {"N": str(op.version)},
        "syncFields": {"SS": sorted(op.sync)},
        "syncAttempts": {"N": "0"},
        "leaseOwner": {"S": op.lease.owner},
        "leaseUntil": {"N": repr(op.lease.until)},
    }


def _outbox_item(event: OutboxEvent) -> dict[str, Any]:
    """An outbox event: keyed by user so one user's events are read (and streamed) in order; in the
    OUTBOX partition of the SyncIndex by creation time, for the sweep."""
    return {
        "pk": {"S": f"OUTBOX#{event.user_id}"},
        "sk": {"S": event.key},
        "detailType": {"S": event.detail_type},
        "event": {"S": json.dumps(event.event, separators=(",", ":"), sort_keys=True)},
        "createdAt": {"N": repr(event.created_at)},
        "attempts": {"N": str(event.attempts)},
        "syncPk": {"S": OUTBOX_PK},
        "syncDue": {"N": repr(event.created_at)},
    }


def _outbox_event(item: dict[str, Any]) -> OutboxEvent:
    data = _plain(item)
    return OutboxEvent(
        user_id=str(data["pk"]).removeprefix("OUTBOX#"),
        key=str(data["sk"]),
        detail_type=str(data["detailType"]),
        event=json.loads(data["event"]),
        created_at=float(data["createdAt"]),
        attempts=int(data.get("attempts", 0)),
    )


# ------------------------------------------------------------------------------------------- bulk jobs
# JOB#<id> / JOB: the job; JOB#<id> / ITEM#<userId>: its items; JOB#<id> / COUNT#<nn>: its counts,
# split in shards; JOBKEY#<creator> / KEY#<key>: an Idempotency-Key; JOBS#<owner> / <createdAt>#<id>:
# the lists of jobs (a creator's, and everyone's under "*"). Every one carries ``ttl`` (retention).
_JOB_MUTABLE = ("status", "started_at", "finished_at")


def _request_key_key(scope: str, caller: str, key: str) -> dict[str, Any]:
    """REQKEY#<scope>#<caller> / KEY#<key>: an ``Idempotency-Key`` of a route other than bulk jobs."""
    return {"pk": {"S": f"REQKEY#{scope}#{caller}"}, "sk": {"S": f"KEY#{key}"}}


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}


def _job_item_key(job_id: str, user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": f"ITEM#{user_id}"}}


def _job_record(job: BulkJob) -> dict[str, Any]:
    fixed = {k: v for k, v in job.__dict__.items() if k not in _JOB_MUTABLE}
    item: dict[str, Any] = {
        **_job_key(job.id),
        "job": {"S": json.dumps(fixed, separators=(",", ":"), sort_keys=True)},
        "status": {"S": job.status},
        "ttl": {"N": str(job.expires_at)},
    }
    return item


def _job_from(item: dict[str, Any]) -> BulkJob:
    fixed = json.loads(item["job"]["S"])
    return BulkJob(
        **fixed,
        status=item["status"]["S"],
        started_at=item["startedAt"]["S"] if "startedAt" in item else None,
        finished_at=item["finishedAt"]["S"] if "finishedAt" in item else None,
    )


def _bulk_item(item: dict[str, Any]) -> BulkItem:
    return BulkItem(
        job_id=item["pk"]["S"].removeprefix("JOB#"),
        user_id=item["sk"]["S"].removeprefix("ITEM#"),
        status=item["status"]["S"],
        code=item["code"]["S"] if "code" in item else None,
        detail=item["detail"]["S"] if "detail" in item else None,
    )


def _delete_expired_link(table: str, token_hash: str, cutoff: int) -> dict[str, Any]:
    return {
        "TableName": table,
        "Key": _link_key(token_hash),
        "ConditionExpression": "expAt < :cutoff",
        "ExpressionAttributeValues": {":cutoff": {"N": str(cutoff)}},
    }


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Raise ValueError for a cursor this store did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(key, dict) or set(key) != {"pk", "sk"}:
        raise ValueError("invalid cursor")
    if not all(isinstance(v, dict) and set(v) == {"S"} and isinstance(v["S"], str) for v in key.values()):
        raise ValueError("invalid cursor")
    return key


class DynamoStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    # -------------------------------------------------------------------------------- reads
    def get_user(self, user_id: str) -> User | None:
        resp = self._call("get_item", TableName=self._table, Key=_user_key(user_id), ConsistentRead=True)
        item = resp.get("Item")
        return user_from_item(item) if item else None

    def get_users(self, user_ids: Iterable[str]) -> dict[str, User]:
        """Several users, one round trip per 100 (strongly consistent)."""
        ids = list(dict.fromkeys(user_ids))
        if len(ids) == 1:
            user = self.get_user(ids[0])
            return {user.id: user} if user else {}
        users = (user_from_item(item) for item in self._batch_get([_user_key(i) for i in ids]))
        return {user.id: user for user in users}

    def _batch_get(self, keys: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items at ``keys`` that exist (strongly consistent), 100 keys a request."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), _BATCH_GET_MAX):
            request = {
                self._table: {"Keys": list(keys[start : start + _BATCH_GET_MAX]), "ConsistentRead": True}
            }
            self._until_processed(
                "batch_get_item",
                request,
                "UnprocessedKeys",
                lambda resp: items.extend(resp.get("Responses", {}).get(self._table, [])),
            )
        return items

    def _batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        """Put and delete requests, 25 a request (not atomic: each item is written or deleted alone)."""
        for start in range(0, len(requests), _BATCH_WRITE_MAX):
            batch = {self._table: list(requests[start : start + _BATCH_WRITE_MAX])}
            self._until_processed("batch_write_item", batch, "UnprocessedItems")

    def _until_processed(
        self,
        operation: str,
        request: dict[str, Any],
        leftover: str,
        answered: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Send a batch, then what DynamoDB left unprocessed with exponential backoff (as it asks); 503
        (``StoreUnavailable``) when some is still left after ``_BATCH_ATTEMPTS`` requests."""
        for attempt in range(_BATCH_ATTEMPTS):
            resp = self._call(operation, RequestItems=request)
            if answered is not None:
                answered(resp)
            request = resp.get(leftover) or {}
            if not request:
                return
            if attempt + 1 < _BATCH_ATTEMPTS:
                time.sleep(min(1.0, 0.05 * 2**attempt))
        raise StoreUnavailable(f"{operation}: items left unprocessed")

    def user_id_for_email(self, email: str) -> str | None:
        resp = self._call("get_item", TableName=self._table, Key=_email_key(email), ConsistentRead=True)
        item = resp.get("Item")
        return str(item["userId"]["S"]) if item else None

    def get_link(self, token_hash: str) -> Link | None:
        resp = self._call("get_item", TableName=self._table, Key=_link_key(token_hash), ConsistentRead=True)
        item = resp.get("Item")
        if not item:
            return None
        data = _plain(item)
        return Link(
            token_hash=token_hash,
            purpose=data["purpose"],
            user_id=data["userId"],
            expires_at=int(data["expiresAt"]),
            created_at=int(data["createdAt"]),
            address_hash=data.get("addressHash"),
            status=data.get("status", "active"),
            claim_owner=data.get("claimOwner"),
            claim_until=int(data.get("claimUntil") or 0),
            ref=data.get("ref"),
        )

    def audit_page(self, user_id: str, limit: int, cursor: str | None) -> Page:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :audit)",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}, ":audit": {"S": "AUDIT#"}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            start = decode_cursor(cursor)
            if start["pk"]["S"] != f"USER#{user_id}" or not start["sk"]["S"].startswith("AUDIT#"):
                raise ValueError("invalid cursor")
            kwargs["ExclusiveStartKey"] = start
        resp = self._call("query", **kwargs)
        items = [_plain(i) for i in resp.get("Items", [])]
        last = resp.get("LastEvaluatedKey")
        return Page(
            items=[
                {
                    "at": i["at"],
                    "actor": i["actor"],
                    "action": i["action"],
                    "changes": i.get("changes", []),
                    "requestId": i.get("requestId"),
                    **({"jobId": i["jobId"]} if i.get("jobId") else {}),
                }
                for i in items
            ],
            cursor=_encode_cursor(last) if last else None,
        )

    # -------------------------------------------------------------------------------- the commit
    def transact(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        kwargs: dict[str, Any] = {
            "TransactItems": [self.write_request(op) for op in ops],
            # botocore retries a timed-out call with the same token: DynamoDB answers the first
            # outcome instead of applying (or refusing) it again
            "ClientRequestToken": uuid.uuid4().hex,
        }
        try:
            self._client.transact_write_items(**kwargs)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get("CancellationReasons", [])
            for op, reason in zip(ops, reasons, strict=False):
                if reason.get("Code") == "ConditionalCheckFailed":
                    raise ConditionFailed(op.label) from None
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                raise ConditionFailed("transaction-conflict") from None
            raise StoreUnavailable("transaction cancelled") from None
        except self._client.exceptions.ClientError as exc:
            raise self._translate(exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "urllib3")):
                raise StoreUnavailable(type(exc).__name__) from None
            raise

    def write_request(self, op: Op) -> dict[str, Any]:
        """The ``TransactWriteItems`` item of one op (the bench loads tables with it too)."""
        t = self._table
        match op:
            case UpdateUser():
                return {"Update": _update_user(t, op)}
            case SetLinks():
                return _set_links(t, op)
            case CreateUser(user=user, sync=sync, lease=lease, due=due):
                item = {**_user_key(user.id), **_user_item(user)}
                if sync:  # the sync marker of a new user, as ``_update_user`` writes it
                    item.update(
                        {
                            "syncPk": {"S": SYNC_PK},
                            "syncDue": {"N": repr(due)},
                            "syncVersion": {"N": str(user.version)},
                            "syncAttempts": {"N": "0"},
                            "syncFields": {"SS": sorted(sync)},
                        }
                    )
                if lease is not None:
                    item.update({"leaseOwner": {"S": lease.owner}, "leaseUntil": {"N": repr(lease.until)}})
                return {
                    "Put": {"TableName": t, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
                }
            case DeleteUser(user=user):
                return {
                    "Delete": {
                        "TableName": t,
                        "Key": _user_key(user.id),
                        "ConditionExpression": "version = :expected",
                        "ExpressionAttributeValues": {":expected": {"N": str(user.version)}},
                    }
                }
            case ClaimEmail(email=email, user_id=user_id):
                return {
                    "Put": {
                        "TableName": t,
                        "Item": {**_email_key(email), "userId": {"S": user_id}},
                        "ConditionExpression": "attribute_not_exists(pk) OR userId = :uid",
                        "ExpressionAttributeValues": {":uid": {"S": user_id}},
                    }
                }
            case ReleaseEmail(email=email, user_id=user_id):
                return {
                    "Delete": {
                        "TableName": t,
                        "Key": _email_key(email),
                        "ConditionExpression": "attribute_not_exists(pk) OR userId = :uid",
                        "ExpressionAttributeValues": {":uid": {"S": user_id}},
                    }
                }
            case AccountExists(account_id=account_id):
                return {
                    "ConditionCheck": {
                        "TableName": t,
                        "Key": _account_key(account_id),
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                }
            case PutAudit(entry=entry, keep=keep):
                item = _audit_item(entry)
                if keep:
                    item[_KEEP_ATTR] = {"BOOL": True}
                return {
                    "Put": {"TableName": t, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}
                }
            case PutLink(link=link, ttl=ttl):
                return {
                    "Put": {
                        "TableName": t,
                        "Item": _link_item(link, ttl),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            case UseLink(token_hash=token_hash, now=now, claim=claim):
                condition = "attribute_exists(pk) AND #s = :active AND expiresAt > :now"
                values = {":used": {"S": "used"}, ":active": {"S": "active"}, ":now": {"N": str(now)}}
                if claim is not None:
                    condition += " AND claimOwner = :claim"
                    values[":claim"] = {"S": claim}
                return {
                    "Update": {
                        "TableName": t,
                        "Key": _link_key(token_hash),
                        "UpdateExpression": (
                            "SET #s = :used, usedAt = :now REMOVE claimOwner, claimUntil, syncPk, syncDue"
                        ),
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": values,
                    }
                }
            case DeleteLink(token_hash=token_hash):
                return {"Delete": {"TableName": t, "Key": _link_key(token_hash)}}
            case DeleteExpiredLink(token_hash=token_hash, cutoff=cutoff):
                return {"Delete": _delete_expired_link(t, token_hash, cutoff)}
            case PutTombstone():
                return {"Put": {"TableName": t, "Item": _tombstone_item(op)}}
            case PutEvent(event=event):
                return {"Put": {"TableName": t, "Item": _outbox_item(event)}}
            case PutInvitation(invitation=inv, ttl=ttl, expected_token=expected):
                put: dict[str, Any] = {"TableName": t, "Item": _invitation_item(inv, ttl)}
                if expected is None:
                    put["ConditionExpression"] = "attribute_not_exists(pk)"
                else:
                    put["ConditionExpression"] = "tokenHash = :expected"
                    put["ExpressionAttributeValues"] = {":expected": {"S": expected}}
                return {"Put": put}
            case DeleteInvitation(invitation_id=iid, token_hash=token_hash):
                return {
                    "Delete": {
                        "TableName": t,
                        "Key": _invitation_key(iid),
                        "ConditionExpression": "tokenHash = :expected",
                        "ExpressionAttributeValues": {":expected": {"S": token_hash}},
                    }
                }
            case PutMember(account_id=account_id, user=user):
                return {"Put": {"TableName": t, "Item": _member_item(account_id, user)}}
            case DeleteMember(account_id=account_id, user_id=user_id):
                return {"Delete": {"TableName": t, "Key": _member_key(account_id, user_id)}}
            case AdjustCounts():
                return {"Update": _adjust_counts(t, op)}
            case AdjustAdminCount(delta=delta):
                return {"Update": _adjust_admin_count(t, delta)}
            case PutJob(job=job):
                return {
                    "Put": {
                        "TableName": t,
                        "Item": _job_record(job),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            case ClaimRequestKey():
                return {
                    "Put": {
                        "TableName": t,
                        "Item": {
                            **_request_key_key(op.scope, op.caller, op.key),
                            "target": {"S": op.target},
                            "bodyHash": {"S": op.body_hash},
                            "expiresAt": {"N": str(op.expires_at)},
                            "ttl": {"N": str(op.expires_at)},
                        },
                        # a claim that ended but DynamoDB's TTL has not removed yet is free again
                        "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
                        "ExpressionAttributeValues": {":now": {"N": str(op.now)}},
                    }
                }
            case ClaimJobKey(created_by=created_by, key=key, job_id=job_id, expires_at=expires_at):
                return {
                    "Put": {
                        "TableName": t,
                        "Item": {
                            "pk": {"S": f"JOBKEY#{created_by}"},
                            "sk": {"S": f"KEY#{key}"},
                            "jobId": {"S": job_id},
                            "ttl": {"N": str(expires_at)},
                        },
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            case PutJobEntry(owner=owner, job=job):
                return {
                    "Put": {
                        "TableName": t,
                        "Item": {
                            "pk": {"S": f"JOBS#{owner}"},
                            "sk": {"S": f"{job.created_at}#{job.id}"},
                            "jobId": {"S": job.id},
                            "ttl": {"N": str(job.expires_at)},
                        },
                    }
                }
            case RecordJobItem(item=item, expires_at=expires_at):
                record = {
                    "pk": {"S": f"USER#{item.user_id}"},
                    "sk": {"S": f"{_JOB_ITEM_RECORD}{item.job_id}"},
                    "jobId": {"S": item.job_id},
                    "status": {"S": item.status},
                    "ttl": {"N": str(expires_at)},
                    **{
                        name: {"S": v}
                        for name in ("code", "detail")
                        if (v := getattr(item, name)) is not None
                    },
                }
                return {"Put": {"TableName": t, "Item": record}}
            case FinishItem(item=item):
                item_values: dict[str, Any] = {":s": {"S": item.status}, ":pending": {"S": "pending"}}
                sets = ["#s = :s"]
                for name in ("code", "detail"):
                    field_value = getattr(item, name)
                    if field_value is not None:
                        item_values[f":{name}"] = {"S": field_value}
                        sets.append(f"{name} = :{name}")
                return {
                    "Update": {
                        "TableName": t,
                        "Key": _job_item_key(item.job_id, item.user_id),
                        "UpdateExpression": "SET " + ", ".join(sets),
                        "ConditionExpression": "#s = :pending",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": item_values,
                    }
                }
            case CountItem(job_id=job_id, user_id=user_id, status=status, expires_at=expires_at):
                return {
                    "Update": {
                        "TableName": t,
                        "Key": {
                            "pk": {"S": f"JOB#{job_id}"},
                            "sk": {"S": f"COUNT#{bulk_shard(user_id):02d}"},
                        },
                        "UpdateExpression": "ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
                        "ExpressionAttributeNames": {"#n": status, "#ttl": "ttl"},
                        "ExpressionAttributeValues": {":one": {"N": "1"}, ":ttl": {"N": str(expires_at)}},
                    }
                }
            case SetJobStatus(job_id=job_id, status=status, current=current, at=at):
                names = {"#s": "status"}
                job_values: dict[str, Any] = {":s": {"S": status}, ":at": {"S": at}}
                allowed = []
                for i, value in enumerate(current):
                    job_values[f":c{i}"] = {"S": value}
                    allowed.append(f":c{i}")
                stamp = (
                    "startedAt = if_not_exists(startedAt, :at)" if status == "running" else "finishedAt = :at"
                )
                return {
                    "Update": {
                        "TableName": t,
                        "Key": _job_key(job_id),
                        "UpdateExpression": f"SET #s = :s, {stamp}",
                        "ConditionExpression": f"#s IN ({', '.join(allowed)})",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": job_values,
                    }
                }
            case RecordLink(user_id=user_id, token_hash=token_hash, ttl=ttl, ref=ref):
                # in the user's partition (erasure reads it), named by the link's hash only
                item = {
                    "pk": {"S": f"USER#{user_id}"},
                    "sk": {"S": f"{_LINK_RECORD}{token_hash}"},
                    "ttl": {"N": str(ttl)},
                    **({"ref": {"S": ref}} if ref else {}),
                }
                return {"Put": {"TableName": t, "Item": item}}
            case NoUser(user_id=user_id):
                return {
                    "ConditionCheck": {
                        "TableName": t,
                        "Key": _user_key(user_id),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
        raise TypeError(f"not an op of this store: {type(op).__name__}")

    # -------------------------------------------------------------------------------- invitations
    def get_invitation(self, invitation_id: str) -> Invitation | None:
        if split_invitation_id(invitation_id) is None:
            return None
        resp = self._call(
            "get_item", TableName=self._table, Key=_invitation_key(invitation_id), ConsistentRead=True
        )
        item = resp.get("Item")
        return _invitation_from_item(item) if item else None

    def user_invitations(self, user_id: str) -> list[Invitation]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :rec)",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}, ":rec": {"S": _LINK_RECORD}},
            "ProjectionExpression": "#ref",
            "ExpressionAttributeNames": {"#ref": "ref"},
            "ConsistentRead": True,
        }
        ids: list[str] = []
        while True:
            resp = self._call("query", **kwargs)
            ids += _invitation_refs(resp.get("Items", []))
            if not resp.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        keys = [_invitation_key(iid) for iid in sorted(set(ids))]
        found = (_invitation_from_item(item) for item in self._batch_get(keys))
        return sorted((inv for inv in found if inv.user_id == user_id), key=lambda inv: inv.id)

    def account_invitations(
        self, account_id: str, limit: int, after: str | None = None
    ) -> tuple[list[Invitation], bool]:
        # from ``after`` (inclusive, then left out) to the end of the INVITATION# keys
        start = _invitation_key(after)["sk"]["S"] if after is not None else "INVITATION#"
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :start AND :end",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"ACCOUNT#{account_id}"},
                ":start": {"S": start},
                ":end": {"S": "INVITATION$"},  # '$' follows '#': past every invitation's key
            },
            "ConsistentRead": True,
        }
        found: list[Invitation] = []
        while True:
            resp = self._call("query", Limit=limit + 1 - len(found), **kwargs)
            found += [_invitation_from_item(i) for i in resp.get("Items", []) if i["sk"]["S"] != start]
            more = bool(resp.get("LastEvaluatedKey"))
            if len(found) > limit or not more:
                return found[:limit], len(found) > limit or more
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # -------------------------------------------------------------------------------- bulk jobs
    def put_job_items(self, job: BulkJob, user_ids: Sequence[str]) -> None:
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        **_job_item_key(job.id, user_id),
                        "status": {"S": "pending"},
                        "ttl": {"N": str(job.expires_at)},
                    }
                }
            }
            for user_id in dict.fromkeys(user_ids)
        ]
        self._batch_write(requests)

    def get_job(self, job_id: str) -> BulkJob | None:
        resp = self._call("get_item", TableName=self._table, Key=_job_key(job_id), ConsistentRead=True)
        item = resp.get("Item")
        return _job_from(item) if item else None

    def request_key(self, scope: str, caller: str, key: str) -> RequestKey | None:
        resp = self._call(
            "get_item", TableName=self._table, Key=_request_key_key(scope, caller, key), ConsistentRead=True
        )
        item = resp.get("Item")
        if not item:
            return None
        return RequestKey(item["target"]["S"], item["bodyHash"]["S"], int(item["expiresAt"]["N"]))

    def job_for_key(self, created_by: str, key: str) -> str | None:
        resp = self._call(
            "get_item",
            TableName=self._table,
            Key={"pk": {"S": f"JOBKEY#{created_by}"}, "sk": {"S": f"KEY#{key}"}},
            ConsistentRead=True,
        )
        item = resp.get("Item")
        return str(item["jobId"]["S"]) if item else None

    def jobs_page(
        self, created_by: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkJob], str | None]:
        pk = f"JOBS#{created_by or '*'}"
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ScanIndexForward": False,
            "Limit": limit,
            "ConsistentRead": True,
        }
        if cursor:
            start = decode_cursor(cursor)
            if start.get("pk", {}).get("S") != pk:
                raise ValueError("invalid cursor")
            kwargs["ExclusiveStartKey"] = start
        resp = self._call("query", **kwargs)
        ids = [str(i["jobId"]["S"]) for i in resp.get("Items", [])]
        jobs = (_job_from(item) for item in self._batch_get([_job_key(i) for i in ids]))
        found = {job.id: job for job in jobs}
        last = resp.get("LastEvaluatedKey")
        return [found[i] for i in ids if i in found], (_encode_cursor(last) if last else None)

    def job_counts(self, job_id: str) -> dict[str, int]:
        resp = self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :count)",
            ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":count": {"S": "COUNT#"}},
            ConsistentRead=True,
            Limit=BULK_COUNT_SHARDS,
        )
        counts: dict[str, int] = {}
        for item in resp.get("Items", []):
            for name in ("succeeded", "skipped", "failed"):
                if name in item:
                    counts[name] = counts.get(name, 0) + int(item[name]["N"])
        return counts

    def job_items(self, job_id: str, user_ids: Sequence[str]) -> dict[str, BulkItem]:
        keys = [_job_item_key(job_id, u) for u in dict.fromkeys(user_ids)]
        items = (_bulk_item(item) for item in self._batch_get(keys))
        return {item.user_id: item for item in items}

    def user_job_items(self, user_id: str) -> list[BulkItem]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :rec)",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}, ":rec": {"S": _JOB_ITEM_RECORD}},
            "ConsistentRead": True,
        }
        found: list[BulkItem] = []
        while True:
            resp = self._call("query", **kwargs)
            for i in resp.get("Items", []):
                found.append(
                    BulkItem(
                        job_id=str(i["jobId"]["S"]),
                        user_id=user_id,
                        status=str(i["status"]["S"]),
                        code=i["code"]["S"] if "code" in i else None,
                        detail=i["detail"]["S"] if "detail" in i else None,
                    )
                )
            if not resp.get("LastEvaluatedKey"):
                return found
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def job_items_page(
        self, job_id: str, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[BulkItem], str | None]:
        pk = f"JOB#{job_id}"
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :item)",
            "ExpressionAttributeValues": {":pk": {"S": pk}, ":item": {"S": "ITEM#"}},
            "Limit": limit,
            "ConsistentRead": True,
        }
        if status:
            kwargs["FilterExpression"] = "#s = :s"
            kwargs["ExpressionAttributeNames"] = {"#s": "status"}
            kwargs["ExpressionAttributeValues"][":s"] = {"S": status}
        if cursor:
            start = decode_cursor(cursor)
            if start.get("pk", {}).get("S") != pk or not str(start.get("sk", {}).get("S", "")).startswith(
                "ITEM#"
            ):
                raise ValueError("invalid cursor")
            kwargs["ExclusiveStartKey"] = start
        resp = self._call("query", **kwargs)
        last = resp.get("LastEvaluatedKey")
        return [_bulk_item(i) for i in resp.get("Items", [])], (_encode_cursor(last) if last else None)

    # -------------------------------------------------------------------------------- seeding
    def put_account(self, account_id: str, name: str) -> None:
        # lp/le: the account is listed (GET /accounts) from the email index's ACCOUNTS partition
        item = {
            **_account_key(account_id),
            "name": {"S": name},
            "lp": {"S": ACCOUNTS_LP},
            "le": {"S": account_id},
        }
        self._call("put_item", TableName=self._table, Item=item)

    def put_user(self, user: User) -> None:
        """Unconditional write of a user and its email reservation (seeding and imports), with its
        membership items, the account counts (moved from the user as stored before, if any) and the
        count of active platform administrators (not for concurrent use)."""
        item = {**_user_key(user.id), **_user_item(user)}
        before = self.get_user(user.id)
        items: list[Any] = [
            {"Put": {"TableName": self._table, "Item": item}},
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {**_email_key(user.email), "userId": {"S": user.id}},
                }
            },
            *[self.write_request(op) for op in index_ops(before, user)],
        ]
        delta = int(_is_active_admin(user)) - int(_is_active_admin(before))
        if delta:
            update = _adjust_admin_count(self._table, delta)
            update.pop("ConditionExpression", None)
            update["ExpressionAttributeValues"].pop(":min", None)
            items.append({"Update": update})
        self._call("transact_write_items", TransactItems=items)

    def active_admin_count(self) -> int:
        resp = self._call("get_item", TableName=self._table, Key=_admin_count_key(), ConsistentRead=True)
        return int(resp.get("Item", {}).get("count", {}).get("N", "0"))

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
        """One Query of a list GSI: a key condition only (never a Scan or a filter expression)."""
        name, part_attr, sort_attr = LIST_GSIS[index]
        partition = f"{scope}#{status}" if index == "status" else scope
        values: dict[str, Any] = {":p": {"S": partition}}
        condition = "#p = :p"
        if prefix:
            low = prefix if after is None or after < prefix else after + "\x01"  # next key after it
            if low > prefix + _PREFIX_END:
                return ListRead()
            condition += " AND #s BETWEEN :lo AND :hi"
            values[":lo"] = {"S": low}
            values[":hi"] = {"S": prefix + _PREFIX_END}
        elif after is not None:
            condition += f" AND #s {'<' if descending else '>'} :after"
            values[":after"] = {"S": after}
        resp = self._call(
            "query",
            TableName=self._table,
            IndexName=name,
            KeyConditionExpression=condition,
            ExpressionAttributeNames={"#p": part_attr, **({"#s": sort_attr} if "#s" in condition else {})},
            ExpressionAttributeValues=values,
            ScanIndexForward=not descending,
            Limit=limit,
            ReturnConsumedCapacity="TOTAL",
        )
        entries = []
        for raw in resp.get("Items", []):
            data = _plain(raw)
            key = str(data[sort_attr])
            entries.append(
                ListEntry(
                    user_id=key_user_id(key),
                    key=key,
                    status=str(data.get("status", "")),
                    profile=str(data.get("profile", "")),
                    email_verified=bool(data.get("emailVerified", False)),
                    updated_at=str(data.get("updatedAt", "")),
                    roles=tuple(data.get("roles") or ()),
                )
            )
        units = float((resp.get("ConsumedCapacity") or {}).get("CapacityUnits") or 0)
        return ListRead(entries, more="LastEvaluatedKey" in resp, units=units)

    def get_accounts(self, account_ids: Iterable[str]) -> dict[str, Account]:
        ids = list(dict.fromkeys(account_ids))
        names: dict[str, str] = {}
        counts: dict[str, dict[str, int]] = {}
        for item in self._batch_get([key for a in ids for key in (_account_key(a), _counts_key(a))]):
            data = _plain(item)
            account_id = str(data["pk"]).removeprefix("ACCOUNT#")
            if data["sk"] == "ACCOUNT":
                names[account_id] = str(data.get("name", account_id))
            else:
                counts[account_id] = {
                    k: int(v) for k, v in data.items() if k not in ("pk", "sk") and isinstance(v, int)
                }
        return {a: Account(a, names[a], counts.get(a, {})) for a in ids if a in names}

    def account_ids(self, after: str | None, limit: int) -> tuple[list[str], bool]:
        values: dict[str, Any] = {":p": {"S": ACCOUNTS_LP}}
        condition = "lp = :p"
        if after is not None:
            condition += " AND le > :after"
            values[":after"] = {"S": after}
        resp = self._call(
            "query",
            TableName=self._table,
            IndexName=LIST_GSIS["email"][0],
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            Limit=limit,
        )
        ids = [str(i["le"]["S"]) for i in resp.get("Items", [])]
        return ids, "LastEvaluatedKey" in resp

    def recount_account(self, account_id: str) -> dict[str, int]:
        """Exact counts of an account from its membership items and the users' records (a repair).

        Run it when no membership or status of the account changes (a change committed between the
        read and the write would be overwritten); it is idempotent.
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :m)",
            "ExpressionAttributeValues": {":pk": {"S": f"ACCOUNT#{account_id}"}, ":m": {"S": "MEMBER#"}},
            "ProjectionExpression": "sk",
            "ConsistentRead": True,
        }
        user_ids: list[str] = []
        while True:
            resp = self._call("query", **kwargs)
            user_ids += [str(i["sk"]["S"]).removeprefix("MEMBER#") for i in resp.get("Items", [])]
            if not resp.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        counts = dict.fromkeys(COUNTED_STATUSES, 0)
        for user in self.get_users(user_ids).values():
            if account_id in user.account_ids:
                for bucket in count_buckets(user):
                    counts[bucket] = counts.get(bucket, 0) + 1
        item = {**_counts_key(account_id), **{s: {"N": str(n)} for s, n in counts.items()}}
        self._call("put_item", TableName=self._table, Item=item)
        return counts

    def list_pass(self, limit: int, cursor: str | None) -> ListPass:
        """A Scan segment (``Limit`` = ``limit`` items read) returning user and membership items, then
        the membership items of its users (strongly consistent batch reads) to compare with
        ``_member_item``; a user item's own list attributes are compared with ``_list_attrs``."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "Limit": limit,
            "FilterExpression": (
                "(sk = :profile AND begins_with(pk, :user))"
                " OR (begins_with(sk, :member) AND begins_with(pk, :acc))"
            ),
            "ExpressionAttributeValues": {
                ":profile": {"S": "PROFILE"},
                ":user": {"S": "USER#"},
                ":member": {"S": "MEMBER#"},
                ":acc": {"S": "ACCOUNT#"},
            },
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = decode_cursor(cursor)
        resp = self._call("scan", **kwargs)
        users: list[tuple[User, bool]] = []
        members: list[tuple[str, str]] = []
        for item in resp.get("Items", []):
            if item["sk"]["S"] == "PROFILE":
                user = user_from_item(item)
                listed = {k: _from_av(item[k]) if k in item else None for k in _LIST_ATTRS}
                users.append((user, listed == _list_attrs(user, LIST_ALL)))
            else:
                account_id = str(item["pk"]["S"]).removeprefix("ACCOUNT#")
                members.append((account_id, str(item["sk"]["S"]).removeprefix("MEMBER#")))
        wanted = {
            (f"ACCOUNT#{a}", f"MEMBER#{user.id}"): _member_item(a, user)
            for user, _ in users
            for a in sorted(user.account_ids)
        }
        keys = [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in wanted]
        stored = {(item["pk"]["S"], item["sk"]["S"]): item for item in self._batch_get(keys)}
        passed = []
        for user, listed_in_step in users:
            out = set() if listed_in_step else {LIST_ALL}
            for a in user.account_ids:
                key = (f"ACCOUNT#{a}", f"MEMBER#{user.id}")
                if key not in stored or _plain(stored[key]) != _plain(wanted[key]):
                    out.add(account_scope(a))
            passed.append(PassedUser(user, frozenset(out)))
        last = resp.get("LastEvaluatedKey")
        return ListPass(passed, members, _encode_cursor(last) if last else None)

    # -------------------------------------------------------------------------------- sync markers
    def acquire_lease(
        self, user_id: str, owner: str, now: float, until: float, *, due_only: bool
    ) -> tuple[SyncState, User | None] | None:
        """Take the sync lease of a user (or tombstone) whose marker is pending. None if not ours to take.

        Returns the marker and, for a user that still exists, the record as it is now.
        """
        for key, deleted in ((_user_key(user_id), False), (_tombstone_key(user_id), True)):
            condition = "syncPk = :sync AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)"
            if due_only:
                condition += " AND syncDue <= :now"
            try:
                resp = self._call(
                    "update_item",
                    TableName=self._table,
                    Key=key,
                    UpdateExpression="SET leaseOwner = :owner, leaseUntil = :until",
                    ConditionExpression=condition,
                    ExpressionAttributeValues={
                        ":sync": {"S": SYNC_PK},
                        ":owner": {"S": owner},
                        ":now": {"N": repr(now)},
                        ":until": {"N": repr(until)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except self._client.exceptions.ConditionalCheckFailedException:
                continue
            data = _plain(resp["Attributes"])
            state = SyncState(
                user_id=user_id,
                version=int(data.get("syncVersion", data.get("version", 0))),
                fields=frozenset(data.get("syncFields") or ()),
                failed=frozenset(data.get("syncFailed") or ()),
                attempts=int(data.get("syncAttempts", 0)),
                lease_owner=owner,
                lease_until=until,
                deleted=deleted,
            )
            return state, (None if deleted else user_from_item(resp["Attributes"]))
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
        """End the marker once Auth0 holds ``version``; ``failed`` fields stay visible (FAILED partition).

        A finished deletion removes the tombstone (its audit entry stays). ``event`` is written in the
        same transaction.
        """
        key = _tombstone_key(user_id) if deleted else _user_key(user_id)
        values: dict[str, Any] = {":v": {"N": str(version)}, ":owner": {"S": owner}}
        common = "syncDue, syncVersion, syncFields, syncAttempts, leaseOwner, leaseUntil"
        try:
            if deleted and not failed:
                self._settle_write(
                    "Delete",
                    {
                        "TableName": self._table,
                        "Key": key,
                        "ConditionExpression": "syncVersion = :v AND leaseOwner = :owner",
                        "ExpressionAttributeValues": values,
                    },
                    event,
                )
                return True
            if failed:
                # syncDue stays (0): it is the index's sort key, without it the item leaves the index
                expression = (
                    "SET idpSync = :failed, syncPk = :fpk, syncFailed = :f, syncDue = :zero"
                    " REMOVE syncVersion, syncFields, syncAttempts, leaseOwner, leaseUntil"
                )
                values.update(
                    {
                        ":failed": {"S": "failed"},
                        ":fpk": {"S": FAILED_PK},
                        ":f": _to_av(failed),
                        ":zero": {"N": "0"},
                    }
                )
            else:
                expression = f"SET idpSync = :synced REMOVE syncPk, syncFailed, {common}"
                values[":synced"] = {"S": "synced"}
            self._settle_write(
                "Update",
                {
                    "TableName": self._table,
                    "Key": key,
                    "UpdateExpression": expression,
                    "ConditionExpression": "syncVersion = :v AND leaseOwner = :owner",
                    "ExpressionAttributeValues": values,
                },
                event,
            )
        except (self._client.exceptions.ConditionalCheckFailedException, ConditionFailed):
            return False
        return True

    def _settle_write(self, kind: str, request: dict[str, Any], event: OutboxEvent | None) -> None:
        """One conditional write, or with ``event`` a transaction of it and the event."""
        if event is None:
            self._call("delete_item" if kind == "Delete" else "update_item", **request)
            return
        items: list[Any] = [{kind: request}, self.write_request(PutEvent(event))]
        try:
            self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except self._client.exceptions.TransactionCanceledException:
            raise ConditionFailed("user") from None
        except self._client.exceptions.ClientError as exc:
            raise self._translate(exc) from None

    # -------------------------------------------------------------------------------- the outbox
    def outbox_users(self, created_before: float, limit: int) -> list[str]:
        resp = self._call(
            "query",
            TableName=self._table,
            IndexName=SYNC_INDEX,
            KeyConditionExpression="syncPk = :p AND syncDue < :before",
            ExpressionAttributeValues={":p": {"S": OUTBOX_PK}, ":before": {"N": repr(created_before)}},
            Limit=limit,
        )
        users = (str(i["pk"]["S"]).removeprefix("OUTBOX#") for i in resp.get("Items", []))
        return list(dict.fromkeys(users))

    def outbox_of(self, user_id: str, limit: int) -> list[OutboxEvent]:
        resp = self._call(
            "query",
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"OUTBOX#{user_id}"}},
            ConsistentRead=True,
            Limit=limit,
        )
        return [_outbox_event(item) for item in resp.get("Items", [])]

    def remove_events(self, events: Sequence[OutboxEvent]) -> None:
        keys = [{"pk": {"S": f"OUTBOX#{e.user_id}"}, "sk": {"S": e.key}} for e in events]
        self._batch_delete(keys)

    def count_publish_attempt(self, event: OutboxEvent) -> int:
        try:
            resp = self._call(
                "update_item",
                TableName=self._table,
                Key={"pk": {"S": f"OUTBOX#{event.user_id}"}, "sk": {"S": event.key}},
                UpdateExpression="ADD attempts :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="UPDATED_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return 0  # published by someone else meanwhile
        return int(resp["Attributes"]["attempts"]["N"])

    def defer_sync(
        self, user_id: str, owner: str, *, due: float, attempts: int, deleted: bool = False
    ) -> None:
        """Give the lease back after a failed push: the marker stays pending, due again at ``due``."""
        key = _tombstone_key(user_id) if deleted else _user_key(user_id)
        self._update_as_lease_owner(
            key,
            owner,
            "SET idpSync = :pending, syncAttempts = :n, syncDue = :due REMOVE leaseOwner, leaseUntil",
            {
                ":pending": {"S": "pending"},
                ":n": {"N": str(attempts)},
                ":due": {"N": repr(due)},
                ":owner": {"S": owner},
            },
        )

    def release_lease(self, user_id: str, owner: str, *, deleted: bool = False) -> None:
        key = _tombstone_key(user_id) if deleted else _user_key(user_id)
        self._update_as_lease_owner(key, owner, "REMOVE leaseOwner, leaseUntil", {":owner": {"S": owner}})

    def _update_as_lease_owner(
        self, key: dict[str, Any], owner: str, expression: str, values: dict[str, Any]
    ) -> None:
        """Update only while ``owner`` holds the lease; otherwise the new holder carries on."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._call(
                "update_item",
                TableName=self._table,
                Key=key,
                UpdateExpression=expression,
                ConditionExpression="leaseOwner = :owner",
                ExpressionAttributeValues=values,
            )

    def due_work(self, now: float, limit: int) -> list[DueWork]:
        """Pending markers due at ``now``, then reset-link claims that lapsed unfinished."""
        work: list[DueWork] = []
        for partition in (SYNC_PK, CLAIM_PK):
            if len(work) >= limit:
                break
            resp = self._call(
                "query",
                TableName=self._table,
                IndexName=SYNC_INDEX,
                KeyConditionExpression="syncPk = :p AND syncDue <= :now",
                ExpressionAttributeValues={":p": {"S": partition}, ":now": {"N": repr(now)}},
                Limit=limit - len(work),
            )
            for item in resp.get("Items", []):
                pk = str(item["pk"]["S"])
                if pk.startswith("USER#"):
                    work.append(DueWork("user", pk.removeprefix("USER#")))
                elif pk.startswith("LINK#"):
                    work.append(DueWork("link", pk.removeprefix("LINK#")))
        return work

    def oldest_due(self, now: float) -> float | None:
        """The smallest ``syncDue`` at or before ``now`` of each partition: one item read per partition
        (the SyncIndex is sorted by due time), whatever the backlog."""
        found: list[float] = []
        for partition in (SYNC_PK, CLAIM_PK):
            resp = self._call(
                "query",
                TableName=self._table,
                IndexName=SYNC_INDEX,
                KeyConditionExpression="syncPk = :p AND syncDue <= :now",
                ExpressionAttributeValues={":p": {"S": partition}, ":now": {"N": repr(now)}},
                Limit=1,
            )
            found += [float(i["syncDue"]["N"]) for i in resp.get("Items", [])]
        return min(found, default=None)

    def failed_syncs(self, limit: int) -> list[str]:
        resp = self._call(
            "query",
            TableName=self._table,
            IndexName=SYNC_INDEX,
            KeyConditionExpression="syncPk = :p",
            ExpressionAttributeValues={":p": {"S": FAILED_PK}},
            Limit=limit,
        )
        return [str(i["pk"]["S"]).removeprefix("USER#") for i in resp.get("Items", [])]

    def redrive_failed(self, user_id: str, now: float) -> bool:
        for key in (_user_key(user_id), _tombstone_key(user_id)):
            resp = self._call("get_item", TableName=self._table, Key=key, ConsistentRead=True)
            data = _plain(resp.get("Item") or {})
            failed = frozenset(data.get("syncFailed") or ())
            if not failed:
                continue
            target = int(data.get("syncVersion") or data.get("version") or 0)
            try:
                self._call(
                    "update_item",
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=(
                        "SET syncPk = :sync, syncDue = :now, syncAttempts = :zero, idpSync = :pending,"
                        " syncVersion = if_not_exists(syncVersion, :target)"
                        " ADD syncFields :f REMOVE syncFailed"
                    ),
                    ConditionExpression="syncFailed = :f",
                    ExpressionAttributeValues={
                        ":sync": {"S": SYNC_PK},
                        ":zero": {"N": "0"},
                        ":now": {"N": repr(now)},
                        ":pending": {"S": "pending"},
                        ":target": {"N": str(target)},
                        ":f": _to_av(failed),
                    },
                )
            except self._client.exceptions.ConditionalCheckFailedException:
                return False  # changed meanwhile: the writer re-queued it, or another re-drive did
            return True
        return False

    # -------------------------------------------------------------------------------- erasure
    def erase_deleted_user(self, user_id: str) -> int:
        """Delete every item left in a deleted user's partition but the tombstone and its audit entry.

        Older audit entries hold emails and names, so they go too, and so does every link recorded in
        the partition (``RecordLink``): superseded, used and expired ones too, which ``user.links`` no
        longer names, and the invitation a record names (its item holds the user id). Idempotent and
        resumable: a run after a crash deletes what the previous one left (a link and its invitation
        are deleted before its record). Does nothing while the user's record exists (this only ever
        finishes a deletion). Returns how many of the partition's items it deleted.
        """
        if self.get_user(user_id) is not None:
            return 0
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}},
            "ProjectionExpression": "pk, sk, #keep, #ref",
            "ExpressionAttributeNames": {"#keep": _KEEP_ATTR, "#ref": "ref"},
            "ConsistentRead": True,
        }
        erased = 0
        while True:
            resp = self._call("query", **kwargs)
            keys = [
                {"pk": i["pk"], "sk": i["sk"]}
                for i in resp.get("Items", [])
                if i["sk"]["S"] != "TOMBSTONE" and not i.get(_KEEP_ATTR, {}).get("BOOL", False)
            ]
            links = [
                _link_key(k["sk"]["S"].removeprefix(_LINK_RECORD))
                for k in keys
                if k["sk"]["S"].startswith(_LINK_RECORD)
            ]
            self._batch_delete(links)
            self._batch_delete([_invitation_key(iid) for iid in _invitation_refs(resp.get("Items", []))])
            self._batch_delete(keys)
            erased += len(keys)
            last = resp.get("LastEvaluatedKey")
            if not last:
                return erased
            kwargs["ExclusiveStartKey"] = last

    def delete_counters(self, counter_keys: Sequence[str]) -> None:
        keys = [{"pk": {"S": f"RATE#{k}"}, "sk": {"S": "RATE"}} for k in dict.fromkeys(counter_keys)]
        self._batch_delete(keys)

    def _batch_delete(self, keys: Sequence[dict[str, Any]]) -> None:
        self._batch_write([{"DeleteRequest": {"Key": key}} for key in keys])

    # -------------------------------------------------------------------------------- expiry (cleanup)
    def expired_links(self, cutoff: int, limit: int, start_key: dict[str, Any] | None = None) -> ExpiredPage:
        """One page of links that expired before ``cutoff``, read from the sparse ExpiryIndex.

        Only the index entries in ``expAt < cutoff`` are read (a key condition, never a Scan or a
        filter), so the cost follows the number of expired links, not the size of the table.
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": EXPIRY_INDEX,
            "KeyConditionExpression": "expPk = :exp AND expAt < :cutoff",
            "ExpressionAttributeValues": {":exp": {"S": EXP_PK}, ":cutoff": {"N": str(cutoff)}},
            "Limit": limit,
        }
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        resp = self._call("query", **kwargs)
        page = ExpiredPage(start_key=resp.get("LastEvaluatedKey") or None)
        for item in resp.get("Items", []):
            pk = str(item["pk"]["S"])
            if pk.startswith("LINK#") and item["sk"]["S"] == "LINK":
                page.links.append(ExpiredLinkRef(pk.removeprefix("LINK#"), int(item["expAt"]["N"])))
            else:
                page.others += 1
        return page

    def delete_expired_link(self, token_hash: str, cutoff: int) -> bool:
        """Delete one expired link on its own; False when the item is gone or not expired."""
        try:
            self._call("delete_item", **_delete_expired_link(self._table, token_hash, cutoff))
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -------------------------------------------------------------------------------- rate counters
    def incr_counter(self, counter_key: str, ttl: int) -> int:
        """Add one to a window's counter in one atomic UpdateItem and return the new count.

        ``counter_key`` must hold no personal data (``usermgmt.ratelimit`` passes a hash). ``ttl``
        (epoch seconds) lets DynamoDB drop the item after its window; it is set by the first hit only.
        """
        resp = self._call(
            "update_item",
            TableName=self._table,
            Key={"pk": {"S": f"RATE#{counter_key}"}, "sk": {"S": "RATE"}},
            UpdateExpression="ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
            ExpressionAttributeNames={"#n": "hits", "#ttl": "ttl"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":ttl": {"N": str(int(ttl))}},
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["hits"]["N"])

    def read_counter(self, counter_key: str) -> int:
        resp = self._call(
            "get_item",
            TableName=self._table,
            Key={"pk": {"S": f"RATE#{counter_key}"}, "sk": {"S": "RATE"}},
            ConsistentRead=True,
        )
        return int(resp.get("Item", {}).get("hits", {}).get("N", "0"))

    # -------------------------------------------------------------------------------- link claims
    def claim_link(self, token_hash: str, claim: str, now: int, until: int) -> bool:
        """Hold an active, unexpired link for one request until ``until`` (a lease, so a crash frees it).

        False when the link is gone, used, expired at ``now`` or held by someone else. The holder
        consumes it with ``UseLink`` or gives it back with ``release_link_claim``; a claim that is
        neither is due for the sync (CLAIM partition of the SyncIndex) once it lapses.
        """
        try:
            self._call(
                "update_item",
                TableName=self._table,
                Key=_link_key(token_hash),
                UpdateExpression=(
                    "SET claimOwner = :claim, claimUntil = :until, syncPk = :cpk, syncDue = :until"
                ),
                ConditionExpression=(
                    "attribute_exists(pk) AND #s = :active AND expiresAt > :now"
                    " AND (attribute_not_exists(claimUntil) OR claimUntil < :now)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":claim": {"S": claim},
                    ":until": {"N": str(until)},
                    ":cpk": {"S": CLAIM_PK},
                    ":active": {"S": "active"},
                    ":now": {"N": str(now)},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_link_claim(self, token_hash: str, claim: str) -> bool:
        """Give a held link back unused. Only the holder can: False (not an error) for anyone else."""
        try:
            self._call(
                "update_item",
                TableName=self._table,
                Key=_link_key(token_hash),
                UpdateExpression="REMOVE claimOwner, claimUntil, syncPk, syncDue",
                ConditionExpression="claimOwner = :claim",
                ExpressionAttributeValues={":claim": {"S": claim}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # -------------------------------------------------------------------------------- plumbing
    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self._client, operation)(**kwargs)
        except self._client.exceptions.ConditionalCheckFailedException:
            raise
        except self._client.exceptions.ClientError as exc:
            raise self._translate(exc) from None
        except Exception as exc:  # botocore transport errors (EndpointConnectionError, timeouts)
            if type(exc).__module__.startswith(("botocore", "urllib3")):
                raise StoreUnavailable(type(exc).__name__) from None
            raise
        return result

    @staticmethod
    def _translate(exc: Exception) -> StoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "Unknown")
        return StoreUnavailable(str(code))
