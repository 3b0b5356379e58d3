"""Email deliverability (SPEC section 16): what SES reports about a user's login email.

A permanent bounce or a complaint for the current login email of a user sets ``deliverability`` to
``bounced`` or ``complained`` through the one write path (audit actor ``system:ses``, event
``user.deliverability_changed``). Transient bounces, addresses that are no user's login email (a
pending address, an old one) and repeats change nothing. From then on no mail goes to that address
(``models.mail_blocked``); a confirmed change of login email, or a platform administrator's
``PATCH {"deliverability": "ok"}``, sets it back.
"""

from __future__ import annotations

from typing import Any

from usermgmt.auth import system
from usermgmt.models import User
from usermgmt.observability import count, logger
from usermgmt.ports import Deps
from usermgmt.service.writes import Plan, Writer, diff

CHANGED_ACTION = "user.deliverability_changed"
ACTOR_SES = system("ses")


class DeliverabilityService:
    def __init__(self, deps: Deps, writer: Writer) -> None:
        self.d = deps
        self.w = writer

    def record(self, state: str, addresses: tuple[str, ...], event_id: str) -> int:
        """Mark the users whose login email is one of ``addresses``; returns how many changed."""
        changed = 0
        for address in addresses:
            user_id = self.d.store.user_id_for_email(address)
            if user_id is None:
                continue

            def plan(
                now: float, address: str = address, found: str = user_id
            ) -> tuple[User, Plan, float] | None:
                user = self.d.store.get_user(found)
                if user is None or user.email != address or user.deliverability == state:
                    return None
                changes: list[dict[str, Any]] = []
                diff(changes, "deliverability", user.deliverability, state)
                return (
                    user,
                    Plan(after=user.evolve(deliverability=state), action=CHANGED_ACTION, changes=changes),
                    now,
                )

            if self.w.write_direct(ACTOR_SES, event_id, plan) is not None:
                changed += 1
        count("DeliverabilityChanged", changed)
        logger.info("ses feedback", extra={"state": state, "recipients": len(addresses), "changed": changed})
        return changed
