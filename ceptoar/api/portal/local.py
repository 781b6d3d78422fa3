"""The local governments' portal: sign in by a mailed link, read alerts, answer, set the subscription.

What an address sees follows TLP as its mail does (`ceptoar.model.tlp`):
an alert its organisation was mailed, unless the label keeps it from this
address (AMBER without the security role, AMBER+STRICT without being the
designated contact, and RED always). Any other alert id is 404, whether it
exists or not.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ceptoar.api.portal.pages import (
    CATEGORY_NAMES,
    SEVERITIES,
    Portal,
    portal_of,
    redirect,
    sign_out,
    visitor_in,
)
from ceptoar.api.portal.security import (
    ORG_COOKIE,
    check_csrf,
    client_of,
    hashed,
    new_token,
    read_form,
    set_cookie,
)
from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.mail.pool import SmtpPool
from ceptoar.model.alert import AlertView
from ceptoar.model.answer import Answer
from ceptoar.model.digest import DigestKind, LowNotices
from ceptoar.model.notice import Notice
from ceptoar.model.tlp import tlp_withholds
from ceptoar.render.mail import JST
from ceptoar.store import DIGEST_SOURCE, Actor, AnswerTarget, Store
from ceptoar.store.portal import Address

__all__ = ["ORG_COOKIE", "router", "visible"]

log = get_logger(__name__)

_PAGE: Final = 50
ANSWER_NAMES: Final = {a.value: a.label for a in Answer}

router = APIRouter(prefix="/portal", include_in_schema=False)


def visible(alert: AlertView, address: Address) -> bool:
    """Whether TLP lets `address` read `alert` on the portal (never RED, even released)."""
    return tlp_withholds(alert.tlp, role=address.role, contact=address.contact) is None


async def _signed_in(request: Request) -> Address | None:
    visitor = await visitor_in(request, ORG_COOKIE)
    return None if visitor is None else visitor.address


def _to_signin() -> RedirectResponse:
    return redirect("/portal/signin")


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    return redirect("/portal/alerts" if await _signed_in(request) else "/portal/signin")


# --- sign-in -------------------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request) -> Response:
    portal, _ = portal_of(request)
    return portal.page(request, "signin.html.j2", sent=False, unavailable=portal.settings.public_url is None)


@router.post("/signin", response_class=HTMLResponse)
async def signin_request(request: Request) -> Response:
    """Mail a one-time sign-in link to a registered address; the answer never says whether it is one."""
    portal, store = portal_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    if not portal.signin_requests.allow(client_of(request)):
        return portal.page(request, "signin.html.j2", status=429, sent=False, unavailable=False, limited=True)
    if portal.settings.public_url is None:
        return portal.page(request, "signin.html.j2", status=503, sent=False, unavailable=True)
    email = (form.get("email") or [""])[0].strip()
    if 0 < len(email) <= 254:
        # Looked up and mailed after the answer, so that its time does not tell a registered address.
        task = asyncio.create_task(_link_for(portal, store, email))
        portal.sending.add(task)
        task.add_done_callback(portal.sending.discard)
    return portal.page(request, "signin.html.j2", sent=True, unavailable=False)


@router.get("/signin/{token}", response_class=HTMLResponse)
async def signin_link(request: Request, token: str) -> Response:
    """The page a mailed link opens: a button that signs in. Opening it spends nothing (mail scanners
    fetch links)."""
    portal, store = portal_of(request)
    state = await store.portal.link_state(hashed(token))
    status = {"usable": 200, "unknown": 404}.get(state, 410)
    return portal.page(request, "signin_link.html.j2", status=status, state=state)


@router.post("/signin/{token}", response_class=HTMLResponse)
async def signin_use(request: Request, token: str) -> Response:
    portal, store = portal_of(request)
    check_csrf(request, await read_form(request))
    address = await store.portal.use_link(hashed(token))
    if address is None:
        state = await store.portal.link_state(hashed(token))
        return portal.page(
            request, "signin_link.html.j2", status=410 if state != "unknown" else 404, state=state
        )
    session = new_token()
    hours = portal.session_hours
    await store.portal.start_session(
        hashed(session), expires_at=datetime.now(UTC) + timedelta(hours=hours), address_id=address.id
    )
    log.info("portal.signed_in", address_id=address.id, organisation=address.subscriber_code)
    response = redirect("/portal/alerts")
    set_cookie(response, request, ORG_COOKIE, session, path="/portal", max_age=int(hours * 3600))
    return response


@router.post("/signout", response_class=HTMLResponse)
async def signout(request: Request) -> Response:
    return await sign_out(request, ORG_COOKIE, path="/portal", then="/portal/signin")


async def _link_for(portal: Portal, store: Store, email: str) -> None:
    """Make and mail a sign-in link if `email` is a registered address and was not sent too many."""
    token = new_token()
    try:
        async with portal.making_links:  # one at a time: the count per address holds
            address = await store.portal.address_by_email(email)
            if address is None:
                return
            now = datetime.now(UTC)
            kept = await store.portal.add_link(
                address.id,
                hashed(token),
                expires_at=now + timedelta(minutes=portal.link_minutes),
                since=now - portal.link_window,
                most=portal.links_per_address,
            )
    except Exception:
        log.exception("portal.link_failed")
        return
    if not kept:
        log.warning("portal.signin_limited", address_id=address.id)
        return
    await _mail_link(portal, address, token)


async def _mail_link(portal: Portal, address: Address, token: str) -> None:
    s = portal.settings
    message = signin_mail(s, address, f"{s.public_url}/portal/signin/{token}", portal.link_minutes)
    pool = SmtpPool(s.smtp_url, size=1, timeout=s.smtp_timeout, helo_name=s.helo_name, adaptive=False)
    try:
        await pool.send(sender=s.return_path, recipient=address.email, message=bytes(message))
        log.info("portal.link_mailed", address_id=address.id)
    except Exception as exc:
        log.error("portal.link_not_mailed", address_id=address.id, error=repr(exc)[:300])
    finally:
        await pool.close()


def signin_mail(s: Settings, address: Address, link: str, minutes: float) -> EmailMessage:
    """The mail that carries a sign-in link, in the address's language."""
    message = EmailMessage()
    message["From"] = formataddr((s.mail_from_name, s.mail_from))
    message["To"] = address.email
    message["Date"] = format_datetime(datetime.now(JST))  # Japan's time, as alerts are dated
    message["Message-ID"] = make_msgid(domain=s.message_id_domain)
    message["Auto-Submitted"] = "auto-generated"
    if address.language == "en":
        message["Subject"] = "Sign-in link for the CEPTOAR portal"
        body = (
            f"To sign in to the local-governments CEPTOAR portal as {address.email}, open:\n\n{link}\n\n"
            f"The link works once, for {minutes:.0f} minutes. If you did not ask for it, ignore this mail.\n"
        )
    else:
        message["Subject"] = "地方公共団体CEPTOAR ポータルへのサインイン"
        body = (
            f"{address.organisation} {address.email} 様\n\n"
            f"地方公共団体CEPTOARのポータルにサインインするには、次のリンクを開いてください。\n\n{link}\n\n"
            f"このリンクは{minutes:.0f}分間、1回だけ使えます。"
            "心当たりのない場合は、このメールを破棄してください。\n"
        )
    message.set_content(body, charset="utf-8")
    return message


