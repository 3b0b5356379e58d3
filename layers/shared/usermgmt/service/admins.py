"""The last ACTIVE platform administrator (SPEC section 3): never suspended, deleted or demoted.

A ``Derived`` of the one write path: every change that makes a user stop or start being an ACTIVE
platform administrator moves one counter item in the same transaction (``AdjustAdminCount``), and a
decrease holds only while the counter stays at least 1. Two administrators demoting (or suspending,
or deleting) each other at the same moment commit two transactions on the same counter item: one
wins; the other fails its condition (or conflicts, re-plans, and then fails it) and answers 409
``last_administrator``. A check on a read instead would let both pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from usermgmt.errors import LastAdministrator
from usermgmt.models import ACTIVE, User
from usermgmt.store import AdjustAdminCount, Op

if TYPE_CHECKING:
    from usermgmt.service.writes import Change


def is_active_admin(user: User | None) -> bool:
    return user is not None and user.is_platform_admin and user.status == ACTIVE


class AdminCounter:
    """Keeps the count of ACTIVE platform administrators in step with every committed change."""

    def ops(self, change: Change) -> list[Op]:
        delta = int(is_active_admin(change.after)) - int(is_active_admin(change.before))
        if delta == 0:
            return []
        op = AdjustAdminCount(delta)
        if delta < 0:
            change.plan.errors[op.label] = LastAdministrator(
                "This is the last active platform administrator; make another one first"
            )
        return [op]
