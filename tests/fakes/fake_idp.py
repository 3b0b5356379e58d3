"""An in-memory ``IdentityProvider`` for unit tests.

It mirrors the Auth0 behaviour the service has to cope with (checked by
``tests/integration/test_auth0_contract.py`` against the real adapter talking to the local Auth0):

* emails are stored lower-case; another user already holding an email -> ``IdpEmailTaken``;
* the "fair" password policy -> ``IdpPasswordTooWeak``;
* setting a password lifts an administrator block (Auth0 does that; the service must re-assert it);
* updating or setting the password of an unknown user -> ``IdpUserMissing``; deleting or revoking the
  sessions of an unknown user is fine; ``get_user`` of an unknown user -> ``None``;
* names longer than Auth0 allows -> ``IdpRejected(400, "invalid_body")``;
* creating a user whose id exists is done already (Auth0's 409 for the same id); another user holding
  the email -> ``IdpEmailTaken``; a created user has no password anyone knows.

Every call is recorded in ``calls`` (passwords are not: see ``passwords``). ``fail_next`` makes the next
N calls (optionally of one method only) raise a given ``IdpError`` without changing anything, or, with
``after_apply=True``, after applying the change (Auth0 did it, then the answer was lost: a timeout).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

from local.auth0 import password_is_fair  # the same policy as the local Auth0
from usermgmt.errors import IdpEmailTaken, IdpError, IdpPasswordTooWeak, IdpRejected, IdpUserMissing
from usermgmt.ports import IdpNewUser, IdpUser, IdpUserUpdate

METHODS = ("get_user", "update_user", "set_password", "delete_user", "revoke_sessions", "create_user")
NAME_LIMITS = {"name": 300, "given_name": 150, "family_name": 150}


@dataclass(frozen=True)
class Call:
    method: str
    user_id: str
    update: IdpUserUpdate | None = None


@dataclass
class _Failure:
    error: IdpError
    remaining: int  # -1: until cleared
    method: str | None
    after_apply: bool = False


class FakeIdentityProvider:
    def __init__(self) -> None:
        self.users: dict[str, IdpUser] = {}
        self.passwords: dict[str, str] = {}
        self.calls: list[Call] = []
        self.revocations: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.RLock()

    # -- test helpers ----------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        email: str,
        *,
        given_name: str | None = None,
        family_name: str | None = None,
        name: str | None = None,
        email_verified: bool = True,
        blocked: bool = False,
        password: str | None = None,
    ) -> IdpUser:
        if name is None:
            name = " ".join(p for p in (given_name, family_name) if p) or email
        user = IdpUser(
            user_id=user_id,
            email=email.lower(),
            email_verified=email_verified,
            blocked=blocked,
            name=name,
            given_name=given_name,
            family_name=family_name,
        )
        with self._lock:
            self.users[user_id] = user
            if password is not None:
                self.passwords[user_id] = password
        return user

    def fail_next(
        self, count: int, error: IdpError, *, method: str | None = None, after_apply: bool = False
    ) -> None:
        """The next ``count`` calls (of ``method`` only, if given; ``-1``: until cleared) raise ``error``,
        before changing anything or (``after_apply``) after the change was made."""
        if method is not None and method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        with self._lock:
            self._failures.append(
                _Failure(error=error, remaining=count, method=method, after_apply=after_apply)
            )

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    # -- IdentityProvider ------------------------------------------------------------------------

    def get_user(self, user_id: str) -> IdpUser | None:
        with self._lock:
            self._enter("get_user", user_id)
            return self.users.get(user_id)

    def update_user(self, user_id: str, update: IdpUserUpdate) -> None:
        with self._lock:
            self._enter("update_user", user_id, update)
            if update.is_empty():
                return
            user = self.users.get(user_id)
            if user is None:
                raise IdpUserMissing()
            for key, limit in NAME_LIMITS.items():
                value = getattr(update, key)
                if value is not None and not 1 <= len(value) <= limit:
                    raise IdpRejected(400, "invalid_body")
            changes: dict[str, Any] = {
                k: v for k, v in dataclasses.asdict(update).items() if v is not None and k != "email"
            }
            if update.email is not None:
                email = update.email.lower()
                if any(u.email == email and uid != user_id for uid, u in self.users.items()):
                    raise IdpEmailTaken()
                changes["email"] = email
            self.users[user_id] = dataclasses.replace(user, **changes)
            self._leave("update_user")

    def set_password(self, user_id: str, password: str) -> None:
        with self._lock:
            self._enter("set_password", user_id)
            user = self.users.get(user_id)
            if user is None:
                raise IdpUserMissing()
            if not password_is_fair(password):
                raise IdpPasswordTooWeak()
            self.passwords[user_id] = password
            # Auth0 lifts administrator blocks when the password is set through the Management API.
            self.users[user_id] = dataclasses.replace(user, blocked=False)
            self._leave("set_password")

    def create_user(self, user: IdpNewUser) -> None:
        with self._lock:
            self._enter("create_user", user.user_id)
            if user.user_id in self.users:
                return  # an earlier attempt created it
            if any(u.email == user.email.lower() for u in self.users.values()):
                raise IdpEmailTaken()
            for key, limit in NAME_LIMITS.items():
                if not 1 <= len(getattr(user, key)) <= limit:
                    raise IdpRejected(400, "invalid_body")
            self.users[user.user_id] = IdpUser(
                user_id=user.user_id,
                email=user.email.lower(),
                email_verified=user.email_verified,
                blocked=user.blocked,
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
            )
            self._leave("create_user")

    def delete_user(self, user_id: str) -> None:
        with self._lock:
            self._enter("delete_user", user_id)
            self.users.pop(user_id, None)
            self.passwords.pop(user_id, None)
            self._leave("delete_user")

    def revoke_sessions(self, user_id: str) -> None:
        with self._lock:
            self._enter("revoke_sessions", user_id)
            if user_id in self.users:
                self.revocations[user_id] = self.revocations.get(user_id, 0) + 1

    # -- internals -------------------------------------------------------------------------------

    def _enter(self, method: str, user_id: str, update: IdpUserUpdate | None = None) -> None:
        self.calls.append(Call(method, user_id, update))
        self._fail(method, after_apply=False)

    def _leave(self, method: str) -> None:
        self._fail(method, after_apply=True)

    def _fail(self, method: str, *, after_apply: bool) -> None:
        for failure in self._failures:
            if failure.after_apply != after_apply:
                continue
            if failure.method is None or failure.method == method:
                if failure.remaining > 0:
                    failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                raise copy.copy(failure.error)
