"""The mailbox's SMTP side (aiosmtpd), run on the caller's event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ceptoar.bounces.server import received
from ceptoar.log import get_logger
from ceptoar.mailbox.dsn import Bouncer
from ceptoar.mailbox.limits import SESSION_REFUSAL, RelayLimits, rate_refusal
from ceptoar.mailbox.maildir import deliver

__all__ = ["MaildirHandler", "mailbox_session", "refuse_recipient", "start_mailbox"]

log = get_logger(__name__)


class MaildirHandler:
    """Accepts every plain address and files each message in the recipient's Maildir under one root.

    A recipient that is no plain address ('..', a path) is refused at RCPT;
    a message that cannot be stored is answered 451 without saying where
    the mailbox lives.
    """

    def __init__(
        self,
        root: Path,
        *,
        bouncer: Bouncer | None = None,
        limits: RelayLimits | None = None,
        discard: bool = False,
    ) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Accept and count, file nothing (as Postfix's smtp-sink): a relay as fast as the protocol allows.
        self.discard = discard
        self.accepted = 0
        # Plays a relay that accepts mail for some addresses and bounces it later.
        self.bouncer = bouncer
        # Plays a relay's limits on sessions and messages a second.
        self.limits = limits

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.limits is not None and not self.limits.take_message():
            return rate_refusal(_peer(session))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (refusal := refuse_recipient(address)) is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.discard:
            self.accepted += len(envelope.rcpt_tos)
            return "250 2.0.0 Ok: discarded"
        data = received(envelope)
        sender = envelope.mail_from or ""
        kept = [r for r in envelope.rcpt_tos if self.bouncer is None or not self.bouncer.bounces(r)]
        try:
            # On disk before the 250, in a worker thread: the other sessions are served meanwhile.
            keys = await asyncio.to_thread(_file, self.root, kept, data, sender)
        except OSError as exc:
            log.error("mailbox.store_failed", recipients=len(envelope.rcpt_tos), error=str(exc))
            return "451 4.3.0 The message could not be stored; try again later"
        if self.bouncer is not None:
            for rcpt in envelope.rcpt_tos:
                self.bouncer.later(data, envelope_from=sender, recipient=rcpt)
        return f"250 2.0.0 Ok: stored as {' '.join(keys)}"


def _file(root: Path, recipients: list[str], data: bytes, sender: str) -> list[str]:
    return [deliver(root, rcpt, data, envelope_from=sender) for rcpt in recipients]


def refuse_recipient(address: str) -> str | None:
    """The reply refusing a recipient that is no plain address, or None to accept it."""
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or "/" in address or "\\" in address or "\x00" in address:
        return "553 5.1.3 Not a plain address: local-part@domain"
    return None


def _peer(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


_HOSTNAME = "mailbox.ceptoar.example"
_IDENT = "ceptoar mailbox"


def mailbox_session(handler: Any) -> SMTP:
    """One SMTP session of the mailbox, for a server's protocol factory."""
    return SMTP(handler, hostname=_HOSTNAME, enable_SMTPUTF8=True, ident=_IDENT)


class _CountedSession(SMTP):
    """A session that gives its place back to the limits when it ends."""

    def __init__(self, handler: Any, limits: RelayLimits) -> None:
        super().__init__(handler, hostname=_HOSTNAME, enable_SMTPUTF8=True, ident=_IDENT)
        self._limits = limits

    def connection_lost(self, error: Exception | None) -> None:
        self._limits.close_session()
        super().connection_lost(error)


class _Refusal(asyncio.Protocol):
    """A session over the limit: greeted 421 and closed, as a relay does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        peer = transport.get_extra_info("peername")
        transport.write(SESSION_REFUSAL.format(peer=peer[0] if peer else "unknown").encode() + b"\r\n")
        transport.close()


async def start_mailbox(handler: Any, *, host: str = "127.0.0.1", port: int = 2525) -> asyncio.Server:
    """Serve SMTP for `handler` on host:port (port 0 picks a free one), within the handler's limits."""
    loop = asyncio.get_running_loop()
    limits: RelayLimits | None = getattr(handler, "limits", None)
    if limits is None or limits.max_connections is None:
        return await loop.create_server(lambda: mailbox_session(handler), host=host, port=port)

    def session() -> asyncio.Protocol:
        assert limits is not None
        return _CountedSession(handler, limits) if limits.open_session() else _Refusal()

    return await loop.create_server(session, host=host, port=port)
