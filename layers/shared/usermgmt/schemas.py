"""The API's bodies as pydantic models: what requests are validated with, and what responses look like.

Building pydantic models costs a cold start about 150 ms, so this module is imported only where a
request body is parsed (``UserService.patch``) and by the OpenAPI generator (``local/openapi.py``),
never by a handler module at import. The field rules themselves (names, emails) live in
``usermgmt.models`` as plain functions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from usermgmt.errors import FieldProblem, ValidationFailed
from usermgmt.models import ROLES, Membership, Profile, Role, clean_name, normalize_email

# WithJsonSchema only describes the rule for the OpenAPI document (local/openapi.py); it validates nothing.
Name = Annotated[
    str,
    AfterValidator(clean_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 100,
            "description": (
                "1 to 100 characters once trimmed; no control, format (invisible or bidi),"
                " surrogate, private-use or unassigned characters"
            ),
        }
    ),
]
EmailAddress = Annotated[
    str,
    AfterValidator(normalize_email),
    WithJsonSchema(
        {
            "type": "string",
            "format": "email",
            "maxLength": 254,
            "description": "RFC 5321 dot-string local part, ASCII (punycode) domain; stored lower-case",
        }
    ),
]
AccountNumber = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")]
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


class MembershipIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accountId: AccountId
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(ROLES))]

    def to_domain(self) -> Membership:
        # keep the catalogue order so equal sets compare equal
        return Membership(self.accountId, tuple(r for r in ROLES if r in set(self.roles)))


class _Patch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class SelfPatch(_Patch):
    firstName: Name | None = None
    lastName: Name | None = None
    email: EmailAddress | None = None


class DelegatedPatch(_Patch):
    firstName: Name | None = None
    lastName: Name | None = None
    memberships: Annotated[list[MembershipIn], Field(max_length=50)] | None = None


class PlatformPatch(_Patch):
    firstName: Name | None = None
    lastName: Name | None = None
    email: EmailAddress | None = None
    accountNumber: AccountNumber | None = None
    profile: Profile | None = None
    defaultAccountId: AccountId | None = None
    memberships: Annotated[list[MembershipIn], Field(max_length=50)] | None = None
    # set back to ok once the mailbox is fixed (SPEC section 16); bounced/complained come from SES only
    deliverability: Annotated[Literal["ok"], Field(description="only ok: the mailbox was fixed")] | None = (
        None
    )


PATCH_MODELS: dict[str, type[_Patch]] = {
    "self": SelfPatch,
    "delegated": DelegatedPatch,
    "platform": PlatformPatch,
}
READ_ONLY_FIELDS = frozenset(
    {"id", "status", "emailVerified", "pendingEmail", "idpSync", "version", "createdAt", "updatedAt"}
)
WRITABLE_BY_SOMEONE = frozenset(PlatformPatch.model_fields)
NULLABLE = frozenset({"accountNumber", "defaultAccountId"})


def parse_patch(kind: str, body: object) -> dict[str, Any]:
    """Validate a JSON merge patch for a caller kind; return only the fields present.

    Raises ``ValidationFailed`` naming every offending field; nothing is applied on error.
    """
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object", errors=[FieldProblem("", "must be an object")]
        )
    model = PATCH_MODELS[kind]
    allowed = set(model.model_fields)
    problems: list[FieldProblem] = []
    for key in body:
        if key in allowed:
            if body[key] is None and key not in NULLABLE:
                problems.append(FieldProblem(key, "must not be null"))
            continue
        if key in READ_ONLY_FIELDS:
            problems.append(FieldProblem(key, "is read-only"))
        elif key in WRITABLE_BY_SOMEONE:
            problems.append(FieldProblem(key, "cannot be changed by this caller"))
        else:
            problems.append(FieldProblem(key, "is not a known field"))
    known = {k: v for k, v in body.items() if k in allowed and (v is not None or k in NULLABLE)}
    try:
        parsed = model.model_validate(known)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(FieldProblem(loc, _message(err["msg"])))
        parsed = None
    if problems:
        raise ValidationFailed("Some fields are invalid", errors=problems)
    if parsed is None:  # pragma: no cover - problems were raised above
        raise ValidationFailed("Some fields are invalid")
    return {k: getattr(parsed, k) for k in parsed.model_fields_set}


def _message(msg: str) -> str:
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


# ------------------------------------------------------------------------------------------------
# Other request bodies and every response body, as the handlers send them (SPEC sections 4-9).
# The OpenAPI document (docs/openapi.json, generated by local/openapi.py) is made from these models;
# tests check that what the handlers return validates against them.
# ------------------------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PasswordResetRequest(BaseModel):
    """``POST /password-reset``. Any JSON body gets the same 202; only ``email`` is looked at."""

    model_config = ConfigDict(extra="allow", frozen=True)

    email: Annotated[str, Field(description="the login email; unknown addresses answer the same")]


class NewPassword(_Body):
    """``POST /password-reset/{token}`` (JSON or form). Strength is Auth0's to judge."""

    newPassword: Annotated[str, Field(min_length=1, description="as typed: never trimmed")]
    confirmPassword: Annotated[
        str | None, Field(description="required from the form; when sent, must equal newPassword")
    ] = None


