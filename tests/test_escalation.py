"""Escalation: silent organisations reminded at the deadline, backup addresses sent the alert, once each.

The first test runs the service with deadlines of seconds and watches the
sweeper escalate; the second starts several `ceptoar escalate` processes at
once against PostgreSQL and counts one reminder per organisation.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from ceptoar.mailbox import list_messages, read_message
from ceptoar.model.answer import Answer
from ceptoar.model.escalation import Step, due_steps
from ceptoar.model.states import DeliveryState
from ceptoar.registry import RegistryRow
from ceptoar.store.tables import audit, deliveries, escalations
from tests.conftest import StackFactory
from tests.harness import MailboxServer, cli_env, notice_doc, run_cli_async, running, subset

# Deadlines in minutes: reminded after 3 s, listed for a call after 6 s.
REMIND, CALL = {"high": 0.05}, {"high": 0.1}


def test_steps_fall_due_at_their_deadlines_and_only_for_the_severities_named() -> None:
    made = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    remind, call = {"critical": 30.0, "high": 240.0}, {"critical": 60.0, "high": 480.0}

    def due(severity: str, minutes: float) -> list[Step]:
        return due_steps(
            severity, made, made + timedelta(minutes=minutes), remind_after=remind, call_after=call
        )

    assert due("critical", 29.9) == [] and due("critical", 30) == [Step.REMINDED]
    assert due("critical", 60) == [Step.REMINDED, Step.CALL]
    assert due("high", 239) == [] and due("high", 480) == [Step.REMINDED, Step.CALL]
    assert due("medium", 10_000) == []


def _with_backups(rows: list[RegistryRow]) -> list[RegistryRow]:
    """The rows with a backup address per organisation, subscribed to critical alerts only."""
    codes = {r.code: r.name for r in rows}
    backups = [
        RegistryRow(code, name, f"backup@{code}.lg.example", "backup", min_severity="critical")
        for code, name in codes.items()
    ]
    return rows + backups


async def test_silent_organisations_are_reminded_at_the_deadline_and_their_backups_get_the_alert(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = _with_backups(subset(registry_rows, 3))
    stack = await make_stack(mailbox=mailbox, rows=rows, escalate_after=REMIND, call_after=CALL)
    env = cli_env(stack.settings)
    answering, *silent = sorted({r.code for r in rows})
    async with running(stack.settings):
        await stack.publish(notice_doc(id="ESC-1", severity="high"))
        await stack.wait_settled("ESC-1")
        alert = await stack.store.alerts.resolve("ESC-1")
        assert alert.severity == "high"
        # The backup addresses take critical alerts only: they hear of this one by escalation.
        assert await stack.store.alerts.counts(alert.id) == {"sent": 6}
        assert not any(
            list_messages(mailbox.root, f"backup@{code}.lg.example") for code in (answering, *silent)
        )
        primary = await stack.store.deliveries.find(alert.id, f"primary@{answering}.lg.example")
        assert primary is not None
        target = await stack.store.answers.target(primary["id"])
        assert target is not None
        await stack.store.answers.record(target, Answer.NOT_AFFECTED, via="link")
        assert await stack.store.escalations.counts(alert.id) == {}  # before the deadline: nothing

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            sent = await stack.store.alerts.counts(alert.id, purpose="reminder")
            backups = await stack.store.alerts.counts(alert.id, purpose="backup")
            steps = await stack.store.escalations.counts(alert.id)
            if sent == {"sent": 4} and backups == {"sent": 2} and steps.get("call") == 2:
                break
            await asyncio.sleep(0.2)
        status = json.loads((await run_cli_async("status", "ESC-1", "--json", env=env)).stdout)
        listed = await run_cli_async("escalate", "ESC-1", "--list", env=env)
        # A resend to one address sends it the alert again, not the reminder it got since.
        again = f"primary@{silent[0]}.lg.example"
        resent = await run_cli_async("resend", "ESC-1", "--address", again, env=env)
        assert resent.returncode == 0, resent.stderr
        for _ in range(100):
            if len(list_messages(mailbox.root, again)) >= 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # a reminder sent again would arrive with it

    assert steps == {"reminded": 2, "call": 2}, steps
    assert sent == {"sent": 4} and backups == {"sent": 2}
    for row in await stack.store.escalations.listed(alert.id):
        due = alert.created_at + timedelta(minutes=(REMIND if row.step == "reminded" else CALL)["high"])
        assert row.at >= due and row.code in silent and row.by == "sweeper" and row.answer is None
    resent_subjects = [m.subject for m in list_messages(mailbox.root, again)]
    assert len(resent_subjects) == 3 and resent_subjects[2] == resent_subjects[0]  # the alert, again
    for code in silent:
        for role in ("primary", "security"):
            address = f"{role}@{code}.lg.example"
            assert len(list_messages(mailbox.root, address)) == (3 if address == again else 2)
            first, reminder = read_message(mailbox.root, address, 1), read_message(mailbox.root, address, 2)
            assert str(reminder["Subject"]).startswith("【回答のお願い】")
            assert (
                reminder["In-Reply-To"] == first["Message-ID"] and reminder["Reply-To"] != first["Reply-To"]
            )
        (backup,) = [read_message(mailbox.root, f"backup@{code}.lg.example", 1)]
        assert str(backup["Subject"]).startswith("【予備連絡先】")
    for role in ("primary", "security", "backup"):
        assert len(list_messages(mailbox.root, f"{role}@{answering}.lg.example")) == (role != "backup")
    assert status["counts"]["sent"] == 5 and status["counts"]["acknowledged"] == 1  # the alert's own mail
    orgs = status["organisations"]
    assert orgs["escalated"] == 2 and orgs["to_call"] == 2 and orgs["silent"] == 2
    assert (
        listed.stdout.count("still silent") == 4 and "reminded" in listed.stdout and "call" in listed.stdout
    )


@pytest.mark.postgres
async def test_several_processes_escalating_at_once_send_one_reminder_per_organisation(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    rows = subset(registry_rows, 20)
    stack = await make_stack(mailbox=mailbox, rows=rows, database_url=pg_url)
    env = cli_env(stack.settings)
    stored = await stack.store_alert(notice_doc(id="ESC-PG"), published=True, severity="high")
    await stack.store.subscribers.import_rows(_with_backups(rows))  # backup addresses, as the fan-out skips them
    async with stack.store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.alert_id == stored.alert_id)
            .values(state=DeliveryState.SENT.value, sent_at=datetime.now(UTC))
        )

    dry = await run_cli_async("escalate", "ESC-PG", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "20 organisations would be reminded" in dry.stdout and dry.stdout.count("backup@") == 20
    assert await stack.store.escalations.counts(stored.alert_id) == {}

    runs = await asyncio.gather(*(run_cli_async("escalate", "ESC-PG", env=env) for _ in range(4)))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    told = [int(r.stdout.split(": ")[1].split()[0]) for r in runs]
    assert sum(told) == 20  # each organisation escalated by exactly one of them
    async with stack.store.engine.connect() as conn:
        per_org = await conn.execute(
            select(escalations.c.subscriber_code, func.count()).group_by(escalations.c.subscriber_code)
        )
        assert sorted(n for _, n in per_org.all()) == [1] * 20
        by_purpose = await conn.execute(
            select(deliveries.c.purpose, func.count())
            .where(deliveries.c.alert_id == stored.alert_id)
            .group_by(deliveries.c.purpose)
        )
        assert dict(by_purpose.all()) == {"alert": 40, "reminder": 40, "backup": 20}
        audited = await conn.execute(
            select(func.count()).select_from(audit).where(audit.c.action == "escalate")
        )
        assert audited.scalar_one() == sum(1 for n in told if n)
    again = await run_cli_async("escalate", "ESC-PG", env=env)
    assert "0 organisations were reminded" in again.stdout
