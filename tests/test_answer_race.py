"""Answers that race the sends: 1,000 organisations answer by link and 100 by reply during a fan-out.

`ceptoar serve` fans a notice out to all 3,576 addresses through a relay
that takes its time, and as each organisation's primary address receives
its mail, the organisation answers at once: 1,000 by the link in the mail,
100 by replying to it. Many answers arrive while their delivery is still
`sending` (the relay has accepted it, its outcome is not stored yet). Each
answer is recorded once, and every delivery keeps its send record: the
time, the relay's code and reply.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import suppress
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
from sqlalchemy import func, select

from ceptoar.mailbox import list_messages, read_message
from ceptoar.mailbox.dsn import answer_reply
from ceptoar.registry import RegistryRow
from ceptoar.store.tables import answers, deliveries, delivery_events
from tests.conftest import StackFactory
from tests.harness import MailboxServer, api_running, cli_env, free_port, notice_doc, serving

pytestmark = pytest.mark.postgres

PUBLIC_URL = "https://ceptoar.lg.example/alerts"
BY_LINK, BY_REPLY = 1000, 100
ANSWERING_AT_ONCE = 50


def _link_path(mail: EmailMessage) -> str:
    text = next(mail.iter_parts()).get_content()
    found = re.findall(re.escape(PUBLIC_URL) + r"(/answer/[0-9a-f-]+)", text)
    assert found, "the alert mail carries its answer link"
    return str(found[0])


async def _when_mailed(mailbox: MailboxServer, email: str, *, within: float = 120) -> EmailMessage:
    for _ in range(int(within / 0.02)):
        with suppress(FileNotFoundError):  # the mailbox is being made as the first mail is filed
            if list_messages(mailbox.root, email):
                return read_message(mailbox.root, email, 1)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{email} never got the alert")


async def test_a_thousand_answers_by_link_and_a_hundred_by_reply_during_the_fan_out_keep_every_send(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    returns = free_port()
    mailbox.handler.delay = 0.01  # type: ignore[union-attr]
    stack = await make_stack(
        mailbox=mailbox, rows=registry_rows, database_url=pg_url, public_url=PUBLIC_URL, bounce_port=returns
    )
    primaries = sorted(r.email for r in registry_rows if r.role == "primary")
    by_link, by_reply = primaries[:BY_LINK], primaries[BY_LINK : BY_LINK + BY_REPLY]
    turn = asyncio.Semaphore(ANSWERING_AT_ONCE)
    statuses: list[int] = []

    async def answer_by_link(http: httpx.AsyncClient, email: str) -> None:
        mail = await _when_mailed(mailbox, email)
        async with turn:
            statuses.append((await http.post(_link_path(mail), data={"answer": "not_affected"})).status_code)

    async def answer_by_reply(email: str) -> None:
        to, reply = answer_reply(await _when_mailed(mailbox, email), address=email, first_line="影響なし")
        async with turn, aiosmtplib.SMTP(hostname="127.0.0.1", port=returns) as relay:
            await relay.sendmail(email, [to], reply)

    env = cli_env(stack.settings)
    async with serving(env, "--mailers", "2"), api_running(stack.settings) as base:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            await stack.publish(notice_doc(id="RACE-ALL"))
            await asyncio.gather(
                *(answer_by_link(http, e) for e in by_link), *(answer_by_reply(e) for e in by_reply)
            )
        counts = await stack.wait_settled("RACE-ALL", within=180)
        # Replies are taken in by serve: wait until each is kept.
        for _ in range(600):
            async with stack.store.engine.connect() as conn:
                kept = (await conn.execute(select(func.count()).select_from(answers))).scalar_one()
            if kept >= BY_LINK + BY_REPLY:
                break
            await asyncio.sleep(0.1)

    assert statuses == [200] * BY_LINK
    assert counts == {"sent": 3576 - BY_LINK - BY_REPLY, "acknowledged": BY_LINK + BY_REPLY}
    async with stack.store.engine.connect() as conn:
        per_org = (
            await conn.execute(select(answers.c.subscriber_code, func.count()).group_by(answers.c.subscriber_code))
        ).all()
        unsent = (
            await conn.execute(
                select(func.count()).where(
                    (deliveries.c.sent_at.is_(None)) | (deliveries.c.last_code != 250) | deliveries.c.last_reply.is_(None)
                )
            )
        ).scalar_one()
        raced = (
            await conn.execute(
                select(func.count()).where(delivery_events.c.smtp_reply == "answered while it was being sent")
            )
        ).scalar_one()
    assert len(per_org) == BY_LINK + BY_REPLY and {n for _, n in per_org} == {1}, "each answer kept once"
    assert unsent == 0, f"{unsent} deliveries lost their send record"
    print(f"\n{raced} of {BY_LINK + BY_REPLY} answers arrived while their delivery was being sent")
