"""The `ceptoar` command line, run as a child process the way an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ceptoar.config import Settings
from ceptoar.registry import RegistryRow, write_registry
from ceptoar.report import text_report
from ceptoar.text import width
from tests.conftest import StackFactory
from tests.harness import (
    REPO,
    MailboxServer,
    cli_env,
    notice_doc,
    run_cli,
    run_cli_async,
    running,
    subset,
)


def _env(make_settings: Callable[..., Settings], tmp_path: Path) -> dict[str, str]:
    return cli_env(make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"))


def test_import_count_export_round_trip(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    env = _env(make_settings, tmp_path)
    imported = run_cli("subscribers", "import", str(REPO / "subscribers" / "registry.csv"), env=env)
    assert imported.returncode == 0, imported.stderr
    assert "now 1788 organisations, 3576 addresses" in imported.stdout
    counted = json.loads(run_cli("subscribers", "count", "--json", env=env).stdout)
    assert counted == {
        "organisations": 1788,
        "prefectures": 47,
        "municipalities": 1741,
        "addresses": 3576,
        "by_role": {"primary": 1788, "security": 1788},
    }
    out = tmp_path / "export.csv"
    assert run_cli("subscribers", "export", str(out), env=env).returncode == 0
    assert out.read_text(encoding="utf-8") == (REPO / "subscribers" / "registry.csv").read_text(
        encoding="utf-8"
    )


def test_a_bad_row_refuses_the_whole_file_naming_its_line(
    make_settings: Callable[..., Settings], tmp_path: Path, registry_rows: list[RegistryRow]
) -> None:
    env = _env(make_settings, tmp_path)
    lines = write_registry(registry_rows[:100]).splitlines()
    lines[57] = lines[57].replace(",primary,", ",chief,")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_cli("subscribers", "import", str(bad), env=env)
    assert result.returncode == 2
    assert "line 58: role: 'chief' is not one of primary, security, backup" in result.stderr
    assert "nothing imported" in result.stderr
    counted = json.loads(run_cli("subscribers", "count", "--json", env=env).stdout)
    assert counted["addresses"] == 0


def test_publish_refuses_an_invalid_notice_and_publishes_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = _env(make_settings, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(notice_doc(tlp="PINK")), encoding="utf-8")
    result = run_cli("publish", str(bad), env=env)
    assert result.returncode == 2
    assert "tlp: Input should be" in result.stderr
    assert result.stdout == ""


def test_status_of_an_unknown_alert_exits_1(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    result = run_cli("status", "no-such-alert", env=_env(make_settings, tmp_path))
    assert result.returncode == 1
    assert "no alert or notice with id 'no-such-alert'" in result.stderr


async def test_publish_then_status_and_mailbox_commands(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    env = cli_env(stack.settings)
    sample = REPO / "examples" / "notice-tokyo-outage.json"
    tokyo = [r for r in registry_rows if r.code in {"130001", "131016"}]
    await stack.store.subscribers.import_rows(tokyo)
    async with running(stack.settings):
        published = await run_cli_async("publish", str(sample), env=env)
        assert published.returncode == 0, published.stderr
        assert published.stdout.strip() == "NISC-2026-1128-002"
        waited = await run_cli_async("status", "NISC-2026-1128-002", "--wait", "60", env=env)
    assert waited.returncode == 0, waited.stderr
    assert "severity 【注意】 medium" in waited.stdout
    assert "sent               4" in waited.stdout
    root = str(mailbox.root)
    assert run_cli("mailbox", "count", "--dir", root, env=env).stdout.strip() == "4"
    listing = run_cli("mailbox", "ls", "primary@131016.lg.example", "--dir", root, env=env)
    assert "【注意】[TLP:GREEN] LGWAN接続系の一部サービス停止について（東京都）" in listing.stdout
    shown = run_cli("mailbox", "show", "primary@131016.lg.example", "1", "--dir", root, env=env)
    assert "To: primary@131016.lg.example" in shown.stdout
    assert "LGWAN-ASP経由のサービスに接続できない障害" in shown.stdout
    # The mail's CRLF line ends are the terminal's line ends, not a control character shown.
    assert "\\x0d" not in shown.stdout and "\r" not in shown.stdout and shown.stdout.count("\n") > 10
    raw = run_cli("mailbox", "show", "primary@131016.lg.example", "1", "--raw", "--dir", root, env=env)
    assert "\\x0d" not in raw.stdout and "Message-ID:" in raw.stdout
    missing = run_cli("mailbox", "show", "primary@131016.lg.example", "2", "--dir", root, env=env)
    assert missing.returncode == 1 and "has 1 message(s)" in missing.stderr

    # Published again: said to be a duplicate at once, and sent to no one.
    again = await run_cli_async("publish", str(sample), env=env)
    assert again.returncode == 0 and "already received as alert" in again.stderr
    assert "it would not be sent again" in run_cli("validate", str(sample), env=env).stdout
    # An area code the registry does not have is refused before anything is published.
    unknown = dict(json.loads(sample.read_text(encoding="utf-8")), id="NISC-2026-1128-999", area=["139998"])
    wrong = stack.settings.var_dir / "unknown-area.json"
    wrong.write_text(json.dumps(unknown, ensure_ascii=False), encoding="utf-8")
    for command in ("validate", "publish"):
        refused = await run_cli_async(command, str(wrong), env=env)
        assert refused.returncode == 2, refused
        assert "139998 is not a subscribed local government" in refused.stderr and refused.stdout == ""
    assert "nothing was published" in refused.stderr
    assert (await stack.store.alerts.existing("nisc", "NISC-2026-1128-999")) is None


def test_classify_explains_the_level_and_the_rules(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = _env(make_settings, tmp_path)
    shown = run_cli("classify", str(REPO / "examples" / "notice.json"), env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "【緊急】 critical"
    assert "exploited-high-cvss: A vulnerability scored 7.0 or more that is being exploited" in shown.stdout
    as_json = json.loads(
        run_cli("classify", str(REPO / "examples" / "notice.json"), "--json", env=env).stdout
    )
    assert as_json == {"severity": "critical", "rules": ["exploited-high-cvss", "cvss-critical"]}


def test_rules_check_names_what_is_wrong(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    env = _env(make_settings, tmp_path)
    good = run_cli("rules", "check", env=env)
    assert good.returncode == 0 and "rules, valid" in good.stdout
    bad = tmp_path / "rules.toml"
    bad.write_text("[[rule]]\nname='x'\ndescription='d'\nwhen={cvss_min='high'}\nseverity='high'\n")
    result = run_cli("rules", "check", str(bad), env=env)
    assert result.returncode == 2
    assert "rule #1 (x): when.cvss_min: Input should be a valid number" in result.stderr
    used = run_cli("classify", str(REPO / "examples" / "notice.json"), env={**env, "CEPTOAR_RULES": str(bad)})
    assert used.returncode == 2 and "rule #1 (x)" in used.stderr


def test_validate_shows_what_a_document_becomes(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = _env(make_settings, tmp_path)
    shown = run_cli("validate", str(REPO / "tests/data/cap/earthquake-update.xml"), "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert {
        k: doc[k] for k in ("format", "id", "source", "msg_type", "status", "references", "languages")
    } == {
        "format": "cap",
        "id": "TRI13970876.2",
        "source": "trinet@caltech.edu",
        "msg_type": "update",
        "status": "actual",
        "references": ["TRI13970876.1"],
        "languages": ["en-US"],
    }
    csaf = json.loads(
        run_cli("validate", str(REPO / "tests/data/csaf/rhsa-2021_5217.json"), "--json", env=env).stdout
    )
    assert (csaf["format"], csaf["id"]) == ("csaf", "RHSA-2021:5217")
    refused = run_cli("validate", str(REPO / "tests/data/cap/nws-hydrologic-outlook-cap11.xml"), env=env)
    assert refused.returncode == 2 and "CAP 1.1 is not accepted" in refused.stderr
    assert refused.stdout == ""


def test_the_libraries_log_records_are_lines_of_the_same_json_log(tmp_path: Path) -> None:
    script = (
        "import logging\n"
        "from ceptoar.log import configure_logging, get_logger\n"
        "configure_logging(fmt='json', level='info')\n"
        "get_logger('ceptoar.test').info('ours', n=1)\n"
        "logging.getLogger('aiormq.connection').warning('Connection %s lost', 'amqp://broker')\n"
        "try:\n"
        "    raise ConnectionResetError('reset by peer')\n"
        "except ConnectionResetError:\n"
        "    logging.getLogger('aio_pika.robust_connection').exception('Connection attempt failed')\n"
        "logging.getLogger('aiormq').info('chatter an operator does not need')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(x["event"], x["level"]) for x in lines] == [
        ("ours", "info"),
        ("Connection amqp://broker lost", "warning"),
        ("Connection attempt failed", "error"),
    ]
    assert lines[1]["logger"] == "aiormq.connection"
    assert "ConnectionResetError: reset by peer" in lines[2]["exception"]


def test_the_terminal_report_puts_its_summary_first_and_aligns_japanese_names() -> None:
    now = datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC)
    rows = [
        {
            "code": code, "name": name, "email": f"primary@{code}.lg.example", "role": "primary",
            "state": state, "attempts": 1, "last_code": 250, "last_reply": "ok", "created_at": now,
            "sent_at": now, "updated_at": now, "prefecture": code[:2], "answer": None,
        }
        for code, name, state in [
            ("011002", "札幌市", "sent"),
            ("012025", "函館市", "sent"),
            ("130001", "東京都", "failed"),
            ("999999", "Long Name Town of Somewhere Far Away In The North Country", "sent"),
        ]
    ]  # fmt: skip
    lines = text_report(rows).splitlines()
    assert lines[0] == "4 deliveries: sent 3, failed 1"
    assert lines[2] == "prefecture  answered  share"
    table = lines[lines.index("") + 1 + lines[lines.index("") + 1 :].index("") + 1 :]
    assert table[0].startswith("code    organisation")
    # Every column starts at the same display column whatever the names are written in.
    starts = {width(line.split("primary@")[0]) for line in table[1:]}
    assert len(starts) == 1, table
    assert "…" in table[-1] and "Far Away In The North Country" not in table[-1]