class MembershipView(_Body):
    accountId: str
    roles: list[Role]


class UserResource(_Body):
    """The user resource (SPEC section 4); ``user_view`` renders it."""

    id: Annotated[str, Field(description="the Auth0 user id (auth0|...); percent-encode it in paths")]
    email: Annotated[str, Field(description="the login email, lower-case")]
    emailVerified: bool
    pendingEmail: Annotated[str | None, Field(description="a new login email waiting for verification")]
    firstName: str
    lastName: str
    accountNumber: str | None
    profile: Profile
    status: Annotated[
        Literal["INVITED", "ACTIVE", "SUSPENDED"], Field(description="INVITED: created, password not set yet")
    ]
    defaultAccountId: str | None
    memberships: Annotated[
        list[MembershipView], Field(description="delegated administrators see their accounts only")
    ]
    idpSync: Annotated[
        Literal["synced", "pending", "failed"], Field(description="whether Auth0 reflects this version")
    ]
    deliverability: Annotated[
        Literal["ok", "bounced", "complained"],
        Field(description="what SES reported for the login email; no mail goes to it unless ok"),
    ]
    version: Annotated[int, Field(ge=1, description="also sent as ETag")]
    createdAt: Annotated[str, Field(description="RFC 3339 UTC")]
    updatedAt: Annotated[str, Field(description="RFC 3339 UTC")]


class AuditChange(_Body):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    from_: Annotated[Any, Field(alias="from")]
    to: Any


class AuditEntry(_Body):
    at: Annotated[str, Field(description="RFC 3339 UTC")]
    actor: Annotated[str, Field(description="who acted: a user id, or the route or event that did")]
    action: str
    changes: list[AuditChange]
    requestId: str | None


class AuditPage(_Body):
    items: Annotated[list[AuditEntry], Field(description="newest first")]
    nextCursor: Annotated[str | None, Field(description="pass as cursor for the next page; null: no more")]


class ExportedUser(UserResource):
    """The record as exported: the user resource and when their tokens were last revoked."""

    tokensValidAfter: Annotated[int, Field(description="epoch seconds; tokens issued before are refused")]


class ExportedLink(_Body):
    kind: Literal["reset", "verify", "cancel", "invite"]
    createdAt: Annotated[str, Field(description="RFC 3339 UTC")]
    expiresAt: Annotated[str, Field(description="RFC 3339 UTC")]
    status: Literal["active", "used"]
    forPendingAddress: bool


class ExportedJobItem(_Body):
    """A bulk job's decided item that named the person (kept ``BULK_RETENTION_DAYS``)."""

    jobId: str
    status: Literal["succeeded", "skipped", "failed"]
    code: Annotated[str | None, Field(description="why it was skipped or failed (SPEC section 9)")]
    detail: str | None


class ExportedInvitation(_Body):
    """An invitation naming the person (SPEC section 13), pending until accepted or revoked."""

    accountId: str
    roles: list[Role]
    createdAt: Annotated[str, Field(description="RFC 3339 UTC")]
    expiresAt: Annotated[str, Field(description="RFC 3339 UTC")]
    status: Annotated[
        Literal["pending", "expired", "ended"],
        Field(description="ended: its link ended (a suspension, a confirmed change of email)"),
    ]


class UserExport(_Body):
    """Everything held about one person (SPEC section 18); never a token, a hash or a link URL."""

    format: Literal[1]
    exportedAt: Annotated[str, Field(description="RFC 3339 UTC")]
    user: ExportedUser
    links: Annotated[list[ExportedLink], Field(description="the user's outstanding links")]
    invitations: Annotated[
        list[ExportedInvitation], Field(description="the invitations naming the user, oldest first")
    ]
    audit: Annotated[list[AuditEntry], Field(description="every audit entry about the user, newest first")]
    bulkJobItems: Annotated[
        list[ExportedJobItem], Field(description="the decided items of bulk jobs that named the user")
    ]


class SentTo(_Body):
    sentTo: Annotated[str, Field(description="the masked address the email went to")]


