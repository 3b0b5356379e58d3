"""The users list and the accounts (SPEC section 12): filters, scopes, signed cursors, exact counts.

Scope by construction: a platform administrator reads the ``ALL`` entries (one per user record); a
delegated administrator reads only the membership entries of the accounts they administer (one
sorted stream per account, merged, a user in several of them seen once), so nothing outside their
accounts is ever read. Every page is rendered from the users' records themselves (one strongly
consistent batch read of the page), exactly as ``GET /users/{userId}`` shows them to this caller, and
checked against the scope and the filters once more: an index entry that lags its record is never
shown as it was.

Costs: each stream is one Query of a list GSI with a key condition (never a Scan or a filter
expression). Filters the chosen index cannot answer are applied to the entries read, under
``READ_BUDGET`` entries per call: such a page may hold fewer than ``limit`` items and still have a
``nextCursor``.

Cursors: the position (the last key read), the walk's start time, the caller, a digest of the query
and an expiry, encrypted and signed (HMAC-SHA256 keys derived from ``LIST_CURSOR_KEY``), so a cursor
neither hints at an entry the caller may not see nor works for another caller or another query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from usermgmt.auth import READ_USERS, RequestCtx, resolve_caller
from usermgmt.errors import AccountNotFound, ConditionFailed, Forbidden, InvalidCursor, InvalidFilter
from usermgmt.models import ROLES, User, user_view
from usermgmt.ports import Deps
from usermgmt.service.writes import Change
from usermgmt.settings import Settings
from usermgmt.store import (
    ADMIN_BUCKET,
    COUNTED_STATUSES,
    KEY_SEP,
    LIST_ALL,
    DeleteMember,
    ListEntry,
    NoUser,
    Op,
    PutMember,
    UpdateUser,
    account_scope,
    count_buckets,
    index_ops,
    list_keys,
    member_roles,
)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
READ_BUDGET = 2000  # index entries one call may read before it answers a (possibly short) page
FILTERED_CHUNK = 200  # entries per Query when filters may reject entries
PROFILES = ("customer", "partner", "sales_rep", "marketing", "administrator")
SORTS = {"email": "email", "lastName": "lastName", "-createdAt": "created", "-updatedAt": "updated"}
USER_PARAMS = frozenset(
    {
        "status",
        "accountId",
        "role",
        "profile",
        "emailPrefix",
        "namePrefix",
        "emailVerified",
        "idpSync",
        "deliverability",
        "updatedSince",
        "sort",
        "limit",
        "cursor",
    }
)
ACCOUNT_PARAMS = frozenset({"limit", "cursor"})


# ------------------------------------------------------------------------------------------------ derived


class ListIndex:
    """The ``Derived`` that keeps membership entries and account counts in step with every commit."""

    def ops(self, change: Change) -> list[Op]:
        before: User | None = getattr(change, "before", None)  # None: the user is being created
        return index_ops(before, change.after)


# ------------------------------------------------------------------------------------------------ cursors


class CursorCodec:
    """Opaque cursors: JSON, encrypted with an HMAC-SHA256 keystream, then signed (encrypt-then-MAC)."""

    def __init__(self, secret: str) -> None:
        master = secret.encode()
        self._enc = hmac.new(master, b"usermgmt list cursor encryption", hashlib.sha256).digest()
        self._mac = hmac.new(master, b"usermgmt list cursor signature", hashlib.sha256).digest()

    def _stream(self, nonce: bytes, length: int) -> bytes:
        out = b""
        block = 0
        while len(out) < length:
            out += hmac.new(self._enc, nonce + block.to_bytes(4, "big"), hashlib.sha256).digest()
            block += 1
        return out[:length]

    def encode(self, payload: dict[str, Any]) -> str:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        nonce = os.urandom(12)
        body = nonce + bytes(a ^ b for a, b in zip(data, self._stream(nonce, len(data)), strict=True))
        tag = hmac.new(self._mac, body, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + tag).decode().rstrip("=")

    def decode(self, cursor: str) -> dict[str, Any]:
        """The payload; ``InvalidCursor`` for anything this codec did not issue unchanged."""
        try:
            if len(cursor) > 4096:
                raise ValueError("too long")
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise InvalidCursor() from None
        if len(raw) < 12 + 16:
            raise InvalidCursor()
        body, tag = raw[:-16], raw[-16:]
        if not hmac.compare_digest(tag, hmac.new(self._mac, body, hashlib.sha256).digest()[:16]):
            raise InvalidCursor()
        nonce, ct = body[:12], body[12:]
        try:
            payload = json.loads(bytes(a ^ b for a, b in zip(ct, self._stream(nonce, len(ct)), strict=True)))
        except ValueError:
            raise InvalidCursor() from None
        if not isinstance(payload, dict):
            raise InvalidCursor()
        return payload


class ListCursors:
    """The cursors of the API's lists that keep their place in a key (the users, the accounts, an
    account's invitations): the position, the walk's start, the caller and a digest of the query, with
    an expiry (``LIST_CURSOR_TTL_SECONDS``), in a ``CursorCodec``. ``InvalidCursor`` (400) for a cursor
    of another caller, another query, an expired one or anything this stack did not issue."""

    def __init__(self, s: Settings) -> None:
        self.codec = CursorCodec(s.list_cursor_key or f"local-only:{s.table_name}:{s.stage}")
        self.ttl = s.list_cursor_ttl_seconds

    def open(self, cursor: str, caller_id: str, digest: str, now: float) -> dict[str, Any]:
        payload = self.codec.decode(cursor)
        try:
            valid = (
                payload["c"] == _caller_tag(caller_id)
                and payload["q"] == digest
                and float(payload["exp"]) >= now
                and isinstance(payload["t0"], int | float)
            )
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise InvalidCursor()
        return payload

    def issue(self, caller_id: str, digest: str, now: float, started: float, position: str) -> str:
        return self.codec.encode(
            {
                "c": _caller_tag(caller_id),
                "q": digest,
                "exp": int(now) + self.ttl,
                "t0": started,
                "a": position,
            }
        )


# ------------------------------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class UserQuery:
    """A parsed users-list query (SPEC section 12). ``sort`` None: the default order (email)."""

    statuses: tuple[str, ...] = ()
    account_id: str | None = None
    role: str | None = None
    profile: str | None = None
    email_prefix: str | None = None
    name_prefix: str | None = None
    email_verified: bool | None = None
    idp_sync: str | None = None
    deliverability: str | None = None
    updated_since: datetime | None = None
    sort: str | None = None
    limit: int = DEFAULT_LIMIT

    def digest(self, route: str) -> str:
        """What a cursor is bound to: the route and every filter and order (not the page size)."""
        canon = {
            "route": route,
            "statuses": sorted(self.statuses),
            "accountId": self.account_id,
            "role": self.role,
            "profile": self.profile,
            "emailPrefix": self.email_prefix,
            "namePrefix": self.name_prefix,
            "emailVerified": self.email_verified,
            "idpSync": self.idp_sync,
            "deliverability": self.deliverability,
            "updatedSince": self.updated_since.isoformat() if self.updated_since else None,
            "sort": self.sort,
        }
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:32]


def _bad(name: str, message: str) -> InvalidFilter:
    return InvalidFilter(f"{name} {message}")


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise _bad("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return value


def _prefix(name: str, raw: str, longest: int) -> str:
    if not raw or len(raw) > longest:
        raise _bad(name, f"must be 1 to {longest} characters without control characters")
    value = unicodedata.normalize("NFC", raw).lower()
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise _bad(name, f"must be 1 to {longest} characters without control characters")
    return value


def _choice(name: str, raw: str, allowed: tuple[str, ...]) -> str:
    if raw not in allowed:
        raise _bad(name, f"must be one of {', '.join(allowed)}")
    return raw


def _check_params(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidFilter(f"Unknown parameter: {unknown[0][:40]}")


def parse_user_query(params: Mapping[str, str], path_account: str | None) -> UserQuery:
    """``params``: the query string (a repeated parameter arrives comma-joined, as API Gateway sends it)."""
    allowed = USER_PARAMS - {"accountId"} if path_account is not None else USER_PARAMS
    _check_params(params, allowed)
    q: dict[str, Any] = {"limit": _limit(params.get("limit")), "account_id": path_account}
    if "status" in params:
        statuses = [s.strip() for s in params["status"].split(",")]
        for s in statuses:
            _choice("status", s, COUNTED_STATUSES)
        q["statuses"] = tuple(sorted(set(statuses)))
    if "accountId" in params:
        if not params["accountId"] or len(params["accountId"]) > 200:
            raise _bad("accountId", "must name an account")
        q["account_id"] = params["accountId"]
    if "role" in params:
        q["role"] = _choice("role", params["role"], ROLES)
        if q["account_id"] is None:
            raise _bad("role", "needs an account (accountId)")
    if "profile" in params:
        q["profile"] = _choice("profile", params["profile"], PROFILES)
    if "emailPrefix" in params:
        q["email_prefix"] = _prefix("emailPrefix", params["emailPrefix"], 254)
    if "namePrefix" in params:
        q["name_prefix"] = _prefix("namePrefix", params["namePrefix"], 100)
    if "emailVerified" in params:
        q["email_verified"] = _choice("emailVerified", params["emailVerified"], ("true", "false")) == "true"
    if "idpSync" in params:
        q["idp_sync"] = _choice("idpSync", params["idpSync"], ("pending", "failed"))
    if "deliverability" in params:
        q["deliverability"] = _choice("deliverability", params["deliverability"], ("bounced", "complained"))
    if "updatedSince" in params:
        q["updated_since"] = _instant(params["updatedSince"])
    if "sort" in params:
        q["sort"] = _choice("sort", params["sort"], tuple(SORTS))
    return UserQuery(**q)


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _instant(raw: str) -> datetime:
    try:
        match = _RFC3339.match(raw)
        if not match:
            raise ValueError(raw)
        date, time, fraction, offset = match.groups()
        fraction = (fraction or "")[:7]  # Python keeps microseconds
        value = datetime.fromisoformat(f"{date}T{time}{fraction}{'+00:00' if offset in 'Zz' else offset}")
    except ValueError:
        raise _bad("updatedSince", "must be an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise _bad("updatedSince", "must be an RFC 3339 date-time with an offset")
    return value


def _at(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class _Stream:
    """One sorted run of entries: one index of one scope (and status), read in chunks."""

    index: str
    scope: str
    status: str | None
    prefix: str
    descending: bool
    buffer: list[ListEntry] = field(default_factory=list)
    more: bool = True


@dataclass(frozen=True)
class _Scope:
    """Who reads: their scopes and what of a user they see."""

    caller: User
    scopes: tuple[str, ...]
    visible: frozenset[str] | None  # accounts whose memberships the caller sees (None: all)
    account_id: str | None  # the one account the list is about, if any


@dataclass
class ListStats:
    """What one call read (the bench reports it)."""

    entries_read: int = 0
    queries: int = 0
    units: float = 0.0
    records_read: int = 0


class ListService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.cursors = ListCursors(deps.settings)
        self.last_stats = ListStats()

    # ------------------------------------------------------------------------------ callers
    def _caller(self, ctx: RequestCtx) -> User:
        """A person, or a machine caller with ``read:users`` (platform reach)."""
        return resolve_caller(ctx, self.d.store.get_user, self.d.settings.machine_clients, READ_USERS)

    def _scope(self, caller: User, account_id: str | None) -> _Scope:
        if caller.is_platform_admin:
            if account_id is not None:
                if not self.d.store.get_accounts([account_id]):
                    raise AccountNotFound()
                return _Scope(caller, (account_scope(account_id),), None, account_id)
            return _Scope(caller, (LIST_ALL,), None, None)
        administered = caller.administered_accounts()
        if account_id is not None:
            if account_id not in administered:
                raise AccountNotFound()
            return _Scope(caller, (account_scope(account_id),), administered, account_id)
        if not administered:
            raise Forbidden("Only administrators may list users")
        return _Scope(caller, tuple(account_scope(a) for a in sorted(administered)), administered, None)

    # ------------------------------------------------------------------------------ users
    def list_users(
        self, ctx: RequestCtx, params: Mapping[str, str], path_account: str | None = None
    ) -> dict[str, Any]:
        return self.list_for(self._caller(ctx), params, path_account)

    def list_for(
        self, caller: User, params: Mapping[str, str], path_account: str | None = None
    ) -> dict[str, Any]:
        """A page of the users ``caller`` may see (``list_users`` once the caller is known; bulk jobs'
        filters)."""
        if (
            path_account is not None
            and not caller.is_platform_admin
            and path_account not in caller.administered_accounts()
        ):
            raise AccountNotFound()
        q = parse_user_query(params, path_account)
        route = "account-users" if path_account is not None else "users"
        now = self.d.clock.now()
        digest = q.digest(route)
        after: str | None = None
        started = now
        continued = "cursor" in params
        if continued:
            payload = self.cursors.open(params["cursor"], caller.id, digest, now)
            after, started = payload.get("a"), float(payload["t0"])
            if after is not None and not isinstance(after, str):
                raise InvalidCursor()
        scope = self._scope(caller, q.account_id)
        items, position, more = self._page(scope, q, after, started, continued)
        cursor = None
        if more and position is not None:
            cursor = self.cursors.issue(caller.id, digest, now, started, position)
        return {"items": items, "nextCursor": cursor}

    def _streams(self, scope: _Scope, q: UserQuery) -> tuple[list[_Stream], str, bool]:
        """The streams to merge, the index whose keys order them (``name``: both name indexes), and
        whether an edit can move a user forward in that order (then a walk shows it at most once)."""
        streams: list[_Stream] = []
        if q.name_prefix is not None and q.sort is None:
            for s in scope.scopes:
                streams.append(_Stream("firstName", s, None, q.name_prefix, False))
                streams.append(_Stream("lastName", s, None, q.name_prefix, False))
            return streams, "name", True
        sort = q.sort or "email"
        index = SORTS[sort]
        descending = sort.startswith("-")
        if index == "email" and q.statuses:
            for s in scope.scopes:
                for status in q.statuses:
                    streams.append(_Stream("status", s, status, q.email_prefix or "", False))
            return streams, "email", True
        prefix = (q.email_prefix or "") if index == "email" else ""
        for s in scope.scopes:
            streams.append(_Stream(index, s, None, prefix, descending))
        return streams, index, index in ("email", "lastName")

    def _page(
        self, scope: _Scope, q: UserQuery, after: str | None, started: float, continued: bool
    ) -> tuple[list[dict[str, Any]], str | None, bool]:
        stats = self.last_stats = ListStats()
        streams, order, moving = self._streams(scope, q)
        descending = streams[0].descending if streams else False
        rejecting = self._prefilters_reject(q, scope, order)
        chunk = min(FILTERED_CHUNK, READ_BUDGET) if rejecting else q.limit + 1
        candidates: list[ListEntry] = []
        seen: set[str] = set()
        position = after
        while len(candidates) < q.limit:
            head: _Stream | None = None
            starved = False
            for stream in streams:
                if not stream.buffer and stream.more:
                    if stats.entries_read >= READ_BUDGET:
                        starved = True  # a stream not read on: no entry after this position is safe
                        break
                    read = self.d.store.list_read(
                        stream.index,
                        stream.scope,
                        status=stream.status,
                        prefix=stream.prefix,
                        after=position,
                        descending=stream.descending,
                        limit=min(chunk, READ_BUDGET - stats.entries_read) or 1,
                    )
                    stats.queries += 1
                    stats.entries_read += len(read.entries)
                    stats.units += read.units
                    stream.buffer, stream.more = list(read.entries), read.more
                if stream.buffer and (head is None or _before(stream.buffer[0], head.buffer[0], descending)):
                    head = stream
            if starved or head is None:
                break  # every stream is exhausted (or the budget is spent)
            entry = head.buffer.pop(0)
            position = entry.key
            if entry.user_id in seen:
                continue
            if order == "name" and not _canonical_name_entry(entry, head.index, q.name_prefix or ""):
                continue
            if not self._prefilter(entry, q, scope):
                continue
            seen.add(entry.user_id)
            candidates.append(entry)
        more = any(s.buffer or s.more for s in streams)
        items = self._render(candidates, scope, q, order, moving and continued, started)
        return items, position, more

    @staticmethod
    def _prefilters_reject(q: UserQuery, scope: _Scope, order: str) -> bool:
        """Whether filters may reject many entries (then read bigger chunks). A delegated
        administrator's platform administrators are rejected too, but they are few."""
        index_answers_status = order == "email" and bool(q.statuses)
        return bool(
            (q.statuses and not index_answers_status)
            or q.profile
            or q.email_verified is not None
            or q.updated_since
            or q.role
            or q.idp_sync
            or q.deliverability
            or (q.email_prefix and order != "email")
            or (q.name_prefix and order != "name")
        )

    @staticmethod
    def _prefilter(entry: ListEntry, q: UserQuery, scope: _Scope) -> bool:
        """What an index entry already tells (the record is checked again before it is shown)."""
        if q.statuses and entry.status not in q.statuses:
            return False
        if q.profile and entry.profile != q.profile:
            return False
        if scope.visible is not None and entry.profile == "administrator":
            return False
        if q.email_verified is not None and entry.email_verified != q.email_verified:
            return False
        if q.role and q.role not in entry.roles:
            return False
        if q.updated_since:
            at = _at(entry.updated_at)
            if at is None or at < q.updated_since:
                return False
        return True

    def _render(
        self,
        entries: list[ListEntry],
        scope: _Scope,
        q: UserQuery,
        order: str,
        hide_moved: bool,
        started: float,
    ) -> list[dict[str, Any]]:
        """The page's items from the records (strongly consistent), as GET shows them to this caller."""
        ids = [e.user_id for e in entries]
        records = self.d.store.get_users(ids)
        self.last_stats.records_read += len(ids)
        items = []
        for entry in entries:
            user = records.get(entry.user_id)
            if user is None or not self._shows(user, entry, scope, q, order):
                continue
            if hide_moved and (_at(user.updated_at) or _datetime(0)) > _datetime(started):
                continue  # edited during this walk: it may have been shown at its old place already
            items.append(user_view(user, scope.visible))
        return items

    @staticmethod
    def _shows(user: User, entry: ListEntry, scope: _Scope, q: UserQuery, order: str) -> bool:
        """The record, not the index entry, decides: scope, every filter, and the place in the order."""
        keys = list_keys(user)
        if order == "name":
            if entry.key not in (keys["firstName"], keys["lastName"]):
                return False  # the entry lags its record
        elif entry.key != keys[order]:
            return False
        if scope.visible is not None and (user.is_platform_admin or not user.account_ids & scope.visible):
            return False
        if scope.account_id is not None and scope.account_id not in user.account_ids:
            return False
        checks = (
            not q.statuses or user.status in q.statuses,
            q.profile is None or user.profile == q.profile,
            q.email_verified is None or user.email_verified == q.email_verified,
            q.idp_sync is None or user.idp_sync == q.idp_sync,
            q.deliverability is None or getattr(user, "deliverability", "ok") == q.deliverability,
            q.role is None or q.role in member_roles(user, scope.account_id or ""),
            q.email_prefix is None or user.email.lower().startswith(q.email_prefix),
            q.name_prefix is None
            or user.first_name.lower().startswith(q.name_prefix)
            or user.last_name.lower().startswith(q.name_prefix),
        )
        if not all(checks):
            return False
        if q.updated_since:
            at = _at(user.updated_at)
            return at is not None and at >= q.updated_since
        return True

    # ------------------------------------------------------------------------------ accounts
    def list_accounts(self, ctx: RequestCtx, params: Mapping[str, str]) -> dict[str, Any]:
        caller = self._caller(ctx)
        _check_params(params, ACCOUNT_PARAMS)
        limit = _limit(params.get("limit"))
        now = self.d.clock.now()
        digest = hashlib.sha256(b"accounts").hexdigest()[:32]
        after: str | None = None
        if "cursor" in params:
            after = self.cursors.open(params["cursor"], caller.id, digest, now).get("a")
            if not isinstance(after, str):
                raise InvalidCursor()
        if caller.is_platform_admin:
            ids, more = self.d.store.account_ids(after, limit)
        else:
            administered = sorted(caller.administered_accounts())
            if not administered:
                raise Forbidden("Only administrators may list accounts")
            rest = [a for a in administered if after is None or a > after]
            ids, more = rest[:limit], len(rest) > limit
        accounts = self.d.store.get_accounts(ids)
        items = [self._account_view(accounts[a], caller) for a in ids if a in accounts]
        cursor = self.cursors.issue(caller.id, digest, now, now, ids[-1]) if more and ids else None
        return {"items": items, "nextCursor": cursor}

    def get_account(self, ctx: RequestCtx, account_id: str) -> dict[str, Any]:
        caller = self._caller(ctx)
        if not caller.is_platform_admin and account_id not in caller.administered_accounts():
            raise AccountNotFound()
        account = self.d.store.get_accounts([account_id]).get(account_id)
        if account is None:
            raise AccountNotFound()
        return self._account_view(account, caller)

    @staticmethod
    def _account_view(account: Any, caller: User) -> dict[str, Any]:
        counts = {}
        for status in COUNTED_STATUSES:
            n = account.counts.get(status, 0)
            if not caller.is_platform_admin:  # platform administrators are not theirs to see
                n -= account.counts.get(ADMIN_BUCKET + status, 0)
            counts[status] = max(0, n)
        return {"id": account.id, "name": account.name, "counts": counts}

    # ------------------------------------------------------------------------------ repair
    def recount(self, account_id: str) -> dict[str, int]:
        """Operators: set an account's counts from its membership entries (README, Operations)."""
        if not self.d.store.get_accounts([account_id]):
            raise AccountNotFound()
        return self.d.store.recount_account(account_id)

    def backfill(
        self,
        segment_size: int,
        *,
        dry_run: bool = False,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Operators: bring every user's list entries in step with its record (README, Operations).

        One pass over the store, ``segment_size`` stored items at a time (``UserStore.list_pass``): a
        user whose own entry or membership entries are missing or out of step gets them written as the
        write path writes them (``index_ops``; the record's own list attributes ride on an update of the
        record onto itself, which changes nothing else), a membership entry of an account the user is
        no longer in (or of no user at all) is removed; each in one transaction conditional on the
        version read, so a user the application changed meanwhile is skipped (its own write put it in
        step; a re-run checks it). Then every account whose entries it changed, or whose counts differ
        from the records it read, is recounted (``recount``). A second run writes nothing.
        """
        store = self.d.store
        summary: dict[str, Any] = {
            "dryRun": dry_run,
            "segments": 0,
            "usersRead": 0,
            "usersInStep": 0,
            "usersWritten": 0,
            "entriesWritten": 0,
            "staleEntriesRemoved": 0,
            "skipped": [],
            "accountsRecounted": {},
        }
        touched: set[str] = set()
        tally: dict[str, dict[str, int]] = {}  # counts of the records read, per account
        cursor: str | None = None
        while True:
            segment = store.list_pass(segment_size, cursor)
            summary["segments"] += 1
            summary["usersRead"] += len(segment.users)
            plans: dict[str, _Repair] = {}
            for passed in segment.users:
                user = passed.user
                for a in user.account_ids:
                    counts = tally.setdefault(a, {})
                    for bucket in count_buckets(user):
                        counts[bucket] = counts.get(bucket, 0) + 1
                if not passed.out_of_step:
                    summary["usersInStep"] += 1
                    continue
                repair = plans.setdefault(user.id, _Repair(user))
                repair.puts = [
                    op
                    for op in index_ops(user, user)  # the membership entries, no count moves
                    if isinstance(op, PutMember) and account_scope(op.account_id) in passed.out_of_step
                ]
                repair.own_entry = LIST_ALL in passed.out_of_step
            in_segment = {p.user.id: p.user for p in segment.users}
            elsewhere = sorted({u for _, u in segment.members if u not in in_segment})
            others = store.get_users(elsewhere)
            for account_id, user_id in segment.members:
                holder = in_segment.get(user_id) or others.get(user_id)
                if holder is not None and account_id in holder.account_ids:
                    continue  # the user's own check covers it
                repair = plans.setdefault(user_id, _Repair(holder, user_id=user_id))
                repair.removes.append(account_id)
            for user_id, repair in plans.items():
                ops = repair.ops()
                if not dry_run:
                    try:
                        store.transact(ops)
                    except ConditionFailed:
                        summary["skipped"].append(user_id)
                        touched.update(repair.accounts())
                        continue
                touched.update(repair.accounts())
                if repair.puts or repair.own_entry:
                    summary["usersWritten"] += 1
                    summary["entriesWritten"] += len(repair.puts) + int(repair.own_entry)
                summary["staleEntriesRemoved"] += len(repair.removes)
            cursor = segment.cursor
            if progress is not None:
                progress(
                    {k: summary[k] for k in ("segments", "usersRead", "usersWritten", "staleEntriesRemoved")}
                )
            if cursor is None:
                break
        recount = set(touched)
        after: str | None = None
        while True:  # accounts whose counts differ from the records read (after a restore, a crash)
            ids, more = store.account_ids(after, 100)
            for account in store.get_accounts(ids).values():
                if _nonzero(account.counts) != _nonzero(tally.get(account.id, {})):
                    recount.add(account.id)
            if not more or not ids:
                break
            after = ids[-1]
        for account_id in sorted(recount):
            if dry_run:
                summary["accountsRecounted"][account_id] = None  # would be recounted
                continue
            try:
                summary["accountsRecounted"][account_id] = self.recount(account_id)
            except AccountNotFound:
                summary["accountsRecounted"][account_id] = "account_not_found"
        return summary


@dataclass
class _Repair:
    """What the backfill writes for one user, in one transaction conditional on ``user``'s version
    (``user`` None: the user has no record; only orphaned entries to remove, on that condition)."""

    user: User | None
    user_id: str = ""
    own_entry: bool = False
    puts: list[Op] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)

    def ops(self) -> list[Op]:
        if self.user is None:
            head: list[Op] = [NoUser(self.user_id)]
        else:
            head = [UpdateUser(self.user, self.user)]  # the version condition and the record's own entry
        user_id = self.user.id if self.user is not None else self.user_id
        return [*head, *self.puts, *(DeleteMember(a, user_id) for a in self.removes)]

    def accounts(self) -> set[str]:
        return {op.account_id for op in self.puts if isinstance(op, PutMember)} | set(self.removes)


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def _before(a: ListEntry, b: ListEntry, descending: bool) -> bool:
    return a.key > b.key if descending else a.key < b.key


def _caller_tag(caller_id: str) -> str:
    return hashlib.sha256(caller_id.encode()).hexdigest()[:32]


def _datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _canonical_name_entry(entry: ListEntry, index: str, prefix: str) -> bool:
    """A user whose first and last names both match is in both name streams: shown at its smaller key."""
    parts = entry.key.split(KEY_SEP)
    if len(parts) < 3:
        return False
    if index == "firstName":
        first, last = parts[0], parts[1]
    else:
        last, first = parts[0], parts[1]
    uid = parts[-1]
    keys = []
    if first.startswith(prefix):
        keys.append(f"{first}{KEY_SEP}{last}{KEY_SEP}{uid}")
    if last.startswith(prefix):
        keys.append(f"{last}{KEY_SEP}{first}{KEY_SEP}{uid}")
    return bool(keys) and entry.key == min(keys)
