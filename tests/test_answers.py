"""Answer links: each alert mail's own page, where GET shows and only POST records.

The end-to-end test sends a real alert through the service to the mailbox,
takes the link from the mail as its recipient would see it, and opens it on
the running HTTP application.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update

from ceptoar.bounces.links import AnswerLinks, link_valid_until
from ceptoar.bounces.verp import Verp
from ceptoar.mailbox import read_message
from ceptoar.model.states import DeliveryState
from ceptoar.registry import RegistryRow
from ceptoar.store.tables import alerts, answers, delivery_events
from tests.conftest import StackFactory
from tests.harness import MailboxServer, api_running, cli_env, notice_doc, run_cli_async, running, subset

LINKS = AnswerLinks("https://ceptoar.lg.example", b"k" * 32)
PUBLIC_URL = "https://ceptoar.lg.example/alerts"


def test_a_link_names_its_delivery_and_only_its_key_makes_one() -> None:
    url = LINKS.url(4321)
    assert url.startswith("https://ceptoar.lg.example/answer/4321-")
    token = url.rpartition("/")[2]
    assert LINKS.read(token) == 4321
    assert LINKS.read(token.replace("4321-", "4322-")) is None
    assert AnswerLinks("https://ceptoar.lg.example", b"x" * 32).read(token) is None
    assert LINKS.read(token[:-1]) is None and LINKS.read(token.upper()) is None
    # A return path's token is made under another key: it opens no page.
    verp = Verp("bounces@ceptoar.example", b"k" * 32).address(4321)
    assert LINKS.read(verp.split("+")[1].split("@")[0]) is None


def test_a_link_lives_as_long_as_its_alert_plus_the_grace_period() -> None:
    made = datetime(2026, 12, 1, tzinfo=UTC)
    window, grace = timedelta(days=30), timedelta(days=3)
    assert link_valid_until(made, None, window=window, grace=grace) == made + window + grace
    expires = made + timedelta(hours=6)
    assert link_valid_until(made, expires, window=window, grace=grace) == expires + grace


def _link(text: str) -> str:
    found = re.findall(r"https://ceptoar\.lg\.example/alerts/answer/[0-9a-f-]+", text)
    assert len(set(found)) == 1, found
    return str(found[0])


async def test_get_shows_the_alert_and_records_nothing_post_records_and_a_second_post_updates(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=PUBLIC_URL)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="LINK-1", title="ランサムウェア感染の注意喚起"))
        await stack.wait_settled("LINK-1")
    alert = await stack.store.alerts.resolve("LINK-1")
    one, other = sorted(r.email for r in rows if r.role == "primary")
    mails = {to: read_message(mailbox.root, to, 1) for to in (one, other)}
    text, html = (part.get_content() for part in mails[one].iter_parts())
    link = _link(text)
    assert link in html and link != _link(next(mails[other].iter_parts()).get_content())
    code = next(r.code for r in rows if r.email == one)

    async def answers_kept() -> int:
        async with stack.store.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(answers))).scalar_one())

    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        path = link.removeprefix(PUBLIC_URL)
        for _ in range(3):  # a mail scanner, a link preview, the person
            page = await http.get(path)
            assert page.status_code == 200 and "ランサムウェア感染の注意喚起" in page.text
            assert page.text.count('name="answer"') == 4 and "まだありません" in page.text
            assert page.headers["cache-control"] == "no-store" and "script" not in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
        assert await answers_kept() == 0
        assert await stack.store.alerts.counts(alert.id) == {"sent": 4}

        first = await http.post(path, data={"answer": "not_affected"})
        assert first.status_code == 200 and "「影響なし」と記録しました" in first.text
        assert await stack.store.alerts.counts(alert.id) == {"sent": 3, "acknowledged": 1}
        second = await http.post(path, data={"answer": "needs_help"})
        assert second.status_code == 200 and "現在の回答: <strong>支援要請" in second.text
        assert await stack.store.answers.latest(alert.id) == {code: "needs_help"}
        assert await stack.store.alerts.counts(alert.id) == {"sent": 3, "acknowledged": 1}
        async with stack.store.engine.connect() as conn:
            acked = await conn.execute(
                select(func.count())
                .select_from(delivery_events)
                .where(delivery_events.c.state == DeliveryState.ACKNOWLEDGED.value)
            )
            assert acked.scalar_one() == 1  # the first answer moved it; the second is kept as an answer
        assert await answers_kept() == 2
        report = await run_cli_async("report", "LINK-1", env=cli_env(stack.settings))
        answered_rows = [line for line in report.stdout.splitlines() if line.startswith(code)]
        assert len(answered_rows) == 2 and all("支援要請" in line for line in answered_rows)
        assert "北海道  1/2  50%" in report.stdout  # both organisations are in Hokkaido; one answered

        for bad in ({"answer": "maybe"}, {"answer": ["received", "needs_help"]}, {}):
            refused = await http.post(path, data=bad)
            assert refused.status_code == 422
        assert (await http.post(path, data={"answer": "x" * 2000})).status_code == 422
        forged = re.sub(r"-([0-9a-f])", lambda m: "-" + ("0" if m.group(1) != "0" else "1"), path, count=1)
        assert (await http.get(forged)).status_code == 404
        assert (await http.post(forged, data={"answer": "received"})).status_code == 404
        assert (await http.get("/answer/1")).status_code == 404
        assert await answers_kept() == 2

        # Past the alert's expiry plus the grace period, the page says so and takes nothing.
        gone = datetime.now(UTC) - timedelta(hours=stack.settings.answer_grace_hours, minutes=1)
        async with stack.store.engine.begin() as conn:
            await conn.execute(update(alerts).where(alerts.c.id == alert.id).values(expires_at=gone))
        expired = await http.get(path)
        assert expired.status_code == 410 and 'name="answer"' not in expired.text
        assert (await http.post(path, data={"answer": "received"})).status_code == 410
        assert await answers_kept() == 2


async def test_the_page_speaks_the_recipients_language_and_shows_the_title_as_text(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = [dataclasses.replace(r, language="en") for r in subset(registry_rows, 1)]
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=PUBLIC_URL)
    title = "<script>alert(1)</script> & co"
    async with running(stack.settings):
        await stack.publish(notice_doc(id="LINK-EN", title=title, language="en"))
        await stack.wait_settled("LINK-EN")
    to = rows[0].email
    link = _link(next(read_message(mailbox.root, to, 1).iter_parts()).get_content())
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get(link.removeprefix(PUBLIC_URL))
    assert page.status_code == 200 and "Opening this page records nothing" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page.text and "<script>" not in page.text
    assert ">Not affected<" in page.text and ">Needs help<" in page.text
