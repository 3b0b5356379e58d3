"""SES v2 mailer: one multipart/alternative message (text + HTML) per email, with the configuration set."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from usermgmt import budget
from usermgmt.ports import Email, MailUnavailable


def mime(sender: str, email: Email) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = email.to
    msg["Subject"] = email.subject
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return bytes(msg)


class SesMailer:
    """``client`` is built on the first send: a function that sends no mail never pays for it."""

    def __init__(self, client: Callable[[], Any], sender: str, configuration_set: str) -> None:
        self._make_client = client
        self._client: Any = None
        self._sender = sender
        self._configuration_set = configuration_set

    def send(self, email: Email) -> None:
        if not budget.allows(budget.AWS_CALL_SECONDS):
            raise MailUnavailable("out of time")  # not started: it could outlive the invocation
        kwargs: dict[str, Any] = {
            "FromEmailAddress": self._sender,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Raw": {"Data": mime(self._sender, email)}},
        }
        if self._configuration_set:
            kwargs["ConfigurationSetName"] = self._configuration_set
        if self._client is None:
            self._client = self._make_client()
        try:
            self._client.send_email(**kwargs)
        except Exception as exc:
            # botocore's ClientError and transport errors; anything else is a bug and surfaces
            if type(exc).__module__.startswith(("botocore", "urllib3")):
                raise MailUnavailable(type(exc).__name__) from None
            raise
