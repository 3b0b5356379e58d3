"""Link pages: plain, accessible HTML with no external assets, for people clicking links in emails.

Browsers (``Accept: text/html``) get pages; every other caller gets JSON / problem+json. Every
response carries ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer`` (SPEC section 10).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import parse_qs

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from usermgmt.api import (
    BASE_HEADERS,
    body_bytes,
    body_text,
    is_json,
    json_response,
    media_type,
    problem_response,
    request_ctx,
)
from usermgmt.errors import (
    ApiError,
    FieldProblem,
    InvalidJson,
    LinkGone,
    RateLimited,
    UnsupportedMediaType,
    ValidationFailed,
)
from usermgmt.service.passwords import MAX_PASSWORD_CHARS

FORM = "application/x-www-form-urlencoded"
PAGE_HEADERS = {
    **BASE_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none';"
        " frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#111}"
    "label{display:block;margin-top:1rem;font-weight:600}"
    "input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}"
    "button{margin-top:1.5rem;font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}"
    ".error{color:#a00;font-weight:600}"
)


def wants_html(app: APIGatewayHttpResolver) -> bool:
    accept = (app.current_event.headers.get("accept") or "").lower()
    return "text/html" in accept


def page(title: str, body_html: str, status: int = 200) -> Response[str]:
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body_html}</main></body></html>"
    )
    return Response(
        status_code=status, content_type="text/html; charset=utf-8", body=html, headers=dict(PAGE_HEADERS)
    )


def paragraph(text: str, css_class: str | None = None) -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f"<p{cls}>{escape(text)}</p>"


def button_form(action: str, label: str, fields_html: str = "") -> str:
    target = escape(action, quote=True)
    button = f'<button type="submit">{escape(label)}</button>'
    return f'<form method="post" action="{target}">{fields_html}{button}</form>'


def gone(app: APIGatewayHttpResolver, err: LinkGone, renew_action: str | None = None) -> Response[str]:
    """410 for an expired, used, superseded or unknown link: a page for people, problem+json otherwise."""
    if not wants_html(app):
        response = problem_response(err)
        response.headers.update(PAGE_HEADERS)
        return response
    body = paragraph(err.detail)
    if renew_action and err.can_renew:
        body += paragraph("You can ask for a new link; it is sent to the address on file.")
        body += button_form(renew_action, "Send a new link")
    return page("This link cannot be used", body, status=410)


def error(app: APIGatewayHttpResolver, err: ApiError, title: str, body_html: str = "") -> Response[str]:
    if not wants_html(app):
        response = problem_response(err)
        response.headers.update(PAGE_HEADERS)
        return response
    response = page(title, paragraph(err.detail, "error") + body_html, status=err.status)
    response.headers.update(err.headers)  # e.g. Retry-After
    return response


def done(app: APIGatewayHttpResolver, result: str, title: str, message: str) -> Response[str]:
    """200 after a successful link POST: a page for people, ``{"result": ...}`` otherwise."""
    if wants_html(app):
        return page(title, paragraph(message))
    response = json_response(200, {"result": result})
    response.headers.update(PAGE_HEADERS)
    return response


def json_answer(status: int, body: Any) -> Response[str]:
    response = json_response(status, body)
    response.headers.update(PAGE_HEADERS)
    return response


def form_or_json(app: APIGatewayHttpResolver) -> dict[str, str]:
    """A link POST's fields, from a form submission or a JSON body (empty body: no fields)."""
    raw = body_bytes(app)
    if not raw:
        return {}
    content_type = media_type(app)
    if content_type == FORM:
        text = body_text(raw, not_utf8=UnsupportedMediaType("A form must be sent in UTF-8"))
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    if is_json(content_type):
        text = body_text(raw, not_utf8=InvalidJson("The body must be JSON in UTF-8"))
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidJson() from None
        if not isinstance(data, dict):
            raise InvalidJson("The body must be a JSON object")
        return {str(k): v for k, v in data.items()}
    raise UnsupportedMediaType("The body must be JSON or a form")


# ------------------------------------------------------------------------------------------------
# what several link routes share
# ------------------------------------------------------------------------------------------------
def new_password(fields: dict[str, Any], *, from_form: bool, prompt: str) -> str:
    """``newPassword`` (never trimmed: Auth0 judges it as typed) and, from the form, its confirmation.

    Raises ``ValidationFailed`` (``prompt`` is its detail when the password is missing).
    """
    password = fields.get("newPassword")
    if not isinstance(password, str) or not password:
        raise ValidationFailed(prompt, errors=[FieldProblem("newPassword", "is required")])
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationFailed(
            "The password is too long",
            errors=[FieldProblem("newPassword", f"must be at most {MAX_PASSWORD_CHARS} characters")],
        )
    confirm = fields.get("confirmPassword")
    if (from_form or confirm is not None) and confirm != password:
        raise ValidationFailed(
            "The two passwords do not match",
            errors=[FieldProblem("confirmPassword", "must match the new password")],
        )
    return password


def renewed(
    app: APIGatewayHttpResolver,
    check_ip: Callable[[str], None],
    renew: Callable[[str, str], None],
    token: str,
    what: str,
) -> Response[str]:
    """A renew route (from an expired link's page): the per-IP limit, then the same 202 whatever happened.

    ``what`` finishes the page's sentence: where a new link goes, if the link could be renewed.
    """
    ctx = request_ctx(app)
    try:
        check_ip(ctx.source_ip)
    except RateLimited as err:
        return error(app, err, "Too many requests")
    renew(token, ctx.request_id)
    if wants_html(app):
        return page(
            "Check your email",
            paragraph(f"If this link can be renewed, {what}. Only the newest link works."),
            status=202,
        )
    return json_answer(202, {"status": "accepted"})
