"""The mailbox's SMTP side (aiosmtpd), run on the caller's event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ceptoar.bounces.server import received
from ceptoar.log import get_logger
from ceptoar.mailbox.dsn import Bouncer
from ceptoar.mailbox.maildir import deliver

__all__ = ["MaildirHandler", "mailbox_session", "refuse_recipient", "start_mailbox"]

log = get_logger(__name__)


class MaildirHandler:
    """Accepts every plain address and files each message in the recipient's Maildir under one root.

    A recipient that is no plain address ('..', a path) is refused at RCPT;
    a message that cannot be stored is answered 451 without saying where
    the mailbox lives.
    """

    def __init__(self, root: Path, *, bouncer: Bouncer | None = None) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Plays a relay that accepts mail for some addresses and bounces it later.
        self.bouncer = bouncer

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (refusal := refuse_recipient(address)) is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = received(envelope)
        sender = envelope.mail_from or ""
        try:
            keys = []
            for rcpt in envelope.rcpt_tos:
                if self.bouncer is None or not self.bouncer.bounces(rcpt):
                    keys.append(deliver(self.root, rcpt, data, envelope_from=sender))
                if self.bouncer is not None:
                    self.bouncer.later(data, envelope_from=sender, recipient=rcpt)
        except OSError as exc:
            log.error("mailbox.store_failed", recipients=len(envelope.rcpt_tos), error=str(exc))
            return "451 4.3.0 The message could not be stored; try again later"
        return f"250 2.0.0 Ok: stored as {' '.join(keys)}"


def refuse_recipient(address: str) -> str | None:
    """The reply refusing a recipient that is no plain address, or None to accept it."""
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or "/" in address or "\\" in address or "\x00" in address:
        return "553 5.1.3 Not a plain address: local-part@domain"
    return None


def mailbox_session(handler: Any) -> SMTP:
    """One SMTP session of the mailbox, for a server's protocol factory."""
    return SMTP(handler, hostname="mailbox.ceptoar.example", enable_SMTPUTF8=True, ident="ceptoar mailbox")


async def start_mailbox(handler: Any, *, host: str = "127.0.0.1", port: int = 2525) -> asyncio.Server:
    """Serve SMTP for `handler` on host:port (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: mailbox_session(handler), host=host, port=port)
