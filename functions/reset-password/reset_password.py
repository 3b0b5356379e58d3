"""reset-password: start a password reset and use its link (SPEC section 8).

HTTP (API Gateway, payload 2.0):
  POST /users/{userId}/password-reset   administrators (delegated ones in scope): 202 {"sentTo"}
  POST /me/password-reset               the user: 202 {"sentTo"}
  POST /password-reset                  public: always 202 {"status": "accepted"} (429 per source IP)
  GET  /password-reset/{token}          the form (changes nothing); JSON: {"purpose": "password_reset"}
  POST /password-reset/{token}          set the password (form or JSON {"newPassword"})
  POST /password-reset/{token}/renew    a fresh link for an expired one: always 202
EventBridge: storefront ``PasswordResetRequested`` ``{"email"}``, once per event id.

The handler tells the two apart by shape: ``requestContext`` is HTTP, ``detail-type`` EventBridge.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aws_lambda_powertools.event_handler import Response

from usermgmt import container, pages
from usermgmt.api import json_body, json_response, make_resolver, media_type, path_user_id, request_ctx
from usermgmt.errors import (
    DependencyUnavailable,
    LinkGone,
    PasswordTooWeak,
    ValidationFailed,
)
from usermgmt.events import CORRELATION_PATH, detail_email, handle_storefront_event, http_or_storefront
from usermgmt.observability import lambda_entry
from usermgmt.service.passwords import MAX_PASSWORD_CHARS, PasswordService, reset_address

RESET_REQUESTED = "PasswordResetRequested"

app = make_resolver()


def _service() -> PasswordService:
    return container.get().passwords


# ------------------------------------------------------------------------------------------------ start
@app.post("/users/<userId>/password-reset")
def admin_reset(userId: str) -> Response:  # the route's parameter name
    requested = _service().request_for_user(request_ctx(app), path_user_id(userId))
    return json_response(202, {"sentTo": requested.sent_to})


@app.post("/me/password-reset")
def self_reset() -> Response:
    requested = _service().request_for_user(request_ctx(app), None)
    return json_response(202, {"sentTo": requested.sent_to})


@app.post("/password-reset")
def public_reset() -> Response:
    """The same answer for known, unknown, suspended and deleted addresses and for any JSON body."""
    service = _service()
    ctx = request_ctx(app)
    service.check_ip(ctx.source_ip)
    body = json_body(app)  # 413/415/400 are about the request, not about an account
    # the account's work happens after the answer (service/public.py): the same work here for any address
    container.get().public.accept_reset(reset_address(body), ctx.request_id)
    return _accepted()


@app.post("/password-reset/<token>/renew")
def renew(token: str) -> Response:
    service = _service()
    return pages.renewed(
        app,
        service.check_ip,
        lambda t, request_id: container.get().public.accept_renew("reset", t, request_id),
        token,
        "a new one is on its way to the email address on file",
    )


def _accepted() -> Response:
    return pages.json_answer(202, {"status": "accepted"})


# ------------------------------------------------------------------------------------------------ the link
@app.get("/password-reset/<token>")
def show_form(token: str) -> Response:
    try:
        _service().check_link(token)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    if pages.wants_html(app):
        return pages.page("Choose a new password", _form(token))
    return pages.json_answer(200, {"purpose": "password_reset"})


@app.post("/password-reset/<token>")
def set_password(token: str) -> Response:
    fields = pages.form_or_json(app)
    service = _service()
    ctx = request_ctx(app)
    try:
        password = pages.new_password(
            fields, from_form=media_type(app) == pages.FORM, prompt="Enter a new password"
        )
    except ValidationFailed as err:
        try:
            service.check_link(token)  # a dead link answers 410 before a field problem
        except LinkGone as gone:
            return pages.gone(app, gone, renew_action=_renew_action(token))
        return pages.error(app, err, "Choose a new password", _form(token))
    try:
        service.change_password(token, password, ctx.request_id)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    except PasswordTooWeak as err:
        return pages.error(app, err, "Choose a new password", _form(token))
    except DependencyUnavailable as err:
        return pages.error(app, err, "Please try again in a moment", _form(token))
    return pages.done(
        app, "password_changed", "Password changed", "Your password was changed. You can sign in with it now."
    )


def _renew_action(token: str) -> str:
    # Relative to /password-reset/{token}: works under any base path.
    return f"{token}/renew"


def _form(token: str) -> str:
    """The new-password form; it posts to its own URL (the token travels in the path, never a query)."""
    return (
        f'<form method="post" action="{escape(token, quote=True)}">'
        '<p id="password-hint">Use at least 8 characters with a mix of lower case and upper case letters,'
        " digits and symbols.</p>"
        '<label for="newPassword">New password</label>'
        '<input id="newPassword" name="newPassword" type="password" autocomplete="new-password"'
        f' required minlength="8" maxlength="{MAX_PASSWORD_CHARS}" aria-describedby="password-hint">'
        '<label for="confirmPassword">New password again</label>'
        '<input id="confirmPassword" name="confirmPassword" type="password" autocomplete="new-password"'
        f' required minlength="8" maxlength="{MAX_PASSWORD_CHARS}">'
        '<button type="submit">Set new password</button>'
        "</form>"
    )


# ------------------------------------------------------------------------------------------------ events
def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Storefront ``PasswordResetRequested``: the public route's effect, once per event id."""
    return handle_storefront_event(event, context, RESET_REQUESTED, detail_email, _service().request_by_event)


@lambda_entry(CORRELATION_PATH)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return http_or_storefront(event, context, app.resolve, handle_event)
