"""Roles: hosts that run only some parts of the service, once-per-tick work on one host, SQLite single-host."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from ceptoar.bus import Lane, job_delivery_ids
from ceptoar.mailbox import count
from ceptoar.registry import RegistryRow
from ceptoar.runtime import open_components
from ceptoar.service import DEFAULT_ROLES, Role, parse_roles, tick
from ceptoar.store.tables import deliveries
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, cli_env, free_port, notice_doc, run_cli_async, serving, subset


def test_roles_are_read_from_a_list_and_a_wrong_one_is_named() -> None:
    assert parse_roles("dispatcher, Mailer") == {Role.DISPATCHER, Role.MAILER}
    assert parse_roles("all") == set(Role)
    assert Role.API not in DEFAULT_ROLES
    with pytest.raises(ValueError, match=r"not a role: cook \(roles: dispatcher, mailer, sweeper"):
        parse_roles("dispatcher,cook")


@pytest.mark.postgres
async def test_two_mailer_hosts_and_a_dispatcher_host_send_every_address_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows, database_url=pg_url)
    env = cli_env(stack.settings)
    # The dispatcher's host has no relay to reach: it must not need one.
    nowhere = {**env, "CEPTOAR_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    async with (
        serving(nowhere, "--role", "dispatcher,sweeper") as dispatching,
        serving(env, "--role", "mailer", "--mailers", "1") as one,
        serving(env, "--role", "mailer", "--mailers", "1") as other,
    ):
        assert (dispatching["roles"], dispatching["relay"], dispatching["mailer_processes"]) == (
            ["dispatcher", "sweeper"], None, 0,
        )  # fmt: skip
        assert one["roles"] == other["roles"] == ["mailer"]
        await stack.publish(notice_doc(id="ROLES-1", area=[]))
        assert await stack.wait_settled("ROLES-1", within=300) == {"sent": 3576}
        # A critical alert: without a mailer beside it, the dispatcher hands nothing off; jobs carry it all.
        tokyo = [r for r in registry_rows if r.code.startswith("13")]
        await stack.publish(notice_doc(id="ROLES-2", area=["13"], title="【緊急】至急対応", severity="critical"))
        assert await stack.wait_settled("ROLES-2") == {"sent": len(tokyo)}
    # Each address got each alert once: one claim per delivery, one message per mailbox and alert.
    for alert in ("ROLES-1", "ROLES-2"):
        rows = await stack.store.deliveries.report((await stack.store.alerts.resolve(alert)).id)
        assert {r["attempts"] for r in rows} == {1}
    assert count(mailbox.root) == 3576 + len(tokyo)
    assert {count(mailbox.root, r.email) for r in tokyo} == {2}


async def test_a_second_serve_on_one_sqlite_file_is_refused_with_a_message(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    env = cli_env(stack.settings)
    async with serving(env, "--mailers", "1"):
        second = await run_cli_async("serve", "--role", "sweeper", env=env, within=60)
    assert second.returncode == 4
    assert "is already served by another ceptoar serve (pid" in second.stderr
    assert "SQLite is single-host" in second.stderr and "PostgreSQL" in second.stderr
    assert "Traceback" not in second.stderr


@pytest.mark.postgres
async def test_the_sweep_is_done_by_one_host_of_several(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 5), database_url=pg_url)
    stored = await stack.store_alert(notice_doc(id="SWEPT"), published=True, claim=10)
    # Ten deliveries left `sending` by a mailer that died: each sweep that acts publishes their jobs.
    async with stack.store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.alert_id == stored.alert_id)
            .values(lease_until=datetime.now(UTC) - timedelta(minutes=1))
        )
    async with AsyncExitStack() as hosts:
        one = await open_components(stack.settings, hosts, name="host-one")
        other = await open_components(stack.settings, hosts, name="host-other")
        roles = {Role.SWEEPER, Role.ESCALATOR}
        async with one.store.exclusive("sweeper") as mine:
            assert mine
            assert await tick(other, roles) == {"sweeper": False, "escalator": True, "digest": True}
            assert await _jobs(stack) == []  # the other host did not sweep
        async with one.store.exclusive("digest") as mine:
            assert mine
            assert await tick(other, roles) == {"sweeper": True, "escalator": True, "digest": False}
        assert sorted(await _jobs(stack)) == sorted(d.id for d in stored.claimed)
        assert await tick(other, roles) == {"sweeper": True, "escalator": True, "digest": True}
        async with one.store.exclusive("sweeper") as mine:
            assert mine  # let go by the other host's tick


async def _jobs(stack: Stack) -> list[int]:
    """The delivery ids of the job messages waiting in the bulk lane's queue (taken off it)."""
    channel = await stack.bus._connection.channel()  # type: ignore[union-attr]
    queue = await channel.get_queue(stack.bus.names.jobs(Lane.BULK))
    ids: list[int] = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        ids += job_delivery_ids(message.body)
    await channel.close()
    return ids


@pytest.mark.postgres
async def test_four_serves_started_at_the_same_instant_all_come_up_and_deliver_ten_times_over(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], pg_url: str
) -> None:
    rows = subset(registry_rows, 2)
    stack = await make_stack(mailbox=mailbox, rows=rows, database_url=pg_url)
    env = cli_env(stack.settings)
    for round_ in range(10):
        # Each declares the same exchanges and queues, opens its consumers and starts its mailer at once.
        starts = [serving(env, "--mailers", "1") for _ in range(4)]
        entered = await asyncio.gather(*(s.__aenter__() for s in starts), return_exceptions=True)
        try:
            failed = [e for e in entered if isinstance(e, BaseException)]
            assert not failed, f"round {round_}: {failed}"
            notice = f"FOUR-{round_}"
            await stack.publish(notice_doc(id=notice, area=[]))
            assert await stack.wait_settled(notice) == {"sent": len(rows)}, f"round {round_}"
        finally:
            for s, e in zip(starts, entered, strict=True):
                if not isinstance(e, BaseException):
                    await s.__aexit__(None, None, None)
    assert count(mailbox.root) == 10 * len(rows)