class Accepted(_Body):
    """The generic answer of the public routes: the same whatever happened."""

    status: Literal["accepted"]


class DeletionStarted(_Body):
    """``DELETE /users/{userId}`` while Auth0 has not deleted the user yet (202)."""

    id: str
    status: Literal["deletion_pending", "deletion_failed"]


class LinkDone(_Body):
    """A successful link POST, for JSON callers (browsers get a page)."""

    result: Literal["password_changed", "email_verified", "email_change_cancelled", "invitation_accepted"]


class ResetLinkInfo(_Body):
    """``GET /password-reset/{token}`` for JSON callers: the link can be used."""

    purpose: Literal["password_reset"]


class EmailLinkInfo(_Body):
    """``GET`` of a verification or cancel link for JSON callers: the link can be used."""

    purpose: Literal["email_verification", "email_change_cancel"]
    email: Annotated[str, Field(description="the masked address the link is about")]


class FieldError(_Body):
    field: str
    message: str


class Problem(_Body):
    """RFC 9457 problem details (``application/problem+json``), with the stable ``code`` of SPEC 9."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    errors: Annotated[list[FieldError], Field(description="the offending fields (422)")] = Field(
        default_factory=list
    )
    maxAge: Annotated[
        int | None,
        Field(description="reauthentication_required (401): the oldest sign-in accepted, in seconds"),
    ] = None


class GatewayUnauthorized(_Body):
    """API Gateway's own answer when its JWT authorizer refuses the token (the function never runs)."""

    message: Literal["Unauthorized"]


# ------------------------------------------------------------------------------------------------
# Creating and inviting users (SPEC section 13)
# ------------------------------------------------------------------------------------------------


class CreateUserBody(_Body):
    """``POST /users``: a new user, INVITED until they choose a password through the mailed link."""

    email: EmailAddress
    firstName: Name
    lastName: Name
    profile: Profile = "customer"
    accountNumber: AccountNumber | None = None
    memberships: Annotated[list[MembershipIn], Field(max_length=50)] = Field(default_factory=list)
    defaultAccountId: Annotated[
        AccountId | None, Field(description="one of the memberships' accounts; default: the first")
    ] = None


class InvitationBody(_Body):
    """``POST /accounts/{accountId}/invitations``."""

    email: EmailAddress
    firstName: Name
    lastName: Name
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(ROLES))]


class InvitationSent(_Body):
    """The same answer whether or not a user has the address (202)."""

    invitationId: str
    email: Annotated[str, Field(description="the masked address the invitation went to")]
    expiresAt: Annotated[str, Field(description="RFC 3339 UTC")]


class InvitationView(_Body):
    invitationId: str
    accountId: str
    email: Annotated[str, Field(description="masked")]
    roles: list[Role]
    createdAt: Annotated[str, Field(description="RFC 3339 UTC")]
    expiresAt: Annotated[str, Field(description="RFC 3339 UTC")]
    status: Annotated[Literal["pending", "expired"], Field(description="expired: resend to renew it")]


class InvitationList(_Body):
    items: Annotated[list[InvitationView], Field(description="oldest first")]
    nextCursor: Annotated[str | None, Field(description="pass as cursor for the next page; null: no more")]


class InvitationLinkInfo(_Body):
    """``GET /invitations/{token}`` for JSON callers: the link can be used."""

    purpose: Literal["invitation"]
    newUser: Annotated[bool, Field(description="true: POST {newPassword}; false: POST {} to accept")]
    accountId: str | None
    email: Annotated[str, Field(description="the masked address the invitation went to")]


class AcceptInvitation(_Body):
    """``POST /invitations/{token}`` (JSON or form): a new user sends a password, an existing one ``{}``."""

    newPassword: Annotated[str | None, Field(description="required for a new user; as typed")] = None
    confirmPassword: Annotated[str | None, Field(description="from the form; must equal newPassword")] = None


