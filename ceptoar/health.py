"""A serve's own HTTP port (CEPTOAR_METRICS_PORT): `/metrics`, `/healthz` and `/readyz`.

- `/healthz`: the process answers (200). For a liveness probe.
- `/readyz`: the database answers a query, the broker connection is
  open and, for a host with the mailer role, the relay accepts a TCP
  connection: 200 with what was checked, else 503 naming what failed. For
  a readiness probe or a load balancer.
- `/metrics`: `ceptoar.metrics` in Prometheus's text format, every
  process of the serve added up (multiprocess mode), with the queues'
  depths read at the scrape.

A plain ASGI application, served by uvicorn on the serve's event loop
(`ceptoar.runtime.serve_asgi`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ceptoar.log import get_logger
from ceptoar.metrics import ENV, metrics
from ceptoar.runtime import Components

__all__ = ["HealthApp"]

log = get_logger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Seconds each readiness check may take.
_CHECK_TIMEOUT = 2.0


class HealthApp:
    """The ASGI application; `relay` is (host, port) for a host that sends mail, else None."""

    def __init__(self, c: Components, *, relay: tuple[str, int] | None) -> None:
        self._c = c
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"GET only\n", "text/plain")
        elif scope["path"] == "/healthz":
            await _answer(send, 200, b"ok\n", "text/plain")
        elif scope["path"] == "/readyz":
            checks = await self.ready()
            status = 200 if all(v == "ok" for v in checks.values()) else 503
            await _answer(send, status, json.dumps(checks).encode() + b"\n", "application/json")
        elif scope["path"] == "/metrics":
            body, content_type = await self.scrape()
            await _answer(send, 200, body, content_type)
        else:
            await _answer(send, 404, b"not found\n", "text/plain")

    async def ready(self) -> dict[str, str]:
        """Each dependency: `ok`, or why not."""
        checks: dict[str, str] = {}
        for name, check in (
            ("database", self._database),
            ("broker", self._broker),
            ("relay", self._relay_open),
        ):
            try:
                await asyncio.wait_for(check(), _CHECK_TIMEOUT)
                checks[name] = "ok"
            except _NotChecked:
                continue
            except Exception as exc:  # every failure is an answer here, not an error of the endpoint
                checks[name] = f"failed: {exc!r}"[:300]
        return checks

    async def _database(self) -> None:
        await self._c.store.ping()

    async def _broker(self) -> None:
        if not self._c.bus.connected:
            raise ConnectionError("the connection to the broker is closed")

    async def _relay_open(self) -> None:
        if self._relay is None:
            raise _NotChecked
        _, writer = await asyncio.open_connection(*self._relay)
        writer.close()

    async def scrape(self) -> tuple[bytes, str]:
        """The metrics in Prometheus's text format, with the queues' depths read now."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        try:
            depths = await asyncio.wait_for(self._c.bus.queue_depths(), _CHECK_TIMEOUT)
        except Exception as exc:
            log.warning("metrics.queues_unread", error=repr(exc))
        else:
            for queue, depth in depths.items():
                metrics().queue_messages.labels(queue).set(depth)
        if os.environ.get(ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _NotChecked(Exception):
    """This host has nothing to check here."""


async def _answer(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
