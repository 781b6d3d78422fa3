"""The composer in a real terminal (tmux), from the first prompt to the confirmation, and the
HTML report in a real browser (headless Chromium)."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import uuid
from pathlib import Path

from ceptoar.mailbox.maildir import addresses
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, cli_env, run_cli_async, running, subset


async def _run(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{args[0]} failed: {out.decode()}"
    return out.decode()


class Terminal:
    """One tmux session running one command."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def screen(self) -> str:
        return await _run("tmux", "capture-pane", "-p", "-J", "-t", self.name, "-S", "-200")

    async def wait_for(self, text: str, within: float = 30) -> str:
        for _ in range(int(within / 0.1)):
            shown = await self.screen()
            if text in shown:
                return shown
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{await self.screen()}")

    async def type(self, text: str) -> None:
        if text:
            await _run("tmux", "send-keys", "-t", self.name, "-l", text)
        await _run("tmux", "send-keys", "-t", self.name, "Enter")


async def test_interactive_compose_from_the_first_prompt_to_the_confirmation(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    assert shutil.which("tmux"), "tmux is needed (scripts/test installs it)"
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    env = {**cli_env(stack.settings), "CEPTOAR_OPERATOR": "tanaka", "LANG": "C.UTF-8"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    transcript = tmp_path / "compose.txt"
    command = f"env {exports} {shlex.quote(sys.executable)} -m ceptoar compose; echo EXIT=$?; sleep 30"
    term = Terminal(f"ceptoar-{uuid.uuid4().hex[:8]}")
    await _run("tmux", "-u", "new-session", "-d", "-s", term.name, "-x", "160", "-y", "60", command)
    try:
        async with running(stack.settings):
            await term.wait_for("Title:")
            await term.type("標的型メール攻撃への注意喚起")
            await term.wait_for("Summary:")
            await term.type(
                "千代田区を装う標的型メールが確認されています。添付ファイルを開かないでください。"
            )
            await term.wait_for("Body:")
            await term.type("")
            await term.wait_for("Category")
            await term.type("phishing")
            await term.wait_for("Severity")
            await term.type("")
            await term.wait_for("TLP")
            await term.type("AMBER")
            await term.wait_for("Target")
            await term.type("東京都")
            await term.wait_for("Expires")
            await term.type("24h")
            await term.wait_for("Also in English")
            await term.type("y")
            await term.wait_for("Title (English)")
            await term.type("Targeted e-mail attacks")
            await term.wait_for("Summary (English)")
            await term.type(
                "Targeted e-mails posing as Chiyoda City are circulating. Do not open attachments."
            )
            shown = await term.wait_for("addresses? [y/N]:")
            assert "audience: 63 addresses in 63 organisations" in shown
            assert "left out: tlp-amber-needs-security-role 63" in shown
            await term.type("y")
            shown = await term.wait_for("EXIT=")
            transcript.write_text(shown, encoding="utf-8")
            assert "EXIT=0" in shown, shown
            notice_id = next(w for w in shown.split() if w.startswith("OP-"))
            counts = await stack.wait_settled(notice_id)
    finally:
        await _run("tmux", "kill-session", "-t", term.name)
    assert counts == {"sent": 63}
    assert {a.split("@")[0] for a in addresses(mailbox.root)} == {"security"}
    alert = await stack.store.alerts.resolve(notice_id)
    assert alert.notice["translations"]["en"]["title"] == "Targeted e-mail attacks"
    entries = await stack.store.audit.since()
    assert [(e.operator, e.action, e.notice_id) for e in entries] == [("tanaka", "compose", notice_id)]


async def test_the_html_report_opens_in_a_browser_and_shows_the_chart(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is needed (scripts/test installs it)"
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 20))
    await _sent_alert(stack)
    page = tmp_path / "report.html"
    made = await run_cli_async("report", "REPORT-1", "--html", str(page), env=cli_env(stack.settings))
    assert made.returncode == 0, made.stderr
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = await _run(chromium, *flags, "--dump-dom", page.as_uri())
    shot = tmp_path / "report.png"
    await _run(chromium, *flags, "--window-size=900,700", f"--screenshot={shot}", page.as_uri())
    assert '<svg id="timeline"' in dom
    assert 'data-state="sent" data-count="40"' in dom
    assert "<polyline" in dom and 'aria-label="deliveries over time"' in dom
    # Counts header and row, the prefectures' header and one prefecture (all 20 are in Hokkaido),
    # the recipients' header and 40 recipients.
    assert dom.count("<tr>") == 2 + 2 + 1 + 40
    assert '<table id="prefectures">' in dom and "<td>北海道</td><td>0</td><td>20</td><td>0%</td>" in dom
    assert shot.stat().st_size > 10_000


async def _sent_alert(stack: Stack) -> None:
    from tests.harness import notice_doc

    async with running(stack.settings):
        await stack.publish(notice_doc(id="REPORT-1"))
        await stack.wait_settled("REPORT-1")
