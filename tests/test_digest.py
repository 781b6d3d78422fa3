"""The security mail magazine: periods and schedules, an issue composed, previewed and sent through the
running service to a real mailbox, each address's items as its subscription and role admit, the
one-click unsubscribe, and a scheduled issue sent once by two serves on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser
from sqlalchemy import func, select, update

from ceptoar.compose.digest import DigestError, article_of
from ceptoar.feed import parse_notice
from ceptoar.mailbox import list_messages, read_message
from ceptoar.model.alert import AlertView
from ceptoar.model.digest import JST, DigestKind, Period, Schedule, low_in_digest, low_one_by_one
from ceptoar.registry import RegistryRow
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.render.digest import DigestMail, wrap_columns
from ceptoar.store import Store
from ceptoar.store.tables import alerts, deliveries
from ceptoar.text import width
from tests.conftest import StackFactory, screenshots
from tests.harness import (
    MailboxServer,
    Stack,
    api_running,
    cli_env,
    free_port,
    notice_doc,
    run_cli_async,
    running,
    serving,
    subset,
)

PERIOD = "2026-11"


def test_a_period_is_a_month_or_an_iso_week_in_japans_time() -> None:
    month = Period.parse("2026-11")
    assert month.kind == DigestKind.MONTHLY
    assert (month.start, month.end) == (datetime(2026, 11, 1, tzinfo=JST), datetime(2026, 12, 1, tzinfo=JST))
    assert Period.parse("2026-12").end == datetime(2027, 1, 1, tzinfo=JST)
    week = Period.parse("2026-W47")
    assert (week.start, week.end) == (datetime(2026, 11, 16, tzinfo=JST), datetime(2026, 11, 23, tzinfo=JST))
    assert month.label("ja") == "2026年11月" and week.label("ja") == "2026年11月16日〜11月22日"
    now = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert Period.last_ended(DigestKind.MONTHLY, now).name == "2026-11"
    assert Period.last_ended(DigestKind.WEEKLY, now).name == "2026-W49"  # Mon 30 Nov - Sun 6 Dec
    for bad in ("2026-13", "2026-W54", "11/2026", "2026-11-01", ""):
        with pytest.raises(ValueError, match=r"2026-11 or an ISO week|has no week"):
            Period.parse(bad)


def test_the_schedule_reads_cron_with_the_first_weekday_of_the_month() -> None:
    first_weekday = Schedule.parse("0 10 1W * *")
    fired = [
        d.day
        for d in (datetime(2026, m, day, 10, 0, tzinfo=JST) for m in (8, 11, 12) for day in range(1, 8))
        if first_weekday.matches(d)
    ]
    # 1 Aug 2026 is a Saturday (Monday the 3rd), 1 Nov a Sunday (Monday the 2nd), 1 Dec a Tuesday.
    assert fired == [3, 2, 1]
    assert not first_weekday.matches(datetime(2026, 12, 1, 10, 1, tzinfo=JST))
    assert first_weekday.matches(datetime(2026, 12, 1, 1, 0, tzinfo=UTC))  # 10:00 in Japan
    mondays = Schedule.parse("30 9 * * 1")
    assert mondays.matches(datetime(2026, 12, 7, 9, 30, tzinfo=JST))
    assert not mondays.matches(datetime(2026, 12, 8, 9, 30, tzinfo=JST))
    both = Schedule.parse("0 0 1 * 1")  # as cron: the 1st, or any Monday
    assert both.matches(datetime(2026, 12, 1, 0, 0, tzinfo=JST)) and both.matches(
        datetime(2026, 12, 7, tzinfo=JST)
    )
    steps = Schedule.parse("*/15 8-9 * * *")
    assert [m for m in range(60) if steps.matches(datetime(2026, 12, 7, 8, m, tzinfo=JST))] == [0, 15, 30, 45]
    when = first_weekday.fired_between(
        datetime(2026, 12, 1, 0, 0, tzinfo=UTC), datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    )
    assert when == datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    for bad, says in (
        ("0 10 * *", "five fields"),
        ("61 * * * *", "minute '61'"),
        ("0 10 5-1 * *", "backwards"),
    ):
        with pytest.raises(ValueError, match=says):
            Schedule.parse(bad)


def test_low_severity_notices_come_as_each_address_chose() -> None:
    table = {
        (digest, low): (low_one_by_one(digest, low), low_in_digest(digest, low))
        for digest in ("none", "monthly")
        for low in ("auto", "single", "digest", "both")
    }
    assert table == {
        ("none", "auto"): (True, False),
        ("none", "single"): (True, False),
        ("none", "digest"): (False, False),
        ("none", "both"): (True, False),
        ("monthly", "auto"): (False, True),
        ("monthly", "single"): (True, False),
        ("monthly", "digest"): (False, True),
        ("monthly", "both"): (True, True),
    }


def test_an_article_needs_a_title_line(tmp_path: Path) -> None:
    good = tmp_path / "a.md"
    good.write_text("# 今月の解説\n\n本文です。\n", encoding="utf-8")
    assert article_of(good) == {"title": "今月の解説", "markdown": "本文です。\n"}
    bad = tmp_path / "b.md"
    bad.write_text("本文だけ\n", encoding="utf-8")
    with pytest.raises(DigestError, match="first line must be its title"):
        article_of(bad)


# Titles of the period's notices, and who may read each (by address below).
NOTICES = {
    "N-VULN": dict(title="VPN装置の脆弱性", category="vulnerability", severity="medium", tlp="CLEAR"),
    "N-PHISH": dict(title="自治体を装うフィッシング", category="phishing", severity="high", tlp="CLEAR"),
    "N-ATTACK": dict(title="限定共有の攻撃情報", category="attack", severity="medium", tlp="AMBER"),
    "N-MALWARE": dict(
        title="担当者限りのマルウェア情報", category="malware", severity="medium", tlp="AMBER+STRICT"
    ),
    "N-LOW": dict(title="年末年始の情報セキュリティ", category="advisory", severity="low", tlp="CLEAR"),
    "N-RED": dict(title="非公開の事案", category="attack", severity="high", tlp="RED"),
}


def _registry(registry_rows: list[RegistryRow]) -> list[RegistryRow]:
    """Organisation A takes the monthly digest at three addresses (primary; its designated contact; a
    security address that is not), B only for phishing, C takes none."""
    rows = subset(registry_rows, 3)
    a, b, _ = sorted({r.code for r in rows})
    out = []
    for r in rows:
        if r.code == a:
            out.append(RegistryRow(r.code, r.name, r.email, r.role, contact=r.contact, digest="monthly"))
        elif r.code == b and r.role == "primary":
            out.append(
                RegistryRow(r.code, r.name, r.email, r.role, categories=("phishing",), digest="monthly")
            )
        else:
            out.append(r)
    name = next(r.name for r in rows if r.code == a)
    out.append(RegistryRow(a, name, f"soc@{a}.lg.example", "security", digest="monthly"))
    return out


async def _into_period(store: Store, ids: list[str]) -> None:
    """Date the alerts into the period, in the order given (the notices were sent just now)."""
    async with store.engine.begin() as conn:
        for n, notice_id in enumerate(ids):
            at = datetime(2026, 11, 10, 9, 0, tzinfo=JST) + timedelta(hours=n)
            await conn.execute(update(alerts).where(alerts.c.source_id == notice_id).values(created_at=at))


def _digests_of(mailbox: MailboxServer, address: str) -> list[EmailMessage]:
    found = []
    for n, entry in enumerate(list_messages(mailbox.root, address), start=1):
        if "セキュリティ通信" in entry.subject:
            found.append(read_message(mailbox.root, address, n))
    return found


def _listed(message: EmailMessage) -> list[str]:
    """The notice titles a digest's text lists, in the order it lists them."""
    text = next(p for p in message.iter_parts() if p.get_content_type() == "text/plain").get_content()
    at = {t["title"]: text.find(str(t["title"])) for t in NOTICES.values()}
    return [title for title, i in sorted(at.items(), key=lambda kv: kv[1]) if i >= 0]


