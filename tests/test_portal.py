"""The portal over HTTP, on the running service and a real mailbox: a local government signs in by the
link mailed to it, reads what TLP lets it read, answers and sets its subscription; an operator signs
in, watches an alert and acts on it; and the safety points hold. The same in a real browser:
`test_portal_browser.py`.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from ceptoar.api.portal.local import visible
from ceptoar.api.portal.ops import hash_key
from ceptoar.api.portal.security import CSP, RateLimit, hashed, new_token
from ceptoar.api.portal.tiles import COLUMNS, ROWS, TILES, share_class
from ceptoar.mailbox import read_message
from ceptoar.model.alert import AlertView
from ceptoar.registry import RegistryRow
from ceptoar.registry.prefectures import PREFECTURES
from ceptoar.render.mail import JST
from ceptoar.store import Actor, Store
from ceptoar.store.portal import Address
from ceptoar.store.tables import answers, signin_links
from tests.conftest import StackFactory
from tests.harness import (
    MailboxServer,
    Stack,
    api_running,
    cli_env,
    free_port,
    notice_doc,
    run_cli_async,
    running,
    subset,
)

HOSTILE_TITLE = '<script>alert("x")</script><b>太字</b>の注意喚起'


def test_the_tile_map_places_each_prefecture_once_inside_its_grid() -> None:
    assert sorted(TILES) == sorted(p.number for p in PREFECTURES)
    assert len(set(TILES.values())) == 47
    assert all(0 <= c < COLUMNS and 0 <= r < ROWS for c, r in TILES.values())
    # Hokkaido top right, Okinawa bottom left, Tokyo beside Kanagawa and Chiba.
    assert TILES["01"] == (12, 0) and TILES["47"] == (0, 8)
    assert {TILES["14"], TILES["12"]} == {(10, 7), (11, 6)} and TILES["13"] == (10, 6)
    assert [share_class(a, 10) for a in (0, 4, 10)] == ["s0", "s4", "s10"] and share_class(0, 0) == "none"


def test_tlp_on_the_portal_is_the_tlp_of_mail_and_red_is_never_shown() -> None:
    def alert(tlp: str) -> AlertView:
        now = datetime.now(UTC)
        return AlertView("A", "nisc", "N", "alert", "low", [], tlp, "t", {}, now, now, released_by="op")

    def address(role: str, contact: bool) -> Address:
        return Address(1, "a@x.example", role, contact, "ja", "011002", "札幌市", "01", "low", ())

    primary, security, contact = (
        address("primary", False),
        address("security", False),
        address("security", True),
    )
    seen = {
        tlp: [visible(alert(tlp), a) for a in (primary, security, contact)]
        for tlp in ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
    }
    assert seen == {
        "CLEAR": [True, True, True],
        "GREEN": [True, True, True],
        "AMBER": [False, True, True],
        "AMBER+STRICT": [False, False, True],
        "RED": [False, False, False],  # even released to an address by an operator
    }


def test_a_rate_limit_counts_per_key_within_its_window() -> None:
    limit = RateLimit(2, 60)
    assert [limit.allow("a"), limit.allow("a"), limit.allow("a"), limit.allow("b")] == [
        True,
        True,
        False,
        True,
    ]


def _registry(registry_rows: list[RegistryRow]) -> list[RegistryRow]:
    """Three organisations (a primary and a designated security contact each), and a second security
    address of the first that is not its contact."""
    rows = subset(registry_rows, 3)
    a = rows[0]
    return [*rows, RegistryRow(a.code, a.name, f"soc@{a.code}.lg.example", "security")]


class Browser:
    """An HTTP client that keeps cookies and sends the CSRF token with each form, as a page would."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def csrf(self, area: str = "/portal") -> str:
        """The token a form of `area` (`/portal` or `/ops`) carries for this browser and its session."""
        page = await self.http.get(f"{area}/signin", follow_redirects=True)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None, page.text
        return found.group(1)

    async def post(self, path: str, **fields: str | list[str]) -> httpx.Response:
        area = "/ops" if path.startswith("/ops") else "/portal"
        return await self.http.post(path, data={"csrf": await self.csrf(area), **fields})


async def _signed_in(store: Store, http: httpx.AsyncClient, email: str) -> None:
    """A session for `email`, as following its link would give (the link itself is tested once)."""
    address = await store.portal.address_by_email(email)
    assert address is not None
    token = new_token()
    await store.portal.start_session(
        hashed(token), expires_at=datetime.now(UTC) + timedelta(hours=1), address_id=address.id
    )
    http.cookies.set("ceptoar_portal", token, path="/portal")


