"""The operators' pages: the alerts, one alert's fan-out live, on a tile map of Japan, and actions.

Operators are not subscribers: each has an account (`ceptoar operators
add NAME`) and signs in with its key, kept as an argon2 hash. Counts on
the alert page follow the store through server-sent events; the page
works without script too, showing the counts of when it was loaded. An
action (resend, cancel, escalate now) is a confirmation page first, then a
POST with the CSRF token, audited as the CLI's is.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from ceptoar.api.portal.pages import Portal, portal_of, redirect, sign_out, visitor_in
from ceptoar.api.portal.security import (
    OPS_COOKIE,
    check_csrf,
    client_of,
    hashed,
    new_token,
    read_form,
    set_cookie,
)
from ceptoar.api.portal.tiles import COLUMNS, ROWS, TILES, share_class
from ceptoar.bus import Bus, lane_for
from ceptoar.compose import build_notice
from ceptoar.compose.preview import preview
from ceptoar.compose.send import cancel_draft, send_plan
from ceptoar.dispatch.escalation import escalate
from ceptoar.dispatch.rules import load_rules
from ceptoar.log import get_logger
from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Step
from ceptoar.model.states import MAILED, AlertState, DeliveryState
from ceptoar.registry.prefectures import PREFECTURES
from ceptoar.store import Actor, Operator, Store

__all__ = ["ACTIONS", "OPS_COOKIE", "hash_key", "router", "snapshot"]

log = get_logger(__name__)

# The alerts the list shows, and how far back.
_LIST: Final = 50
_LIST_DAYS: Final = 30
# The silent organisations an alert's page lists (the CSV has them all).
SILENT_SHOWN: Final = 100
# How often an event stream looks at the store, and how long one stream lives (the browser reconnects).
_TICK: Final = 1.0
_STREAM_SECONDS: Final = 300.0

# Action: (what the confirmation page says, the delivery states it requeues).
ACTIONS: Final[dict[str, str]] = {
    "resend-failed": "失敗した配信をすべて再送します（同じMessage-ID）。",
    "resend-deferred": "再送待ちの配信を今すぐ再送します（同じMessage-ID）。",
    "escalate": "未回答の団体に督促を送り、予備の宛先に警報を送ります（各団体1回限り）。",
    "cancel": "この警報を取り消します。未送信の配信は止まり、送信済みの宛先には取消の通知が届きます。",
}

router = APIRouter(prefix="/ops", include_in_schema=False)


def hash_key(key: str) -> str:
    """What is kept of an operator's key: its argon2id hash."""
    from argon2 import PasswordHasher  # only where operators sign in or are made

    return PasswordHasher().hash(key)


