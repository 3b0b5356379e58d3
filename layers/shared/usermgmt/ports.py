"""Ports: the small interfaces the service depends on, and ``Deps``, the bundle services receive.

Adapters implement them; only the composition root (``container.py``) builds adapters and services.
The store port lives in ``usermgmt.store`` with its records and ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from usermgmt.settings import Settings
from usermgmt.store import UserStore


@dataclass(frozen=True)
class IdpUserUpdate:
    """Absolute values to set on the identity provider's user. ``None`` means "leave as is".

    The adapter splits the change into as many PATCH calls as the provider needs (Auth0 refuses
    some combinations) and sends the connection name where the provider requires it.
    """

    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    blocked: bool | None = None
    email: str | None = None
    email_verified: bool | None = None

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.name,
                self.given_name,
                self.family_name,
                self.blocked,
                self.email,
                self.email_verified,
            )
        )


@dataclass(frozen=True)
class IdpUser:
    user_id: str
    email: str | None
    email_verified: bool
    blocked: bool
    name: str | None
    given_name: str | None
    family_name: str | None


@dataclass(frozen=True)
class IdpNewUser:
    """A user to create in the provider's database connection, under an id chosen here (``auth0|...``)."""

    user_id: str
    email: str
    email_verified: bool
    given_name: str
    family_name: str
    name: str
    blocked: bool = False


class IdentityProvider(Protocol):
    """Auth0 (or the local stand-in). Every method is idempotent.

    Raises ``IdpUnavailable`` (transient; ``IdpAccessDenied`` when Auth0 refused our credentials or
    scopes, ``reason == "timeout"`` when the request may have been applied), ``IdpRejected``
    (permanent), ``IdpUserMissing``, ``IdpEmailTaken`` and ``IdpPasswordTooWeak`` from
    ``usermgmt.errors``; nothing else.
    """

    def get_user(self, user_id: str) -> IdpUser | None: ...

    def update_user(self, user_id: str, update: IdpUserUpdate) -> None: ...

    def set_password(self, user_id: str, password: str) -> None: ...

    def create_user(self, user: IdpNewUser) -> None:
        """Create the user with no usable password. A user that already has this id counts as
        created (a retry never makes two); ``IdpEmailTaken`` when another user holds the email."""
        ...

    def delete_user(self, user_id: str) -> None:
        """Delete; a user the provider does not know counts as deleted."""
        ...

    def revoke_sessions(self, user_id: str) -> None:
        """End the user's sessions and refresh tokens."""
        ...


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    text: str
    html: str


class Mailer(Protocol):
    def send(self, email: Email) -> None:
        """Send one email. Raises ``MailUnavailable`` on failure."""
        ...


class MailUnavailable(Exception):
    """The mail service refused or could not be reached."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


@dataclass(frozen=True)
class BusEntry:
    """One event for the product's bus: its ``detail-type`` and its ``detail``."""

    detail_type: str
    detail: dict[str, Any]


class BusUnavailable(Exception):
    """The event bus could not be reached or refused the whole call."""


class EventBus(Protocol):
    def put_events(self, entries: list[BusEntry]) -> list[bool]:
        """Put up to 10 entries; which of them the bus took. Raises ``BusUnavailable``."""
        ...


class QueueUnavailable(Exception):
    """The queue could not be reached or refused messages."""


class JobQueue(Protocol):
    def send(self, bodies: list[dict[str, Any]]) -> None:
        """Queue these messages (any number). Raises ``QueueUnavailable``."""
        ...


@dataclass(frozen=True)
class Deps:
    """What every service is built from: settings, time and the ports (never the container)."""

    settings: Settings
    clock: Clock
    store: UserStore
    idp: IdentityProvider
    mailer: Mailer