async def _signin_links(
    mailbox: MailboxServer, address: str, *, count: int = 1, within: float = 10
) -> list[str]:
    """The paths of the sign-in links mailed to `address`, once `count` have come."""
    for _ in range(int(within / 0.1)):
        found = []
        for number in range(1, 100):
            try:
                message = read_message(mailbox.root, address, number)
            except (IndexError, FileNotFoundError):
                break
            if "サインイン" in str(message["Subject"]):
                found += re.findall(
                    r"https?://[^/\s]+(/portal/signin/[A-Za-z0-9_-]+)", str(message.get_content())
                )
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} sign-in links reached {address}")


async def _publish_all(stack: Stack, docs: list[dict[str, object]]) -> dict[str, str]:
    """Publish each notice, wait for its fan-out; its alert id by notice id."""
    ids = {}
    for doc in docs:
        await stack.publish(doc)
        await stack.wait_settled(str(doc["id"]))
        ids[str(doc["id"])] = (await stack.store.alerts.resolve(str(doc["id"]))).id
    return ids


async def test_a_local_government_signs_in_by_its_mailed_link_reads_what_tlp_allows_and_answers(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = _registry(registry_rows)
    a, b = rows[0].code, rows[2].code
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=f"http://127.0.0.1:{port}")
    async with running(stack.settings):
        ids = await _publish_all(
            stack,
            [
                notice_doc(id="P-GREEN", tlp="GREEN", title="公開の注意喚起"),
                notice_doc(id="P-AMBER", tlp="AMBER", title="限定共有の警報"),
                notice_doc(id="P-STRICT", tlp="AMBER+STRICT", title="担当者限りの警報"),
                notice_doc(id="P-OTHER", tlp="CLEAR", title="他団体向けの警報", area=[b]),
            ],
        )
        async with api_running(stack.settings, port=port) as base, httpx.AsyncClient(base_url=base) as http:
            browser = Browser(http)
            assert (
                await http.post("/portal/signin", data={"email": f"primary@{a}.lg.example"})
            ).status_code == 403
            sent = await browser.post("/portal/signin", email=f"primary@{a}.lg.example")
            assert sent.status_code == 200 and "リンクをメールで送りました" in sent.text
            unknown = await browser.post("/portal/signin", email="nobody@elsewhere.example")
            assert unknown.text == sent.text  # the answer never says whether an address is registered
            link = await _signin_links(mailbox, f"primary@{a}.lg.example")
            assert len(link) == 1
            # Opening the link (a mail scanner, a preview, the person) spends nothing.
            for _ in range(2):
                page = await http.get(link[0])
                assert page.status_code == 200 and 'id="signin"' in page.text
            assert "ceptoar_portal" not in http.cookies
            used = await browser.post(link[0])
            assert used.status_code == 303 and used.headers["location"] == "/portal/alerts"
            cookie = used.headers["set-cookie"]
            assert "ceptoar_portal=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
            assert "Path=/portal" in cookie and "Secure" not in cookie  # plain HTTP on loopback
            listed = await http.get("/portal/alerts")
            assert "公開の注意喚起" in listed.text
            for withheld in ("限定共有の警報", "担当者限りの警報", "他団体向けの警報"):
                assert withheld not in listed.text
            # Found by word, category and period (Japan's days).
            today = datetime.now(UTC).astimezone(JST).date()
            found = {
                query: ["公開の注意喚起" in (await http.get("/portal/alerts", params=params)).text]
                for query, params in {
                    "word": {"q": "公開"},
                    "other word": {"q": "ランサムウェア"},
                    "category": {"category": "advisory"},
                    "other category": {"category": "phishing"},
                    "today": {"since": today.isoformat(), "until": today.isoformat()},
                    "tomorrow on": {"since": (today + timedelta(days=1)).isoformat()},
                    "until yesterday": {"until": (today - timedelta(days=1)).isoformat()},
                }.items()
            }
            assert found == {
                "word": [True],
                "other word": [False],
                "category": [True],
                "other category": [False],
                "today": [True],
                "tomorrow on": [False],
                "until yesterday": [False],
            }
            # The link works once.
            again = await browser.post(link[0])
            assert again.status_code == 410 and "使用済み" in again.text
            for alert_id in (ids["P-AMBER"], ids["P-STRICT"], ids["P-OTHER"], "20991231-000000-0000"):
                assert (await http.get(f"/portal/alerts/{alert_id}")).status_code == 404

            # The answer, on the page of the alert as mailed.
            page = await http.get(f"/portal/alerts/{ids['P-GREEN']}")
            assert (
                page.status_code == 200
                and "公開の注意喚起" in page.text
                and "まだ回答がありません" in page.text
            )
            answered = await browser.post(f"/portal/alerts/{ids['P-GREEN']}/answer", answer="affected")
            assert answered.status_code == 303
            page = await http.get(answered.headers["location"])
            assert "現在の回答: <strong>影響あり・対応中" in page.text
            status = json.loads(
                (await run_cli_async("status", "P-GREEN", "--json", env=cli_env(stack.settings))).stdout
            )
            assert status["organisations"]["answered"] == 1
            assert status["organisations"]["by_answer"] == {"affected": 1}
            assert status["counts"]["acknowledged"] == 1
            async with stack.store.engine.connect() as conn:
                kept = (
                    await conn.execute(select(answers.c.via, answers.c.by, answers.c.subscriber_code))
                ).all()
            assert [tuple(r) for r in kept] == [("portal", f"primary@{a}.lg.example", a)]

            # TLP by address: the security contact reads all three, the other security address not STRICT.
            for email, expected in (
                (f"security@{a}.lg.example", {"公開の注意喚起", "限定共有の警報", "担当者限りの警報"}),
                (f"soc@{a}.lg.example", {"公開の注意喚起", "限定共有の警報"}),
            ):
                http.cookies.clear()
                await _signed_in(stack.store, http, email)
                listed = await http.get("/portal/alerts")
                titles = {
                    t for t in ("公開の注意喚起", "限定共有の警報", "担当者限りの警報") if t in listed.text
                }
                assert titles == expected, email
                # The organisation's answer, whichever address gave it.
                page = await http.get(f"/portal/alerts/{ids['P-GREEN']}")
                assert "現在の回答: <strong>影響あり・対応中" in page.text
            # Another organisation sees its own, and none of the first one's answers.
            http.cookies.clear()
            await _signed_in(stack.store, http, f"primary@{b}.lg.example")
            assert "他団体向けの警報" in (await http.get("/portal/alerts")).text
            assert "まだ回答がありません" in (await http.get(f"/portal/alerts/{ids['P-GREEN']}")).text

            # Signing out ends the session.
            out = await browser.post("/portal/signout")
            assert out.status_code == 303
            assert (await http.get("/portal/alerts")).headers["location"] == "/portal/signin"