def _key_matches(key_hash: str, key: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return PasswordHasher().verify(key_hash, key)
    except (VerificationError, InvalidHashError):
        return False


# Failed keys counted over this window: per name and client, per client, and per name from anywhere
# (which a client that signed in as that operator before, `ceptoar.store.portal`, is not held to).
_FAILURES_WINDOW: Final = timedelta(minutes=15)
_FAILURES_PAIR, _FAILURES_CLIENT, _FAILURES_NAME = 5, 20, 20
# Each failure of a name from one client makes its next answer that much slower, up to the largest.
_SLOWER_BY, _SLOWEST = 0.25, 2.0


async def _key_checks(portal: Portal, account: Operator | None, key: str) -> bool:
    """Whether `key` is the account's; the same work, off the event loop, for no account or a disabled one."""
    if portal.dummy_hash is None:
        portal.dummy_hash = await asyncio.to_thread(hash_key, new_token())
    usable = account is not None and account.disabled_at is None
    against = account.key_hash if account is not None else portal.dummy_hash
    async with portal.verifying:  # each check takes 64 MiB: a few at once
        matches = await asyncio.to_thread(_key_matches, against, key)
    return usable and matches


async def _operator(request: Request) -> str | None:
    visitor = await visitor_in(request, OPS_COOKIE)
    return None if visitor is None else visitor.operator


def _actor(request: Request, name: str) -> Actor:
    return Actor(operator=name, host=f"portal {client_of(request)}")


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    return redirect("/ops/alerts" if await _operator(request) else "/ops/signin")


@router.get("/signin", response_class=HTMLResponse)
async def signin_form(request: Request) -> Response:
    portal, _ = portal_of(request)
    return portal.page(request, "ops_signin.html.j2", failed=False, limited=False)


@router.post("/signin", response_class=HTMLResponse)
async def signin(request: Request) -> Response:
    """Sign an operator in with its name and key; failed keys are counted by name and by client."""
    portal, store = portal_of(request)
    form = await read_form(request)
    check_csrf(request, form)
    name = (form.get("name") or [""])[0].strip()[:64]
    key = (form.get("key") or [""])[0]
    client, now = client_of(request)[:64], datetime.now(UTC)
    tried = await store.portal.signin_attempts(name, client, now=now, window=_FAILURES_WINDOW)
    guessing_name = tried.name >= _FAILURES_NAME and not tried.known_client
    if tried.pair >= _FAILURES_PAIR or tried.client >= _FAILURES_CLIENT or guessing_name:
        log.warning("portal.operator_limited", operator=name, client=client, failures=tried.pair)
        return portal.page(request, "ops_signin.html.j2", status=429, failed=False, limited=True)
    account = await store.portal.operator(name) if name else None
    ok = await _key_checks(portal, account, key)
    await store.portal.record_signin(name, client, ok=ok, now=now, window=_FAILURES_WINDOW)
    if not ok:
        log.warning("portal.operator_refused", operator=name, client=client)
        await asyncio.sleep(min(_SLOWER_BY * (tried.pair + 1), _SLOWEST))
        return portal.page(request, "ops_signin.html.j2", status=401, failed=True, limited=False)
    session = new_token()
    hours = portal.session_hours
    await store.portal.start_session(
        hashed(session), expires_at=datetime.now(UTC) + timedelta(hours=hours), operator=name
    )
    log.info("portal.operator_signed_in", operator=name, client=client)
    response = redirect("/ops/alerts")
    set_cookie(response, request, OPS_COOKIE, session, path="/ops", max_age=int(hours * 3600))
    return response


@router.post("/signout", response_class=HTMLResponse)
async def signout(request: Request) -> Response:
    return await sign_out(request, OPS_COOKIE, path="/ops", then="/ops/signin")


# --- the alerts ------------------------------------------------------------------------------------


async def _recent(store: Store) -> list[AlertView]:
    since = datetime.now(UTC) - timedelta(days=_LIST_DAYS)
    return (await store.alerts.recent(since=since))[:_LIST]


def _tally(counts: dict[str, int]) -> dict[str, int]:
    """What a row of the list shows: mailed, in trouble, to go, and all."""
    return {
        "mailed": sum(counts.get(s, 0) for s in MAILED),
        "failed": counts.get(DeliveryState.FAILED, 0) + counts.get(DeliveryState.BOUNCED, 0),
        "waiting": sum(counts.get(s, 0) for s in ("queued", "sending", "deferred")),
        "acknowledged": counts.get(DeliveryState.ACKNOWLEDGED, 0),
        "total": sum(counts.values()),
    }


async def _list_counts(store: Store, alerts: list[AlertView]) -> dict[str, dict[str, int]]:
    counts = await store.portal.counts_of([a.id for a in alerts])
    return {alert_id: _tally(c) for alert_id, c in counts.items()}


@router.get("/alerts", response_class=HTMLResponse)
async def alert_list(request: Request) -> Response:
    portal, store = portal_of(request)
    name = await _operator(request)
    if name is None:
        return redirect("/ops/signin")
    alerts = await _recent(store)
    return portal.page(
        request, "ops_alerts.html.j2", operator=name, alerts=alerts, counts=await _list_counts(store, alerts)
    )


@router.get("/alerts/stream")
async def alert_list_stream(request: Request) -> Response:
    """The list's counts, sent again whenever they change."""
    _, store = portal_of(request)
    if await _operator(request) is None:
        return Response(status_code=401)

    async def counts() -> dict[str, Any]:
        return {"alerts": await _list_counts(store, await _recent(store))}

    return _stream(request, counts)


async def snapshot(store: Store, alert: AlertView) -> dict[str, Any]:
    """Where one alert stands: deliveries by state, organisations, and per prefecture who answered."""
    status, prefectures = await asyncio.gather(store.status(alert), store.portal.prefectures(alert.id))
    return {
        "counts": {s.value: status.counts.get(s, 0) for s in DeliveryState},
        "total": status.total,
        "organisations": status.organisations.model_dump(),
        "prefectures": {
            p.number: [a, n, share_class(a, n)]
            for p in PREFECTURES
            for a, n in [prefectures.get(p.number, (0, 0))]
        },
    }


async def _watched(request: Request, alert_id: str) -> tuple[Portal, Store, str, AlertView] | Response:
    portal, store = portal_of(request)
    name = await _operator(request)
    if name is None:
        return redirect("/ops/signin")
    alert = await store.alerts.get(alert_id) if len(alert_id) <= 32 else None
    if alert is None:
        return portal.page(request, "not_found.html.j2", status=404, address=None)
    return portal, store, name, alert


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_page(request: Request, alert_id: str, done: str = "") -> Response:
    """An alert's fan-out: counts, the tile map, silent organisations, returned mail, escalations."""
    watched = await _watched(request, alert_id)
    if isinstance(watched, Response):
        return watched
    portal, store, name, alert = watched
    # Each on a connection of its own: on PostgreSQL they run side by side.
    snap, silent, returned, escalations = await asyncio.gather(
        snapshot(store, alert),
        store.returns.silent(alert.id, first=SILENT_SHOWN),
        store.portal.returned(alert.id),
        store.escalations.listed(alert.id),
    )
    return portal.page(
        request,
        "ops_alert.html.j2",
        operator=name,
        alert=alert,
        snap=snap,
        tiles=TILES,
        columns=COLUMNS,
        rows=ROWS,
        silent=silent,
        returned=returned,
        escalations=escalations,
        actions=ACTIONS,
        done=done if done in ACTIONS else "",
    )


def snapshot_json(snap: dict[str, Any]) -> str:
    return json.dumps(snap, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@router.get("/alerts/{alert_id}/events")
async def alert_events(request: Request, alert_id: str) -> Response:
    """Server-sent events: the alert's snapshot each time it changes."""
    watched = await _watched(request, alert_id)
    if isinstance(watched, Response):
        return Response(status_code=401 if watched.status_code == 303 else 404)
    _, store, _, alert = watched

    async def current() -> dict[str, Any]:
        return await snapshot(store, alert)

    return _stream(request, current)


def _stream(request: Request, current: Any) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        last = ""
        began = asyncio.get_running_loop().time()
        yield "retry: 2000\n\n"
        while asyncio.get_running_loop().time() - began < _STREAM_SECONDS:
            now = snapshot_json(await current())
            if now != last:
                yield f"data: {now}\n\n"
                last = now
            else:
                yield ": idle\n\n"
            await asyncio.sleep(_TICK)
            if await request.is_disconnected():
                return

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/alerts/{alert_id}/organisations.csv")
async def organisations_csv(request: Request, alert_id: str) -> Response:
    """The silent organisations' table as CSV (UTF-8 with BOM, so that Excel reads Japanese)."""
    watched = await _watched(request, alert_id)
    if isinstance(watched, Response):
        return watched
    _, store, _, alert = watched
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(["code", "organisation", "prefecture", "addresses", "states", "last_event"])
    names = {p.number: p.name for p in PREFECTURES}
    for s in await store.returns.silent(alert.id):
        writer.writerow(
            [
                s.code,
                s.name,
                names.get(s.prefecture, s.prefecture),
                " ".join(s.addresses),
                " ".join(s.states),
                s.last.isoformat(),
            ]
        )
    headers = {"Content-Disposition": f'attachment; filename="{alert.id}-silent.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


# --- actions ---------------------------------------------------------------------------------------


@router.get("/alerts/{alert_id}/do/{action}", response_class=HTMLResponse)
async def confirm(request: Request, alert_id: str, action: str) -> Response:
    """What an action will do, and the button that does it."""
    watched = await _watched(request, alert_id)
    if isinstance(watched, Response):
        return watched
    portal, store, name, alert = watched
    if action not in ACTIONS:
        return portal.page(request, "not_found.html.j2", status=404, address=None)
    return portal.page(
        request,
        "ops_confirm.html.j2",
        operator=name,
        alert=alert,
        action=action,
        says=ACTIONS[action],
        counts=(await store.status(alert)).counts,
        refused=_refused(alert, action),
        mistyped=False,
    )


def _refused(alert: AlertView, action: str) -> str:
    """Why `action` cannot be done to `alert` now, if it cannot."""
    if action in ("escalate", "cancel") and (alert.state != AlertState.ACTIVE or alert.msg_type == "cancel"):
        return f"この警報は {alert.state}（{alert.msg_type}）です。"
    return ""


@router.post("/alerts/{alert_id}/do/{action}", response_class=HTMLResponse)
async def act(request: Request, alert_id: str, action: str) -> Response:
    """Do a confirmed action; the alert id must be typed again for a cancel."""
    form = await read_form(request)
    check_csrf(request, form)
    watched = await _watched(request, alert_id)
    if isinstance(watched, Response):
        return watched
    portal, store, name, alert = watched
    if action not in ACTIONS or _refused(alert, action):
        return portal.page(request, "not_found.html.j2", status=409, address=None)
    if action == "cancel" and (form.get("typed") or [""])[0].strip() != alert.id:
        return portal.page(
            request,
            "ops_confirm.html.j2",
            status=422,
            operator=name,
            alert=alert,
            action=action,
            says=ACTIONS[action],
            counts=(await store.status(alert)).counts,
            refused="",
            mistyped=True,
        )
    who = _actor(request, name)
    await _do(portal, store, alert, action, who)
    log.info("portal.action", operator=name, action=action, alert_id=alert.id)
    return redirect(f"/ops/alerts/{alert.id}?done={action}")


async def _do(portal: Portal, store: Store, alert: AlertView, action: str, who: Actor) -> None:
    s = portal.settings
    if action == "cancel":
        notice = build_notice(cancel_draft(alert))
        plan = await preview(store, load_rules(s.rules), notice)
        await send_plan(s, store, plan, "cancel", alert, who)
    elif action == "escalate":
        async with Bus.session(s, name="ceptoar-portal") as bus:
            await escalate(store, bus, s, alert, Step.REMINDED, by=who.operator, audit=who)
    else:
        which = action.removeprefix("resend-")
        ids = await store.deliveries.requeue(
            alert.id,
            states=[DeliveryState(which)],
            why=f"resend ({which}) by {who.operator} on the portal",
            audit=(who, "resend", {"which": which, "address": None}),
        )
        if ids:
            async with Bus.session(s, name="ceptoar-portal") as bus:
                await bus.publish_jobs(ids, lane=lane_for(alert.severity), batch=s.publish_batch)
