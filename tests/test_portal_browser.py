"""The portal in a real browser: Debian's Chromium driven by Playwright, against the running service.

A local government signs in by the link mailed to it, reads its alert and
answers; `ceptoar status` counts the answer. A primary address does not see
an AMBER alert that the security address sees. An operator watches an
alert's counts rise while it fans out, and the tile map colours a
prefecture once its organisations have answered, without reloading.

The screenshots in the README are taken here: set CEPTOAR_SCREENSHOTS to a
directory to keep them (`docs/` for the README's).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from ceptoar.api.portal.ops import hash_key
from ceptoar.model.answer import Answer
from ceptoar.registry import RegistryRow
from ceptoar.store import Actor, Store
from tests.conftest import StackFactory, screenshots
from tests.harness import MailboxServer, api_running, cli_env, free_port, notice_doc, run_cli_async, running
from tests.test_portal import _signin_links

pytestmark = pytest.mark.timeout(300)

TOKYO, TOTTORI, HOKKAIDO = "13", "31", "01"
OPERATOR_KEY = "watch the fan-out closely"


def _rows(registry_rows: list[RegistryRow]) -> list[RegistryRow]:
    """Every address of Hokkaido's, Tokyo's and Tottori's organisations: 263 organisations."""
    return [r for r in registry_rows if r.code[:2] in (HOKKAIDO, TOKYO, TOTTORI)]


async def _sign_in_by_mail(page: Page, mailbox: MailboxServer, base: str, email: str, had: int) -> None:
    """What a person does: ask for a link, open it from the mail, press the button."""
    await page.goto(f"{base}/portal/signin")
    await page.fill("#email", email)
    await page.click("button[type=submit]")
    await page.wait_for_selector("text=リンクをメールで送りました")
    link = (await _signin_links(mailbox, email, count=had + 1))[had]
    await page.goto(base + link)
    await page.click("#signin")
    await page.wait_for_url(f"{base}/portal/alerts")


async def _answer_for_all(store: Store, codes: list[str], alert_id: str) -> None:
    """Each organisation answers, as its page records it (the HTTP side is tested in test_portal.py)."""
    for code in codes:
        address = (await store.portal.addresses_of(code))[0]
        target = await store.portal.answer_target(code, alert_id, address.id)
        assert target is not None
        await store.answers.record(target, Answer.NOT_AFFECTED, via="portal", by=address.email)


async def test_the_portal_in_chromium(
    make_stack: StackFactory,
    mailbox: MailboxServer,
    registry_rows: list[RegistryRow],
    browser: Browser,
    tmp_path: Path,
) -> None:
    rows = _rows(registry_rows)
    tottori = sorted({r.code for r in rows if r.code.startswith(TOTTORI)})
    assert len(tottori) == 20 and len({r.code for r in rows}) == 263
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stack = await make_stack(mailbox=mailbox, rows=rows, public_url=base, smtp_connections=2)
    await stack.store.portal.add_operator("duty", hash_key(OPERATOR_KEY), who=Actor("test"))
    shots = screenshots(tmp_path)
    async with running(stack.settings), api_running(stack.settings, port=port):
        ops = await (
            await browser.new_context(viewport={"width": 1280, "height": 1000}, locale="ja-JP")
        ).new_page()
        await ops.goto(f"{base}/ops/signin")
        await ops.fill("#name", "duty")
        await ops.fill("#key", OPERATOR_KEY)
        await ops.click("button[type=submit]")
        await ops.wait_for_url(f"{base}/ops/alerts")

        # The relay is slow today: the fan-out of 526 mails takes seconds, and the operator watches it.
        mailbox.handler.delay = 0.012  # type: ignore[union-attr]
        await stack.publish(
            notice_doc(id="BR-1", title="VPN装置の脆弱性を悪用した攻撃について", severity="high")
        )
        alert = None
        while alert is None:
            await asyncio.sleep(0.05)
            alert = await stack.store.alerts.find("nisc", "BR-1")
        await ops.goto(f"{base}/ops/alerts/{alert.id}")
        seen: list[int] = []
        deadline = asyncio.get_running_loop().time() + 60
        while asyncio.get_running_loop().time() < deadline:
            sent = int(await ops.text_content('[data-state="sent"]') or 0)
            if not seen or sent != seen[-1]:
                seen.append(sent)
            if sent == 526:
                break
            await asyncio.sleep(0.1)
        mailbox.handler.delay = 0  # type: ignore[union-attr]
        assert seen[-1] == 526, seen
        assert len(seen) >= 3 and seen == sorted(seen), f"the counts did not rise on the page: {seen}"
        assert seen[0] < 400, seen

        # A local government signs in by the mailed link, reads the alert as mailed and answers.
        local = await (
            await browser.new_context(viewport={"width": 1100, "height": 900}, locale="ja-JP")
        ).new_page()
        email = f"primary@{tottori[0]}.lg.example"
        await _sign_in_by_mail(local, mailbox, base, email, 0)
        await local.click("text=VPN装置の脆弱性を悪用した攻撃について")
        await local.wait_for_selector("#mail-text")
        assert "【重要】" in (await local.text_content("#subject") or "")
        await local.click("button[value=received]")
        await local.wait_for_selector("text=「受領」と記録しました。")
        await local.screenshot(path=str(shots / "portal-local.png"), full_page=True)
        status = json.loads(
            (await run_cli_async("status", "BR-1", "--json", env=cli_env(stack.settings))).stdout
        )
        assert status["organisations"]["answered"] == 1 and status["organisations"]["by_answer"] == {
            "received": 1
        }

        # The rest of Tottori answers; the operator's map colours Tottori without a reload.
        tile = ops.locator(f'.tile[data-pref="{TOTTORI}"]')
        assert "s0" in (await tile.get_attribute("class") or "")
        await _answer_for_all(stack.store, tottori[1:], alert.id)
        await expect(tile).to_have_class(re.compile(r"\bs10\b"), timeout=10_000)
        assert "20 / 20" in (await tile.get_attribute("title") or "")
        assert await ops.text_content(f'tr[data-pref="{TOTTORI}"] [data-a]') == "20"
        assert "s0" in (await ops.locator(f'.tile[data-pref="{TOKYO}"]').get_attribute("class") or "")
        assert "none" in (await ops.locator('.tile[data-pref="47"]').get_attribute("class") or "")
        await _answer_for_all(
            stack.store, sorted({r.code for r in rows if r.code.startswith(TOKYO)})[:40], alert.id
        )
        await expect(ops.locator(f'.tile[data-pref="{TOKYO}"]')).to_have_class(re.compile(r"\bs6\b"))
        await ops.screenshot(path=str(shots / "portal-operator.png"))

        # TLP: the primary address does not see an AMBER alert; the security address does.
        await stack.publish(notice_doc(id="BR-AMBER", tlp="AMBER", title="限定共有：不正アクセスの手口"))
        await stack.wait_settled("BR-AMBER")
        await local.goto(f"{base}/portal/alerts")
        assert await local.locator("text=限定共有：不正アクセスの手口").count() == 0
        security = await (await browser.new_context(locale="ja-JP")).new_page()
        await _sign_in_by_mail(security, mailbox, base, f"security@{tottori[0]}.lg.example", 0)
        assert await security.locator("text=限定共有：不正アクセスの手口").count() == 1
        assert await security.locator("text=VPN装置の脆弱性を悪用した攻撃について").count() == 1

        # The operator's page ran the portal's script (the CSP let it) and nothing broke on the page.
        assert await ops.get_attribute("#live", "data-updated")
        for page in (ops, local, security):  # their event streams end before the server stops
            await page.context.close()
