"""Reading and editing users (SPEC sections 3 to 6): GET, the audit trail, and PATCH with its rules.

Every change goes through the one write path (``service/writes.py``); this module holds the rules of a
PATCH: per-caller field rules, memberships (replaced by a platform administrator, merged by a delegated
one), the default account, and starting a change of login email.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from usermgmt.auth import Access, RequestCtx, require_platform, require_recent_sign_in
from usermgmt.emails import access_changed, email_change_notice, greeting_name, verify_address
from usermgmt.errors import (
    EmailImmutable,
    EmailTaken,
    FieldProblem,
    Forbidden,
    InvalidCursor,
    RateLimited,
    ValidationFailed,
)
from usermgmt.links import CANCEL, VERIFY
from usermgmt.models import ADMIN_ROLE, ROLES, Membership, User, user_view
from usermgmt.observability import count
from usermgmt.ports import Deps, Email
from usermgmt.ratelimit import VERIFY_PER_ADDRESS, VERIFY_PER_USER, RateLimiter
from usermgmt.service.sync import PROFILE
from usermgmt.service.writes import Plan, Writer, diff
from usermgmt.store import AccountExists, Op

if TYPE_CHECKING:
    from usermgmt.schemas import MembershipIn

UPDATED_ACTION = "user.updated"
Take = Callable[[str, str, int, float], tuple[bool, int]]


def _memberships_json(memberships: tuple[Membership, ...]) -> list[dict[str, Any]]:
    return [{"accountId": m.account_id, "roles": list(m.roles)} for m in memberships]


def without_change_links(user: User) -> dict[str, str]:
    """The user's links without those of a pending email change (VERIFY and CANCEL)."""
    return {purpose: h for purpose, h in user.links.items() if purpose not in (VERIFY, CANCEL)}


def verification_budget(deps: Deps, take: Take, user: User, address: str, now: float) -> tuple[bool, int]:
    """Count one verification email (or email-change start) against its user and its address (H1, L5).

    ``(allowed, retry_after)``; both budgets are taken, so neither can be spent through the other.
    """
    s = deps.settings
    per_user = take(VERIFY_PER_USER, user.id, s.verify_limit_per_user, now)
    per_address = take(VERIFY_PER_ADDRESS, address, s.verify_limit_per_address, now)
    allowed = per_user[0] and per_address[0]
    if not allowed:
        count("VerificationRateLimited")
    return allowed, max(r for ok, r in (per_user, per_address) if not ok) if not allowed else 0


