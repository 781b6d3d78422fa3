"""The portal: local governments read and answer their alerts (`/portal`), operators watch (`/ops`).

Server-rendered pages in the same application as the feed endpoint; the
only script is `static/portal.js`, which follows the live counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from ceptoar.api.portal import local, ops, unsubscribe
from ceptoar.api.portal.pages import Portal
from ceptoar.api.portal.security import Forbidden, SecureHeaders, forbidden_page
from ceptoar.config import Settings

__all__ = ["install"]

_STATIC: Final = Path(__file__).parent / "static"
_TYPES: Final = {
    "portal.css": "text/css; charset=utf-8",
    "portal.js": "text/javascript; charset=utf-8",
    # The answer pages' own stylesheet (`ceptoar.api.answers`).
    "answer.css": "text/css; charset=utf-8",
}


def install(app: FastAPI, settings: Settings) -> None:
    """Add the portal's pages, its static files and its headers to the application."""
    app.state.portal = Portal.from_settings(settings)
    app.add_middleware(SecureHeaders)
    app.include_router(local.router)
    app.include_router(ops.router)
    app.include_router(unsubscribe.router)

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> HTMLResponse:
        return forbidden_page(exc)

    @app.get("/portal/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _TYPES:
            return Response(status_code=404)
        headers = {"Cache-Control": "public, max-age=3600"}
        return FileResponse(_STATIC / name, media_type=_TYPES[name], headers=headers)
