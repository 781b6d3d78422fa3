"""The mailbox's SMTP side (aiosmtpd), run on the caller's event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ceptoar.mailbox.maildir import deliver

__all__ = ["MaildirHandler", "mailbox_session", "start_mailbox"]


class MaildirHandler:
    """Accepts every recipient and files each message in the recipient's Maildir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not data:
            data = envelope.content
        keys = [
            deliver(self.root, rcpt, data, envelope_from=envelope.mail_from or "")
            for rcpt in envelope.rcpt_tos
        ]
        return f"250 2.0.0 Ok: stored as {' '.join(keys)}"


def mailbox_session(handler: Any) -> SMTP:
    """One SMTP session of the mailbox, for a server's protocol factory."""
    return SMTP(handler, hostname="mailbox.ceptoar.example", enable_SMTPUTF8=True, ident="ceptoar mailbox")


async def start_mailbox(handler: Any, *, host: str = "127.0.0.1", port: int = 2525) -> asyncio.Server:
    """Serve SMTP for `handler` on host:port (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: mailbox_session(handler), host=host, port=port)