async def test_the_safety_points_hold(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    with capture_logs() as logs:
        link = await _safety_points(make_stack, mailbox, registry_rows)
    # What the service and the portal logged names alerts and addresses by id: no alert text, no token.
    events = [e["event"] for e in logs]
    assert "alert.dispatched" in events and "portal.link_mailed" in events and "answer.recorded" in events
    logged = repr(logs)
    assert "太字" not in logged and "script" not in logged and link.rpartition("/")[2] not in logged


async def _safety_points(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> str:
    """The safety points over HTTP; the sign-in link it used last."""
    rows = subset(registry_rows, 2)
    a = rows[0].code
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=f"http://127.0.0.1:{port}")
    async with running(stack.settings):
        ids = await _publish_all(
            stack, [notice_doc(id="P-HTML", title=HOSTILE_TITLE, summary='<img src=x onerror="alert(1)">')]
        )
    async with api_running(stack.settings, port=port) as base, httpx.AsyncClient(base_url=base) as http:
        browser = Browser(http)
        await _signed_in(stack.store, http, f"primary@{a}.lg.example")
        path = f"/portal/alerts/{ids['P-HTML']}"
        page = await http.get(path)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        for header, value in (
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ):
            assert page.headers[header] == value
        # The notice's markup shows as text; the only script is the portal's own file.
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;太字&lt;/b&gt;" in page.text
        assert "<script>alert" not in page.text and "<b>太字" not in page.text and "<img" not in page.text
        assert re.findall(r"<script[^>]*>", page.text) == []
        # No alert text in any URL the page links to.
        assert all("注意喚起" not in href for href in re.findall(r'(?:href|action)="([^"]*)"', page.text))

        # A POST without the CSRF token, with a wrong one, or from another site is refused.
        refused = [
            await http.post(f"{path}/answer", data={"answer": "received"}),
            await http.post(f"{path}/answer", data={"answer": "received", "csrf": "x" * 43}),
            await http.post(
                f"{path}/answer",
                data={"answer": "received", "csrf": await browser.csrf()},
                headers={"Origin": "https://attacker.example"},
            ),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403]
        async with stack.store.engine.connect() as conn:
            assert (await conn.execute(select(answers.c.id))).all() == []
        assert (await browser.post(f"{path}/answer", answer="received")).status_code == 303

        # Sign-in links: short-lived, and at most three an address per quarter hour whatever is asked.
        email = f"primary@{rows[2].code}.lg.example"
        for _ in range(5):
            assert (await browser.post("/portal/signin", email=email)).status_code == 200
        await asyncio.sleep(0.5)
        async with stack.store.engine.connect() as conn:
            links = (await conn.execute(select(signin_links.c.token_hash, signin_links.c.expires_at))).all()
        assert len(links) == 3
        assert all(timedelta(minutes=14) < e - datetime.now(UTC) <= timedelta(minutes=15) for _, e in links)
        link = (await _signin_links(mailbox, email, count=3))[0]
        async with stack.store.engine.begin() as conn:
            await conn.execute(
                update(signin_links).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        expired = await browser.post(link)
        assert expired.status_code == 410 and "期限切れ" in expired.text
        assert (await http.get("/portal/signin/not-a-link")).status_code == 404
        # Forms posted from one client are limited (ten in ten minutes: five were sent above).
        statuses = [(await browser.post("/portal/signin", email="x@x.example")).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
    return link


async def test_an_address_changes_only_its_own_subscription_and_the_change_is_audited(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    a, b = rows[0].code, rows[2].code
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        browser = Browser(http)
        mine = {x.email: x.id for x in await stack.store.portal.addresses_of(a)}
        theirs = (await stack.store.portal.addresses_of(b))[0].id
        security = str(mine[f"security@{a}.lg.example"])
        # The primary address, which may not read TLP:AMBER, cannot quieten the security address.
        await _signed_in(stack.store, http, f"primary@{a}.lg.example")
        page = await http.get("/portal/settings")
        assert page.status_code == 200 and f"security@{a}.lg.example" in page.text
        assert f'name="address" value="{security}"' not in page.text, "only its own form is offered"
        refused = await browser.post("/portal/settings", address=security, min_severity="critical")
        assert refused.status_code == 403
        untouched = await stack.store.portal.address_by_email(f"security@{a}.lg.example")
        assert untouched is not None and untouched.min_severity == "low"

        await _signed_in(stack.store, http, f"security@{a}.lg.example")
        saved = await browser.post(
            "/portal/settings",
            address=security,
            min_severity="high",
            category=["attack", "malware"],
            digest="monthly",
            low_notices="both",
        )
        assert saved.status_code == 303
        assert "保存しました" in (await http.get(saved.headers["location"])).text
        changed = await stack.store.portal.address_by_email(f"security@{a}.lg.example")
        assert changed is not None and changed.min_severity == "high"
        assert changed.categories == ("attack", "malware")
        assert (changed.digest, changed.low_notices) == ("monthly", "both")
        bad = [
            await browser.post("/portal/settings", address=str(theirs), min_severity="high"),
            await browser.post("/portal/settings", address=security, min_severity="urgent"),
            await browser.post("/portal/settings", address=security, min_severity="low", category="crypto"),
            await browser.post("/portal/settings", address=security, min_severity="low", digest="daily"),
        ]
        assert [r.status_code for r in bad] == [403, 422, 422, 422]
    entries = await stack.store.audit.since()
    assert [(e.operator, e.action) for e in entries] == [(f"security@{a}.lg.example", "subscription")]
    assert entries[0].detail == {
        "organisation": a,
        "address": f"security@{a}.lg.example",
        "min_severity": ["low", "high"],
        "categories": [[], ["attack", "malware"]],
        "digest": ["none", "monthly"],
        "low_notices": ["auto", "both"],
    }
    assert entries[0].host == "portal 127.0.0.1"


async def test_numbers_and_dates_out_of_range_are_refused_naming_the_field(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 1)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        browser = Browser(http)
        await _signed_in(stack.store, http, f"primary@{rows[0].code}.lg.example")
        for address in ("99999999999999999999", "9" * 5000, "-1", "0", "１２"):
            refused = await browser.post("/portal/settings", address=address, min_severity="high")
            assert refused.status_code == 422 and "address" in refused.text, address
        for query, field in (("until=9999-12-31", "until"), ("since=0001-01-01", "since"), ("since=2026-13-01", "since")):
            page = await http.get(f"/portal/alerts?{query}")
            assert page.status_code == 422 and f"{field}:" in page.text, query
        assert (await http.get("/portal/alerts?since=2026-11-01&until=2026-12-31")).status_code == 200


async def _first_event(http: httpx.AsyncClient, path: str) -> dict[str, object]:
    async with http.stream("GET", path) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                found: dict[str, object] = json.loads(line[6:])
                return found
    raise AssertionError("the stream ended without an event")


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_an_operator_signs_in_watches_an_alert_and_acts_on_it_audited(
    make_stack: StackFactory,
    mailbox: MailboxServer,
    registry_rows: list[RegistryRow],
    pg_url: str,
    db: str,
) -> None:
    rows = subset(registry_rows, 3)
    stack = await make_stack(mailbox=mailbox, rows=rows, database_url=pg_url if db == "postgres" else None)
    env = cli_env(stack.settings)
    added = await run_cli_async(
        "operators", "add", "alice", "--key-stdin", env=env, stdin=b"correct horse battery\n"
    )
    assert added.returncode == 0, added.stderr
    assert "key (shown once)" not in added.stdout
    made = await run_cli_async("operators", "add", "bob", env=env)
    assert made.returncode == 0 and "key (shown once): " in made.stdout
    assert (await run_cli_async("operators", "add", "alice", env=env)).returncode != 0
    listed = (await run_cli_async("operators", "list", env=env)).stdout
    assert "alice" in listed and "bob" in listed
    gone = f"primary@{rows[0].code}.lg.example"
    mailbox.handler.script[gone] = [f"550 5.1.1 <{gone}>: Recipient address rejected"]  # type: ignore[union-attr]
    async with running(stack.settings):
        ids = await _publish_all(stack, [notice_doc(id="OPS-1", title="運用者が見る警報")])
        alert_id = ids["OPS-1"]
        async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
            browser = Browser(http)
            assert (await http.get("/ops/alerts")).headers["location"] == "/ops/signin"
            wrong = await browser.post("/ops/signin", name="alice", key="wrong key")
            assert wrong.status_code == 401
            signed = await browser.post("/ops/signin", name="alice", key="correct horse battery")
            assert signed.status_code == 303 and "ceptoar_ops=" in signed.headers["set-cookie"]
            listing = await http.get("/ops/alerts")
            assert "運用者が見る警報" in listing.text and f'data-alert="{alert_id}"' in listing.text
            page = await http.get(f"/ops/alerts/{alert_id}")
            assert page.status_code == 200
            assert len(re.findall(r'class="tile c\d+ r\d+ ', page.text)) == 47
            assert len(re.findall(r'<tr data-pref="\d\d">', page.text)) == 47
            assert f"{gone}&gt;: Recipient address rejected" in page.text
            first = await _first_event(http, f"/ops/alerts/{alert_id}/events")
            assert first["total"] == 6 and first["counts"]["sent"] == 5  # type: ignore[index]
            assert first["counts"]["failed"] == 1  # type: ignore[index]
            assert first["organisations"]["silent"] == 3  # type: ignore[index]
            pref = rows[0].code[:2]
            assert first["prefectures"][pref][1] >= 1  # type: ignore[index]
            listed_now = await _first_event(http, "/ops/alerts/stream")
            assert listed_now["alerts"][alert_id]["mailed"] == 5  # type: ignore[index]
            assert listed_now["alerts"][alert_id]["failed"] == 1  # type: ignore[index]
            csv_text = (await http.get(f"/ops/alerts/{alert_id}/organisations.csv")).text
            assert csv_text.lstrip("\ufeff").splitlines()[0].startswith("code,organisation")
            assert len(csv_text.splitlines()) == 4

            # An action is a confirmation page, then a POST with the token; a cancel wants the id typed.
            confirm = await http.get(f"/ops/alerts/{alert_id}/do/cancel")
            assert confirm.status_code == 200 and 'name="typed"' in confirm.text
            assert (
                await http.post(f"/ops/alerts/{alert_id}/do/cancel", data={"typed": alert_id})
            ).status_code == 403
            mistyped = await browser.post(f"/ops/alerts/{alert_id}/do/cancel", typed="no")
            assert mistyped.status_code == 422
            resent = await browser.post(f"/ops/alerts/{alert_id}/do/resend-failed")
            assert resent.status_code == 303
            assert (await stack.wait_settled("OPS-1")) == {"sent": 6}
            escalated = await browser.post(f"/ops/alerts/{alert_id}/do/escalate")
            assert escalated.status_code == 303
            page = await http.get(f"/ops/alerts/{alert_id}")
            assert page.text.count("<td>reminded</td>") == 3  # the three silent organisations, once each
            assert (await browser.post(f"/ops/alerts/{alert_id}/do/escalate")).status_code == 303
            assert (await http.get(f"/ops/alerts/{alert_id}")).text.count("<td>reminded</td>") == 3
            cancelled = await browser.post(f"/ops/alerts/{alert_id}/do/cancel", typed=alert_id)
            assert cancelled.status_code == 303
            assert "監査ログに記録しました" in (await http.get(cancelled.headers["location"])).text
            for _ in range(100):
                if (await stack.store.alerts.get(alert_id)).state == "cancelled":  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the cancel was not carried out")
            again = await browser.post(f"/ops/alerts/{alert_id}/do/cancel", typed=alert_id)
            assert again.status_code == 409
            # Disabling the account ends its session.
            assert (await run_cli_async("operators", "disable", "alice", env=env)).returncode == 0
            assert (await http.get("/ops/alerts")).headers["location"] == "/ops/signin"
            # A new key gives the account back; the old key no longer signs in.
            rekeyed = await run_cli_async(
                "operators", "rekey", "alice", "--key-stdin", env=env, stdin=b"a new long key\n"
            )
            assert rekeyed.returncode == 0
            assert (
                await browser.post("/ops/signin", name="alice", key="correct horse battery")
            ).status_code == 401
            assert (await browser.post("/ops/signin", name="alice", key="a new long key")).status_code == 303
            # Failed keys are limited per name.
            tries = [
                (await browser.post("/ops/signin", name="bob", key="guess")).status_code for _ in range(6)
            ]
            assert tries == [401] * 5 + [429]
    entries = [(e.operator, e.action, e.host) for e in await stack.store.audit.since()]
    portal = [e for e in entries if e[2] == "portal 127.0.0.1"]
    assert [(o, a) for o, a, _ in portal] == [("alice", "resend"), ("alice", "escalate"), ("alice", "cancel")]
    assert [a for _, a, _ in entries if a == "operator"] == ["operator"] * 4  # two added, disabled, rekeyed
    resend = next(e for e in await stack.store.audit.since() if e.action == "resend")
    assert resend.detail == {"which": "failed", "address": None, "deliveries": 1}


async def test_behind_tls_the_cookies_are_secure_and_hsts_is_sent(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(
        mailbox=mailbox, rows=subset(registry_rows, 1), public_url="https://ceptoar.lg.example"
    )
    await stack.store.portal.add_operator("carol", hash_key("a key for carol"), who=Actor("test"))
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        form = await http.get("/ops/signin")
        assert "Secure" in form.headers["set-cookie"] and "SameSite=lax" in form.headers["set-cookie"]
        assert form.headers["strict-transport-security"] == "max-age=31536000"
        # Over TLS each cookie is a __Host- cookie: Secure, for this host, path /.
        assert form.headers["set-cookie"].startswith("__Host-ceptoar_csrf=")
        browser = form.cookies["__Host-ceptoar_csrf"]
        # Over plain HTTP the client would not send a Secure cookie back: give it by hand.
        http.cookies.set("__Host-ceptoar_csrf", browser, path="/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None and csrf.group(1) != browser  # the form's token is not the cookie
        signed = await http.post(
            "/ops/signin", data={"csrf": csrf.group(1), "name": "carol", "key": "a key for carol"}
        )
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("__Host-ceptoar_ops=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "Path=/;" in cookie and "Domain" not in cookie
        session = signed.cookies["__Host-ceptoar_ops"]
        http.cookies.set("__Host-ceptoar_ops", session, path="/")
        assert (await http.get("/ops/alerts")).status_code == 200
        # The sign-in form's token, bound to no session, is no good for the signed-in session's forms.
        stale = await http.post("/ops/signout", data={"csrf": csrf.group(1)})
        assert stale.status_code == 403
        page = await http.get("/ops/alerts")
        fresh = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert fresh is not None and fresh.group(1) != csrf.group(1)
        # A cookie set without the prefix (by another host of the domain, say) opens nothing.
        http.cookies.clear()
        http.cookies.set("ceptoar_ops", session, path="/ops")
        assert (await http.get("/ops/alerts", follow_redirects=False)).status_code == 303
