"""The answer page: where an alert mail's link lets its organisation answer.

GET shows the alert's title, the organisation's current answer and the
answer buttons, and records nothing: mail scanners and link previews fetch
every link in a mail. POST (the buttons; form field `answer`) records the
answer, the first one moving the delivery to `acknowledged`. A link whose
MAC does not hold is 404; one past its alert's life plus the grace period
is 410 and records nothing; more answers by one link, or from one client
address, than the settings allow is 429 and records nothing.

The pages carry no script and no inline style (their stylesheet is the
portal's `answer.css`), are never cached or indexed, and send no referrer:
the link is the credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ceptoar.api.portal.security import RateLimit, client_of
from ceptoar.bounces.links import AnswerLinks, link_valid_until
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.model.answer import ANSWER_WORDS, Answer
from ceptoar.model.notice import LANGUAGES, Notice
from ceptoar.render import SEVERITY_LABELS, default_templates_dir
from ceptoar.render.mail import JST
from ceptoar.store import AnswerTarget, Store

__all__ = ["AnswerPages", "router"]

log = get_logger(__name__)

# The largest form an answer page takes: one short field.
_FORM_MAX: Final = 1024
# The alerts whose headings the pages keep at once (answers come for the latest few).
_HEADINGS_KEPT: Final = 256
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
_LABELS: Final[dict[str, dict[str, str]]] = {
    "ja": {a.value: words[0] for a, words in ANSWER_WORDS.items()},
    "en": {a.value: words[-1].capitalize() for a, words in ANSWER_WORDS.items()},
}


@dataclass(frozen=True)
class _Page:
    """What an answer page shows; an empty `alert` says the link names nothing."""

    alert: str = ""
    title: str = ""
    severity_label: str = ""
    organisation: str = ""
    current: str | None = None
    recorded: str | None = None
    expired: bool = False
    # Too many answers came by this link or from this client lately: nothing was recorded.
    limited: bool = False
    valid_until: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class AnswerPages:
    """Reads answer links and renders their pages under one set of settings."""

    def __init__(self, settings: Settings, links: AnswerLinks) -> None:
        self._links = links
        # Answers posted per link and per client address (in this process; LGWAN's gateways carry
        # many organisations from one address, so the second limit is wide).
        self.per_link = RateLimit(settings.answer_posts_per_link, 600)
        self.per_client = RateLimit(settings.answer_posts_per_client, 60)
        self._window = timedelta(hours=settings.answer_window_hours)
        self._grace = timedelta(hours=settings.answer_grace_hours)
        # (alert, language) -> (title, severity label); an alert's notice never changes.
        self._headings: dict[tuple[str, str], tuple[str, str]] = {}
        self._env = Environment(
            loader=FileSystemLoader(settings.templates_dir or default_templates_dir()),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerPages | None:
        """The answer pages, or None when the service has no public address (and mails no links)."""
        links = AnswerLinks.from_settings(settings)
        return None if links is None else cls(settings, links)

    async def target(self, store: Store, token: str) -> AnswerTarget | None:
        delivery_id = self._links.read(token)
        return None if delivery_id is None else await store.answers.target(delivery_id)

    def valid_until(self, target: AnswerTarget) -> datetime:
        return link_valid_until(
            target.alert_created_at, target.alert_expires_at, window=self._window, grace=self._grace
        )

    async def _heading(self, store: Store, alert_id: str, lang: str) -> tuple[str, str]:
        """An alert's title and severity label in `lang`: read once, as every answer page shows them."""
        key = (alert_id, lang)
        known = self._headings.get(key)
        if known is not None:
            return known
        alert = await store.alerts.get(alert_id)
        if alert is None:
            return "", ""
        title = Notice.model_validate(alert.notice).text_for(lang).title
        heading = title, SEVERITY_LABELS[lang][alert.severity]
        if len(self._headings) >= _HEADINGS_KEPT:
            self._headings.clear()
        self._headings[key] = heading
        return heading

    async def page(self, store: Store, target: AnswerTarget, *, recorded: str | None = None) -> _Page:
        lang = target.language if target.language in LANGUAGES else "ja"
        title, severity_label = await self._heading(store, target.alert_id, lang)
        until = self.valid_until(target)
        return _Page(
            alert=target.alert_id,
            title=title,
            severity_label=severity_label,
            organisation=target.organisation,
            current=target.answer,
            recorded=recorded,
            expired=datetime.now(UTC) > until,
            valid_until=f"{until.astimezone(JST):%Y-%m-%d %H:%M}",
            labels=_LABELS[lang],
        )

    def html(self, page: _Page, *, language: str, status: int = 200) -> HTMLResponse:
        lang = language if language in LANGUAGES else "ja"
        body = self._env.get_template(f"{lang}/answer.html.j2").render(page=page)
        return HTMLResponse(body, status_code=status, headers=_HEADERS)