def parse_body[M: BaseModel](model: type[M], body: object) -> M:
    """Validate a JSON body against ``model``; ``ValidationFailed`` naming every offending field."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object", errors=[FieldProblem("", "must be an object")]
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [
            FieldProblem(".".join(str(p) for p in err["loc"]), _message(err["msg"]))
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise ValidationFailed("Some fields are invalid", errors=problems) from None


# -------------------------------------------------------------------------------------------- the users list


class UserPage(_Body):
    items: Annotated[
        list[UserResource], Field(description="each as GET /users/{userId} shows it to the caller")
    ]
    nextCursor: Annotated[
        str | None, Field(description="pass as cursor for the next page (signed, expiring); null: no more")
    ]


class AccountCounts(_Body):
    INVITED: int
    ACTIVE: int
    SUSPENDED: int


class AccountResource(_Body):
    id: str
    name: str
    counts: Annotated[AccountCounts, Field(description="members of the account by status, exact")]


class AccountPage(_Body):
    items: list[AccountResource]
    nextCursor: Annotated[str | None, Field(description="pass as cursor for the next page; null: no more")]


# ------------------------------------------------------------------------------------------------
# Bulk jobs (SPEC section 14)
# ------------------------------------------------------------------------------------------------

BulkAction = Literal[
    "suspend",
    "enable",
    "delete",
    "password-reset",
    "revoke-sessions",
    "set-fields",
    "add-roles",
    "remove-roles",
]


class SetFieldsParams(_Body):
    """``set-fields``: a merge patch of these fields, applied to every user as a PATCH would."""

    firstName: Name | None = None
    lastName: Name | None = None
    profile: Profile | None = None
    accountNumber: AccountNumber | None = None


class RolesParams(_Body):
    """``add-roles`` / ``remove-roles``: storefront roles in one account."""

    accountId: AccountId
    roles: Annotated[list[Role], Field(min_length=1, max_length=len(ROLES))]


class BulkJobIn(_Body):
    """``POST /bulk-jobs``: an action for ``userIds`` or for the users a list ``filter`` matches."""

    action: BulkAction
    userIds: (
        Annotated[list[Annotated[str, Field(min_length=1, max_length=512)]], Field(min_length=1)] | None
    ) = None
    filter: Annotated[dict[str, Any], Field(description="the list filters of GET /users")] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    dryRun: bool = False


def parse_bulk_job(body: object, max_targets: int) -> dict[str, Any]:
    """Validate a bulk job request; returns it with its ``params`` checked for the action."""
    if not isinstance(body, dict):
        raise ValidationFailed(
            "The body must be a JSON object", errors=[FieldProblem("", "must be an object")]
        )
    problems: list[FieldProblem] = []
    try:
        job = BulkJobIn.model_validate(body)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            problems.append(FieldProblem(".".join(str(p) for p in err["loc"]), _message(err["msg"])))
        raise ValidationFailed(errors=problems) from None
    if (job.userIds is None) == (job.filter is None):
        raise ValidationFailed(errors=[FieldProblem("userIds", "give either userIds or filter")])
    if job.userIds is not None and len(set(job.userIds)) > max_targets:
        raise ValidationFailed(errors=[FieldProblem("userIds", f"at most {max_targets} users")])
    params: dict[str, Any] = {}
    models: dict[str, type[_Body]] = {
        "set-fields": SetFieldsParams,
        "add-roles": RolesParams,
        "remove-roles": RolesParams,
    }
    model = models.get(job.action)
    if model is None:
        if job.params:
            problems.append(FieldProblem("params", f"{job.action} takes no params"))
    else:
        present = {k: v for k, v in job.params.items()}
        if model is SetFieldsParams:
            for key, value in present.items():
                if value is None and key != "accountNumber":
                    problems.append(FieldProblem(f"params.{key}", "must not be null"))
            if not present:
                problems.append(FieldProblem("params", "name at least one field"))
        try:
            parsed = model.model_validate(present)
            params = (
                parsed.model_dump(include=set(present)) if model is SetFieldsParams else parsed.model_dump()
            )
        except ValidationError as exc:
            for err in exc.errors(include_url=False, include_input=False, include_context=False):
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(FieldProblem(f"params.{loc}", _message(err["msg"])))
    if problems:
        raise ValidationFailed(errors=problems)
    return {
        "action": job.action,
        "userIds": job.userIds,
        "filter": job.filter,
        "params": params,
        "dryRun": job.dryRun,
    }


class BulkJobCounts(_Body):
    total: int
    pending: int
    succeeded: int
    skipped: int
    failed: int


class ActorOut(_Body):
    type: Literal["platform_admin", "delegated_admin", "client"]
    id: str


class BulkJobOut(_Body):
    id: str
    action: BulkAction
    status: Literal["queued", "running", "succeeded", "completed_with_errors", "cancelled"]
    dryRun: bool
    counts: BulkJobCounts
    createdBy: ActorOut
    createdAt: str
    startedAt: str | None
    finishedAt: str | None


class BulkJobList(_Body):
    items: list[BulkJobOut]
    nextCursor: str | None


class BulkItemOut(_Body):
    userId: str
    status: Literal["pending", "succeeded", "skipped", "failed"]
    code: str | None
    detail: str | None


class BulkItemList(_Body):
    items: list[BulkItemOut]
    nextCursor: str | None
