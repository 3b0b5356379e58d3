"""The package's own errors.

Three families:

* ``ApiError`` and its subclasses are what a client sees: each carries the HTTP status and the
  stable ``code`` of SPEC section 9 and renders as RFC 9457 problem details.
* ``IdpError`` and its subclasses are what the identity-provider port raises. Adapters translate
  vendor failures into them in one place; the service decides what they mean for a request.
* ``StoreError`` and its subclasses are what the store port raises (``usermgmt.store``).

``MalformedEvent`` is the one error of the event edge the services raise too (a storefront event whose
detail does not parse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_TYPE_BASE = "https://usermgmt.dev/problems/"


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.headers = headers or {}

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class InvalidJson(ApiError):
    status, code, title = 400, "invalid_json", "The request body is not valid JSON"


class PasswordTooWeak(ApiError):
    status, code, title = 400, "password_too_weak", "The password does not meet the password policy"


class InvalidFilter(ApiError):
    status, code, title = 400, "invalid_filter", "A list filter is unknown or has a bad value"


class InvalidCursor(ApiError):
    status, code, title = 400, "invalid_cursor", "The cursor is not valid for this list"


class Unauthenticated(ApiError):
    status, code, title = 401, "unauthenticated", "Authentication is required"


class TokenRevoked(ApiError):
    status, code, title = 401, "token_revoked", "This token is no longer accepted"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "This action is not allowed"


class InsufficientScope(ApiError):
    status, code, title = 403, "insufficient_scope", "The token lacks the scope this call needs"


class UserNotFound(ApiError):
    status, code, title = 404, "user_not_found", "User not found"


class AccountNotFound(ApiError):
    status, code, title = 404, "account_not_found", "Account not found"


class InvitationNotFound(ApiError):
    status, code, title = 404, "invitation_not_found", "Invitation not found"


class RouteNotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class EmailTaken(ApiError):
    status, code, title = 409, "email_taken", "This email address is already in use"


class EmailImmutable(ApiError):
    status, code, title = 409, "email_immutable", "The login email cannot be changed"


class UserSuspended(ApiError):
    status, code, title = 409, "user_suspended", "The user is suspended"


class EmailUndeliverable(ApiError):
    status, code, title = (
        409,
        "email_undeliverable",
        "Mail to this user's login email bounced or was reported",
    )


class NothingToVerify(ApiError):
    status, code, title = 409, "nothing_to_verify", "The user has no email address waiting for verification"


class LastAdministrator(ApiError):
    status, code, title = 409, "last_administrator", "The last active platform administrator must stay one"


class ReauthenticationRequired(ApiError):
    """RFC 9470: the sign-in behind the token is older than the change allows (SPEC section 17)."""

    status, code, title = 401, "reauthentication_required", "A recent sign-in is required"

    def __init__(self, max_age: int, detail: str | None = None) -> None:
        super().__init__(
            detail or f"Sign in again (at most {max_age} seconds ago) to make this change",
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_user_authentication", max_age={max_age}'
            },
        )
        self.max_age = max_age

    def problem(self) -> dict[str, Any]:
        return {**super().problem(), "maxAge": self.max_age}


class LinkGone(ApiError):
    status = 410

    def __init__(self, code: str, detail: str, *, can_renew: bool = False) -> None:
        self.code = code
        self.title = detail
        self.can_renew = can_renew
        super().__init__(detail)


class JobNotFound(ApiError):
    status, code, title = 404, "job_not_found", "Bulk job not found"


class JobFinished(ApiError):
    status, code, title = 409, "job_finished", "The bulk job has finished"


class IdempotencyKeyReused(ApiError):
    status, code, title = 409, "idempotency_key_reused", "This Idempotency-Key was used with another request"


class TooManyJobs(ApiError):
    status, code, title = 429, "too_many_jobs", "Too many bulk jobs are queued or running"

    def __init__(self, retry_after: int = 60, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after)))})


class VersionMismatch(ApiError):
    status, code, title = 412, "version_mismatch", "The resource has changed since it was read"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "The request body is too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "The request body must be application/json"


class ValidationFailed(ApiError):
    status, code, title = 422, "validation_failed", "The request has invalid fields"


class RateLimited(ApiError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after)))})


class DependencyUnavailable(ApiError):
    status, code, title = 503, "dependency_unavailable", "A dependency is unavailable; nothing was changed"

    def __init__(self, detail: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after)))})


class OutcomeUnknown(DependencyUnavailable):
    """A dependency did not answer in time after it was asked to change something: it may have done it.

    Same status and code as ``DependencyUnavailable`` (SPEC section 9), a title that does not claim that
    nothing changed. What was asked is finished or undone later by the never-lost sync.
    """

    title = "A dependency did not answer in time; the change may have been made"


class MailNotSent(DependencyUnavailable):
    """A route whose purpose is an email could not send it (the mail service refused or was down)."""

    title = "The email could not be sent"

    def __init__(self, detail: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail or "The email could not be sent; try again later", retry_after)


# ---------------------------------------------------------------------------------------------
# Store errors, raised by the store port (usermgmt.store).
# ---------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of the store's own errors."""


class ConditionFailed(StoreError):
    """A transaction was refused because the condition of the op with ``label`` failed."""

    def __init__(self, label: str) -> None:
        super().__init__(label)
        self.label = label


class StoreUnavailable(StoreError):
    """The store could not be reached, or throttled us past the retries; nothing was written."""


class MalformedEvent(Exception):
    """The event cannot be processed as sent; retrying does not help. The message holds no personal data."""


# ---------------------------------------------------------------------------------------------
# Identity provider (Auth0) errors, raised by the IdentityProvider port.
# ---------------------------------------------------------------------------------------------


class IdpError(Exception):
    """Base of every identity-provider failure. Messages never carry vendor text."""


@dataclass
class IdpUnavailable(IdpError):
    """Transient: 429, 5xx, timeout, connection failure. Worth retrying later."""

    reason: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"identity provider unavailable ({self.reason})"


class IdpAccessDenied(IdpUnavailable):
    """Auth0 refused our credentials or scopes (401/403, on the token endpoint or the Management API).

    An operator's mistake (a rotated secret, a removed grant or scope), not the user's: as transient as
    an outage for the product (retried, never given up), alarmed on its own metric.
    """

    def __str__(self) -> str:
        return f"identity provider refused our credentials ({self.reason})"


@dataclass
class IdpRejected(IdpError):
    """Permanent: the provider refused the request (a 4xx other than 401/403/404/408/429)."""

    status: int
    error_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"identity provider rejected the request (status {self.status}, {self.error_code})"


class IdpUserMissing(IdpError):
    """The provider does not know the user (404)."""


class IdpEmailTaken(IdpError):
    """The provider already has another user with that email."""


class IdpPasswordTooWeak(IdpError):
    """The provider's password policy refused the password."""
