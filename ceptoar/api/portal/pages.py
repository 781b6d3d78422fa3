"""The portal's shared parts: its settings, templates, the mail renderer and what pages show in common."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ceptoar.api.portal.security import (
    CSRF_FIELD,
    CSRF_PURPOSE,
    RateLimit,
    check_csrf,
    cookie_of,
    csrf_token,
    delete_cookie,
    hashed,
    read_form,
)
from ceptoar.config import Settings
from ceptoar.model.notice import Severity
from ceptoar.registry.prefectures import PREFECTURES
from ceptoar.render import SEVERITY_LABELS, Renderer, default_templates_dir
from ceptoar.render.labels import CATEGORY_NAMES as LABELS
from ceptoar.render.mail import JST
from ceptoar.store import Store, Visitor

__all__ = ["CATEGORY_NAMES", "STATE_NAMES", "Portal", "portal_of", "redirect", "sign_out", "visitor_in"]

CATEGORY_NAMES: Final = LABELS["ja"]
STATE_NAMES: Final = {
    "queued": "送信待ち",
    "sending": "送信中",
    "sent": "送信済み",
    "deferred": "再送待ち",
    "failed": "失敗",
    "bounced": "不達",
    "acknowledged": "受領確認",
    "cancelled": "取消",
}
SEVERITIES: Final = [s.value for s in Severity]
_PREFECTURE_NAMES: Final = {p.number: p.name for p in PREFECTURES}


@dataclass
class Portal:
    """What the portal's pages run with, made once per application."""

    settings: Settings
    env: Environment
    renderer: Renderer
    # The key of the forms' CSRF tokens (`ceptoar.api.portal.security`).
    csrf_key: bytes
    # A local government's session lasts a working day; an operator's too.
    session_hours: float = 12.0
    link_minutes: float = 15.0
    # Sign-in links mailed to one address within link_window, at most.
    links_per_address: int = 3
    link_window: timedelta = timedelta(minutes=15)
    # Sign-in forms posted per client address (operators' failed keys are counted in the database).
    signin_requests: RateLimit = field(default_factory=lambda: RateLimit(10, 600))
    # Operators' keys checked at once, and what a name without an account is checked against.
    verifying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    dummy_hash: str | None = None
    # Sign-in links being made and mailed after their form was answered (kept so that the tasks are
    # not collected), made one at a time.
    sending: set[asyncio.Task[None]] = field(default_factory=set)
    making_links: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> Portal:
        env = Environment(
            loader=FileSystemLoader((settings.templates_dir or default_templates_dir()) / "portal"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["jst"] = _jst
        renderer = Renderer(
            settings.templates_dir or default_templates_dir(),
            sender=settings.mail_from,
            sender_name=settings.mail_from_name,
        )
        return cls(settings, env, renderer, settings.derived_key(CSRF_PURPOSE))

    def page(self, request: Request, name: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        """Template `name` with what every page shows, as an HTML answer."""
        values.setdefault("address", None)
        values.setdefault("operator", None)
        body = self.env.get_template(name).render(
            csrf=csrf_token(request),
            csrf_field=CSRF_FIELD,
            severity_labels=SEVERITY_LABELS["ja"],
            categories=CATEGORY_NAMES,
            state_names=STATE_NAMES,
            prefectures=PREFECTURES,
            prefecture_names=_PREFECTURE_NAMES,
            **values,
        )
        return HTMLResponse(body, status_code=status)


def portal_of(request: Request) -> tuple[Portal, Store]:
    portal: Portal = request.app.state.portal
    store: Store = request.app.state.ctx.store
    return portal, store


def redirect(path: str) -> RedirectResponse:
    """See other: after a form, to the page that shows its result."""
    return RedirectResponse(path, status_code=303)


async def visitor_in(request: Request, cookie: str) -> Visitor | None:
    """Who holds the session whose token the cookie `cookie` carries, if anyone does."""
    token = cookie_of(request, cookie)
    if not token:
        return None
    _, store = portal_of(request)
    return await store.portal.visitor(hashed(token))


async def sign_out(request: Request, cookie: str, *, path: str, then: str) -> RedirectResponse:
    """End the session in `cookie` (a form with the CSRF token asked it) and go to `then`."""
    _, store = portal_of(request)
    check_csrf(request, await read_form(request))
    token = cookie_of(request, cookie)
    if token:
        await store.portal.end_session(hashed(token))
    response = redirect(then)
    delete_cookie(response, request, cookie, path=path)
    return response


def _jst(when: datetime | None) -> str:
    return "" if when is None else f"{when.astimezone(JST):%Y-%m-%d %H:%M}"
