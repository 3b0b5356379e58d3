"""The OpenAPI 3.1 document of the API (``docs/openapi.json``), generated, never edited by hand.

``python -m local.openapi`` (``make openapi``) writes it; ``python -m local.openapi --check`` exits 1
when the committed file differs from what this module produces (tests/unit/test_openapi.py does the
same, and checks the routes against template.yaml both ways and the document against OpenAPI 3.1).

Where each part comes from:

* the routes and whether each is public: the ``HttpApi`` events of ``template.yaml``;
* request and response bodies: the pydantic models of ``usermgmt.models`` (the patch models the
  handlers validate with; the response models that tests hold the handlers' answers to);
* problem codes and their statuses: the ``ApiError`` classes of ``usermgmt.errors`` and the link codes
  of ``usermgmt.service.linkcheck``; each route below names the codes it can answer;
* what a route does, its codes and its links (for schemathesis' stateful phase): ``OPERATIONS`` below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from local.template import load_template, merge_globals
from usermgmt import errors as api_errors
from usermgmt import schemas as models
from usermgmt.models import ROLES
from usermgmt.service.linkcheck import MESSAGES as LINK_MESSAGES
from usermgmt.service.passwords import MAX_PASSWORD_CHARS
from usermgmt.settings import MAX_BODY_BYTES, MAX_BULK_BODY_BYTES, MAX_USER_ID_BYTES

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
DOCUMENT = ROOT / "docs" / "openapi.json"

JSON = "application/json"
PROBLEM = "application/problem+json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"
SECURITY_SCHEME = "auth0"

LINK_CODES = tuple(LINK_MESSAGES)  # link_expired, link_used, link_superseded, link_invalid


# ------------------------------------------------------------------------------------------------
# What each route answers
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    """A success answer: ``model`` as JSON (None: no body), ``html`` when browsers get a page instead."""

    status: int
    model: type[BaseModel] | None
    description: str
    etag: bool = False
    html: bool = False
    links: Mapping[str, str] = field(default_factory=dict)  # link name -> operationId (userId from body)
    links_from_request: bool = False  # userId of the links from the request path instead
    headers: tuple[str, ...] = ()  # further headers of the answer (components/headers)


@dataclass(frozen=True)
class Operation:
    operation_id: str
    tag: str
    summary: str
    description: str
    oks: tuple[Ok, ...]
    codes: tuple[str, ...]  # problem codes the handler can answer (not the gateway's 401)
    html_codes: tuple[str, ...] = ()  # those of ``codes`` that browsers get as a page
    body: str | None = None  # None, "json:<Model>", "link-password", "link-empty"
    body_required: bool = False
    if_match: bool = False
    query: tuple[str, ...] = ()


USER_LINKS = {
    "GetUser": "getUser",
    "PatchUser": "patchUser",
    "GetAudit": "getUserAudit",
    "SuspendUser": "suspendUser",
    "EnableUser": "enableUser",
    "SendPasswordReset": "sendUserPasswordReset",
    "SendVerificationEmail": "sendUserVerificationEmail",
    "DeleteUser": "deleteUser",
}
USER = models.UserResource
WRITE = ("invalid_json", "payload_too_large", "unsupported_media_type", "validation_failed")
VERSIONED = ("version_mismatch", "validation_failed")  # If-Match stale, If-Match not an ETag
STORE = ("dependency_unavailable",)
BODY = ("invalid_json", "payload_too_large", "unsupported_media_type")

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/users/{userId}"): Operation(
        "getUser",
        "users",
        "Read a user",
        "Platform administrators: any user. Delegated administrators: users of the accounts they"
        " administer, with those memberships only. Anyone else, or a user out of scope: 404.",
        (Ok(200, USER, "The user", etag=True, links=USER_LINKS),),
        ("user_not_found", *STORE),
    ),
    ("PATCH", "/users/{userId}"): Operation(
        "patchUser",
        "users",
        "Edit a user (JSON merge patch)",
        "Platform administrators: every field of the body. Delegated administrators: firstName,"
        " lastName and the roles of memberships in the accounts they administer (merged by accountId);"
        " any other field is 422 naming it. A new email starts a verification (pendingEmail).",
        (Ok(200, USER, "The user after the change", etag=True, links={"GetUser": "getUser"}),),
        (
            *WRITE,
            "forbidden",
            "user_not_found",
            "email_taken",
            "email_immutable",
            "version_mismatch",
            "last_administrator",
            "rate_limited",
            *STORE,
        ),
        body="json:PlatformPatch",
        body_required=True,
        if_match=True,
    ),
    ("GET", "/me"): Operation(
        "getMe",
        "me",
        "Read my own record",
        "The caller's own user resource.",
        (Ok(200, USER, "The caller", etag=True, links=USER_LINKS),),
        STORE,
    ),
    ("PATCH", "/me"): Operation(
        "patchMe",
        "me",
        "Edit my own record (JSON merge patch)",
        "firstName, lastName and email (a new email is confirmed by a link sent to it); any other field"
        " is 422 naming it.",
        (Ok(200, USER, "The caller after the change", etag=True, links={"GetUser": "getUser"}),),
        (
            *WRITE,
            "email_taken",
            "email_immutable",
            "version_mismatch",
            "rate_limited",
            "reauthentication_required",
            *STORE,
        ),
        body="json:SelfPatch",
        body_required=True,
        if_match=True,
    ),
    ("GET", "/users/{userId}/audit"): Operation(
        "getUserAudit",
        "users",
        "Read a user's audit trail",
        "Platform administrators only (403 for a delegated administrator in scope). Newest first.",
        (Ok(200, models.AuditPage, "One page of the audit trail"),),
        ("validation_failed", "invalid_cursor", "forbidden", "user_not_found", *STORE),
        query=("limit", "cursor"),
    ),
    ("POST", "/users/{userId}/suspend"): Operation(
        "suspendUser",
        "lifecycle",
        "Suspend a user",
        "Status SUSPENDED at once: the user's tokens and links stop working, Auth0 blocks the login."
        " Suspending a suspended user is a 200 no-op. Nobody can suspend themselves (403).",
        (
            Ok(
                200,
                USER,
                "The suspended user",
                etag=True,
                links={"GetUser": "getUser", "EnableUser": "enableUser"},
            ),
        ),
        (*VERSIONED, "forbidden", "user_not_found", "last_administrator", *STORE),
        if_match=True,
    ),
    ("POST", "/users/{userId}/sessions/revoke"): Operation(
        "revokeUserSessions",
        "lifecycle",
        "Sign a user out everywhere",
        "Administrators in scope. Every access token issued until now is refused (tokensValidAfter moves"
        " to the next whole second); Auth0 sessions and refresh tokens are revoked where"
        " AUTH0_REVOKE_SESSIONS is on.",
        (Ok(200, USER, "The user", etag=True, links={"GetUser": "getUser"}),),
        ("user_not_found", *STORE),
    ),
    ("POST", "/me/sessions/revoke"): Operation(
        "revokeMySessions",
        "me",
        "Sign me out everywhere",
        "Needs a recent sign-in (REAUTH_MAX_AGE_SECONDS; otherwise 401 reauthentication_required with"
        " maxAge and WWW-Authenticate, RFC 9470). Every access token issued until now is refused, this"
        " one too.",
        (Ok(200, USER, "The caller, signed out", etag=True),),
        ("reauthentication_required", *STORE),
    ),
    ("GET", "/users/{userId}/export"): Operation(
        "exportUser",
        "users",
        "Export everything held about a user",
        "Platform administrators only (403 for a delegated administrator in scope). One JSON document"
        " (Content-Disposition: attachment): the record, outstanding links (never a token), the audit"
        " entries. The export is itself audited (user.exported).",
        (Ok(200, models.UserExport, "The export", headers=("Content-Disposition",)),),
        ("forbidden", "user_not_found", *STORE),
    ),
    ("GET", "/me/export"): Operation(
        "exportMe",
        "me",
        "Export everything held about me",
        "One JSON document (Content-Disposition: attachment); audited (user.exported).",
        (Ok(200, models.UserExport, "The export", headers=("Content-Disposition",)),),
        STORE,
    ),
    ("POST", "/users/{userId}/enable"): Operation(
        "enableUser",
        "lifecycle",
        "Enable a suspended user",
        "Status ACTIVE, Auth0 unblocks the login. Enabling an active user is a 200 no-op.",
        (
            Ok(
                200,
                USER,
                "The enabled user",
                etag=True,
                links={"GetUser": "getUser", "SuspendUser": "suspendUser"},
            ),
        ),
        (*VERSIONED, "user_not_found", *STORE),
        if_match=True,
    ),
    ("DELETE", "/users/{userId}"): Operation(
        "deleteUser",
        "lifecycle",
        "Delete a user",
        "Platform administrators only. The user is gone at once (a later GET is 404), here and then in"
        " Auth0; only a tombstone audit entry is kept. Nobody can delete themselves (403).",
        (
            Ok(
                204,
                None,
                "Deleted, in Auth0 too",
                links={"GetUser": "getUser"},
                links_from_request=True,
            ),
            Ok(
                202,
                models.DeletionStarted,
                "Deleted here; Auth0 still to follow (the sync finishes it)",
                links={"GetUser": "getUser"},
                links_from_request=True,
            ),
        ),
        (*VERSIONED, "forbidden", "user_not_found", "last_administrator", *STORE),
        if_match=True,
    ),
    ("POST", "/users/{userId}/password-reset"): Operation(
        "sendUserPasswordReset",
        "passwords",
        "Email a user a password-reset link",
        "Administrators in scope. The answer names the masked address, never the link.",
        (Ok(202, models.SentTo, "The link is on its way"),),
        ("user_not_found", "user_suspended", "email_undeliverable", "rate_limited", *STORE),
    ),
    ("POST", "/me/password-reset"): Operation(
        "sendMyPasswordReset",
        "me",
        "Email me a password-reset link",
        "The caller's own address gets the link.",
        (Ok(202, models.SentTo, "The link is on its way"),),
        ("email_undeliverable", "rate_limited", *STORE),
    ),
    ("POST", "/password-reset"): Operation(
        "requestPasswordReset",
        "passwords",
        "Forgot password: email a reset link",
        "Public. The same 202 for known, unknown, suspended and deleted addresses and for any JSON body;"
        " limited per source IP (429).",
        (Ok(202, models.Accepted, "Accepted (whether or not an email was sent)"),),
        (*BODY, "rate_limited"),
        body="json:PasswordResetRequest",
    ),
    ("GET", "/password-reset/{token}"): Operation(
        "showPasswordResetLink",
        "links",
        "Open a password-reset link",
        "Public (the token is the credential). Browsers get the new-password form; other callers JSON."
        " Changes nothing.",
        (Ok(200, models.ResetLinkInfo, "The link can be used", html=True),),
        (*LINK_CODES, *STORE),
        html_codes=LINK_CODES,
    ),
    ("POST", "/password-reset/{token}"): Operation(
        "usePasswordResetLink",
        "links",
        "Set a new password with a reset link",
        "Public. JSON or the form; the link works once. A password Auth0 refuses is 400"
        " password_too_weak and leaves the link usable.",
        (Ok(200, models.LinkDone, "The password is changed", html=True),),
        (*BODY, "password_too_weak", "validation_failed", *LINK_CODES, *STORE),
        html_codes=("password_too_weak", "validation_failed", *LINK_CODES, *STORE),
        body="link-password",
    ),
    ("POST", "/password-reset/{token}/renew"): Operation(
        "renewPasswordResetLink",
        "links",
        "Send a fresh reset link for an expired one",
        "Public. Always the same 202, whatever the token; limited per source IP (429).",
        (Ok(202, models.Accepted, "Accepted (whether or not an email was sent)", html=True),),
        ("rate_limited",),
        html_codes=("rate_limited",),
    ),
    ("POST", "/users/{userId}/verification-email"): Operation(
        "sendUserVerificationEmail",
        "verification",
        "Email a user a verification link",
        "Administrators in scope. To the pending address if there is one, else to the current one.",
        (Ok(202, models.SentTo, "The link is on its way"),),
        (
            "user_not_found",
            "user_suspended",
            "nothing_to_verify",
            "email_undeliverable",
            "rate_limited",
            *STORE,
        ),
    ),
    ("POST", "/me/verification-email"): Operation(
        "sendMyVerificationEmail",
        "me",
        "Email me a verification link",
        "To the pending address if there is one, else to the current one.",
        (Ok(202, models.SentTo, "The link is on its way"),),
        ("nothing_to_verify", "email_undeliverable", "rate_limited", *STORE),
    ),
    ("GET", "/email-verification/{token}"): Operation(
        "showEmailVerificationLink",
        "links",
        "Open an email verification link",
        "Public. Browsers get a confirmation page (a GET changes nothing); other callers JSON.",
        (Ok(200, models.EmailLinkInfo, "The link can be used", html=True),),
        (*LINK_CODES, *STORE),
        html_codes=LINK_CODES,
    ),
    ("POST", "/email-verification/{token}"): Operation(
        "useEmailVerificationLink",
        "links",
        "Confirm an email address",
        "Public. The pending address becomes the login email (uniqueness is checked again).",
        (Ok(200, models.LinkDone, "The address is confirmed", html=True),),
        (*BODY, "email_taken", "email_immutable", *LINK_CODES, *STORE),
        html_codes=("email_taken", "email_immutable", *LINK_CODES, *STORE),
        body="link-empty",
    ),
    ("POST", "/email-verification/{token}/renew"): Operation(
        "renewEmailVerificationLink",
        "links",
        "Send a fresh verification link for an expired one",
        "Public. Always the same 202, whatever the token; limited per source IP (429).",
        (Ok(202, models.Accepted, "Accepted (whether or not an email was sent)", html=True),),
        ("rate_limited",),
        html_codes=("rate_limited",),
    ),
    ("GET", "/email-change/{token}/cancel"): Operation(
        "showEmailChangeCancelLink",
        "links",
        "Open an email-change cancel link",
        "Public (sent to the old address). Browsers get a page (a GET changes nothing); others JSON.",
        (Ok(200, models.EmailLinkInfo, "The link can be used", html=True),),
        (*LINK_CODES, *STORE),
        html_codes=LINK_CODES,
    ),
    ("POST", "/email-change/{token}/cancel"): Operation(
        "useEmailChangeCancelLink",
        "links",
        "Cancel a pending email change",
        "Public. The user keeps signing in with the current address.",
        (Ok(200, models.LinkDone, "The change is cancelled", html=True),),
        (*BODY, *LINK_CODES, *STORE),
        html_codes=(*LINK_CODES, *STORE),
        body="link-empty",
    ),
    ("POST", "/users"): Operation(
        "createUser",
        "invitations",
        "Create a user (INVITED until they choose a password)",
        "Platform administrators only. The user is created here and, through the never-lost sync, in"
        " Auth0 (no usable password, email unverified); a link to choose a password is mailed.",
        (
            Ok(
                201,
                USER,
                "The new user (Location names it)",
                etag=True,
                links={"GetUser": "getUser"},
                headers=("Location",),
            ),
        ),
        (*WRITE, "forbidden", "email_taken", "idempotency_key_reused", "user_not_found", *STORE),
        body="json:CreateUserBody",
        body_required=True,
        query=("optional-idempotency-key",),
    ),
    ("POST", "/accounts/{accountId}/invitations"): Operation(
        "inviteIntoAccount",
        "invitations",
        "Invite an address into an account",
        "Platform administrators and administrators of the account. The same 202 whether or not a user"
        " has the address: a new person is created (INVITED) with the roles in the account; an existing"
        " user gains the membership when they accept. The email follows the commit, best effort (an"
        " address SES reported gets none): resend answers 409 email_undeliverable or 503 when it cannot"
        " go out.",
        (Ok(202, models.InvitationSent, "The invitation is on its way"),),
        (*WRITE, "account_not_found", "idempotency_key_reused", "invitation_not_found", *STORE),
        body="json:InvitationBody",
        body_required=True,
        query=("optional-idempotency-key",),
    ),
    ("GET", "/accounts/{accountId}/invitations"): Operation(
        "listInvitations",
        "invitations",
        "List an account's pending invitations",
        "Platform administrators and administrators of the account; expired ones are listed as such,"
        " oldest first. Pages of limit with a signed cursor bound to the caller and the account,"
        " expiring; a page may hold fewer than limit items and still have a nextCursor.",
        (Ok(200, models.InvitationList, "One page of the pending invitations"),),
        ("validation_failed", "invalid_cursor", "account_not_found", *STORE),
        query=("limit", "cursor"),
    ),
    ("POST", "/invitations/{invitation}/resend"): Operation(
        "resendInvitation",
        "invitations",
        "Mail a fresh invitation link (the older one dies)",
        "Administrators of the invitation's account. 409 email_undeliverable, with nothing changed, when"
        " SES reported the invited address as bounced or complained; 503 when the email could not be"
        " sent (the fresh link was issued but not mailed: resend again).",
        (Ok(202, models.InvitationSent, "The invitation is on its way"),),
        ("invitation_not_found", "email_undeliverable", *STORE),
    ),
    ("DELETE", "/invitations/{invitation}"): Operation(
        "revokeInvitation",
        "invitations",
        "Revoke an invitation",
        "Administrators of the invitation's account. Its link dies; an INVITED user it created with no"
        " other membership is deleted with it.",
        (Ok(204, None, "Revoked"),),
        ("invitation_not_found", *STORE),
    ),
    ("GET", "/invitations/{invitation}"): Operation(
        "showInvitationLink",
        "links",
        "Open an invitation link",
        "Public (the token is the credential). A new user gets the choose-a-password form, an existing"
        " user the accept button; other callers JSON. Changes nothing.",
        (Ok(200, models.InvitationLinkInfo, "The link can be used", html=True),),
        (*LINK_CODES, *STORE),
        html_codes=LINK_CODES,
    ),
    ("POST", "/invitations/{invitation}"): Operation(
        "acceptInvitation",
        "links",
        "Accept an invitation",
        "Public. A new user sends newPassword (set in Auth0; the user becomes ACTIVE and verified); an"
        " existing user sends nothing and gains the membership. A password Auth0 refuses is 400"
        " password_too_weak and leaves the link usable.",
        (Ok(200, models.LinkDone, "Accepted", html=True),),
        (*BODY, "password_too_weak", "validation_failed", *LINK_CODES, *STORE),
        html_codes=("password_too_weak", "validation_failed", *LINK_CODES, *STORE),
        body="link-invite",
    ),
    ("POST", "/invitations/{invitation}/renew"): Operation(
        "renewInvitationLink",
        "links",
        "Send a fresh invitation link for an expired one",
        "Public. Always the same 202, whatever the token; limited per source IP (429).",
        (Ok(202, models.Accepted, "Accepted (whether or not an email was sent)", html=True),),
        ("rate_limited",),
        html_codes=("rate_limited",),
    ),
    ("GET", "/users"): Operation(
        "listUsers",
        "lists",
        "List users",
        "Platform administrators: every user. Delegated administrators: the users of the accounts they"
        " administer (each item as GET /users/{userId} shows it to them); anyone else 403. Filters"
        " combine with AND; order by sort (default email); pages of limit with a signed cursor bound"
        " to the caller and the query, expiring. A filtered page may hold fewer than limit items and"
        " still have a nextCursor.",
        (Ok(200, models.UserPage, "One page of users"),),
        ("invalid_filter", "invalid_cursor", "forbidden", "account_not_found", *STORE),
        query=("list-filters", "accountId", "page", "cursor"),
    ),
    ("GET", "/accounts/{accountId}/users"): Operation(
        "listAccountUsers",
        "lists",
        "List the users of an account",
        "Platform administrators and administrators of that account (anyone else 404). The filters,"
        " orders and pages of GET /users.",
        (Ok(200, models.UserPage, "One page of the account's users"),),
        ("invalid_filter", "invalid_cursor", "account_not_found", *STORE),
        query=("list-filters", "page", "cursor"),
    ),
    ("GET", "/accounts"): Operation(
        "listAccounts",
        "lists",
        "List accounts with their counts",
        "Platform administrators: every account; delegated administrators: the accounts they"
        " administer; anyone else 403.",
        (Ok(200, models.AccountPage, "One page of accounts"),),
        ("invalid_filter", "invalid_cursor", "forbidden", *STORE),
        query=("page", "cursor"),
    ),
    ("GET", "/accounts/{accountId}"): Operation(
        "getAccount",
        "lists",
        "Read an account and its counts",
        "Exact counts of the account's members by status (moved in the same transaction as every"
        " change). Platform administrators and administrators of that account; anyone else 404.",
        (Ok(200, models.AccountResource, "The account"),),
        ("account_not_found", *STORE),
    ),
    ("POST", "/bulk-jobs"): Operation(
        "startBulkJob",
        "bulk",
        "Start a bulk job",
        "Platform and delegated administrators, machine callers with bulk:users (and the action's"
        " scope). One action for up to 10,000 userIds, or for the users a list filter matches under the"
        " caller's scope; each item is the single-user operation by the same caller. Idempotency-Key is"
        " required: the same key and body answer the first job again, another body is 409."
        f" The body may be up to {MAX_BULK_BODY_BYTES} bytes.",
        (Ok(202, models.BulkJobOut, "The job (Location: /bulk-jobs/{jobId})", headers=("Location",)),),
        (
            *WRITE,
            "invalid_filter",
            "account_not_found",
            "forbidden",
            "insufficient_scope",
            "idempotency_key_reused",
            "too_many_jobs",
            *STORE,
        ),
        body="json:BulkJobIn",
        body_required=True,
        query=("idempotency-key",),
    ),
    ("GET", "/bulk-jobs"): Operation(
        "listBulkJobs",
        "bulk",
        "List bulk jobs",
        "The caller's jobs, newest first (platform administrators: everyone's).",
        (Ok(200, models.BulkJobList, "One page of jobs"),),
        ("validation_failed", "invalid_cursor", "forbidden", "insufficient_scope", *STORE),
        query=("page", "cursor"),
    ),
    ("GET", "/bulk-jobs/{jobId}"): Operation(
        "getBulkJob",
        "bulk",
        "Read a bulk job",
        "Its creator and platform administrators; anyone else 404.",
        (Ok(200, models.BulkJobOut, "The job"),),
        ("forbidden", "insufficient_scope", "job_not_found", *STORE),
    ),
    ("GET", "/bulk-jobs/{jobId}/items"): Operation(
        "getBulkJobItems",
        "bulk",
        "Read a bulk job's items",
        "Each target's status and, for a skipped or failed one, the code of SPEC section 9.",
        (Ok(200, models.BulkItemList, "One page of items"),),
        (
            "validation_failed",
            "invalid_cursor",
            "invalid_filter",
            "forbidden",
            "insufficient_scope",
            "job_not_found",
            *STORE,
        ),
        query=("status", "page", "cursor"),
    ),
    ("POST", "/bulk-jobs/{jobId}/cancel"): Operation(
        "cancelBulkJob",
        "bulk",
        "Cancel a bulk job",
        "Items not yet started end skipped (cancelled); a finished job is 409.",
        (Ok(200, models.BulkJobOut, "The cancelled job"),),
        ("forbidden", "insufficient_scope", "job_not_found", "job_finished", *STORE),
    ),
}

TAGS = {
    "bulk": "Bulk jobs: one request for many users",
    "users": "Administrators acting on a user",
    "lifecycle": "Suspend, enable, delete",
    "me": "The caller acting on themselves",
    "passwords": "Password resets",
    "verification": "Email verification",
    "links": "Link pages from emails: HTML for browsers (Accept: text/html), JSON otherwise",
    "invitations": "Creating users and inviting them into accounts",
    "lists": "The users list and the accounts",
}

# Models that become components/schemas (request models first).
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.PlatformPatch,
    models.SelfPatch,
    models.PasswordResetRequest,
    models.NewPassword,
    models.CreateUserBody,
    models.InvitationBody,
    models.AcceptInvitation,
    models.BulkJobIn,
)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    models.UserResource,
    models.AuditPage,
    models.UserPage,
    models.AccountResource,
    models.AccountPage,
    models.SentTo,
    models.Accepted,
    models.DeletionStarted,
    models.LinkDone,
    models.ResetLinkInfo,
    models.EmailLinkInfo,
    models.InvitationSent,
    models.InvitationList,
    models.InvitationLinkInfo,
    models.Problem,
    models.GatewayUnauthorized,
    models.UserExport,
    models.BulkJobOut,
    models.BulkJobList,
    models.BulkItemList,
)


# ------------------------------------------------------------------------------------------------
# The template's routes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateRoute:
    function: str
    method: str
    path: str
    public: bool


def template_routes(path: Path = TEMPLATE) -> list[TemplateRoute]:
    """Every ``HttpApi`` event of every function, in template order."""
    template = merge_globals(load_template(path))
    routes: list[TemplateRoute] = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties") or {}
            authorizer = (props.get("Auth") or {}).get("Authorizer")
            routes.append(
                TemplateRoute(
                    logical_id, str(props["Method"]).upper(), str(props["Path"]), authorizer == "NONE"
                )
            )
    return routes


# ------------------------------------------------------------------------------------------------
# Building the document
# ------------------------------------------------------------------------------------------------


def problem_statuses() -> dict[str, int]:
    """Every problem code the handlers answer, with its HTTP status (from the error classes)."""
    statuses: dict[str, int] = {}

    def walk(cls: type[api_errors.ApiError]) -> Iterator[type[api_errors.ApiError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    for cls in walk(api_errors.ApiError):
        if "code" in cls.__dict__:
            statuses[cls.code] = cls.status
    for code in LINK_CODES:
        statuses[code] = api_errors.LinkGone.status
    return statuses


def _strip_titles(node: Any) -> Any:
    """pydantic's generated ``title`` of every property only repeats its name."""
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _non_null_patch_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch fields: ``null`` is allowed only where it clears a value (``models.NULLABLE``)."""
    for name, prop in schema.get("properties", {}).items():
        prop.pop("default", None)
        if name in models.NULLABLE:
            continue
        options = prop.pop("anyOf", None)
        if options:
            non_null = [o for o in options if o != {"type": "null"}]
            if len(non_null) == 1:
                description = prop.get("description")
                prop.update(non_null[0])
                if description:
                    prop["description"] = description
            else:
                prop["anyOf"] = non_null
    return schema


def component_schemas() -> dict[str, Any]:
    pairs = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS]
    _, top = models_json_schema(pairs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    schemas: dict[str, Any] = _strip_titles(top.get("$defs", {}))
    for patch in ("PlatformPatch", "SelfPatch"):
        _non_null_patch_fields(schemas[patch])
    password = schemas["NewPassword"]["properties"]
    password["newPassword"]["maxLength"] = MAX_PASSWORD_CHARS
    confirm = password["confirmPassword"]
    confirm.pop("default", None)
    confirm.pop("anyOf", None)
    confirm.update({"type": "string", "maxLength": MAX_PASSWORD_CHARS})
    for name in REQUEST_MODELS:
        limit = MAX_BULK_BODY_BYTES if name is models.BulkJobIn else MAX_BODY_BYTES
        schemas[name.__name__]["description"] = (
            schemas[name.__name__].get("description", "") + f" The body is at most {limit} bytes of UTF-8."
        ).strip()
    return dict(sorted(schemas.items()))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _problem_schema(codes: list[str]) -> dict[str, Any]:
    return {"allOf": [_ref("Problem"), {"properties": {"code": {"enum": codes}}}]}


def _problem_responses(op: Operation, statuses: Mapping[str, int]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for code in op.codes:
        if code not in statuses:
            raise KeyError(f"{op.operation_id}: unknown problem code {code!r}")
        by_status.setdefault(statuses[code], [])
        if code not in by_status[statuses[code]]:
            by_status[statuses[code]].append(code)
    responses: dict[str, Any] = {}
    for status in sorted(by_status):
        codes = by_status[status]
        content: dict[str, Any] = {PROBLEM: {"schema": _problem_schema(codes)}}
        if any(c in op.html_codes for c in codes):
            content[HTML] = {"schema": {"type": "string"}}
        headers: dict[str, Any] = {"Cache-Control": _header("Cache-Control")}
        if status in (429, 503):
            headers["Retry-After"] = _header("Retry-After")
        responses[str(status)] = {
            "description": ", ".join(codes),
            "headers": headers,
            "content": content,
        }
    return responses


def _ok_response(ok: Ok) -> dict[str, Any]:
    response: dict[str, Any] = {"description": ok.description}
    headers: dict[str, Any] = {"Cache-Control": _header("Cache-Control")}
    if ok.etag:
        headers["ETag"] = _header("ETag")
    headers.update({name: _header(name) for name in ok.headers})
    response["headers"] = headers
    content: dict[str, Any] = {}
    if ok.model is not None:
        content[JSON] = {"schema": _ref(ok.model.__name__)}
    if ok.html:
        content[HTML] = {"schema": {"type": "string"}}
    if content:
        response["content"] = content
    if ok.links:
        source = "$request.path.userId" if ok.links_from_request else "$response.body#/id"
        response["links"] = {
            name: {"operationId": target, "parameters": {"userId": source}}
            for name, target in ok.links.items()
        }
    return response


def _request_body(op: Operation) -> dict[str, Any] | None:
    if op.body is None:
        return None
    if op.body.startswith("json:"):
        return {
            "required": op.body_required,
            "content": {JSON: {"schema": _ref(op.body.removeprefix("json:"))}},
        }
    if op.body == "link-invite":
        return {
            "required": False,
            "content": {
                JSON: {"schema": _ref("AcceptInvitation")},
                FORM: {"schema": _ref("AcceptInvitation")},
            },
        }
    if op.body == "link-password":
        return {
            "required": True,
            "content": {JSON: {"schema": _ref("NewPassword")}, FORM: {"schema": _ref("NewPassword")}},
        }
    # link-empty: no fields; an empty body, an empty JSON object or an empty form
    empty = {"type": "object", "description": "no fields are read"}
    return {"required": False, "content": {JSON: {"schema": empty}, FORM: {"schema": empty}}}


def _parameters(path: str, op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if "{userId}" in path:
        params.append({"$ref": "#/components/parameters/userId"})
    if "{token}" in path:
        params.append({"$ref": "#/components/parameters/token"})
    if "{accountId}" in path:
        params.append(
            {
                "name": "accountId",
                "in": "path",
                "required": True,
                "description": "The account id",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        )
    if "{invitation}" in path:
        # one variable name at this level for both (API Gateway refuses two names at one level): the
        # person's link routes take the link's token, the administrators' routes the invitation's id
        link = op.tag == "links"
        params.append(
            {
                "name": "invitation",
                "in": "path",
                "required": True,
                "description": "The token of the invitation link in the email (43 URL-safe characters)."
                if link
                else "An invitation id (invitationId of the 202).",
                "schema": {"type": "string", "minLength": 1},
            }
        )
    if "list-filters" in op.query:
        params += _list_filters("accountId" in op.query)
    if "{jobId}" in path:
        params.append({"$ref": "#/components/parameters/jobId"})
    if "idempotency-key" in op.query or "optional-idempotency-key" in op.query:
        required = "idempotency-key" in op.query
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": required,
                "description": (
                    "The caller's key for this job (1 to 255 characters)"
                    if required
                    else "Optional (1 to 255 characters): the same key and body within 24 hours answer"
                    " what the first request made, and make nothing again; another body is 409"
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    if "status" in op.query:
        params.append(
            {
                "name": "status",
                "in": "query",
                "required": False,
                "description": "only items with this status",
                "schema": {"type": "string", "enum": ["pending", "succeeded", "skipped", "failed"]},
            }
        )
    if "page" in op.query:
        params.append(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "items per page",
                "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            }
        )
    if op.if_match:
        params.append({"$ref": "#/components/parameters/If-Match"})
    if "limit" in op.query:
        params.append(
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "entries per page",
                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
            }
        )
    if "cursor" in op.query:
        params.append(
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "nextCursor of the previous page (opaque)",
                "schema": {"type": "string"},
            }
        )
    return params


NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"  # list prefixes: no control characters


def _list_filters(with_account: bool) -> list[dict[str, Any]]:
    """The filters and the order of the users list (SPEC section 12); any other parameter is 400."""

    def q(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

    statuses = "(INVITED|ACTIVE|SUSPENDED)"
    params = [
        q(
            "status",
            "INVITED, ACTIVE, SUSPENDED; comma-separated for several",
            {"type": "string", "pattern": f"^{statuses}(,{statuses})*$"},
        ),
        q(
            "role",
            "a storefront role in the account (needs an account)",
            {"type": "string", "enum": list(ROLES)},
        ),
        q(
            "profile",
            "the user's profile",
            {"type": "string", "enum": ["customer", "partner", "sales_rep", "marketing", "administrator"]},
        ),
        q(
            "emailPrefix",
            "case-insensitive prefix of the email",
            {"type": "string", "minLength": 1, "maxLength": 254, "pattern": NO_CONTROL},
        ),
        q(
            "namePrefix",
            "case-insensitive prefix of the first or the last name (without sort: ordered by that name)",
            {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NO_CONTROL},
        ),
        q("emailVerified", "true or false", {"type": "string", "enum": ["true", "false"]}),
        q("idpSync", "pending or failed", {"type": "string", "enum": ["pending", "failed"]}),
        q("deliverability", "bounced or complained", {"type": "string", "enum": ["bounced", "complained"]}),
        q("updatedSince", "RFC 3339 date-time with an offset", {"type": "string", "format": "date-time"}),
        q(
            "sort",
            "email (default), lastName, -createdAt (newest first), -updatedAt",
            {"type": "string", "enum": ["email", "lastName", "-createdAt", "-updatedAt"]},
        ),
    ]
    if with_account:
        params.insert(
            1, q("accountId", "members of this account", {"type": "string", "minLength": 1, "maxLength": 200})
        )
    return params


def _unauthorized(extra_codes: tuple[str, ...] = ()) -> dict[str, Any]:
    """The 401 of an authenticated route; ``extra_codes``: the route's own 401 codes (RFC 9470)."""
    description = (
        "The API Gateway JWT authorizer refused the token (missing, malformed, expired, wrong"
        ' issuer or audience): {"message": "Unauthorized"}, and the function never runs.'
        " Or the function refused the caller: unauthenticated (no subject), token_revoked (the"
        " caller is unknown, suspended, or the token predates a revocation)."
    )
    if "reauthentication_required" in extra_codes:
        description += (
            " Or the sign-in behind the token is too old for this change: reauthentication_required"
            ' with maxAge, and WWW-Authenticate: Bearer error="insufficient_user_authentication",'
            " max_age=<seconds> (RFC 9470)."
        )
    return {
        "description": description,
        "headers": {"WWW-Authenticate": _header("WWW-Authenticate")},
        "content": {
            JSON: {"schema": _ref("GatewayUnauthorized")},
            PROBLEM: {"schema": _problem_schema(["unauthenticated", "token_revoked", *extra_codes])},
        },
    }


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": (
                    "An Auth0 access token (RS256) for the API's audience. Roles come from this API's"
                    " records, never from token claims."
                ),
            }
        },
        "parameters": {
            "userId": {
                "name": "userId",
                "in": "path",
                "required": True,
                "description": (
                    "The Auth0 user id (auth0|...), percent-encoded in the path (auth0%7C...). An id"
                    f" over {MAX_USER_ID_BYTES} bytes of UTF-8 names no user (404)."
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_USER_ID_BYTES},
                "example": "auth0|65f0c1d2e3f4a5b6c7d8e9f0",
            },
            "token": {
                "name": "token",
                "in": "path",
                "required": True,
                "description": "The token of the link in the email (43 URL-safe characters).",
                "schema": {"type": "string", "minLength": 1},
            },
            "jobId": {
                "name": "jobId",
                "in": "path",
                "required": True,
                "description": "The id of a bulk job.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64},
            },
            "If-Match": {
                "name": "If-Match",
                "in": "header",
                "required": False,
                "description": (
                    'An ETag of this API ("7"): the change applies only to that version (412 when the'
                    " user has changed since); * or absent: the latest version."
                ),
                "schema": {"type": "string"},
            },
        },
        "headers": {
            "Cache-Control": {
                "description": "Every answer of a function: never stored by caches.",
                "schema": {"type": "string", "const": "no-store"},
            },
            "ETag": {
                "description": 'The user\'s version ("7"); send it back as If-Match.',
                "required": True,
                "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
            },
            "Location": {
                "description": "Where the created resource is read (a path of this API).",
                "required": True,
                "schema": {"type": "string"},
            },
            "Content-Disposition": {
                "description": "An attachment: browsers save the document as a file.",
                "required": True,
                "schema": {"type": "string"},
            },
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "WWW-Authenticate": {
                "description": (
                    "The bearer challenge of the JWT authorizer; for reauthentication_required, RFC"
                    ' 9470\'s Bearer error="insufficient_user_authentication", max_age=<seconds>.'
                ),
                "schema": {"type": "string"},
            },
        },
        "schemas": component_schemas(),
    }


