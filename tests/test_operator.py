"""The operator's CLI, run as a child process against the running stack."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from ceptoar.mailbox import count, list_messages
from ceptoar.mailbox.maildir import addresses
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, cli_env, free_port, notice_doc, run_cli_async, running, subset

OPERATOR = {"CEPTOAR_OPERATOR": "suzuki"}
FLAGS = ["--summary", "都内団体向けの注意喚起です。", "--category", "advisory", "--tlp", "GREEN"]


def _env(stack: Stack) -> dict[str, str]:
    return {**cli_env(stack.settings), **OPERATOR}


async def _compose(stack: Stack, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = await run_cli_async("compose", *args, env=_env(stack), stdin=stdin)
    return result.returncode, result.stdout, result.stderr


async def test_compose_by_flags_previews_sends_and_every_target_gets_it(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    html = tmp_path / "preview.html"
    async with running(stack.settings):
        code, out, err = await _compose(
            stack,
            "--title",
            "都内の不審メールについて",
            *FLAGS,
            "--target",
            "東京都",
            "--severity",
            "high",
            "--preview-for",
            "131016",
            "--preview-html",
            str(html),
            "--yes",
        )
        assert code == 0, err
        notice_id = out.strip().splitlines()[-1].split()[1].rstrip(";")
        counts = await stack.wait_settled(notice_id)
        audit = await run_cli_async("audit", env=_env(stack))
    tokyo = {r.email for r in registry_rows if r.code.startswith("13")}
    assert counts == {"sent": len(tokyo)} == {"sent": 126}
    assert set(addresses(mailbox.root)) == tokyo
    assert "audience: 126 addresses in 63 organisations" in out
    assert "by prefecture: 東京都 126" in out
    assert "--- as 131016 receives it, at primary@131016.lg.example" in out
    assert "Subject: 【重要】[TLP:GREEN] 都内の不審メールについて" in out
    assert "都内の不審メールについて" in html.read_text(encoding="utf-8")
    sent_subject = list_messages(mailbox.root, "primary@131016.lg.example")[0].subject
    assert sent_subject == "【重要】[TLP:GREEN] 都内の不審メールについて"
    lines = audit.stdout.splitlines()
    assert any(" suzuki " in line and " compose " in line and notice_id in line for line in lines)
    assert any(" suzuki " in line and " override " in line and "instead_of=low" in line for line in lines)


async def test_dry_run_and_a_wrong_target_publish_nothing(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    async with running(stack.settings):
        dry, dry_out, _ = await _compose(stack, "--title", "下書き", *FLAGS, "--target", "13", "--dry-run")
        wrong, _, wrong_err = await _compose(stack, "--title", "誤り", *FLAGS, "--target", "131017", "--yes")
        unknown, _, unknown_err = await _compose(
            stack, "--title", "誤り", *FLAGS, "--target", "Tokio", "--yes"
        )
        marker = await _compose(stack, "--title", "確認用", *FLAGS, "--target", "010006", "--yes")
        await stack.wait_settled(marker[1].strip().splitlines()[-1].split()[1].rstrip(";"))
    assert dry == 0 and "dry run: nothing was published" in dry_out
    assert (
        wrong == 2
        and "did you mean 131016 (東京都千代田区)?" in wrong_err
        and "nothing was published" in wrong_err
    )
    assert unknown == 2 and "did you mean tokyo" in unknown_err
    # Only the marker went out: two addresses of 北海道.
    assert sorted(addresses(mailbox.root)) == ["primary@010006.lg.example", "security@010006.lg.example"]
    assert len(await stack.store.alerts.recent(since=datetime(2000, 1, 1, tzinfo=UTC))) == 1


async def test_a_grave_alert_needs_its_confirmation_code_typed(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 3))
    code, out, err = await _compose(
        stack, "--title", "全団体へ", *FLAGS, "--target", "all", stdin=b"y\nnope\n"
    )
    declined, _, _ = await _compose(stack, "--title", "全団体へ", *FLAGS, "--target", "all", stdin=b"n\n")
    assert code == 4 and "type the confirmation code" in out and "did not match; not sent" in err
    assert declined == 4
    assert await stack.store.alerts.recent(since=datetime(2000, 1, 1, tzinfo=UTC)) == []


async def test_resend_and_cancel_do_what_they_say_and_are_audited(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    rows = subset(registry_rows, 3)
    gone = rows[1].email
    mailbox.handler.script[gone] = ["550 5.1.1 no such mailbox"]  # type: ignore[union-attr]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    env = _env(stack)
    async with running(stack.settings):
        _, out, _ = await _compose(stack, "--title", "再送の確認", *FLAGS, "--target", "01", "--yes")
        notice_id = out.strip().splitlines()[-1].split()[1].rstrip(";")
        assert await stack.wait_settled(notice_id) == {"sent": 5, "failed": 1}
        failed = await run_cli_async("resend", notice_id, "--failed", env=env)
        assert failed.stdout.strip() == "1 delivery queued again"
        assert await stack.wait_settled(notice_id) == {"sent": 6}
        again = await run_cli_async("resend", notice_id, "--address", rows[0].email, env=env)
        assert again.stdout.strip() == "1 delivery queued again"
        assert await stack.wait_settled(notice_id) == {"sent": 6}
        nothing = await run_cli_async("resend", notice_id, "--address", "nobody@x.example", env=env)
        cancelled = await run_cli_async(
            "cancel", notice_id, "--reason", "誤送信のため取り消します。", "--yes", env=env
        )
        cancel_id = cancelled.stdout.strip().split()[-1]
        assert await stack.wait_settled(cancel_id) == {"sent": 6}
        watch = await run_cli_async("status", notice_id, "--watch", env=env)
        report = await run_cli_async("report", notice_id, "--csv", str(tmp_path / "r.csv"), env=env)
        listing = await run_cli_async("alerts", "--since", "1h", env=env)
        audit = await run_cli_async("audit", "--since", "1h", env=env)
    first = list_messages(mailbox.root, rows[0].email)
    assert [e.message_id for e in first][:2] == [first[0].message_id] * 2  # the resend kept its Message-ID
    assert count(mailbox.root, gone) == 2  # after the resend, then the cancellation
    assert nothing.returncode == 1 and "has no delivery to nobody@x.example" in nothing.stderr
    assert all("【取消】" in list_messages(mailbox.root, a)[-1].subject for a in addresses(mailbox.root))
    assert "[##############################] 6/6  sent 6" in watch.stdout.splitlines()
    table = list(csv.reader(io.StringIO((tmp_path / "r.csv").read_text(encoding="utf-8"))))
    assert table[0][:5] == ["code", "organisation", "address", "role", "state"] and len(table) == 7
    assert report.returncode == 0
    assert "再送の確認" in listing.stdout and "取消: 再送の確認" in listing.stdout
    actions = [line.split()[3] for line in audit.stdout.splitlines()]
    assert actions == ["compose", "resend", "resend", "cancel"]  # a refused resend did nothing
    assert all(" suzuki " in line for line in audit.stdout.splitlines())


async def test_an_unknown_alert_is_named_with_the_closest_ones(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    async with running(stack.settings):
        _, out, _ = await _compose(stack, "--title", "近いもの", *FLAGS, "--target", "all", "--yes")
        notice_id = out.strip().splitlines()[-1].split()[1].rstrip(";")
        await stack.wait_settled(notice_id)
    alert = await stack.store.alerts.resolve(notice_id)
    typo = alert.id[:-1] + ("0" if alert.id[-1] != "0" else "1")
    result = await run_cli_async("cancel", typo, "--yes", env=_env(stack))
    assert result.returncode == 1
    assert f"did you mean {alert.id}" in result.stderr
    assert (
        json.loads((await run_cli_async("status", alert.id, "--json", env=_env(stack))).stdout)["counts"][
            "sent"
        ]
        == 2
    )


async def test_the_operator_is_audited_before_anything_is_published(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """With the broker away, the compose is on record, then marked unpublished; nothing went out."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    down = {**_env(stack), "CEPTOAR_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    result = await run_cli_async("compose", "--title", "届かない", *FLAGS, "--target", "all", "--yes", env=down)
    assert result.returncode == 3, result.stderr
    entries = await stack.store.audit.since()
    assert [(e.operator, e.action) for e in entries] == [("suzuki", "compose"), ("suzuki", "unpublished")]
    assert entries[0].notice_id == entries[1].notice_id and entries[0].notice_id is not None
    assert entries[0].os_user and entries[0].host  # the account and machine behind the name
    assert await stack.store.alerts.recent(since=datetime(2000, 1, 1, tzinfo=UTC)) == []