# --- alerts --------------------------------------------------------------------------------------


class _BadField(ValueError):
    """A form field or query parameter out of its range: answered 422, naming the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# The days a search may name: an alert older or newer than these does not exist.
_FIRST_DAY, _LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)


def _day(field: str, text: str) -> datetime | None:
    """A date from a form (YYYY-MM-DD, Japan's day); None when absent, `_BadField` if not a date in range."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _BadField(field, "YYYY-MM-DD の形式の日付ではありません") from None
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise _BadField(field, f"{_FIRST_DAY} から {_LAST_DAY} までの日付にしてください")
    return datetime.combine(day, datetime.min.time(), JST)


def _address_id(text: str) -> int:
    """An address id from a form; `_BadField` unless a positive number the store can hold."""
    if not text.isascii() or not text.isdigit() or len(text) > 18 or int(text) == 0:
        raise _BadField("address", "宛先の番号ではありません")
    return int(text)


def _bad(portal: Portal, request: Request, address: Address, exc: _BadField) -> Response:
    return portal.page(
        request, "bad_input.html.j2", status=422, address=address, field=exc.field, reason=exc.reason
    )


def _matches(alert: AlertView, language: str, words: list[str], category: str) -> bool:
    notice = alert.notice
    if category and notice.get("category") != category:
        return False
    if not words:
        return True
    text = Notice.model_validate(notice).text_for(language)
    haystack = f"{alert.id} {text.title} {text.summary} {notice.get('body', '')}".lower()
    return all(w in haystack for w in words)


@router.get("/alerts", response_class=HTMLResponse)
async def alert_list(
    request: Request,
    q: str = "",
    category: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    """The organisation's alerts, newest first, found by word, category and period."""
    portal, store = portal_of(request)
    address = await _signed_in(request)
    if address is None:
        return _to_signin()
    try:
        since_day, until_day = _day("since", since), _day("until", until)
    except _BadField as exc:
        return _bad(portal, request, address, exc)
    found = await store.portal.alerts_of(
        address.subscriber_code,
        since=since_day,
        until=None if until_day is None else until_day + timedelta(days=1),
    )
    words = q.lower().split()[:10]
    category = category if category in CATEGORY_NAMES else ""
    shown = [a for a in found if visible(a, address) and _matches(a, address.language, words, category)]
    return portal.page(
        request,
        "org_alerts.html.j2",
        address=address,
        alerts=shown[:_PAGE],
        more=len(shown) > _PAGE,
        q=q,
        category=category,
        since=since,
        until=until,
    )


Readable = tuple[Portal, Store, Address, AlertView, AnswerTarget]


async def _readable(request: Request, alert_id: str) -> Readable | Response:
    """The signed-in address, an alert it may read and the delivery its organisation's answer goes by;
    the sign-in redirect, or 404 for any other alert."""
    portal, store = portal_of(request)
    address = await _signed_in(request)
    if address is None:
        return _to_signin()
    alert = await store.alerts.get(alert_id) if len(alert_id) <= 32 else None
    if alert is None or alert.source == DIGEST_SOURCE or not visible(alert, address):
        return portal.page(request, "not_found.html.j2", status=404, address=address)
    target = await store.portal.answer_target(address.subscriber_code, alert.id, address.id)
    if target is None:
        return portal.page(request, "not_found.html.j2", status=404, address=address)
    return portal, store, address, alert, target


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_page(request: Request, alert_id: str, answered: str = "") -> Response:
    """One alert as mailed to the organisation, its thread, and the answer buttons."""
    readable = await _readable(request, alert_id)
    if isinstance(readable, Response):
        return readable
    portal, store, address, alert, target = readable
    mail = portal.renderer.render(alert, address.language)
    thread = [
        a
        for a in await store.portal.thread_of(address.subscriber_code, alert.thread_id or alert.id)
        if visible(a, address)
    ]
    return portal.page(
        request,
        "org_alert.html.j2",
        address=address,
        alert=alert,
        subject=mail.subject,
        text=mail.text,
        thread=thread,
        current=target.answer,
        answers=ANSWER_NAMES,
        answered=answered in ANSWER_NAMES,
    )


@router.post("/alerts/{alert_id}/answer", response_class=HTMLResponse)
async def answer(request: Request, alert_id: str) -> Response:
    """Record the organisation's answer, as an answer by mail or by link is recorded."""
    form = await read_form(request)
    check_csrf(request, form)
    readable = await _readable(request, alert_id)
    if isinstance(readable, Response):
        return readable
    portal, store, address, alert, target = readable
    given = (form.get("answer") or [""])[0]
    if given not in ANSWER_NAMES:
        return portal.page(request, "not_found.html.j2", status=422, address=address)
    answered = await store.answers.record(target, Answer(given), via="portal", by=address.email)
    log.info(
        "answer.recorded",
        via="portal",
        delivery_id=target.delivery_id,
        alert_id=alert.id,
        organisation=address.subscriber_code,
        answer=given,
        acknowledged=answered.acknowledged,
        previous=answered.previous,
    )
    return redirect(f"/portal/alerts/{alert.id}?answered={given}")


# --- subscription settings -----------------------------------------------------------------------


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, saved: str = "") -> Response:
    portal, store = portal_of(request)
    address = await _signed_in(request)
    if address is None:
        return _to_signin()
    return portal.page(
        request,
        "org_settings.html.j2",
        address=address,
        addresses=await store.portal.addresses_of(address.subscriber_code),
        severities=SEVERITIES,
        saved=saved == "1",
    )


@router.post("/settings", response_class=HTMLResponse)
async def settings_save(request: Request) -> Response:
    """Change the signed-in address's minimum severity, categories, digest and how low-severity notices
    come; audited. Another address's subscription is not this session's to change (403)."""
    portal, store = portal_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    address = await _signed_in(request)
    if address is None:
        return _to_signin()
    fields: dict[str, Any] = {
        "min_severity": (form.get("min_severity") or [""])[0],
        "categories": sorted(set(form.get("category", []))),
        "digest": (form.get("digest") or ["none"])[0],
        "low_notices": (form.get("low_notices") or ["auto"])[0],
    }
    try:
        target = _address_id((form.get("address") or [""])[0])
    except _BadField as exc:
        return _bad(portal, request, address, exc)
    if target != address.id:
        # Each address sets what it receives: another address of the organisation (its designated
        # security contact, say) is changed only by a session of its own.
        return portal.page(request, "not_found.html.j2", status=403, address=address)
    bad = (
        fields["min_severity"] not in SEVERITIES
        or not set(fields["categories"]) <= set(CATEGORY_NAMES)
        or fields["digest"] not in DigestKind.__members__.values()
        or fields["low_notices"] not in LowNotices.__members__.values()
    )
    if bad:
        return portal.page(request, "not_found.html.j2", status=422, address=address)
    who = Actor(operator=address.email, host=f"portal {client_of(request)}")
    changed = await store.portal.set_subscription(address.subscriber_code, target, who=who, **fields)
    if not changed:
        return portal.page(request, "not_found.html.j2", status=404, address=address)
    return redirect("/portal/settings?saved=1")
