"""Personal data export (SPEC section 18): one JSON document with everything held about a person.

What is exported follows what a deletion erases (``Writer.commit`` with ``delete`` and the store's
``erase_deleted_user``): the record (with its email reservation, memberships and a pending email
change), the user's outstanding links (kind, created, expires, status; never a token, a hash or a
URL), the invitations naming them (account, roles, created, expires, status; never the link's hash
nor who invited them), the audit entries about them and the bulk-job items that named them.
``tests/integration/test_export.py`` derives the kinds of items a deletion removes from the table
itself and fails when one of them has no place here.

Each export is audited (``user.exported``) through the one write path. Who may export: the person
(``/me/export``) and platform administrators (``/users/{userId}/export``; a delegated administrator in
scope gets 403, anyone else 404).
"""

from __future__ import annotations

from typing import Any

from usermgmt.auth import READ_USERS, Access, RequestCtx, require_platform
from usermgmt.clock import rfc3339
from usermgmt.models import User, user_view
from usermgmt.ports import Deps
from usermgmt.service.invitations import slot_of
from usermgmt.service.writes import Plan, Writer

EXPORTED_ACTION = "user.exported"
EXPORT_FORMAT = 1
_AUDIT_PAGE = 100


class ExportService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer

    def export(self, ctx: RequestCtx, target_id: str | None) -> dict[str, Any]:
        """The export of ``target_id`` (``None``: the caller, ``/me``), audited before it is read."""

        def check(access: Access) -> None:
            if access.kind != "self":
                require_platform(access)

        def plan(access: Access, now: float) -> Plan:
            return Plan(after=access.target, action=EXPORTED_ACTION)

        written = self.w.write(ctx, target_id, None, plan, access_check=check, scope=READ_USERS)
        return self.document(written.user)

    def document(self, user: User) -> dict[str, Any]:
        """Everything held about ``user``, as of now (the audit trail includes this export)."""
        return {
            "format": EXPORT_FORMAT,
            "exportedAt": rfc3339(self.d.clock.now()),
            "user": {
                **user_view(user),
                "tokensValidAfter": user.tokens_valid_after,
            },
            "links": self._links(user),
            "invitations": self._invitations(user),
            "audit": self._audit(user.id),
            "bulkJobItems": [
                {"jobId": i.job_id, "status": i.status, "code": i.code, "detail": i.detail}
                for i in self.d.store.user_job_items(user.id)
            ],
        }

    def _links(self, user: User) -> list[dict[str, Any]]:
        links: list[dict[str, Any]] = []
        for _slot, token_hash in sorted(user.links.items()):
            link = self.d.store.get_link(token_hash)
            if link is None or link.user_id != user.id:
                continue
            links.append(
                {
                    "kind": link.purpose,  # an invitation's slot names its invitation: not a kind
                    "createdAt": rfc3339(link.created_at),
                    "expiresAt": rfc3339(link.expires_at),
                    "status": link.status,
                    "forPendingAddress": link.address_hash is not None,
                }
            )
        return links

    def _invitations(self, user: User) -> list[dict[str, Any]]:
        """Every invitation item naming the user (found through their link records, so also those a
        suspension ended, which the user's ``links`` no longer name; erasure deletes the same ones)."""
        now = self.d.clock.now()
        found = sorted(self.d.store.user_invitations(user.id), key=lambda inv: (inv.created_at, inv.id))
        return [
            {
                "accountId": inv.account_id,
                "roles": list(inv.roles),
                "createdAt": rfc3339(inv.created_at),
                "expiresAt": rfc3339(inv.expires_at),
                "status": (
                    "ended"  # its link ended (a suspension, a confirmed email change): it cannot be used
                    if user.links.get(slot_of(inv.id)) != inv.token_hash
                    else ("pending" if inv.expires_at > now else "expired")
                ),
            }
            for inv in found
        ]

    def _audit(self, user_id: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.d.store.audit_page(user_id, _AUDIT_PAGE, cursor)
            entries.extend(page.items)
            cursor = page.cursor
            if not cursor:
                return entries
