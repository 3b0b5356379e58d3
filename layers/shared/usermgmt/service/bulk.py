"""Bulk jobs (SPEC section 14): one request changes up to 10,000 users, with a result for each.

``BulkService`` answers the routes (start, read, list, items, cancel) and runs the worker's messages.
Each item is the single-user use case (``lifecycle.suspend``, ``users.patch``, ...) called with the
job creator's request context rebuilt from what the job stored, plus a ``JobItem``: authorization,
guard rails, audit (with the job id), events and the never-lost Auth0 sync are the routes' own code.

Exactly once per item (docs/decisions.md, "Bulk jobs"): every item is a record that moves from
``pending`` to its final status once, conditionally. When the item changes the user, that move is an op
of the user's own commit (``BulkItems``, a ``Derived`` of the write path), so the change and the item's
result are one transaction; a redelivered message finds the item decided and leaves it. A no-op, a
refusal or a dry-run decision is written by the worker with the same condition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from usermgmt.auth import (
    BULK_USERS,
    DELETE_USERS,
    SUSPEND_USERS,
    UPDATE_USERS,
    Actor,
    JobItem,
    RequestCtx,
    authenticate,
    machine_caller,
)
from usermgmt.clock import rfc3339
from usermgmt.errors import (
    ApiError,
    ConditionFailed,
    DependencyUnavailable,
    FieldProblem,
    Forbidden,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidFilter,
    JobFinished,
    JobNotFound,
    StoreUnavailable,
    TooManyJobs,
    ValidationFailed,
)
from usermgmt.models import User
from usermgmt.observability import count, logger
from usermgmt.ports import Deps, JobQueue, QueueUnavailable
from usermgmt.service.lists import MAX_LIMIT
from usermgmt.service.outbox import BULK_JOB_FINISHED, cloud_event, outbox_key
from usermgmt.service.sync import new_id
from usermgmt.service.writes import Change, checked_idempotency_key
from usermgmt.store import (
    BulkItem,
    BulkJob,
    ClaimJobKey,
    Op,
    OutboxEvent,
    PutEvent,
    PutJob,
    PutJobEntry,
    SetJobStatus,
    finish_item_ops,
)

if TYPE_CHECKING:
    from usermgmt.service.lifecycle import LifecycleService
    from usermgmt.service.lists import ListService
    from usermgmt.service.passwords import PasswordService
    from usermgmt.service.sync import SyncEngine
    from usermgmt.service.users import UserService

QUEUED, RUNNING, CANCELLED = "queued", "running", "cancelled"
SUCCEEDED, COMPLETED_WITH_ERRORS = "succeeded", "completed_with_errors"
ACTIVE_STATUSES = (QUEUED, RUNNING)
PENDING, SKIPPED, FAILED = "pending", "skipped", "failed"
ITEM_STATUSES = (PENDING, SUCCEEDED, SKIPPED, FAILED)
ITEMS_PER_MESSAGE = 10
# an item Auth0 refused for now (429, 5xx) pauses the worker this long at least, or as long as Auth0
# asked up to the cap (a message of 10 items must still fit in the worker's timeout)
MIN_PAUSE_SECONDS, MAX_PAUSE_SECONDS = 1.0, 5.0

# action -> the scope a machine caller's token needs for each of its items
ACTIONS: dict[str, str] = {
    "suspend": SUSPEND_USERS,
    "enable": SUSPEND_USERS,
    "delete": DELETE_USERS,
    "password-reset": UPDATE_USERS,
    "revoke-sessions": UPDATE_USERS,
    "set-fields": UPDATE_USERS,
    "add-roles": UPDATE_USERS,
    "remove-roles": UPDATE_USERS,
}
SET_FIELDS = ("firstName", "lastName", "profile", "accountNumber")


class TargetResolver(Protocol):
    """Resolves a bulk job's ``filter`` (the list filters of SPEC section 12) under the caller's scope
    to user ids, a page at a time. ``InvalidFilter`` for a filter that does not parse."""

    def pages(self, ctx: RequestCtx, caller: User, filter_: dict[str, Any]) -> Iterator[list[str]]: ...


@dataclass(frozen=True)
class Caller:
    """Who calls the bulk routes: their ``sub``, whether they see everyone's jobs, how they are named."""

    sub: str
    platform: bool
    actor: Actor
    user: User


