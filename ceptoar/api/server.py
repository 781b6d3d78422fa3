"""Running the HTTP application under uvicorn, stopped by the process's stop event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from ceptoar.api.app import create_app
from ceptoar.config import Settings

__all__ = ["serve_api"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event decides."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(s: Settings, stop: asyncio.Event, *, host: str, port: int) -> None:
    """Run the ingestion API until `stop` is set."""
    config = uvicorn.Config(create_app(s), host=host, port=port, log_level="warning", lifespan="on")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task
