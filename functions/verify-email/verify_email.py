"""verify-email: send verification links and use the verify / cancel links (SPEC section 6).

HTTP (API Gateway, payload 2.0):
  POST /users/{userId}/verification-email   administrators (delegated ones in scope): 202 {"sentTo"}
  POST /me/verification-email               the user: 202 {"sentTo"}
  GET  /email-verification/{token}          confirmation page (changes nothing); JSON {"purpose", "email"}
  POST /email-verification/{token}          confirm: 200 {"result": "email_verified"} / a page
  POST /email-verification/{token}/renew    a fresh link for an expired one: always 202 (429 per source IP)
  GET  /email-change/{token}/cancel         cancel page (changes nothing); JSON {"purpose", "email"}
  POST /email-change/{token}/cancel         cancel: 200 {"result": "email_change_cancelled"} / a page
EventBridge: storefront ``VerificationEmailRequested`` ``{"userId"}`` or ``{"email"}``, once per event id.

The handler tells the two apart by shape: ``requestContext`` is HTTP, ``detail-type`` EventBridge.
Every response of a link route carries ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response

from usermgmt import container, pages
from usermgmt.api import json_response, make_resolver, path_user_id, request_ctx
from usermgmt.emails import mask
from usermgmt.errors import DependencyUnavailable, EmailImmutable, EmailTaken, LinkGone
from usermgmt.events import CORRELATION_PATH, handle_storefront_event, http_or_storefront, parse_user_or_email
from usermgmt.observability import lambda_entry
from usermgmt.service.verification import VerificationService

VERIFICATION_REQUESTED = "VerificationEmailRequested"

app = make_resolver()


def _service() -> VerificationService:
    return container.get().verification


# ------------------------------------------------------------------------------------------------ sending
@app.post("/users/<userId>/verification-email")
def admin_send(userId: str) -> Response:  # the route's parameter name
    sent_to = _service().send_for_user(request_ctx(app), path_user_id(userId))
    return json_response(202, {"sentTo": sent_to})


@app.post("/me/verification-email")
def self_send() -> Response:
    sent_to = _service().send_for_user(request_ctx(app), None)
    return json_response(202, {"sentTo": sent_to})


@app.post("/email-verification/<token>/renew")
def renew(token: str) -> Response:
    """The same answer whether or not a link was sent (and whatever the token is)."""
    service = _service()
    return pages.renewed(
        app,
        service.check_ip,
        lambda t, request_id: container.get().public.accept_renew("verify", t, request_id),
        token,
        "a new one is on its way to the address waiting for confirmation",
    )


# ------------------------------------------------------------------------------------------------ verify link
@app.get("/email-verification/<token>")
def show_verify(token: str) -> Response:
    try:
        _checked, address = _service().check_verify(token)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    if pages.wants_html(app):
        body = pages.paragraph(f"Confirm {mask(address)} as the email address you sign in with.")
        # posts to its own URL (relative: works under any base path); the GET itself changes nothing
        body += pages.button_form(token, "Confirm email address")
        return pages.page("Confirm your email address", body)
    return pages.json_answer(200, {"purpose": "email_verification", "email": mask(address)})


@app.post("/email-verification/<token>")
def confirm(token: str) -> Response:
    pages.form_or_json(app)  # no fields; refuses oversized bodies and other media types
    try:
        _service().confirm(token, request_ctx(app).request_id)
    except LinkGone as err:
        return pages.gone(app, err, renew_action=_renew_action(token))
    except (EmailTaken, EmailImmutable) as err:
        return pages.error(app, err, "This address cannot be used")
    except DependencyUnavailable as err:
        return pages.error(app, err, "Please try again in a moment")
    return pages.done(
        app,
        "email_verified",
        "Email address confirmed",
        "Your email address is confirmed. Use it the next time you sign in.",
    )


def _renew_action(token: str) -> str:
    # Relative to /email-verification/{token}: works under any base path.
    return f"{token}/renew"


# ------------------------------------------------------------------------------------------------ cancel link
@app.get("/email-change/<token>/cancel")
def show_cancel(token: str) -> Response:
    try:
        _checked, pending = _service().check_cancel(token)
    except LinkGone as err:
        return pages.gone(app, err)
    if pages.wants_html(app):
        body = pages.paragraph(
            f"A change of your sign-in email address to {mask(pending)} is waiting for confirmation."
            " Cancel it if you did not ask for it."
        )
        body += pages.button_form("cancel", "Cancel the change")  # relative: /email-change/{token}/cancel
        return pages.page("Cancel the email change", body)
    return pages.json_answer(200, {"purpose": "email_change_cancel", "email": mask(pending)})


@app.post("/email-change/<token>/cancel")
def cancel(token: str) -> Response:
    pages.form_or_json(app)
    try:
        _service().cancel(token, request_ctx(app).request_id)
    except LinkGone as err:
        return pages.gone(app, err)
    except DependencyUnavailable as err:
        return pages.error(app, err, "Please try again in a moment")
    return pages.done(
        app,
        "email_change_cancelled",
        "Change cancelled",
        "The change of your sign-in email address was cancelled."
        " You keep signing in with your current address.",
    )


# ------------------------------------------------------------------------------------------------ events
def handle_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Storefront ``VerificationEmailRequested``: like the admin route, when there is something to verify."""
    return handle_storefront_event(
        event,
        context,
        VERIFICATION_REQUESTED,
        parse_user_or_email,
        lambda request, event_id: _service().send_for_event(request.user_id, request.email, event_id),
    )


@lambda_entry(CORRELATION_PATH)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return http_or_storefront(event, context, app.resolve, handle_event)
