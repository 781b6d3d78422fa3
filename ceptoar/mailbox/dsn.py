"""The mailbox playing a relay that accepted mail it then could not deliver: an RFC 3464 DSN, sent back.

A relay that answered 250 and then fails to deliver mails a delivery
status notification to the envelope sender: multipart/report with a
human-readable part, a message/delivery-status part, and the original's
headers. `Bouncer` does that for the addresses it is told are unknown,
a little later, over SMTP to where the return paths are taken in.
"""

from __future__ import annotations

import asyncio
import email.utils
import uuid
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

import aiosmtplib

from ceptoar.log import get_logger

__all__ = ["Bouncer", "delivery_status_notification"]

log = get_logger(__name__)

REPORTING_MTA = "mailbox.ceptoar.example"


def delivery_status_notification(
    original: bytes, *, envelope_from: str, recipient: str, status: str = "5.1.1", reply: str = ""
) -> bytes:
    """A DSN, as a relay writes it, saying `recipient` could not be delivered `original`."""
    said = reply or f"550 {status} <{recipient}>: Recipient address rejected: User unknown"
    boundary = f"{uuid.uuid4().hex}/{REPORTING_MTA}"
    headers = BytesHeaderParser(policy=compat32).parsebytes(original)
    quoted = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@{REPORTING_MTA}>\r\n"
        f"To: {envelope_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=REPORTING_MTA)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        f"This is the mail system at host {REPORTING_MTA}.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: {said}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; {REPORTING_MTA}\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; {said}\r\n\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{quoted}\r\n"
        f"--{boundary}--\r\n"
    )
    return text.encode("utf-8")


@dataclass
class Bouncer:
    """Bounces mail for `unknown` addresses after `after` seconds, to the SMTP server at `returns`."""

    unknown: set[str]
    returns: tuple[str, int]
    after: float = 0.5
    _pending: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def bounces(self, address: str) -> bool:
        return address.lower() in self.unknown

    def later(self, original: bytes, *, envelope_from: str, recipient: str) -> None:
        """Send the DSN for `recipient` later; a null sender gets none (RFC 5321: no bounce of a bounce)."""
        if not envelope_from:
            return
        task = asyncio.create_task(self._send(original, envelope_from, recipient))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, original: bytes, envelope_from: str, recipient: str) -> None:
        await asyncio.sleep(self.after)
        dsn = delivery_status_notification(original, envelope_from=envelope_from, recipient=recipient)
        host, port = self.returns
        try:
            async with aiosmtplib.SMTP(hostname=host, port=port, timeout=30) as smtp:
                await smtp.sendmail("", [envelope_from], dsn)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.error("mailbox.bounce_failed", recipient=recipient, error=repr(exc))
