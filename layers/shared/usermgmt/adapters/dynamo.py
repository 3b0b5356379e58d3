"""DynamoDB store: the record of users, accounts, links, audit entries and rate counters.

Item shapes are private to this module (see docs/decisions.md, "Table layout"). The service composes
writes from ``Op`` values built by the ``op_*`` methods and commits them with ``transact`` in one
``TransactWriteItems``: a state change, its audit entry, its sync marker, its uniqueness items and
its links commit together or not at all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from usermgmt.models import Membership, User

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    DynamoDBClient = Any

SYNC_PK = "SYNC"
EXP_PK = "EXP"
SYNC_INDEX = "SyncIndex"
EXPIRY_INDEX = "ExpiryIndex"
# marks the audit entry a deletion leaves behind (kept when the partition is erased)
_KEEP_ATTR = "tombstone"
_BATCH_WRITE_MAX = 25
_BATCH_WRITE_ATTEMPTS = 5

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
    "version": "version",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
    "tokens_valid_after": "tokensValidAfter",
    "links": "links",
}


class StoreError(Exception):
    """Base of the store's own errors."""


class ConditionFailed(StoreError):
    """A transaction was refused because the condition of the op with ``label`` failed."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.label = label


class StoreUnavailable(StoreError):
    """DynamoDB could not be reached or throttled us past the retries; nothing was written."""


@dataclass(frozen=True)
class Op:
    """One item of a transaction. ``label`` names it in ``ConditionFailed``."""

    label: str
    request: dict[str, Any]


@dataclass(frozen=True)
class SyncMark:
    """Mark a user's Auth0 copy as behind. ``fields`` say what to push (profile, blocked, email, ...)."""

    fields: frozenset[str]


@dataclass(frozen=True)
class SyncState:
    user_id: str
    version: int
    fields: frozenset[str]
    attempts: int
    lease_owner: str | None
    lease_until: float
    deleted: bool


@dataclass(frozen=True)
class Link:
    token_hash: str
    purpose: str
    user_id: str
    expires_at: int
    created_at: int
    address_hash: str | None = None
    status: str = "active"  # active | used


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


@dataclass
class Page:
    items: list[dict[str, Any]] = field(default_factory=list)
    cursor: str | None = None


@dataclass(frozen=True)
class ExpiredLinkRef:
    """An ExpiryIndex entry of a link: the index is eventually consistent, the item may be gone."""

    token_hash: str
    expires_at: int


@dataclass
class ExpiredPage:
    """One page of the ExpiryIndex. ``start_key`` (None on the last page) reads the next one."""

    links: list[ExpiredLinkRef] = field(default_factory=list)
    start_key: dict[str, Any] | None = None
    # entries of other kinds of expiring items (not links): left to whoever owns them
    others: int = 0


def _user_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "PROFILE"}}


def _tombstone_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}, "sk": {"S": "TOMBSTONE"}}


def _email_key(email: str) -> dict[str, Any]:
    return {"pk": {"S": f"EMAIL#{email}"}, "sk": {"S": "EMAIL"}}


def _link_key(token_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"LINK#{token_hash}"}, "sk": {"S": "LINK"}}


