"""The local outbox: every email moto's SES accepted, as JSON (``GET /_local/outbox``) and as a page.

moto runs in this process (the local stack's moto server, or ``mock_aws`` in tests), so its SES backends
are read directly. moto keeps no send time: the first time a message is seen it is stamped, and the
gateway looks after every invocation, so ``sentAt`` is close to the send.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

from werkzeug.wrappers import Request, Response

from local.payload import json_response

__all__ = ["Outbox", "now_rfc3339", "outbox_html", "parse_sent"]

_URL = re.compile(r"https?://[^\s<>\"']+")


def now_rfc3339(now: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Outbox:
    """The emails of moto's SES backends in this process, oldest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent_at: dict[str, str] = {}

    def stamp(self) -> None:
        """Note the time of every email not seen before."""
        with self._lock:
            self._stamp()

    def _stamp(self) -> None:
        """Note when each email not seen before was sent (moto keeps no time)."""
        now = now_rfc3339()
        for backend in _ses_backends():
            for message in list(backend.sent_messages):
                key = str(getattr(message, "id", id(message)))
                self._sent_at.setdefault(key, now)

    def entries(self) -> list[dict[str, Any]]:
        """Every email moto's SES accepted, oldest first."""
        with self._lock:
            self._stamp()
            entries: list[dict[str, Any]] = []
            for backend in _ses_backends():
                for message in list(backend.sent_messages):
                    entry = parse_sent(message)
                    entry["to"] = ", ".join(entry["to"])
                    entry["sentAt"] = self._sent_at.get(str(entry["id"]))
                    entries.append(entry)
            entries.sort(key=lambda e: str(e["sentAt"]))
            return entries

    def clear(self) -> None:
        with self._lock:
            for backend in _ses_backends():
                backend.sent_messages.clear()
            self._sent_at.clear()

    def response(self, request: Request) -> Response:
        entries = self.entries()
        accept = request.accept_mimetypes
        if (
            accept.best_match(["application/json", "text/html"]) == "text/html"
            and accept["text/html"] > accept["application/json"]
        ):
            return Response(
                outbox_html(entries),
                content_type="text/html; charset=utf-8",
                headers={
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                    "Cache-Control": "no-store",
                },
            )
        return json_response(entries)


def _ses_backends() -> Iterable[Any]:
    from moto.ses.models import ses_backends  # moto is a local-stack dependency only

    for account in list(ses_backends.values()):
        yield from list(account.values())


def _addresses(values: Iterable[str]) -> list[str]:
    return [address for _, address in getaddresses(list(values)) if address]


def parse_sent(message: Any) -> dict[str, Any]:
    """One moto SES message as ``{"id","from","to","subject","text","html"}`` (``to`` bare addresses)."""
    kind = type(message).__name__
    entry: dict[str, Any] = {"id": getattr(message, "id", None), "from": getattr(message, "source", None)}
    if kind == "RawMessage":
        parsed = email.message_from_string(message.raw_data, policy=email.policy.default)
        recipients = _addresses(str(parsed.get_all(h, [""])[0]) for h in ("To", "Cc") if parsed.get(h))
        entry["to"] = recipients or _addresses(message.destinations)
        entry["subject"] = str(parsed.get("Subject", ""))
        text_part = parsed.get_body(preferencelist=("plain",))
        html_part = parsed.get_body(preferencelist=("html",))
        entry["text"] = text_part.get_content() if text_part is not None else None
        entry["html"] = html_part.get_content() if html_part is not None else None
        return entry
    destinations = getattr(message, "destinations", {}) or {}
    if isinstance(destinations, Mapping):
        recipients = [a for key in ("ToAddresses", "CcAddresses") for a in destinations.get(key, [])]
    else:
        recipients = list(destinations)
    entry["to"] = _addresses(recipients)
    if kind == "Message":
        # moto keeps one body of a Simple message: the HTML part when there is one, else the text
        body = str(message.body)
        looks_html = body.lstrip().startswith("<")
        entry.update(
            subject=message.subject, text=None if looks_html else body, html=body if looks_html else None
        )
    else:
        entry.update(
            subject=getattr(message, "template", ""), text=getattr(message, "template_data", None), html=None
        )
    return entry


def _linkify(text: str) -> str:
    escaped = html.escape(text)
    return _URL.sub(lambda m: f'<a href="{m.group(0)}" rel="noreferrer noopener">{m.group(0)}</a>', escaped)


def outbox_html(entries: list[dict[str, Any]]) -> str:
    rows: list[str] = []
    for entry in reversed(entries):
        parts = [
            "<article>",
            f"<h2>{html.escape(str(entry.get('subject') or '(no subject)'))}</h2>",
            f"<p class=meta>to {html.escape(str(entry.get('to') or ''))} &middot; "
            f"from {html.escape(str(entry.get('from') or ''))} &middot; "
            f"{html.escape(str(entry.get('sentAt') or ''))}</p>",
        ]
        if entry.get("text"):
            parts.append(f"<pre>{_linkify(str(entry['text']))}</pre>")
        if entry.get("html"):
            parts.append(
                '<details><summary>HTML part</summary><iframe sandbox="allow-popups '
                'allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation" srcdoc="'
                f'{html.escape(str(entry["html"]), quote=True)}"></iframe></details>'
            )
        parts.append("</article>")
        rows.append("".join(parts))
    body = "".join(rows) or "<p>No emails yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Local outbox</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "article{border-bottom:1px solid #ddd;padding:1rem 0}pre{white-space:pre-wrap}"
        ".meta{color:#555}iframe{width:100%;height:24rem;border:1px solid #ccc}"
        f"</style></head><body><h1>Local outbox ({len(entries)})</h1>{body}</body></html>"
    )
