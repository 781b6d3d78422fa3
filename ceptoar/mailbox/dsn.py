"""The mailbox playing the world after the relay: bounces, out-of-office replies and people answering.

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
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32

import aiosmtplib

from ceptoar.log import get_logger

__all__ = ["Bouncer", "answer_reply", "auto_reply", "delivery_status_notification"]

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


def _unfolded(value: str) -> str:
    """A header value on one line (a folded one keeps its line breaks when read raw)."""
    return " ".join(value.split())


def auto_reply(original: bytes, *, address: str, to: str) -> bytes:
    """An RFC 3834 out-of-office reply from `address` to `to` (the original's return path)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(original)
    reply = EmailMessage()
    reply["From"], reply["To"] = address, to
    reply["Subject"] = _unfolded(f"自動応答: {headers.get('Subject', '')}")[:200]
    reply["Auto-Submitted"] = "auto-replied"
    reply["In-Reply-To"] = _unfolded(headers.get("Message-ID", ""))
    reply["Message-ID"] = email.utils.make_msgid(domain=REPORTING_MTA)
    reply.set_content("ただいま不在にしております。12月7日以降に確認いたします。\n")
    return reply.as_bytes()


def answer_reply(original: EmailMessage, *, address: str, first_line: str) -> tuple[str, bytes]:
    """A person's reply to an alert mail: where it goes (its Reply-To) and the message."""
    to = str(original.get("Reply-To") or original.get("Return-Path") or "").strip("<> ")
    reply = EmailMessage()
    reply["From"], reply["To"] = address, to
    reply["Subject"] = _unfolded(f"Re: {original.get('Subject', '')}")[:300]
    reply["In-Reply-To"] = _unfolded(str(original.get("Message-ID", "")))
    reply["Message-ID"] = email.utils.make_msgid(domain=address.rpartition("@")[2] or REPORTING_MTA)
    reply.set_content(f"{first_line}\n\n確認しました。\n")
    return to, reply.as_bytes()


@dataclass
class Bouncer:
    """Plays the rest of the world after a relay's 250, to the SMTP server at `returns`.

    `unknown` addresses bounce (an RFC 3464 DSN to the envelope sender);
    `away` addresses keep the mail and answer with an RFC 3834 auto-reply.
    Either comes `after` seconds later, as a relay's or a vacation program's does.
    """

    unknown: set[str]
    returns: tuple[str, int]
    after: float = 0.5
    away: set[str] = field(default_factory=set)
    _pending: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def bounces(self, address: str) -> bool:
        return address.lower() in self.unknown

    def later(self, original: bytes, *, envelope_from: str, recipient: str) -> None:
        """Bounce or auto-reply for `recipient` later, if it is to; a null sender gets neither (RFC 5321)."""
        if not envelope_from or not (self.bounces(recipient) or recipient.lower() in self.away):
            return
        task = asyncio.create_task(self._send(original, envelope_from, recipient))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, original: bytes, envelope_from: str, recipient: str) -> None:
        """Built here, not while the mail is being accepted: nothing about the answer may fail the 250."""
        await asyncio.sleep(self.after)
        host, port = self.returns
        try:
            if self.bounces(recipient):
                message = delivery_status_notification(
                    original, envelope_from=envelope_from, recipient=recipient
                )
            else:
                message = auto_reply(original, address=recipient, to=envelope_from)
            async with aiosmtplib.SMTP(hostname=host, port=port, timeout=30) as smtp:
                await smtp.sendmail("", [envelope_from], message)
        except Exception as exc:
            log.error("mailbox.return_failed", recipient=recipient, error=repr(exc))
