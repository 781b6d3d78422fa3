"""The return paths' SMTP server (aiosmtpd): where the relay delivers bounces and replies.

It accepts only recipients that are return paths of this service (a
forged token still counts: it is kept as unmatched, with why) and takes
each message in (`ceptoar.bounces.intake`) before it answers 250. While
the store cannot be reached it answers 451, so the relay keeps the
message and tries again: nothing that came back is lost.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiosmtpd.smtp import SMTP, Envelope, Session

from ceptoar.bounces.intake import take_in
from ceptoar.bounces.verp import Verp
from ceptoar.log import get_logger
from ceptoar.retry import is_transient
from ceptoar.store import Store

__all__ = ["MAX_MESSAGE", "ReturnsHandler", "received", "start_returns"]

log = get_logger(__name__)

# The largest message taken in; a bounce quoting a large original stays well below.
MAX_MESSAGE: Final = 20 * 1024 * 1024


class ReturnsHandler:
    """Takes in what is delivered to the service's return paths."""

    def __init__(self, store: Store, verp: Verp) -> None:
        self._store = store
        self._verp = verp

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._verp.is_ours(address):
            return "550 5.1.1 Not a return path of this service"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = received(envelope)
        try:
            for rcpt in envelope.rcpt_tos:
                _, kept = await take_in(self._store, self._verp, data, envelope_to=rcpt)
                log.info("returned.taken_in", kind=kept.kind, outcome=kept.outcome, size=kept.size)
        except Exception as exc:
            if not is_transient(exc):
                log.exception("returned.failed", size=len(data))
            else:
                log.error("returned.store_unavailable", error=repr(exc))
            return "451 4.3.0 Not taken in just now; try again later"
        return "250 2.0.0 Ok: taken in"


def received(envelope: Envelope) -> bytes:
    """The message as it arrived (before any decoding aiosmtpd did)."""
    data = envelope.original_content or b""
    if isinstance(envelope.content, bytes) and not data:
        data = envelope.content
    return data


async def start_returns(handler: ReturnsHandler, *, host: str, port: int) -> asyncio.Server:
    """Serve the return paths on host:port (port 0 picks a free one)."""
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        return SMTP(
            handler,
            hostname="returns.ceptoar.example",
            data_size_limit=MAX_MESSAGE,
            enable_SMTPUTF8=True,
            ident="ceptoar returns",
        )

    return await loop.create_server(session, host=host, port=port)