router = APIRouter(include_in_schema=False)


async def _opened(request: Request, token: str) -> tuple[AnswerPages, Store, AnswerTarget] | HTMLResponse:
    """The pages, the store and the delivery a link names; or the 404 page when it names none."""
    pages: AnswerPages | None = request.app.state.answer_pages
    store: Store = request.app.state.ctx.store
    target = None if pages is None else await pages.target(store, token)
    if pages is None or target is None:
        return _not_found(pages)
    return pages, store, target


@router.get("/answer/{token}", response_class=HTMLResponse)
async def show(request: Request, token: str) -> HTMLResponse:
    """The alert's title and the answer buttons; records nothing."""
    opened = await _opened(request, token)
    if isinstance(opened, HTMLResponse):
        return opened
    pages, store, target = opened
    page = await pages.page(store, target)
    return pages.html(page, language=target.language, status=410 if page.expired else 200)


@router.post("/answer/{token}", response_class=HTMLResponse)
async def answer(request: Request, token: str) -> HTMLResponse:
    """Record the organisation's answer (form field `answer`)."""
    opened = await _opened(request, token)
    if isinstance(opened, HTMLResponse):
        return opened
    pages, store, target = opened
    if datetime.now(UTC) > pages.valid_until(target):
        return pages.html(await pages.page(store, target), language=target.language, status=410)
    client = client_of(request)
    if pages.per_client.exceeded(client) or not pages.per_link.allow(token):
        log.warning("answer.limited", delivery_id=target.delivery_id, client=client)
        page = replace(await pages.page(store, target), limited=True)
        response = pages.html(page, language=target.language, status=429)
        response.headers["Retry-After"] = "60"
        return response
    pages.per_client.allow(client)
    given = await _answer_of(request)
    if given is None:
        page = await pages.page(store, target)
        return pages.html(page, language=target.language, status=422)
    answered = await store.answers.record(target, given, via="link")
    log.info(
        "answer.recorded",
        via="link",
        delivery_id=target.delivery_id,
        alert_id=target.alert_id,
        organisation=target.subscriber_code,
        answer=given.value,
        acknowledged=answered.acknowledged,
        previous=answered.previous,
    )
    # The answer just recorded is the organisation's latest: no need to read it back.
    page = await pages.page(store, replace(target, answer=given.value), recorded=given.value)
    return pages.html(page, language=target.language)


async def _answer_of(request: Request) -> Answer | None:
    """The answer a posted form gives, if it is one (a form too large gives none)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_MAX:
            return None
    values = parse_qs(body.decode("utf-8", "replace")).get("answer", [])
    try:
        return Answer(values[0]) if len(values) == 1 else None
    except ValueError:
        return None


def _not_found(pages: AnswerPages | None) -> HTMLResponse:
    if pages is None:
        return HTMLResponse("no answer pages: CEPTOAR_PUBLIC_URL is not set", 404, headers=_HEADERS)
    return pages.html(_Page(), language="ja", status=404)

