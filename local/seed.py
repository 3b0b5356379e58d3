"""Seed data for the local stack (SPEC section 11): accounts and users, into DynamoDB and the local Auth0.

The file (``local/seed.json`` or ``$SEED_FILE``)::

    {"accounts": [{"id": "acme", "name": "Acme Corp"}],
     "users": [{"email": "admin@example.com", "password": "...", "firstName": "Ada", "lastName": "Admin",
                "profile": "administrator", "emailVerified": true,
                "memberships": [{"accountId": "acme", "roles": ["Administrator"]}],
                "defaultAccountId": "acme", "accountNumber": null, "status": "ACTIVE"}],
     "machineClients": [{"clientId": "ops-script", "clientSecret": "...", "scopes": ["bulk:users"]}]}

Unknown keys are rejected, names and emails follow the user resource's rules, memberships must name
seeded accounts, ``defaultAccountId`` one of the user's accounts, and passwords must meet Auth0's "fair"
policy. ``machineClients`` are the local Auth0's machine-to-machine applications of the API (client
credentials with those scopes; the stack allows them in ``MACHINE_CLIENT_IDS``).
User ids are deterministic: ``"auth0|" + sha256(email.lower()).hexdigest()[:24]``, so a restart
keeps them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from local.auth0 import password_is_fair
from usermgmt.clock import rfc3339
from usermgmt.models import (
    ACTIVE,
    ADMIN_ROLE,
    ROLES,
    SUSPENDED,
    Membership,
    Profile,
    Role,
    User,
)
from usermgmt.schemas import AccountId, AccountNumber, EmailAddress, Name

__all__ = ["SeedError", "SeedFile", "SeededUser", "apply_seed", "describe", "load_seed", "user_id_for"]


class SeedError(Exception):
    """The seed file is unreadable or invalid; the message names the file and every problem."""


class SeedAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: AccountId
    name: Annotated[str, Field(min_length=1, max_length=200)]


class SeedMembership(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accountId: AccountId
    roles: Annotated[list[Role], Field(min_length=1)]


class SeedUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: EmailAddress
    password: Annotated[str, Field(min_length=1, max_length=128)]
    firstName: Name
    lastName: Name
    profile: Profile = "customer"
    emailVerified: bool = True
    memberships: list[SeedMembership] = Field(default_factory=list)
    defaultAccountId: AccountId | None = None
    accountNumber: AccountNumber | None = None
    status: Literal["ACTIVE", "SUSPENDED"] = "ACTIVE"

    @model_validator(mode="after")
    def _check(self) -> SeedUser:
        if not password_is_fair(self.password):
            raise ValueError(
                "password does not meet Auth0's 'fair' policy "
                "(8+ characters with 3 of: lower case, upper case, digits, special characters)"
            )
        accounts = [m.accountId for m in self.memberships]
        if len(accounts) != len(set(accounts)):
            raise ValueError("memberships name the same account twice")
        if self.defaultAccountId is not None and self.defaultAccountId not in accounts:
            raise ValueError("defaultAccountId must be one of the user's memberships")
        return self


MachineScope = Literal[
    "read:users", "update:users", "suspend:users", "delete:users", "create:users", "bulk:users"
]


class SeedMachineClient(BaseModel):
    """A machine-to-machine application with a client grant to the API (SPEC section 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clientId: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    clientSecret: Annotated[str, Field(min_length=16, max_length=128)]
    scopes: list[MachineScope] = Field(default_factory=list)


class SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accounts: list[SeedAccount] = Field(default_factory=list)
    users: list[SeedUser] = Field(default_factory=list)
    machineClients: list[SeedMachineClient] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SeedFile:
        account_ids = [a.id for a in self.accounts]
        if len(account_ids) != len(set(account_ids)):
            raise ValueError("accounts: an id appears twice")
        emails = [u.email for u in self.users]
        if len(emails) != len(set(emails)):
            raise ValueError("users: an email appears twice")
        clients = [c.clientId for c in self.machineClients]
        if len(clients) != len(set(clients)):
            raise ValueError("machineClients: a clientId appears twice")
        known = set(account_ids)
        for index, user in enumerate(self.users):
            for membership in user.memberships:
                if membership.accountId not in known:
                    raise ValueError(f"users[{index}]: account {membership.accountId!r} is not in accounts")
        return self


def load_seed(path: str | Path) -> SeedFile:
    """Read and validate a seed file; ``SeedError`` lists every problem with its location."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SeedError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise SeedError(f"{path}: not valid JSON ({exc})") from None
    try:
        return SeedFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_url=False, include_input=False):
            where = _location(error["loc"])
            if error["type"] == "extra_forbidden":
                message = f"unknown key {str(error['loc'][-1])!r}"
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {where or '(top level)'}: {message}")
        raise SeedError(f"{path}: invalid seed file\n" + "\n".join(lines)) from None


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def user_id_for(email: str) -> str:
    """The deterministic Auth0-style id of a seeded user."""
    return "auth0|" + hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:24]


def describe(user: SeedUser) -> str:
    """What a seeded user is, for the start banner (``platform administrator``, ``Buyer in acme`` ...)."""
    parts: list[str] = []
    if user.profile == "administrator":
        parts.append("platform administrator")
    for membership in user.memberships:
        roles = [r for r in ROLES if r in membership.roles]
        if ADMIN_ROLE in roles:
            others = [r for r in roles if r != ADMIN_ROLE]
            text = f"delegated administrator of {membership.accountId}"
            parts.append(text + (f" (+{', '.join(others)})" if others else ""))
        else:
            parts.append(f"{'+'.join(roles)} in {membership.accountId}")
    if not parts:
        parts.append(f"{user.profile}, no accounts")
    if user.status == SUSPENDED:
        parts.append("SUSPENDED (cannot log in)")
    if not user.emailVerified:
        parts.append("email not verified")
    return "; ".join(parts)


class AccountStore(Protocol):
    def put_account(self, account_id: str, name: str) -> None: ...

    def put_user(self, user: User) -> None: ...


class IdentityDirectory(Protocol):
    def add_user(
        self,
        user_id: str,
        email: str,
        password: str,
        *,
        given_name: str | None,
        family_name: str | None,
        email_verified: bool = True,
        blocked: bool = False,
    ) -> Any: ...


@dataclass(frozen=True)
class SeededUser:
    id: str
    email: str
    password: str
    description: str
    status: str


def apply_seed(
    seed: SeedFile, store: AccountStore, directory: IdentityDirectory, *, now: float | None = None
) -> list[SeededUser]:
    """Write the seed's accounts and users to the store and the identity provider; idempotent."""
    moment = rfc3339(time.time() if now is None else now)
    for account in seed.accounts:
        store.put_account(account.id, account.name)
    seeded: list[SeededUser] = []
    for entry in seed.users:
        user_id = user_id_for(entry.email)
        directory.add_user(
            user_id,
            entry.email,
            entry.password,
            given_name=entry.firstName,
            family_name=entry.lastName,
            email_verified=entry.emailVerified,
            blocked=entry.status == SUSPENDED,
        )
        store.put_user(
            User(
                id=user_id,
                email=entry.email,
                first_name=entry.firstName,
                last_name=entry.lastName,
                profile=entry.profile,
                status=SUSPENDED if entry.status == SUSPENDED else ACTIVE,
                email_verified=entry.emailVerified,
                account_number=entry.accountNumber,
                default_account_id=entry.defaultAccountId,
                memberships=tuple(
                    Membership(m.accountId, tuple(r for r in ROLES if r in m.roles))
                    for m in entry.memberships
                ),
                idp_sync="synced",
                version=1,
                created_at=moment,
                updated_at=moment,
            )
        )
        seeded.append(SeededUser(user_id, entry.email, entry.password, describe(entry), entry.status))
    return seeded
