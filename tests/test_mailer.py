"""The mailer: one delivery's failure is that delivery's, never its batch's."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from ceptoar.mailbox import count, list_messages
from ceptoar.registry import RegistryRow
from ceptoar.retry import RetryPolicy
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, notice_doc, running, subset


def _templates_that_raise_for(tmp_path: Path, notice_id: str) -> Path:
    """The shipped templates, but rendering the notice `notice_id` raises an error nothing expects."""
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates", root)
    text = root / "ja" / "alert.txt.j2"
    text.write_text(
        f'{{% if notice.id == "{notice_id}" %}}{{{{ (notice.id | length) // 0 }}}}{{% endif %}}\n'
        + text.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    return root


async def test_a_template_that_raises_fails_its_deliveries_and_the_batch_is_sent_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    stack = await make_stack(
        mailbox=mailbox,
        rows=subset(registry_rows, 3),
        templates_dir=_templates_that_raise_for(tmp_path, "BOOM-1"),
        lease_seconds=1.0,
    )
    bad = await stack.store_alert(notice_doc(id="BOOM-1", title="壊れる通知"), published=True)
    good = await stack.store_alert(notice_doc(id="FINE-1", title="正常な通知"), published=True)
    # One job names both alerts' deliveries, so they share the mailer's batch.
    await stack.bus.publish_jobs([*bad.delivery_ids, *good.delivery_ids])
    async with running(stack.settings):
        assert await stack.wait_settled("FINE-1", within=20) == {"sent": 6}
        assert await stack.wait_settled("BOOM-1", within=20) == {"failed": 6}
        await asyncio.sleep(3)  # several leases and sweeps: nothing comes back
    for delivery_id in bad.delivery_ids:
        row = await stack.store.deliveries.get(delivery_id)
        assert row is not None and row["attempts"] == 1
        assert row["last_reply"].startswith("internal error: ZeroDivisionError")
    for r in subset(registry_rows, 3):
        assert [m.subject for m in list_messages(mailbox.root, r.email)] == ["【注意】[TLP:CLEAR] 正常な通知"]


async def test_a_delivery_whose_job_keeps_coming_back_ends_failed_unsent(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """A delivery whose worker died on each of its attempts is failed by the next claim, not sent again."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), lease_seconds=0.5)
    stored = await stack.store_alert(notice_doc(id="LOOP-1"), published=True)
    doomed, fine = stored.delivery_ids
    async with stack.store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == doomed)
            .values(
                state="sending",
                attempts=RetryPolicy.from_settings(stack.settings).max_attempts,
                lease_until=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    await stack.bus.publish_jobs([fine])
    async with running(stack.settings):  # the sweeper republishes the doomed one's job
        counts = await stack.wait_settled("LOOP-1", within=30)
    assert counts == {"sent": 1, "failed": 1}
    row = await stack.store.deliveries.get(doomed)
    assert row is not None and row["state"] == "failed"
    assert row["last_reply"] == "attempts exhausted: claimed 3 times without a recorded outcome"
    assert count(mailbox.root, row["email"]) == 0
