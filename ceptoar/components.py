"""The connected parts every ceptoar process opens: the store, the bus, the renderer."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.mail.pool import SmtpPool
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.store import Store

__all__ = ["Components", "make_pool", "make_renderer", "open_components"]


@dataclass
class Components:
    """The connected parts a ceptoar process works with."""

    settings: Settings
    store: Store
    bus: Bus


async def open_components(settings: Settings, stack: AsyncExitStack, *, name: str) -> Components:
    """Open the store and the bus (topology declared); both close with `stack`."""
    store = await Store.open(settings.db_url)
    stack.push_async_callback(store.close)
    bus = Bus.from_settings(settings)
    await bus.connect(name=name)
    stack.push_async_callback(bus.close)
    return Components(settings, store, bus)


def make_renderer(settings: Settings) -> Renderer:
    return Renderer(
        settings.templates_dir or default_templates_dir(),
        sender=settings.mail_from,
        sender_name=settings.mail_from_name,
    )


def make_pool(settings: Settings) -> SmtpPool:
    """The SMTP connection pool to the configured relay (connections open on first use)."""
    return SmtpPool(
        settings.smtp_url,
        size=settings.smtp_connections,
        timeout=settings.smtp_timeout,
        helo_name=settings.helo_name,
        reserved=settings.smtp_critical_connections,
    )
