"""Running the HTTP application under uvicorn, stopped by the process's stop event."""

from __future__ import annotations

import asyncio

from ceptoar.api.app import create_app
from ceptoar.config import Settings
from ceptoar.runtime import serve_asgi

__all__ = ["serve_api"]


async def serve_api(s: Settings, stop: asyncio.Event, *, host: str, port: int) -> None:
    """Run the ingestion API until `stop` is set."""
    await serve_asgi(create_app(s), host=host, port=port, stop=stop)
