"""create-user: where a user's lifecycle starts (SPEC section 13).

HTTP (API Gateway, payload 2.0):
  POST   /users                                platform administrators: 201 the INVITED user + Location
                                                (Idempotency-Key: a retry answers the same user)
  POST   /accounts/{accountId}/invitations     account administrators: 202 {"invitationId", ...}
  GET    /accounts/{accountId}/invitations     administrators of the account: 200 {"items", "nextCursor"}
  POST   /invitations/{invitationId}/resend    administrators of its account: 202 as above
  DELETE /invitations/{invitationId}           administrators of its account: 204
  GET    /invitations/{token}                  the link page (changes nothing); JSON {"purpose": ...}
  POST   /invitations/{token}                  accept (form or JSON {"newPassword"} / {})
  POST   /invitations/{token}/renew            a fresh link for an expired one: always 202
EventBridge: storefront ``UserRegistered`` ``{"userId"}``, once per event id.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from aws_lambda_powertools.event_handler import Response

from usermgmt import container, pages
from usermgmt.api import (
    empty_response,
    json_body,
    json_response,
    make_resolver,
    media_type,
    query_int,
    request_ctx,
)
from usermgmt.errors import (
    DependencyUnavailable,
    InvitationNotFound,
    LinkGone,
    PasswordTooWeak,
    ValidationFailed,
)
from usermgmt.events import (
    CORRELATION_PATH,
    EventRequest,
    MalformedEvent,
    handle_storefront_event,
    http_or_storefront,
    parse_user_or_email,
)
from usermgmt.observability import lambda_entry
from usermgmt.service.invitations import DEFAULT_LISTED, MAX_LISTED, InvitationService
from usermgmt.service.passwords import MAX_PASSWORD_CHARS

USER_REGISTERED = "UserRegistered"
MAX_PATH_ID_CHARS = 200

app = make_resolver()


def _service() -> InvitationService:
    return container.get().invitations


def _invitation_id(raw: str) -> str:
    if len(raw) > MAX_PATH_ID_CHARS:
        raise InvitationNotFound()
    return raw


# ------------------------------------------------------------------------------------------------ admins
@app.post("/users")
def create_user() -> Response[str]:
    key = app.current_event.headers.get("idempotency-key")  # optional: a retry answers the same user
    view, version = _service().create(request_ctx(app), json_body(app), key)
    location = "/users/" + quote(view["id"], safe="")
    return json_response(201, view, etag=version, headers={"Location": location})


@app.post("/accounts/<accountId>/invitations")
def invite(accountId: str) -> Response[str]:
    key = app.current_event.headers.get("idempotency-key")  # optional: a retry answers the same one
    sent = _service().invite(request_ctx(app), accountId, json_body(app), key)
    return json_response(202, sent.as_json())


@app.get("/accounts/<accountId>/invitations")
def list_invitations(accountId: str) -> Response[str]:
    limit = query_int(app, "limit", default=DEFAULT_LISTED, low=1, high=MAX_LISTED)
    cursor = app.current_event.get_query_string_value("cursor")
    return json_response(200, _service().list_pending(request_ctx(app), accountId, limit, cursor))


@app.post("/invitations/<invitationId>/resend")
def resend(invitationId: str) -> Response[str]:
    sent = _service().resend(request_ctx(app), _invitation_id(invitationId))
    return json_response(202, sent.as_json())


@app.delete("/invitations/<invitationId>")
def revoke(invitationId: str) -> Response[str]:
    _service().revoke(request_ctx(app), _invitation_id(invitationId))
    return empty_response(204)


# ------------------------------------------------------------------------------------------------ the link
@app.get("/invitations/<token>")
def show(token: str) -> Response[str]:
    try:
        checked = _service().check_link(token)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    if pages.wants_html(app):
        return pages.page(
            "You are invited", _form(token, new_user=checked.new_user, account=checked.account_id)
        )
    return pages.json_answer(
        200,
        {
            "purpose": "invitation",
            "newUser": checked.new_user,
            "accountId": checked.account_id,
            "email": _masked(checked.user.email),
        },
    )


@app.post("/invitations/<token>")
def accept(token: str) -> Response[str]:
    fields = pages.form_or_json(app)
    service = _service()
    ctx = request_ctx(app)
    try:
        checked = service.check_link(token)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    form = _form(token, new_user=checked.new_user, account=checked.account_id)
    password: str | None = None
    try:
        if checked.new_user:
            password = pages.new_password(
                fields, from_form=media_type(app) == pages.FORM, prompt="Choose a password"
            )
        service.accept(token, password, ctx.request_id, checked)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    except (ValidationFailed, PasswordTooWeak) as err:
        return pages.error(app, err, "You are invited", form)
    except DependencyUnavailable as err:
        return pages.error(app, err, "Please try again in a moment", form)
    message = (
        "Your password is set. You can sign in with it now."
        if checked.new_user
        else "You joined the account. Sign in as before to use it."
    )
    return pages.done(app, "invitation_accepted", "Invitation accepted", message)


@app.post("/invitations/<token>/renew")
def renew(token: str) -> Response[str]:
    service = _service()
    return pages.renewed(
        app,
        service.check_ip,
        lambda t, request_id: container.get().public.accept_renew("invite", t, request_id),
        token,
        "a new link is on its way to the invited address",
    )


def _masked(email: str) -> str:
    from usermgmt.emails import mask

    return mask(email)


def _renew_action(token: str) -> str:
    return f"{token}/renew"  # relative to /invitations/{token}


def _form(token: str, *, new_user: bool, account: str | None) -> str:
    """A new user chooses a password (twice); an existing user accepts joining the account."""
    action = escape(token, quote=True)
    where = f"the account {account}" if account else "the platform"
    if not new_user:
        return (
            f"<p>You were invited to join {escape(where)}. You keep signing in as before.</p>"
            f'<form method="post" action="{action}">'
            '<button type="submit">Accept the invitation</button></form>'
        )
    return (
        f"<p>You were invited to {escape(where)}. Choose a password to activate your sign-in.</p>"
        f'<form method="post" action="{action}">'
        '<p id="password-hint">Use at least 8 characters with a mix of lower case and upper case letters,'
        " digits and symbols.</p>"
        '<label for="newPassword">Password</label>'
        '<input id="newPassword" name="newPassword" type="password" autocomplete="new-password"'
        f' required minlength="8" maxlength="{MAX_PASSWORD_CHARS}" aria-describedby="password-hint">'
        '<label for="confirmPassword">Password again</label>'
        '<input id="confirmPassword" name="confirmPassword" type="password" autocomplete="new-password"'
        f' required minlength="8" maxlength="{MAX_PASSWORD_CHARS}">'
        '<button type="submit">Set password</button>'
        "</form>"
    )


# ------------------------------------------------------------------------------------------------ events
def _parse_registration(detail: dict[str, Any]) -> EventRequest:
    request = parse_user_or_email(detail)
    if request.user_id is None:
        raise MalformedEvent("detail.userId is required")
    return request


def _register(request: EventRequest, event_id: str) -> None:
    assert request.user_id is not None  # noqa: S101 - checked by _parse_registration
    _service().register(request.user_id, event_id)


def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Storefront ``UserRegistered``: the record from what Auth0 holds, once per event id."""
    return handle_storefront_event(event, context, USER_REGISTERED, _parse_registration, _register)


@lambda_entry(CORRELATION_PATH)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return http_or_storefront(event, context, app.resolve, handle_event)