class UserService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer
        s = deps.settings
        self.limiter = RateLimiter(deps.store, s.rate_limit_window_seconds, s.hash_pepper)

    # ------------------------------------------------------------------------------ reads
    def get(self, ctx: RequestCtx, target_id: str | None) -> tuple[dict[str, Any], int]:
        access = self.w.access(ctx, target_id)
        return user_view(access.target, access.accounts), access.target.version

    def audit(self, ctx: RequestCtx, target_id: str, limit: int, cursor: str | None) -> dict[str, Any]:
        access = self.w.access(ctx, target_id)
        require_platform(access)
        try:
            page = self.d.store.audit_page(access.target.id, limit, cursor)
        except ValueError:
            raise InvalidCursor() from None
        return {"items": page.items, "nextCursor": page.cursor}

    # ------------------------------------------------------------------------------ email change
    def plan_email_change(
        self, user: User, new_email: str, now: float, take: Take
    ) -> tuple[User, list[Op], list[Email]]:
        """Start (or restart) a change of login email: pending address, verify link, notice to the old one.

        429 ``rate_limited`` beyond the verification budgets of the user or the new address, counted
        before the address is looked up (so ``email_taken`` cannot be probed without limit, L5).
        """
        s = self.d.settings
        allowed, retry_after = verification_budget(self.d, take, user, new_email, now)
        if not allowed:
            raise RateLimited(retry_after, "Too many email changes or verification emails; try again later")
        owner = self.d.store.user_id_for_email(new_email)
        if owner is not None and owner != user.id:
            raise EmailTaken()
        verify_url, links, ops = self.w.issue_link(
            user, VERIFY, now, s.verify_link_ttl_seconds, address=new_email
        )
        cancel_url, links, cancel_ops = self.w.issue_link(
            user.evolve(links=links), CANCEL, now, s.verify_link_ttl_seconds
        )
        after = user.evolve(pending_email=new_email, links=links)
        emails = [
            verify_address(new_email, verify_url, s.verify_link_ttl_seconds / 3600),
            email_change_notice(
                user.email, greeting_name(user.first_name, user.email_verified), new_email, cancel_url
            ),
        ]
        return after, ops + cancel_ops, emails

    # ------------------------------------------------------------------------------ PATCH
    def patch(
        self, ctx: RequestCtx, target_id: str | None, body: object, expected_version: int | None
    ) -> tuple[dict[str, Any], int]:
        from usermgmt.schemas import parse_patch  # pydantic: only when a body is parsed

        parsed: dict[str, dict[str, Any]] = {}
        take = self.limiter.once_per_request()

        def plan(access: Access, now: float) -> Plan | None:
            if access.kind not in parsed:
                parsed[access.kind] = parse_patch(access.kind, body)
            fields = parsed[access.kind]
            t = access.target
            if access.kind == "self" and fields.get("email") not in (None, t.email, t.pending_email):
                # a new login email from the person's own session: a recent sign-in (SPEC section 17)
                require_recent_sign_in(ctx, self.d.settings.reauth_max_age_seconds, now)
            return self._plan_patch(access, fields, now, take)

        written = self.w.write(ctx, target_id, expected_version, plan)
        return user_view(written.user, written.access.accounts), written.user.version

    def change_roles(
        self, ctx: RequestCtx, target_id: str, account_id: str, roles: list[str], *, add: bool
    ) -> tuple[dict[str, Any], int]:
        """Add or remove storefront roles in one account (a bulk job's ``add-roles``/``remove-roles``).

        The same PATCH of ``memberships`` a caller would send, computed from the user as read in the
        write path (so a concurrent change is never overwritten): a platform administrator's replaces
        the list, a delegated administrator's names only that account. The user must be a member of
        the account (422 otherwise); a membership left without roles is a 422 as in a PATCH.
        """
        from usermgmt.schemas import parse_patch

        take = self.limiter.once_per_request()

        def plan(access: Access, now: float) -> Plan | None:
            t = access.target
            current = {m.account_id: m for m in t.memberships}
            visible = access.accounts is None or account_id in access.accounts
            if account_id not in current or not visible:
                raise ValidationFailed(
                    errors=[FieldProblem("params.accountId", "the user is not a member of this account")]
                )
            old = set(current[account_id].roles)
            new = old | set(roles) if add else old - set(roles)
            entry = {"accountId": account_id, "roles": [r for r in ROLES if r in new]}
            if access.kind == "platform":
                entries = [
                    entry
                    if m.account_id == account_id
                    else {"accountId": m.account_id, "roles": list(m.roles)}
                    for m in t.memberships
                ]
            else:
                entries = [entry]
            return self._plan_patch(access, parse_patch(access.kind, {"memberships": entries}), now, take)

        written = self.w.write(ctx, target_id, None, plan)
        return user_view(written.user, written.access.accounts), written.user.version

    def _plan_patch(self, access: Access, fields: dict[str, Any], now: float, take: Take) -> Plan | None:
        t = access.target
        after = t
        changes: list[dict[str, Any]] = []
        plan = Plan(after=t, action=UPDATED_ACTION)
        sync: set[str] = set()
        if "firstName" in fields and diff(changes, "firstName", t.first_name, fields["firstName"]):
            after = after.evolve(first_name=fields["firstName"])
            sync.add(PROFILE)
        if "lastName" in fields and diff(changes, "lastName", t.last_name, fields["lastName"]):
            after = after.evolve(last_name=fields["lastName"])
            sync.add(PROFILE)
        for name, attr in (("accountNumber", "account_number"), ("profile", "profile")):
            if name in fields and diff(changes, name, getattr(t, attr), fields[name]):
                after = after.evolve(**{attr: fields[name]})
        if "memberships" in fields:
            memberships = (
                self._replace_memberships(fields["memberships"], plan)
                if access.kind == "platform"
                else self._merge_memberships(access, fields["memberships"])
            )
            if diff(changes, "memberships", _memberships_json(t.memberships), _memberships_json(memberships)):
                after = after.evolve(memberships=memberships)
        if "defaultAccountId" in fields:
            diff(changes, "defaultAccountId", t.default_account_id, fields["defaultAccountId"])
            after = after.evolve(default_account_id=fields["defaultAccountId"])
        if "memberships" in fields or "defaultAccountId" in fields:
            _check_default_account(after)
        if "deliverability" in fields and diff(
            changes, "deliverability", t.deliverability, fields["deliverability"]
        ):
            after = after.evolve(deliverability=fields["deliverability"])
        if "email" in fields:
            after = self._plan_email(after, fields["email"], now, changes, plan, take)
        if not changes:
            return None
        plan.after = after
        plan.changes = changes
        plan.sync = frozenset(sync)
        if after.memberships != t.memberships or after.profile != t.profile:
            summary = [f"{m.account_id}: {', '.join(m.roles)}" for m in after.memberships] or ["no accounts"]
            greet = greeting_name(after.first_name, t.email_verified)
            plan.emails.append(access_changed(t.email, greet, summary))
        return plan

    def _plan_email(
        self, user: User, new_email: str, now: float, changes: list[dict[str, Any]], plan: Plan, take: Take
    ) -> User:
        if new_email == user.email:
            if user.pending_email:
                # back to the current address: the pending change ends and its links die
                diff(changes, "pendingEmail", user.pending_email, None)
                return user.evolve(pending_email=None, links=without_change_links(user))
            return user
        if self.d.settings.email_change_policy == "locked":
            raise EmailImmutable()
        if new_email == user.pending_email:
            return user  # already pending; the resend route sends a fresh link
        after, ops, emails = self.plan_email_change(user, new_email, now, take)
        diff(changes, "pendingEmail", user.pending_email, new_email)
        plan.ops.extend(ops)
        plan.emails.extend(emails)
        return after

    def _replace_memberships(self, entries: list[MembershipIn], plan: Plan) -> tuple[Membership, ...]:
        problems: list[FieldProblem] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if entry.accountId in seen:
                problems.append(FieldProblem(f"memberships.{i}.accountId", "is listed twice"))
            seen.add(entry.accountId)
            op = AccountExists(entry.accountId)
            plan.ops.append(op)
            plan.errors[op.label] = ValidationFailed(
                errors=[FieldProblem(f"memberships.{i}.accountId", "is not a known account")]
            )
        if problems:
            raise ValidationFailed(errors=problems)
        return tuple(e.to_domain() for e in entries)

    def _merge_memberships(self, access: Access, entries: list[MembershipIn]) -> tuple[Membership, ...]:
        t = access.target
        administered = access.accounts or frozenset()
        current = {m.account_id: m for m in t.memberships}
        problems: list[FieldProblem] = []
        updates: dict[str, Membership] = {}
        for i, entry in enumerate(entries):
            if entry.accountId not in administered or entry.accountId not in current:
                problems.append(
                    FieldProblem(
                        f"memberships.{i}.accountId", "must be an account you administer that the user is in"
                    )
                )
            elif entry.accountId in updates:
                problems.append(FieldProblem(f"memberships.{i}.accountId", "is listed twice"))
            else:
                updates[entry.accountId] = entry.to_domain()
        if problems:
            raise ValidationFailed(errors=problems)
        if access.caller.id == t.id:
            for account_id, membership in updates.items():
                if ADMIN_ROLE in current[account_id].roles and ADMIN_ROLE not in membership.roles:
                    raise Forbidden("You cannot remove your own Administrator role")
        return tuple(updates.get(m.account_id, m) for m in t.memberships)


def _check_default_account(user: User) -> None:
    accounts = user.account_ids
    if user.default_account_id is None and accounts:
        raise ValidationFailed(
            errors=[FieldProblem("defaultAccountId", "must name one of the user's accounts")]
        )
    if user.default_account_id is not None and user.default_account_id not in accounts:
        raise ValidationFailed(
            errors=[FieldProblem("defaultAccountId", "must name one of the user's accounts")]
        )