async def test_a_months_digest_lists_what_each_address_may_read_once_and_can_be_left_in_one_click(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    rows = _registry(registry_rows)
    a, b, _ = sorted({r.code for r in rows})
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=f"http://127.0.0.1:{port}")
    env = cli_env(stack.settings)
    article = tmp_path / "article.md"
    article.write_text(
        "# 今月の解説：標的型メール\n\n**添付ファイル**に注意。<script>alert(1)</script> [詳細](javascript:alert(1))\n",
        encoding="utf-8",
    )
    async with running(stack.settings):
        for notice_id, fields in NOTICES.items():
            await stack.publish(notice_doc(id=notice_id, **fields))
            if fields["tlp"] != "RED":
                await stack.wait_settled(notice_id)
        await _into_period(stack.store, list(NOTICES))
        # Low severity is mailed on its own only to addresses without a digest.
        low = {
            r.email
            for r in rows
            if any("年末年始" in e.subject for e in list_messages(mailbox.root, r.email))
        }
        assert low == {r.email for r in rows if r.digest == "none"}

        composed = await run_cli_async(
            "digest", "compose", "--period", PERIOD, "--article", str(article), env=env
        )
        assert composed.returncode == 0, composed.stderr
        assert "No. 1 (第1号), draft" in composed.stdout and "4 addresses take it" in composed.stdout
        preview = await run_cli_async(
            "digest", "preview", "--period", PERIOD, "--for", f"primary@{a}.lg.example", env=env
        )
        assert preview.returncode == 0, preview.stderr
        assert "VPN装置の脆弱性" in preview.stdout and "限定共有の攻撃情報" not in preview.stdout
        assert "セキュリティ通信 第1号（2026年11月）" in preview.stdout

        declined = await run_cli_async("digest", "send", "--period", PERIOD, env=env, stdin=b"n\n")
        assert declined.returncode != 0 and "not sent" in declined.stderr + declined.stdout
        sent = await run_cli_async("digest", "send", "--period", PERIOD, "--yes", env=env)
        assert sent.returncode == 0, sent.stderr
        alert_id = re.search(r"sent as alert (\S+) to 4 addresses", sent.stdout)
        assert alert_id, sent.stdout
        assert await stack.wait_settled(alert_id[1]) == {"sent": 4}
        again = await run_cli_async("digest", "send", "--period", PERIOD, "--yes", env=env)
        assert again.returncode == 0 and "nothing was sent" in again.stdout
        listed = (await run_cli_async("digest", "list", env=env)).stdout
        assert re.search(
            rf"monthly +2026-11 +No. 1 +sent .* as {alert_id[1]}  notices 5  articles: 今月の解説", listed
        )
        status = await run_cli_async("status", alert_id[1], env=env)
        assert status.returncode == 0 and re.search(r"^  sent +4$", status.stdout, re.M)

    titles = {k: str(v["title"]) for k, v in NOTICES.items()}
    expected = {
        f"primary@{a}.lg.example": ["N-VULN", "N-PHISH", "N-LOW"],
        f"security@{a}.lg.example": ["N-ATTACK", "N-VULN", "N-MALWARE", "N-PHISH", "N-LOW"],
        f"soc@{a}.lg.example": ["N-ATTACK", "N-VULN", "N-PHISH", "N-LOW"],
        f"primary@{b}.lg.example": ["N-PHISH"],
    }
    for address, ids in expected.items():
        got = _digests_of(mailbox, address)
        assert len(got) == 1, address
        assert _listed(got[0]) == [titles[i] for i in ids], address  # by category, in time order
        assert got[0]["List-Id"] == f"CEPTOAR security digest <monthly.digest.{stack.settings.sender_domain}>"
        assert got[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.fullmatch(
            rf"<http://127\.0\.0\.1:{port}/digest/unsubscribe/\d+-[0-9a-f]{{20}}>", got[0]["List-Unsubscribe"]
        )
        text, html = (p.get_content() for p in got[0].iter_parts())
        assert "今月の解説：標的型メール" in text and "今月の解説：標的型メール" in html
        assert "<strong>添付ファイル</strong>" in html and "&lt;script&gt;" in html and "<script>" not in html
        assert "javascript:" not in html.replace("[詳細](javascript:alert(1))", "")
    for r in rows:
        if r.email not in expected:
            assert _digests_of(mailbox, r.email) == [], r.email
        # An alert never carries an unsubscribe.
        for n, entry in enumerate(list_messages(mailbox.root, r.email), start=1):
            if "セキュリティ通信" not in entry.subject:
                assert read_message(mailbox.root, r.email, n)["List-Unsubscribe"] is None

    # One click: GET changes nothing, POST switches that address's digest off, audited.
    leaving = f"primary@{a}.lg.example"
    link = (
        _digests_of(mailbox, leaving)[0]["List-Unsubscribe"]
        .strip("<>")
        .removeprefix(f"http://127.0.0.1:{port}")
    )
    async with api_running(stack.settings, port=port) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get(link)
        assert page.status_code == 200 and 'id="unsubscribe"' in page.text
        assert (await stack.store.portal.address_by_email(leaving)).digest == "monthly"  # type: ignore[union-attr]
        done = await http.post(
            link,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and "停止しました" in done.text
        assert (await http.post(link.replace("-", "-0", 1))).status_code == 404
    assert (await stack.store.portal.address_by_email(leaving)).digest == "none"  # type: ignore[union-attr]
    entries = [e for e in await stack.store.audit.since() if e.action == "digest-unsubscribe"]
    assert (
        len(entries) == 1
        and entries[0].operator == leaving
        and entries[0].detail["digest"] == ["monthly", "none"]
    )
    assert [e.action for e in await stack.store.audit.since()][:2] == ["digest-compose", "digest-send"]


@pytest.mark.postgres
async def test_two_serves_with_the_schedule_due_send_the_periods_issue_once(
    make_stack: StackFactory, mailbox_process: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    rows = [
        RegistryRow(r.code, r.name, r.email, r.role, contact=r.contact, digest="monthly")
        for r in subset(registry_rows, 20)
    ]
    stack: Stack = await make_stack(
        mailbox=mailbox_process, rows=rows, database_url=pg_url, public_url="https://ceptoar.lg.example"
    )
    last_month = Period.last_ended(DigestKind.MONTHLY, datetime.now(UTC))
    for n in range(3):
        await stack.store_alert(notice_doc(id=f"SCHED-{n}", title=f"先月の注意喚起{n}"), published=True)
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(deliveries).values(state="sent"))
        await conn.execute(update(alerts).values(created_at=last_month.start + timedelta(days=3)))
    env = {**cli_env(stack.settings), "CEPTOAR_DIGEST_SCHEDULE": "* * * * *", "CEPTOAR_SWEEP_SECONDS": "0.5"}
    async with serving(env, "--mailers", "1"), serving(env, "--mailers", "1"):
        for _ in range(600):
            issue = await stack.store.digests.get(DigestKind.MONTHLY, last_month.name)
            if issue is not None and issue.alert_id is not None:
                counts = (await stack.store.status(await stack.store.alerts.get(issue.alert_id))).counts  # type: ignore[arg-type]
                if counts.get("sent") == len(rows):
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the scheduled issue was not sent")
        await asyncio.sleep(3)  # both serves tick several more times
    async with stack.store.engine.connect() as conn:
        carried = (
            await conn.execute(select(func.count()).select_from(alerts).where(alerts.c.source == "digest"))
        ).scalar()
    assert carried == 1
    assert [e.action for e in await stack.store.audit.since()].count("digest-send") == 1
    for r in rows:
        got = _digests_of(mailbox_process, r.email)
        assert len(got) == 1, r.email
        assert all(f"先月の注意喚起{n}" in got[0].get_body(("plain",)).get_content() for n in range(3))  # type: ignore[union-attr]


ISSUE_NOTICES = [
    dict(
        id="D-VPN",
        title="VPN装置の認証回避の脆弱性を悪用した不正アクセスについて",
        summary="複数のVPN装置で認証を回避される脆弱性が悪用されています。修正版を適用し、侵害の有無を確認してください。",
        category="vulnerability",
        severity="high",
    ),
    dict(
        id="D-PHISH",
        title="地方公共団体を装うフィッシングメールについて",
        summary="住民税の還付を装い、偽のログインページに誘導するメールが確認されています。",
        category="phishing",
        severity="medium",
    ),
    dict(
        id="D-RANSOM",
        title="ランサムウェア感染事案の発生について（限定共有）",
        summary="業務委託先を経由した感染事案が発生しました。詳細は担当者限りで共有します。",
        category="malware",
        severity="high",
        tlp="AMBER",
    ),
    dict(
        id="D-NEWYEAR",
        title="年末年始における情報セキュリティに関する注意喚起",
        summary="長期休暇の前後に、機器の更新とバックアップの確認をお願いします。",
        category="advisory",
        severity="low",
    ),
]
ARTICLE = """# 今月の解説：VPN装置の脆弱性対策

VPN装置は庁外から庁内ネットワークに入る**入口**です。脆弱性が公表されたら、次の順で対応してください。

1. 修正版の有無を製造元の情報で確認する
2. 修正版を適用する（できない場合は緩和策を講じる）
3. 認証ログを確認し、不審なログインがないか調べる

詳しくは[内閣サイバーセキュリティセンターの資料](https://www.nisc.example/vpn)をご覧ください。
"""


async def test_an_issue_previewed_for_an_address_and_as_a_browser_shows_it(
    make_stack: StackFactory,
    mailbox: MailboxServer,
    registry_rows: list[RegistryRow],
    browser: Browser,
    tmp_path: Path,
) -> None:
    rows = [
        RegistryRow(r.code, r.name, r.email, r.role, contact=r.contact, digest="monthly")
        for r in subset(registry_rows, 2)
    ]
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url="https://ceptoar.lg.example")
    for n in ISSUE_NOTICES:
        await stack.store_alert(notice_doc(**n), published=True, severity=str(n["severity"]))
    await _into_period(stack.store, [str(n["id"]) for n in ISSUE_NOTICES])
    article = tmp_path / "article.md"
    article.write_text(ARTICLE, encoding="utf-8")
    env = cli_env(stack.settings)
    assert (
        await run_cli_async("digest", "compose", "--period", PERIOD, "--article", str(article), env=env)
    ).returncode == 0
    security = f"security@{rows[0].code}.lg.example"
    html_file = tmp_path / "issue.html"
    shown = await run_cli_async(
        "digest", "preview", "--period", PERIOD, "--for", security, "--html", str(html_file), env=env
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    shots = screenshots(tmp_path)
    (shots / "digest-preview.txt").write_text(out, encoding="utf-8")
    assert "variant 0: 2 addresses, 4 notices" in out and "variant 1: 2 addresses, 3 notices" in out
    assert "Subject: 【情報】地方公共団体CEPTOAR セキュリティ通信 第1号（2026年11月）" in out
    assert (
        out.index("VPN装置の認証回避") < out.index("ランサムウェア感染事案") < out.index("フィッシングメール")
    )
    assert "全文: https://ceptoar.lg.example/portal/alerts/" in out and "（更新）" not in out
    page = await browser.new_page(viewport={"width": 900, "height": 800})
    await page.goto(html_file.as_uri())
    assert await page.locator("h1").text_content() == "第1号（2026年11月）"
    assert await page.locator("strong").first.text_content() == "入口"
    await page.screenshot(path=str(shots / "digest.png"), full_page=True)
    await page.close()


def test_text_is_wrapped_by_display_columns_and_ascii_runs_move_whole() -> None:
    text = "VPN装置は庁外から庁内ネットワークに入る**入口**です。脆弱性が公表されたら、次の順で対応してください。"
    lines = wrap_columns(text, 40).splitlines()
    assert lines == [
        "VPN装置は庁外から庁内ネットワークに入る",
        "**入口**です。脆弱性が公表されたら、次の",
        "順で対応してください。",
    ]
    assert all(width(line) <= 40 for line in lines) and "".join(lines) == text
    assert wrap_columns("The quick brown fox jumps over the lazy dog", 16).splitlines() == [
        "The quick brown",
        "fox jumps over",
        "the lazy dog",
    ]


def test_an_english_reading_address_gets_the_issue_in_english() -> None:
    notice = notice_doc(
        id="EN-1",
        title="フィッシングメールについて",
        category="phishing",
        translations={"en": {"title": "Phishing mail posing as a city", "summary": "Do not open the link."}},
    )
    content = {
        "kind": "monthly",
        "period": "2026-11",
        "number": 3,
        "articles": [{"title": "This month", "markdown": "Check **every** link.\n"}],
        "items": [
            {
                "alert_id": "20261110-00000001",
                "created_at": "2026-11-10T09:00:00+09:00",
                "severity": "medium",
                "category": "phishing",
                "tlp": "CLEAR",
                "msg_type": "alert",
                "text": {
                    "ja": {"title": notice["title"], "summary": notice["summary"]},
                    "en": notice["translations"]["en"],
                },
                "link": "https://ceptoar.lg.example/portal/alerts/20261110-00000001",
            }
        ],
        "variants": [{"items": [0], "addresses": [1]}],
    }
    view = AlertView.of_notice(
        parse_notice(json.dumps(notice)), severity="low", rules=["digest"], id="20261201-00000003"
    )
    view = replace(view, source="digest", source_id="monthly-2026-11")
    renderer = Renderer(default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR")
    mail = renderer.render(view, "en", digest=DigestMail(content, 0))
    assert mail.subject == "[INFO] Local-governments CEPTOAR security digest No. 3 (November 2026)"
    assert "1. Phishing (1)" in mail.text and "2. This month" in mail.text
    assert "[MEDIUM] Phishing mail posing as a city" in mail.text and "フィッシング" not in mail.text
    assert "Check <strong>every</strong> link." in mail.html
    message = renderer.message(
        view,
        language="en",
        to="security@010006.lg.example",
        message_id="<d@ceptoar.example>",
        digest=DigestMail(content, 0),
        unsubscribe_url="https://ceptoar.lg.example/digest/unsubscribe/1-00",
    )
    assert b"List-Unsubscribe: <https://ceptoar.lg.example/digest/unsubscribe/1-00>\r\n" in message
    assert b"List-Id: CEPTOAR security digest <monthly.digest.ceptoar.example>\r\n" in message