def _account_key(account_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"ACCOUNT#{account_id}"}, "sk": {"S": "ACCOUNT"}}


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
    kwargs["lease_until"] = float(data.get("leaseUntil") or 0)
    return User(**kwargs)


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
        """Several users in one round trip (strongly consistent)."""
        ids = list(dict.fromkeys(user_ids))
        if len(ids) == 1:
            user = self.get_user(ids[0])
            return {user.id: user} if user else {}
        keys = [_user_key(i) for i in ids]
        found: dict[str, User] = {}
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        while request:
            resp = self._call("batch_get_item", RequestItems=request)
            for item in resp.get("Responses", {}).get(self._table, []):
                user = user_from_item(item)
                found[user.id] = user
            request = resp.get("UnprocessedKeys") or {}
        return found

    def user_id_for_email(self, email: str) -> str | None:
        resp = self._call("get_item", TableName=self._table, Key=_email_key(email), ConsistentRead=True)
        item = resp.get("Item")
        return str(item["userId"]["S"]) if item else None

    def account_exists(self, account_id: str) -> bool:
        resp = self._call("get_item", TableName=self._table, Key=_account_key(account_id))
        return "Item" in resp

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
                }
                for i in items
            ],
            cursor=_encode_cursor(last) if last else None,
        )

    # -------------------------------------------------------------------------------- ops
    def op_update_user(
        self,
        before: User,
        after: User,
        *,
        sync: SyncMark | None = None,
        lease: tuple[str, float, float] | None = None,
        label: str = "user",
    ) -> Op:
        """Write ``after`` over ``before``, on condition that nobody changed ``before.version``.

        ``sync`` sets the Auth0 sync marker (target version = ``after.version``); ``lease`` =
        (owner, now, until) also takes the sync lease when it is free.
        """
        names: dict[str, str] = {}
        values: dict[str, Any] = {":expected": {"N": str(before.version)}}
        sets: list[str] = []
        removes: list[str] = []
        adds: list[str] = []
        new_attrs = _user_attrs(after)
        old_attrs = _user_attrs(before)
        for i, (attr, value) in enumerate(new_attrs.items()):
            if attr == "id" or (value == old_attrs.get(attr) and attr != "version"):
                continue
            names[f"#a{i}"] = attr
            if value is None:
                removes.append(f"#a{i}")
            else:
                values[f":v{i}"] = _to_av(value)
                sets.append(f"#a{i} = :v{i}")
        condition = "version = :expected"
        if sync is not None:
            values.update(
                {
                    ":sync": {"S": SYNC_PK},
                    ":due": {"N": "0"},
                    ":target": {"N": str(after.version)},
                    ":zero": {"N": "0"},
                    ":fields": {"SS": sorted(sync.fields)},
                }
            )
            sets += ["syncPk = :sync", "syncDue = :due", "syncVersion = :target", "syncAttempts = :zero"]
            adds.append("syncFields :fields")
        if lease is not None:
            owner, now, until = lease
            values.update({":owner": {"S": owner}, ":now": {"N": repr(now)}, ":until": {"N": repr(until)}})
            sets += ["leaseOwner = :owner", "leaseUntil = :until"]
            condition += " AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)"
        expression = ""
        if sets:
            expression += "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        if adds:
            expression += " ADD " + ", ".join(adds)
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": _user_key(before.id),
            "UpdateExpression": expression.strip(),
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        return Op(label, {"Update": request})

    def op_create_user(self, user: User, *, label: str = "user") -> Op:
        item = {"pk": {"S": f"USER#{user.id}"}, "sk": {"S": "PROFILE"}}
        item.update({k: _to_av(v) for k, v in _user_attrs(user).items() if v is not None})
        return Op(
            label,
            {
                "Put": {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    def op_delete_user(self, user: User, *, label: str = "user") -> Op:
        return Op(
            label,
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _user_key(user.id),
                    "ConditionExpression": "version = :expected",
                    "ExpressionAttributeValues": {":expected": {"N": str(user.version)}},
                }
            },
        )

    def op_claim_email(self, email: str, user_id: str, *, label: str = "email") -> Op:
        """Reserve a login email for a user (fails when another user holds it)."""
        return Op(
            label,
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {**_email_key(email), "userId": {"S": user_id}},
                    "ConditionExpression": "attribute_not_exists(pk) OR userId = :uid",
                    "ExpressionAttributeValues": {":uid": {"S": user_id}},
                }
            },
        )

    def op_release_email(self, email: str, user_id: str, *, label: str = "release-email") -> Op:
        return Op(
            label,
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _email_key(email),
                    "ConditionExpression": "attribute_not_exists(pk) OR userId = :uid",
                    "ExpressionAttributeValues": {":uid": {"S": user_id}},
                }
            },
        )

    def op_account_exists(self, account_id: str) -> Op:
        return Op(
            f"account:{account_id}",
            {
                "ConditionCheck": {
                    "TableName": self._table,
                    "Key": _account_key(account_id),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
        )

    def op_put_audit(self, entry: AuditEntry) -> Op:
        item = {
            "pk": {"S": f"USER#{entry.user_id}"},
            "sk": {"S": f"AUDIT#{entry.at}#{entry.seq:012d}#{entry.request_id}"},
            "at": {"S": entry.at},
            "actor": {"S": entry.actor},
            "action": {"S": entry.action},
            "requestId": {"S": entry.request_id},
            "changes": _to_av(list(entry.changes)),
        }
        return Op(
            "audit",
            {
                "Put": {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    def op_put_link(self, link: Link, ttl: int) -> Op:
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
        return Op(
            "link",
            {
                "Put": {
                    "TableName": self._table,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    def op_use_link(self, token_hash: str, now: int) -> Op:
        """Consume a link exactly once: it must exist, be active and not be expired."""
        return Op(
            "link",
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _link_key(token_hash),
                    "UpdateExpression": "SET #s = :used, usedAt = :now",
                    "ConditionExpression": "attribute_exists(pk) AND #s = :active AND expiresAt > :now",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":used": {"S": "used"},
                        ":active": {"S": "active"},
                        ":now": {"N": str(now)},
                    },
                }
            },
        )

    def op_delete_link(self, token_hash: str) -> Op:
        return Op("delete-link", {"Delete": {"TableName": self._table, "Key": _link_key(token_hash)}})

    def op_put_tombstone(
        self,
        user_id: str,
        *,
        version: int,
        deleted_at: str,
        sync: SyncMark,
        lease_owner: str,
        lease_until: float,
        label: str = "tombstone",
    ) -> Op:
        """What stays of a deleted user until Auth0 has deleted it too: the sync marker, no personal data.

        It carries the marker (found by sync-identity through the SyncIndex) and the lease, taken here
        by the deleting request. Finishing the deletion erases the rest of the user's partition and the
        Auth0 user; then ``clear_sync(deleted=True)`` removes this item.
        """
        item: dict[str, Any] = {
            **_tombstone_key(user_id),
            "deletedAt": {"S": deleted_at},
            "idpSync": {"S": "pending"},
            "syncPk": {"S": SYNC_PK},
            "syncDue": {"N": "0"},
            "syncVersion": {"N": str(version)},
            "syncFields": {"SS": sorted(sync.fields)},
            "syncAttempts": {"N": "0"},
            "leaseOwner": {"S": lease_owner},
            "leaseUntil": {"N": repr(lease_until)},
        }
        return Op(label, {"Put": {"TableName": self._table, "Item": item}})

    def op_put_tombstone_audit(self, entry: AuditEntry) -> Op:
        """The audit entry of a deletion: the one item ``erase_deleted_user`` keeps for good.

        It holds the user id, actor, time, action and request id; ``changes`` is always empty.
        """
        op = self.op_put_audit(replace(entry, changes=()))
        put = op.request["Put"]
        return Op(op.label, {"Put": {**put, "Item": {**put["Item"], _KEEP_ATTR: {"BOOL": True}}}})

    # -------------------------------------------------------------------------------- commit
    def transact(self, ops: Sequence[Op], request_token: str | None = None) -> None:
        if not ops:
            return
        kwargs: dict[str, Any] = {"TransactItems": [op.request for op in ops]}
        if request_token:
            kwargs["ClientRequestToken"] = request_token[:36]
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

    def put_account(self, account_id: str, name: str) -> None:
        self._call("put_item", TableName=self._table, Item={**_account_key(account_id), "name": {"S": name}})

    def put_user(self, user: User) -> None:
        """Unconditional write of a user and its email reservation (seeding and imports)."""
        self.transact([self.op_upsert_user(user), self.op_claim_email(user.email, user.id)])

    def op_upsert_user(self, user: User) -> Op:
        item = {"pk": {"S": f"USER#{user.id}"}, "sk": {"S": "PROFILE"}}
        item.update({k: _to_av(v) for k, v in _user_attrs(user).items() if v is not None})
        return Op("user", {"Put": {"TableName": self._table, "Item": item}})

    # -------------------------------------------------------------------------------- sync marker
    def clear_sync(self, user_id: str, version: int, owner: str, *, deleted: bool = False) -> bool:
        """Remove the marker when Auth0 holds ``version`` and we hold the lease. False if it moved on.

        For a deleted user the tombstone's marker is the last thing left of the sync: the tombstone
        item goes (the tombstone audit entry stays).
        """
        try:
            if deleted:
                self._call(
                    "delete_item",
                    TableName=self._table,
                    Key=_tombstone_key(user_id),
                    ConditionExpression="leaseOwner = :owner",
                    ExpressionAttributeValues={":owner": {"S": owner}},
                )
                return True
            self._call(
                "update_item",
                TableName=self._table,
                Key=_user_key(user_id),
                UpdateExpression=(
                    "SET idpSync = :synced REMOVE syncPk, syncDue, syncVersion, syncFields, syncAttempts,"
                    " leaseOwner, leaseUntil"
                ),
                ConditionExpression="syncVersion = :v AND leaseOwner = :owner",
                ExpressionAttributeValues={
                    ":v": {"N": str(version)},
                    ":owner": {"S": owner},
                    ":synced": {"S": "synced"},
                },
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def acquire_lease(
        self, user_id: str, owner: str, now: float, until: float, *, due_only: bool
    ) -> tuple[SyncState, User | None] | None:
        """Take the sync lease of a user (or tombstone) whose marker is set. None if not ours to take.

        Returns the marker and, for a user that still exists, the record as it is now.
        """
        for key, deleted in ((_user_key(user_id), False), (_tombstone_key(user_id), True)):
            condition = "attribute_exists(syncPk) AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)"
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
                attempts=int(data.get("syncAttempts", 0)),
                lease_owner=owner,
                lease_until=until,
                deleted=deleted,
            )
            return state, (None if deleted else user_from_item(resp["Attributes"]))
        return None

    def defer_sync(
        self, user_id: str, owner: str, *, due: float, attempts: int, failed: bool, deleted: bool = False
    ) -> None:
        """Give the lease back after a failed push: retry at ``due``, or mark failed for good."""
        key = _tombstone_key(user_id) if deleted else _user_key(user_id)
        if failed:
            expression = (
                "SET idpSync = :failed, syncAttempts = :n REMOVE syncPk, syncDue, leaseOwner, leaseUntil"
            )
            values = {":failed": {"S": "failed"}, ":n": {"N": str(attempts)}, ":owner": {"S": owner}}
        else:
            expression = (
                "SET idpSync = :pending, syncAttempts = :n, syncDue = :due REMOVE leaseOwner, leaseUntil"
            )
            values = {
                ":pending": {"S": "pending"},
                ":n": {"N": str(attempts)},
                ":due": {"N": repr(due)},
                ":owner": {"S": owner},
            }
        self._update_as_lease_owner(key, owner, expression, values)

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

    def due_syncs(self, now: float, limit: int) -> list[str]:
        resp = self._call(
            "query",
            TableName=self._table,
            IndexName=SYNC_INDEX,
            KeyConditionExpression="syncPk = :sync AND syncDue <= :now",
            ExpressionAttributeValues={":sync": {"S": SYNC_PK}, ":now": {"N": repr(now)}},
            Limit=limit,
        )
        return [str(i["pk"]["S"]).removeprefix("USER#") for i in resp.get("Items", [])]

    # -------------------------------------------------------------------------------- erasure
    def erase_deleted_user(self, user_id: str) -> int:
        """Delete every item left in a deleted user's partition but the tombstone and its audit entry.

        Older audit entries hold emails and names, so they go too. Idempotent and resumable: a run
        after a crash deletes what the previous one left. Does nothing while the user's record
        exists (this only ever finishes a deletion). Returns how many items it deleted.
        """
        if self.get_user(user_id) is not None:
            return 0
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"USER#{user_id}"}},
            "ProjectionExpression": "pk, sk, #keep",
            "ExpressionAttributeNames": {"#keep": _KEEP_ATTR},
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
            for start in range(0, len(keys), _BATCH_WRITE_MAX):
                self._batch_delete(keys[start : start + _BATCH_WRITE_MAX])
            erased += len(keys)
            last = resp.get("LastEvaluatedKey")
            if not last:
                return erased
            kwargs["ExclusiveStartKey"] = last

    def _batch_delete(self, keys: list[dict[str, Any]]) -> None:
        request: dict[str, Any] = {self._table: [{"DeleteRequest": {"Key": key}} for key in keys]}
        for attempt in range(_BATCH_WRITE_ATTEMPTS):
            resp = self._call("batch_write_item", RequestItems=request)
            request = resp.get("UnprocessedItems") or {}
            if not request:
                return
            time.sleep(0.05 * 2**attempt)  # DynamoDB asks for backoff on unprocessed items
        raise StoreUnavailable("items left unprocessed")

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

    def op_delete_expired_link(self, token_hash: str, cutoff: int, *, label: str = "link") -> Op:
        """Delete a link only while it is still expired before ``cutoff`` (and exists)."""
        return Op(
            label,
            {
                "Delete": {
                    "TableName": self._table,
                    "Key": _link_key(token_hash),
                    "ConditionExpression": "expAt < :cutoff",
                    "ExpressionAttributeValues": {":cutoff": {"N": str(cutoff)}},
                }
            },
        )

    def delete_expired_link(self, token_hash: str, cutoff: int) -> bool:
        """``op_delete_expired_link`` on its own; False when the item is gone or not expired."""
        request = self.op_delete_expired_link(token_hash, cutoff).request["Delete"]
        try:
            self._call("delete_item", **request)
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def op_end_pending_email(
        self, user_id: str, verify_hash: str, updated_at: str, *, label: str = "user"
    ) -> Op:
        """End a pending email change: drop ``pendingEmail`` and its verify/cancel links, bump the version.

        Conditional on the change being the one whose verify link is ``verify_hash``: a change that
        was confirmed, cancelled or superseded meanwhile fails the condition and is left alone.
        """
        return Op(
            label,
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _user_key(user_id),
                    "UpdateExpression": (
                        "REMOVE pendingEmail, #links.#verify, #links.#cancel"
                        " SET version = version + :one, updatedAt = :at"
                    ),
                    "ConditionExpression": "#links.#verify = :hash AND attribute_exists(pendingEmail)",
                    "ExpressionAttributeNames": {"#links": "links", "#verify": "verify", "#cancel": "cancel"},
                    "ExpressionAttributeValues": {
                        ":hash": {"S": verify_hash},
                        ":one": {"N": "1"},
                        ":at": {"S": updated_at},
                    },
                }
            },
        )

    # -------------------------------------------------------------------------------- rate counters
    def incr_counter(self, counter_key: str, ttl: int) -> int:
        """Add one to a fixed-window counter in one atomic UpdateItem and return the new count.

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

    # -------------------------------------------------------------------------------- link claims
    def claim_link(self, token_hash: str, claim: str, now: int, until: int) -> bool:
        """Hold an active, unexpired link for one request until ``until`` (a lease, so a crash frees it).

        False when the link is gone, used, expired at ``now`` or held by someone else. The holder
        consumes it with ``op_use_link`` or gives it back with ``release_link_claim``.
        """
        try:
            self._call(
                "update_item",
                TableName=self._table,
                Key=_link_key(token_hash),
                UpdateExpression="SET claimOwner = :claim, claimUntil = :until",
                ConditionExpression=(
                    "attribute_exists(pk) AND #s = :active AND expiresAt > :now"
                    " AND (attribute_not_exists(claimUntil) OR claimUntil < :now)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":claim": {"S": claim},
                    ":until": {"N": str(until)},
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
                UpdateExpression="REMOVE claimOwner, claimUntil",
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
