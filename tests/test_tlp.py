"""TLP 2.0 holds for every kind of mail: each kind at each level, counted in the real mailboxes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ceptoar.mailbox import list_messages
from ceptoar.mailbox.maildir import addresses
from ceptoar.model.tlp import tlp_withholds
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, cli_env, notice_doc, run_cli_async, running, subset

LEVELS = ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]


def _registry(registry_rows: list[RegistryRow]) -> list[RegistryRow]:
    """Three organisations (a primary and a designated security contact each), a second
    security address that is not the contact, and a backup address."""
    rows = subset(registry_rows, 3)
    a, b = rows[0], rows[2]
    return [
        *rows,
        RegistryRow(a.code, a.name, f"soc@{a.code}.lg.example", "security"),
        RegistryRow(b.code, b.name, f"backup@{b.code}.lg.example", "backup"),
    ]


def _allowed(rows: list[RegistryRow], tlp: str) -> set[str]:
    return {r.email for r in rows if tlp_withholds(tlp, role=r.role, contact=r.contact) is None}


def _got(mailbox: MailboxServer, title: str) -> set[str]:
    return {a for a in addresses(mailbox.root) if any(title in e.subject for e in list_messages(mailbox.root, a))}


async def _settle(stack: Stack, doc: dict[str, object]) -> None:
    await stack.publish(doc)
    await stack.wait_settled(str(doc["id"]))


def test_the_gate_by_level_and_role() -> None:
    assert tlp_withholds("CLEAR", role="primary", contact=False) is None
    assert tlp_withholds("GREEN", role="backup", contact=False) is None
    assert tlp_withholds("AMBER", role="security", contact=False) is None
    assert tlp_withholds("AMBER", role="primary", contact=True) == "tlp-amber-needs-security-role"
    assert tlp_withholds("AMBER+STRICT", role="security", contact=True) is None
    assert tlp_withholds("AMBER+STRICT", role="security", contact=False) == "tlp-amber-strict-needs-contact"
    assert tlp_withholds("RED", role="security", contact=True) == "tlp-red"


@pytest.mark.parametrize("tlp", LEVELS)
async def test_alert_update_and_cancel_each_reach_only_whom_their_tlp_allows(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tlp: str
) -> None:
    rows = _registry(registry_rows)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    everyone, allowed = {r.email for r in rows}, _allowed(rows, tlp)
    assert len(everyone) == 8 and len(allowed) == {"CLEAR": 8, "GREEN": 8, "AMBER": 4, "AMBER+STRICT": 3}.get(
        tlp, 0
    )
    async with running(stack.settings):
        await _settle(stack, notice_doc(id="A-1", tlp=tlp, title="警報の本文"))
        # An update and a cancel at this level, each of an alert every address got.
        await _settle(stack, notice_doc(id="O-1", title="元の通知その一"))
        await _settle(
            stack,
            notice_doc(id="U-1", tlp=tlp, msg_type="update", references=["O-1"], title="続報の本文"),
        )
        await _settle(stack, notice_doc(id="O-2", title="元の通知その二"))
        await _settle(
            stack,
            notice_doc(
                id="C-1",
                tlp=tlp,
                msg_type="cancel",
                references=["O-2"],
                title="取消の本文",
                summary="限定共有の理由を含む取消の説明",
            ),
        )
    assert _got(mailbox, "元の通知その一") == _got(mailbox, "元の通知その二") == everyone
    assert _got(mailbox, "警報の本文") == allowed
    assert _got(mailbox, "続報の本文") == allowed
    assert _got(mailbox, "取消の本文") == allowed


async def test_a_resend_to_an_address_that_lost_its_role_is_withheld(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = _registry(registry_rows)
    soc = next(r for r in rows if r.email.startswith("soc@"))
    contact = next(r for r in rows if r.contact)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    env = cli_env(stack.settings)
    async with running(stack.settings):
        await _settle(stack, notice_doc(id="AMB-1", tlp="AMBER", title="限定の警報"))
        await stack.store.subscribers.import_rows([replace(soc, role="primary")])
        for address in (soc.email, contact.email):
            done = await run_cli_async("resend", "AMB-1", "--address", address, env=env)
            assert done.returncode == 0, done.stderr
        await stack.wait_settled("AMB-1")
    assert len(list_messages(mailbox.root, soc.email)) == 1  # the first mail, while it was a security address
    assert len(list_messages(mailbox.root, contact.email)) == 2  # resent
    alert = await stack.store.alerts.resolve("AMB-1")
    row = await stack.store.deliveries.find(alert.id, soc.email)
    assert row is not None and row["state"] == "cancelled"
    assert row["last_reply"] == "not sent: TLP:AMBER reaches only addresses with the security role"