def _info() -> dict[str, Any]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        "title": "usermgmt: user lifecycle API",
        "version": str(project["version"]),
        "description": (
            "Read and edit users, change a login email through verification, suspend, enable and delete"
            " users, and reset passwords, for a storefront whose identity provider is Auth0.\n\n"
            "Errors are RFC 9457 problem details (application/problem+json) with a stable `code`."
            " Every answer of a function carries `Cache-Control: no-store`. Link pages answer HTML to"
            " browsers (`Accept: text/html`) and JSON to everyone else.\n\n"
            "Generated by `make openapi` from template.yaml and the package's models: do not edit."
        ),
    }


def _machine_codes(path: str) -> tuple[str, ...]:
    return ("forbidden",) if path == "/me" or path.startswith("/me/") else ("insufficient_scope",)


def build(template: Path = TEMPLATE) -> dict[str, Any]:
    """The whole document for the routes of ``template``; KeyError for a route with no description."""
    statuses = problem_statuses()
    paths: dict[str, dict[str, Any]] = {}
    for route in template_routes(template):
        key = (route.method, route.path)
        if key not in OPERATIONS:
            raise KeyError(f"{route.method} {route.path} (template.yaml) has no entry in OPERATIONS")
        op = OPERATIONS[key]
        responses: dict[str, Any] = {}
        for ok in op.oks:
            responses[str(ok.status)] = _ok_response(ok)
        own_401 = tuple(c for c in op.codes if statuses.get(c) == 401)
        if not route.public:
            responses["401"] = _unauthorized(own_401)
        codes = tuple(c for c in op.codes if c not in own_401)
        if not route.public:
            # machine callers (SPEC section 3): a /me route is 403 forbidden to them, any other route
            # 403 insufficient_scope without the scope it needs
            codes += tuple(c for c in _machine_codes(route.path) if c not in codes)
        responses.update(_problem_responses(dataclasses.replace(op, codes=codes), statuses))
        operation: dict[str, Any] = {
            "operationId": op.operation_id,
            "tags": [op.tag],
            "summary": op.summary,
            "description": op.description,
            "security": [] if route.public else [{SECURITY_SCHEME: []}],
        }
        parameters = _parameters(route.path, op)
        if parameters:
            operation["parameters"] = parameters
        body = _request_body(op)
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = dict(sorted(responses.items()))
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": _info(),
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "security": [{SECURITY_SCHEME: []}],
        "paths": dict(sorted(paths.items())),
        "components": _components(),
    }


def render(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed document is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is not what `make openapi` generates; run it and commit", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