async def test_an_operator_name_that_could_forge_an_audit_line_is_refused(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    forged = {**_env(stack), "CEPTOAR_OPERATOR": "suzuki\n2026-12-01 09:00:00  root  compose"}
    for args in (["compose", "--title", "偽名", *FLAGS, "--target", "all", "--yes"], ["cancel", "X", "--yes"]):
        result = await run_cli_async(*args, env=forged)
        assert result.returncode == 2
        assert "CEPTOAR_OPERATOR: 'suzuki\\n2026-12-01 09:00:00  root  compose' is not a usable" in result.stderr
    rogue = await run_cli_async("feeds", "add", "rogue", "--source", "operator", env=_env(stack))
    assert rogue.returncode == 2 and "'operator' is reserved" in rogue.stderr
    notice = stack.settings.var_dir / "op.json"
    notice.write_text(json.dumps(notice_doc(source="operator")), encoding="utf-8")
    published = await run_cli_async("publish", str(notice), env=_env(stack))
    assert published.returncode == 2 and "source 'operator' is reserved" in published.stderr
    assert await stack.store.audit.since() == []


async def test_untrusted_text_never_drives_the_operators_terminal(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """A title stored by an older release and a relay's reply, both with escapes, print as escapes."""
    from sqlalchemy import update

    from ceptoar.store.tables import alerts, deliveries

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    stored = await stack.store_alert(notice_doc(id="ESC-1"), published=True)
    hostile = "表題\x1b[2J\x1b]0;pwned\x07\u202eevil\x9b31m"
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(alerts).values(title=hostile))
        await conn.execute(update(deliveries).values(state="failed", last_code=550, last_reply=f"5.1.1 {hostile}"))
    env = _env(stack)
    outputs = {
        "status": await run_cli_async("status", "ESC-1", env=env),
        "status --json": await run_cli_async("status", "ESC-1", "--json", env=env),
        "alerts": await run_cli_async("alerts", env=env),
        "report": await run_cli_async("report", "ESC-1", env=env),
    }
    for name, result in outputs.items():
        assert result.returncode == 0, (name, result.stderr)
        for raw in ("\x1b", "\x07", "\u202e", "\x9b"):
            assert raw not in result.stdout, (name, raw)
    assert "表題\\x1b[2J\\x1b]0;pwned\\x07\\u202eevil\\x9b31m" in outputs["status"].stdout
    assert json.loads(outputs["status --json"].stdout)["title"] == hostile  # escaped, not lost
    assert "5.1.1 表題\\x1b[2J" in outputs["report"].stdout
    assert stored.alert_id in outputs["alerts"].stdout


async def test_the_dry_run_says_what_each_target_reaches(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    code, out, err = await _compose(
        stack, "--title", "範囲の確認", *FLAGS, "--target", "東京都", "--target", "140007", "--dry-run"
    )
    assert code == 0, err
    assert "13 = 東京都, the whole prefecture: its government and municipalities (63 in all)" in out
    assert "140007 = 神奈川県 alone (one organisation)" in out
    assert "audience: 128 addresses in 64 organisations" in out


async def test_a_red_alert_is_released_only_to_the_addresses_named_and_audited(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    first_org, third_org = rows[0].code, rows[4].code
    named = rows[3].email  # a primary address, named on purpose
    stack = await make_stack(mailbox=mailbox, rows=rows)
    env = _env(stack)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="RED-REL", tlp="RED", title="限定共有"))
        async with asyncio.timeout(60):  # the dispatcher holds it within a minute, or the test fails
            while True:
                try:
                    if (await stack.store.alerts.resolve("RED-REL")).state == "held":
                        break
                except LookupError:
                    pass
                await asyncio.sleep(0.05)
        refused = await run_cli_async("release", "RED-REL", "--yes", env=env)
        dry = await run_cli_async("release", "RED-REL", "--to", first_org, "--dry-run", env=env)
        done = await run_cli_async("release", "RED-REL", "--to", first_org, "--to", named, "--yes", env=env)
        assert done.returncode == 0, done.stderr
        counts = await stack.wait_settled("RED-REL")
        again = await run_cli_async("release", "RED-REL", "--to", third_org, "--yes", env=env)
    assert refused.returncode == 2 and "TLP:RED goes only to addresses an operator names" in refused.stderr
    assert dry.returncode == 0 and "dry run: nothing was released" in dry.stdout
    assert counts == {"sent": 2}
    contact = next(r.email for r in rows if r.code == first_org and r.contact)
    assert sorted(addresses(mailbox.root)) == sorted([contact, named])
    assert again.returncode == 2 and "is active, not held" in again.stderr
    entries = [e for e in await stack.store.audit.since() if e.action == "release"]
    assert len(entries) == 1 and entries[0].operator == "suzuki" and entries[0].detail["deliveries"] == 2
    alert = await stack.store.alerts.resolve("RED-REL")
    assert alert.released_by == "suzuki"


async def test_prune_deletes_old_events_and_receipts_but_never_alerts_or_audit(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from ceptoar.store.tables import alerts, audit, delivery_events, receipts

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    old = await stack.store_alert(notice_doc(id="OLD-1"), published=True)
    await stack.store_alert(notice_doc(id="NEW-1"), published=True)
    await stack.store.feeds.receive(source="nisc", source_id="OLD-1", fmt="json", feed="nisc")
    await stack.store.feeds.published(source="nisc", source_id="OLD-1")
    await stack.store.feeds.receive(source="nisc", source_id="NEW-1", fmt="json", feed="nisc")
    long_ago = datetime.now(UTC) - timedelta(days=100)
    async with stack.store.engine.begin() as conn:
        await conn.execute(
            update(delivery_events).where(delivery_events.c.delivery_id.in_(old.delivery_ids)).values(at=long_ago)
        )
        await conn.execute(update(receipts).where(receipts.c.source_id == "OLD-1").values(received_at=long_ago))
    env = _env(stack)
    dry = await run_cli_async("prune", "--older-than", "90d", "--dry-run", env=env)
    done = await run_cli_async("prune", "--older-than", "90d", "--yes", env=env)
    assert dry.returncode == 0 and "2 delivery events, 1 receipts" in dry.stdout, dry.stderr
    assert done.returncode == 0 and "deleted 2 delivery events, 1 receipts and 0 returned messages" in done.stdout, done.stderr
    async with stack.store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(delivery_events))).scalar_one() == 2
        assert (await conn.execute(select(func.count()).select_from(alerts))).scalar_one() == 2
        assert (await conn.execute(select(receipts.c.source_id))).scalars().all() == ["NEW-1"]
        assert (await conn.execute(select(audit.c.action))).scalars().all() == ["prune"]
    assert (await stack.store.deliveries.get(old.delivery_ids[0])) is not None  # the delivery keeps its state
