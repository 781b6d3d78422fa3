"""The connected parts every ceptoar process opens: the store, the bus, the renderer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TypeVar

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.mail.pool import SmtpPool
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.retry import persist
from ceptoar.store import Store

__all__ = ["Components", "make_pool", "make_renderer", "open_components"]

T = TypeVar("T")


@dataclass
class Components:
    """The connected parts a ceptoar process works with."""

    settings: Settings
    store: Store
    bus: Bus


async def open_components(
    settings: Settings, stack: AsyncExitStack, *, name: str, stop: asyncio.Event | None = None
) -> Components:
    """Open the store and the bus (topology declared); both close with `stack`.

    With `stop`, a long-running process: a database or broker that cannot
    be reached yet is waited for (`Stopping` once `stop` is set) instead of
    failing the start.
    """
    store = await _open(lambda: Store.open(settings.db_url), stop=stop, what="open the store")
    stack.push_async_callback(store.close)
    bus = Bus.from_settings(settings)
    stack.push_async_callback(bus.close)
    await _open(lambda: _connect(bus, name), stop=stop, what="connect to the broker")
    return Components(settings, store, bus)


async def _open(operation: Callable[[], Awaitable[T]], *, stop: asyncio.Event | None, what: str) -> T:
    if stop is None:
        return await operation()
    return await persist(operation, stop=stop, what=what)


async def _connect(bus: Bus, name: str) -> Bus:
    try:
        await bus.connect(name=name)
    except BaseException:
        await bus.close()  # a connection made before a later step failed
        raise
    return bus


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
