"""The emails this system sends: plain text and HTML, links on PUBLIC_BASE_URL only.

A name is free text a person (or whoever holds their token) typed: it is greeted with only in mail to an
address that is verified. The verification email never carries one (its address is unverified by
definition); the others take ``greeting_name(user)`` (security notes H1).
"""

from __future__ import annotations

from html import escape

from usermgmt.ports import Email


def mask(email: str) -> str:
    """j***@acme.example: enough for a person to recognise, not to harvest."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def greeting_name(first_name: str, address_verified: bool) -> str | None:
    """The name to greet with in mail to an address: only a verified address sees free text."""
    return first_name if address_verified else None


def _greeting(first_name: str | None) -> str:
    return f"Hello {first_name}," if first_name else "Hello,"


def _render(
    to: str, subject: str, greeting: str, paragraphs: list[str], link: tuple[str, str] | None = None
) -> Email:
    text_parts = [greeting, *paragraphs]
    html_parts = [f"<p>{escape(greeting)}</p>", *(f"<p>{escape(p)}</p>" for p in paragraphs)]
    if link:
        label, url = link
        text_parts.append(f"{label}: {url}")
        html_parts.append(f'<p><a href="{escape(url, quote=True)}">{escape(label)}</a></p>')
    text = "\n\n".join(text_parts) + "\n"
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head><body>{''.join(html_parts)}</body></html>"
    )
    return Email(to=to, subject=subject, text=text, html=html)


def verify_address(to: str, url: str, ttl_hours: float) -> Email:
    return _render(
        to,
        "Confirm your email address",
        _greeting(None),  # the address is not verified yet: no free text from the account
        [
            "Please confirm that this is the email address you want to use to sign in.",
            f"The link works once and expires in {ttl_hours:g} hours.",
            "If you did not ask for this, ignore this email: nothing changes until the address is confirmed.",
        ],
        ("Confirm this email address", url),
    )


def email_change_notice(to: str, first_name: str | None, new_address: str, cancel_url: str) -> Email:
    return _render(
        to,
        "Your sign-in email address is being changed",
        _greeting(first_name),
        [
            f"A change of your sign-in email address to {mask(new_address)} was requested.",
            "You keep signing in with this address until the new one is confirmed.",
            "If this was not you, cancel the change.",
        ],
        ("Cancel this change", cancel_url),
    )


def email_changed(to: str, first_name: str | None, new_address: str) -> Email:
    return _render(
        to,
        "Your sign-in email address was changed",
        _greeting(first_name),
        [
            f"Your sign-in email address is now {mask(new_address)}.",
            "If this was not you, contact your administrator.",
        ],
    )


def access_changed(to: str, first_name: str | None, summary: list[str]) -> Email:
    return _render(
        to,
        "Your account access has changed",
        _greeting(first_name),
        ["Your role or account assignment has changed:", *summary],
    )


def password_reset(to: str, first_name: str | None, url: str, ttl_minutes: float) -> Email:
    return _render(
        to,
        "Reset your password",
        _greeting(first_name),
        [
            "Someone asked to reset the password of your account.",
            f"The link works once and expires in {ttl_minutes:g} minutes.",
            "If this was not you, ignore this email: your password stays as it is.",
        ],
        ("Choose a new password", url),
    )


def password_changed(to: str, first_name: str | None) -> Email:
    return _render(
        to,
        "Your password was changed",
        _greeting(first_name),
        ["The password of your account was just changed. If this was not you, contact your administrator."],
    )


def invitation(
    to: str, first_name: str, url: str, ttl_days: float, account_id: str | None, *, new_user: bool
) -> Email:
    """An invitation: a new user chooses a password; an existing user accepts joining the account."""
    where = f" the account {account_id}" if account_id else " the platform"
    if new_user:
        paragraphs = [
            f"You were invited to{where}. Open the link to choose your password and activate your sign-in.",
            f"The link works once and expires in {ttl_days:g} days.",
            "If you did not expect this, ignore this email: nothing happens until you use the link.",
        ]
        link = ("Choose your password", url)
    else:
        paragraphs = [
            f"You were invited to join{where}. Open the link to accept; you keep signing in as before.",
            f"The link works once and expires in {ttl_days:g} days.",
            "If you did not expect this, ignore this email: nothing changes until you accept.",
        ]
        link = ("Accept the invitation", url)
    return _render(to, "You are invited", f"Hello {first_name},", paragraphs, link)


def account_suspended(to: str, first_name: str | None) -> Email:
    return _render(
        to,
        "Your account was suspended",
        _greeting(first_name),
        [
            "Your account was suspended: you cannot sign in until it is enabled again.",
            "If you think this is a mistake, contact your administrator.",
        ],
    )


def account_deleted(to: str, first_name: str | None) -> Email:
    return _render(
        to,
        "Your account was deleted",
        _greeting(first_name),
        [
            "Your account and the personal data held about it were deleted.",
            "If you did not expect this, contact your administrator.",
        ],
    )