def job_view(job: BulkJob, counts: dict[str, int]) -> dict[str, Any]:
    done = {name: counts.get(name, 0) for name in (SUCCEEDED, SKIPPED, FAILED)}
    return {
        "id": job.id,
        "action": job.action,
        "status": job.status,
        "dryRun": job.dry_run,
        "counts": {"total": job.total, "pending": max(0, job.total - sum(done.values())), **done},
        "createdBy": dict(job.actor),
        "createdAt": job.created_at,
        "startedAt": job.started_at,
        "finishedAt": job.finished_at,
    }


def item_view(item: BulkItem) -> dict[str, Any]:
    return {"userId": item.user_id, "status": item.status, "code": item.code, "detail": item.detail}


class BulkItems:
    """The ``Derived`` that decides a job's item in the commit of the change the item made."""

    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def ops(self, change: Change) -> list[Op]:
        if change.job_id is None:
            return []
        subject = change.before if change.before is not None else change.after
        if subject is None:  # pragma: no cover - a change has a user before or after it
            return []
        item = BulkItem(change.job_id, subject.id, SUCCEEDED)
        return finish_item_ops(item, _retention_end(self.d, self.d.clock.now()))


def _retention_end(deps: Deps, now: float) -> int:
    return int(now) + deps.settings.bulk_retention_days * 86400


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class BulkService:
    def __init__(
        self,
        deps: Deps,
        queue: JobQueue,
        *,
        users: UserService,
        lifecycle: LifecycleService,
        passwords: PasswordService,
        targets: TargetResolver,
        sync: SyncEngine | None = None,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.d = deps
        self.queue = queue
        self.users = users
        self.lifecycle = lifecycle
        self.passwords = passwords
        self.targets = targets
        self.sync = sync
        self.pause = pause

    # ------------------------------------------------------------------------------ callers
    def caller(self, ctx: RequestCtx) -> Caller:
        """Platform and delegated administrators, and machine callers with ``bulk:users``."""
        if ctx.is_machine:
            user = machine_caller(ctx, self.d.settings.machine_clients, BULK_USERS)
            return Caller(user.id, False, Actor("client", ctx.client_id), user)
        sub = ctx.require_sub()
        user = authenticate(ctx, self.d.store.get_user(sub))
        if user.is_platform_admin:
            return Caller(sub, True, Actor("platform_admin", sub), user)
        if user.administered_accounts():
            return Caller(sub, False, Actor("delegated_admin", sub), user)
        raise Forbidden("Only administrators start and read bulk jobs")

    def _visible(self, caller: Caller, job_id: str) -> BulkJob:
        job = self.d.store.get_job(job_id) if 0 < len(job_id) <= 64 else None
        if job is None or not (caller.platform or job.created_by == caller.sub):
            raise JobNotFound()
        return job

    # ------------------------------------------------------------------------------ routes
    def start(self, ctx: RequestCtx, body: object, key: str | None) -> tuple[dict[str, Any], bool]:
        """``POST /bulk-jobs``: the job (and whether it is a replay of the same key and body)."""
        from usermgmt.schemas import parse_bulk_job  # pydantic: only when a body is parsed

        caller = self.caller(ctx)
        key = str(checked_idempotency_key(key, required=True))
        request = parse_bulk_job(body, self.d.settings.bulk_max_targets)
        action = request["action"]
        if ctx.is_machine and ACTIONS[action] not in ctx.scopes:
            machine_caller(ctx, self.d.settings.machine_clients, ACTIONS[action])  # 403 insufficient_scope
        digest = body_hash(request)
        replay = self._replay(caller, key, digest)
        if replay is not None:
            return replay, True
        self._check_active(caller)
        targets = self._targets(ctx, caller, request)
        now = self.d.clock.now()
        job = BulkJob(
            id=new_id(),
            action=action,
            status=QUEUED,
            dry_run=request["dryRun"],
            created_by=caller.sub,
            actor={"type": caller.actor.type, "id": caller.actor.id},
            created_at=rfc3339(now),
            total=len(targets),
            params=request["params"],
            caller={"sub": ctx.sub, "gty": ctx.gty, "scopes": sorted(ctx.scopes)},
            request_id=ctx.request_id or new_id(),
            expires_at=_retention_end(self.d, now),
            idempotency_key=key,
            body_hash=digest,
        )
        if not targets:  # nothing to do: finished as it starts
            job = replace(job, status=SUCCEEDED, started_at=job.created_at, finished_at=job.created_at)
        store = self.d.store
        store.put_job_items(job, targets)
        ops: list[Op] = [
            PutJob(job),
            ClaimJobKey(caller.sub, key, job.id, job.expires_at),
            PutJobEntry(caller.sub, job),
            PutJobEntry("*", job),
        ]
        try:
            store.transact(ops)
        except ConditionFailed as failed:
            if failed.label == "idempotency-key":  # the same key at the same moment: answer that job
                replay = self._replay(caller, key, digest)
                if replay is not None:
                    return replay, True
            raise DependencyUnavailable() from None
        if targets:
            self._enqueue(job, targets)
        else:
            self._finished_event(job, SUCCEEDED, job.created_at)
        count("BulkJobStarted")
        return job_view(self.d.store.get_job(job.id) or job, {}), False

    def _replay(self, caller: Caller, key: str, digest: str) -> dict[str, Any] | None:
        job_id = self.d.store.job_for_key(caller.sub, key)
        if job_id is None:
            return None
        job = self.d.store.get_job(job_id)
        if job is None:
            return None  # past retention: the key is free again
        if job.body_hash != digest:
            raise IdempotencyKeyReused()
        counts = self.d.store.job_counts(job.id)
        if job.status in ACTIVE_STATUSES:
            # the first answer may have died before all its messages were queued (its 503 says to
            # repeat the request), and some queued ones may have run since: queue every item still
            # pending again. Harmless for messages still in flight: each item is decided once.
            pending = [i.user_id for i in self._all_items(job.id)]
            if pending:
                self._enqueue(job, pending)
        return job_view(job, counts)

    def _check_active(self, caller: Caller) -> None:
        limit = self.d.settings.bulk_max_active_jobs
        jobs, _ = self.d.store.jobs_page(caller.sub, max(limit * 4, 20), None)
        if sum(1 for j in jobs if j.status in ACTIVE_STATUSES) >= limit:
            raise TooManyJobs(60, f"At most {limit} bulk jobs may be queued or running at once")

    def _targets(self, ctx: RequestCtx, caller: Caller, request: dict[str, Any]) -> list[str]:
        limit = self.d.settings.bulk_max_targets
        if request.get("userIds") is not None:
            return list(dict.fromkeys(request["userIds"]))
        found: dict[str, None] = {}
        for page in self.targets.pages(ctx, caller.user, request["filter"]):
            found.update(dict.fromkeys(page))
            if len(found) > limit:
                raise ValidationFailed(
                    errors=[FieldProblem("filter", f"matches more than {limit} users; narrow it")]
                )
        return list(found)

    def _enqueue(self, job: BulkJob, user_ids: list[str]) -> None:
        bodies = [
            {"jobId": job.id, "userIds": user_ids[i : i + ITEMS_PER_MESSAGE]}
            for i in range(0, len(user_ids), ITEMS_PER_MESSAGE)
        ]
        try:
            self.queue.send(bodies)
        except QueueUnavailable:
            logger.warning("bulk job not queued", extra={"jobId": job.id})
            raise DependencyUnavailable("The job was recorded but not queued; repeat the request") from None

    def _all_items(self, job_id: str) -> list[BulkItem]:
        items: list[BulkItem] = []
        cursor: str | None = None
        while True:
            page, cursor = self.d.store.job_items_page(job_id, PENDING, 1000, cursor)
            items.extend(page)
            if cursor is None:
                return items

    def get(self, ctx: RequestCtx, job_id: str) -> dict[str, Any]:
        job = self._visible(self.caller(ctx), job_id)
        return job_view(job, self.d.store.job_counts(job.id))

    def list(self, ctx: RequestCtx, limit: int, cursor: str | None) -> dict[str, Any]:
        caller = self.caller(ctx)
        try:
            jobs, next_cursor = self.d.store.jobs_page(None if caller.platform else caller.sub, limit, cursor)
        except ValueError:
            raise InvalidCursor() from None
        items = [job_view(j, self.d.store.job_counts(j.id)) for j in jobs]
        return {"items": items, "nextCursor": next_cursor}

    def items(
        self, ctx: RequestCtx, job_id: str, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        job = self._visible(self.caller(ctx), job_id)
        if status is not None and status not in ITEM_STATUSES:
            raise InvalidFilter(f"status must be one of {', '.join(ITEM_STATUSES)}")
        try:
            page, next_cursor = self.d.store.job_items_page(job.id, status, limit, cursor)
        except ValueError:
            raise InvalidCursor() from None
        return {"items": [item_view(i) for i in page], "nextCursor": next_cursor}

    def cancel(self, ctx: RequestCtx, job_id: str) -> dict[str, Any]:
        """Items not yet started end ``skipped`` (``cancelled``) as the worker reaches them."""
        job = self._visible(self.caller(ctx), job_id)
        if job.status not in ACTIVE_STATUSES:
            raise JobFinished()
        at = rfc3339(self.d.clock.now())
        try:
            self.d.store.transact(
                [
                    SetJobStatus(job.id, CANCELLED, ACTIVE_STATUSES, at),
                    PutEvent(self._event(job, CANCELLED, at)),
                ]
            )
        except ConditionFailed:
            raise JobFinished() from None
        count("BulkJobCancelled")
        job = self.d.store.get_job(job.id) or job
        return job_view(job, self.d.store.job_counts(job.id))

    # ------------------------------------------------------------------------------ the worker
    def run_message(self, body: dict[str, Any]) -> None:
        """Decide the pending items of one message. Raises when the message must come back later
        (the store or a dependency failed for an item): items decided so far stay decided."""
        job_id = str(body.get("jobId") or "")
        user_ids = [str(u) for u in body.get("userIds") or []]
        store = self.d.store
        job = store.get_job(job_id)
        if job is None:
            logger.warning("bulk message for an unknown job", extra={"jobId": job_id})
            return  # past retention (or never created): nothing to decide
        if job.status == QUEUED:
            # another worker may have started it, or it was cancelled meanwhile
            with contextlib.suppress(ConditionFailed):
                store.transact([SetJobStatus(job.id, RUNNING, (QUEUED,), rfc3339(self.d.clock.now()))])
            job = store.get_job(job.id) or job
        items = store.job_items(job.id, user_ids)
        for user_id in user_ids:
            item = items.get(user_id)
            if item is None or item.status != PENDING:
                continue  # decided already (a redelivered message, or a worker that died after it)
            if job.status == CANCELLED:
                self._decide(job, BulkItem(job.id, user_id, SKIPPED, "cancelled", "The job was cancelled"))
                continue
            self._run_item(job, user_id)
        self._maybe_finish(job)

    def _item_ctx(self, job: BulkJob, dry_run: bool) -> tuple[RequestCtx, JobItem]:
        marker = JobItem(job.id, dry_run=dry_run)
        c = job.caller
        ctx = RequestCtx(
            sub=c.get("sub"),
            # the creator's own tokens are long gone: the job acts as they did when they started it,
            # and their record is checked again for every item (a suspended creator stops the job)
            iat=2**62,
            request_id=job.request_id,
            gty=c.get("gty"),
            scopes=frozenset(c.get("scopes") or ()),
            job=marker,
        )
        return ctx, marker

    def _run_item(self, job: BulkJob, user_id: str) -> None:
        ctx, marker = self._item_ctx(job, job.dry_run)
        try:
            idp_sync = self._apply(job, ctx, user_id)
        except (DependencyUnavailable, StoreUnavailable):
            raise  # the message comes back; the item stays pending until decided
        except ApiError as err:
            self._decide(job, BulkItem(job.id, user_id, FAILED, err.code, err.detail))
            return
        if marker.outcome == "changed":
            count("BulkItemSucceeded")
            if idp_sync == "pending":
                # Auth0 could not take the change now (429, 5xx): the sync finishes it; slow down for
                # as long as Auth0 asked (its rate limit's reset), within bounds
                count("BulkJobThrottled")
                asked = self.sync.take_retry_after() if self.sync is not None else None
                self.pause(min(MAX_PAUSE_SECONDS, max(MIN_PAUSE_SECONDS, asked or 0.0)))
            return  # decided in the commit of the change (BulkItems)
        if marker.outcome == "would_change":
            self._decide(job, BulkItem(job.id, user_id, SUCCEEDED, None, "Would be changed (dry run)"))
        else:
            self._decide(job, BulkItem(job.id, user_id, SKIPPED, "no_change", "Nothing to change"))

    def _apply(self, job: BulkJob, ctx: RequestCtx, user_id: str) -> str:
        """Run one item's use case; returns the user's ``idpSync`` after it."""
        action, params = job.action, job.params
        if action == "suspend":
            view, _ = self.lifecycle.suspend(ctx, user_id, None)
            return str(view["idpSync"])
        if action == "enable":
            view, _ = self.lifecycle.enable(ctx, user_id, None)
            return str(view["idpSync"])
        if action == "delete":
            return self.lifecycle.delete(ctx, user_id, None).idp_state
        if action == "password-reset":
            self.passwords.request_for_user(ctx, user_id)
            return "synced"
        if action == "revoke-sessions":
            view, _ = self.lifecycle.revoke_sessions(ctx, user_id)
            return str(view["idpSync"])
        if action == "set-fields":
            view, _ = self.users.patch(ctx, user_id, dict(params), None)
            return str(view["idpSync"])
        if action in ("add-roles", "remove-roles"):
            view, _ = self.users.change_roles(
                ctx, user_id, params["accountId"], params["roles"], add=action == "add-roles"
            )
            return str(view["idpSync"])
        raise ValidationFailed(errors=[FieldProblem("action", "unknown")])

    def _decide(self, job: BulkJob, item: BulkItem) -> None:
        try:
            self.d.store.transact(finish_item_ops(item, job.expires_at))
        except ConditionFailed:
            return  # decided by someone else first
        count("BulkItem" + item.status.capitalize())

    def _maybe_finish(self, job: BulkJob) -> None:
        counts = self.d.store.job_counts(job.id)
        if sum(counts.values()) < job.total or job.status not in ACTIVE_STATUSES:
            return
        status = COMPLETED_WITH_ERRORS if counts.get(FAILED) else SUCCEEDED
        at = rfc3339(self.d.clock.now())
        try:
            self.d.store.transact(
                [SetJobStatus(job.id, status, ACTIVE_STATUSES, at), PutEvent(self._event(job, status, at))]
            )
        except ConditionFailed:
            return  # finished (or cancelled) by another worker
        count("BulkJobFinished")

    def _finished_event(self, job: BulkJob, status: str, at: str) -> None:
        self.d.store.transact([PutEvent(self._event(job, status, at))])

    def _event(self, job: BulkJob, status: str, at: str) -> OutboxEvent:
        """``bulk_job.finished``: subject the job id; ``data`` names the job's outcome, not its users."""
        actor = Actor(job.actor["type"], job.actor["id"])  # type: ignore[arg-type]
        detail = cloud_event(
            self.d.settings,
            detail_type=BULK_JOB_FINISHED,
            user_id=job.id,
            version=1,
            at=at,
            fields=[],
            actor=actor,
            request_id=job.request_id,
            job_id=job.id,
        )
        data = detail["data"]
        data.pop("userId", None)
        data.pop("changedFields", None)
        data.update({"jobId": job.id, "action": job.action, "status": status, "dryRun": job.dry_run})
        return OutboxEvent(f"bulkjob|{job.id}", outbox_key(1), BULK_JOB_FINISHED, detail, self.d.clock.now())


class ListTargets:
    """``TargetResolver`` over the users list (``GET /users``): the filter's parameters are the list's,
    paged in its default order under the caller's scope, ids only. Reads only index entries and the
    page's records, never the whole table."""

    # pages and orders are the resolver's business, not the filter's
    NOT_FILTERS = frozenset({"cursor", "limit"})

    def __init__(self, lists: ListService) -> None:
        self.lists = lists

    def pages(self, ctx: RequestCtx, caller: User, filter_: dict[str, Any]) -> Iterator[list[str]]:
        params = self.params(filter_)
        while True:
            page = self.lists.list_for(caller, params)
            yield [str(item["id"]) for item in page["items"]]
            if not page["nextCursor"]:
                return
            params["cursor"] = str(page["nextCursor"])

    def params(self, filter_: dict[str, Any]) -> dict[str, str]:
        """The filter as a query string would carry it (``InvalidFilter`` for what it cannot)."""
        params: dict[str, str] = {}
        for name, value in filter_.items():
            if name in self.NOT_FILTERS:
                raise InvalidFilter(f"{name} is not a filter")
            if isinstance(value, bool):
                params[name] = "true" if value else "false"
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                params[name] = ",".join(value)
            elif isinstance(value, str | int) and not isinstance(value, bool):
                params[name] = str(value)
            else:
                raise InvalidFilter(f"{name} must be a string, a number, true/false or a list of strings")
        params["limit"] = str(MAX_LIMIT)
        return params
