"""SES v2 mailer: one multipart/alternative message (text + HTML) per email, with the configuration set."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

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
    def __init__(self, client: Any, sender: str, configuration_set: str) -> None:
        self._client = client
        self._sender = sender
        self._configuration_set = configuration_set

    def send(self, email: Email) -> None:
        kwargs: dict[str, Any] = {
            "FromEmailAddress": self._sender,
            "Destination": {"ToAddresses": [email.to]},
            "Content": {"Raw": {"Data": mime(self._sender, email)}},
        }
        if self._configuration_set:
            kwargs["ConfigurationSetName"] = self._configuration_set
        try:
            self._client.send_email(**kwargs)
        except Exception as exc:  # botocore ClientError and transport errors alike
            raise MailUnavailable(type(exc).__name__) from None
