"""Postfix as the relay: it accepts the alert, the next hop refuses some recipients, and Postfix mails
its own DSN to each delivery's return path, where `ceptoar serve` takes it in.

The relay is a private Postfix instance (its own configuration, queue and
log under a temporary directory; the machine's own Postfix, if any, is
untouched), started with `postfix -c DIR start`. Postfix's master runs as
root, so the test needs root, as the CI machines give.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from ceptoar.mailbox.server import MaildirHandler, start_mailbox
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, free_port, notice_doc, running, subset, wait_for_port

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/postfix").exists() or os.geteuid() != 0,
    reason="needs Postfix (scripts/tools installs it) and root to start its master",
)

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
myhostname = relay.lg.example
mydomain = lg.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = lg.example, ceptoar.example
transport_maps = inline:{{ .lg.example=smtp:[127.0.0.1]:{next_hop}, ceptoar.example=smtp:[127.0.0.1]:{returns} }}
smtp_dns_support_level = disabled
maillog_file_prefixes = {root}
maillog_file = {root}/maillog
alias_maps =
alias_database =
local_recipient_maps =
biff = no
"""


@contextlib.contextmanager
def postfix(next_hop: int, returns: int) -> Iterator[tuple[int, Path]]:
    """A private Postfix listening on a free port, relaying lg.example to `next_hop` and ceptoar.example
    (the return paths) to `returns`; yields its port and its log file."""
    root = Path(tempfile.mkdtemp(prefix="ceptoar-postfix-"))
    root.chmod(0o755)  # Postfix's daemons run as the postfix user and must reach the queue
    port = free_port()
    conf = root / "conf"
    conf.mkdir()
    for name in ("queue", "data"):
        (root / name).mkdir()
        shutil.chown(root / name, user="postfix")
    (conf / "main.cf").write_text(MAIN_CF.format(root=root, next_hop=next_hop, returns=returns))
    master = Path("/etc/postfix/master.cf").read_text().splitlines()
    lines = [
        f"127.0.0.1:{port} inet n - n - - smtpd" if m.startswith("smtp ") and " inet " in m else m
        for m in master
    ]
    (conf / "master.cf").write_text("\n".join(lines) + "\n")
    started = subprocess.run(["postfix", "-c", str(conf), "start"], capture_output=True, text=True)
    log = root / "maillog"
    if started.returncode != 0:
        raise AssertionError(
            f"postfix did not start: {started.stderr}{log.read_text() if log.exists() else ''}"
        )
    try:
        yield port, log
    finally:
        subprocess.run(["postfix", "-c", str(conf), "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class NextHop(MaildirHandler):
    """An organisation's mail server: it refuses some recipients at RCPT, as for an unknown user."""

    def __init__(self, root: Path, refused: set[str]) -> None:
        super().__init__(root)
        self.refused = refused

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> Any:
        if address.lower() in self.refused:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"
        return await super().handle_RCPT(server, session, envelope, address, options)


async def test_postfix_relays_the_alert_and_its_dsn_for_a_refused_recipient_marks_that_delivery_bounced(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    rows = subset(registry_rows, 3)
    refused = {sorted(r.email for r in rows)[0]}
    hop = NextHop(tmp_path / "next-hop", refused)
    next_hop = await start_mailbox(hop, port=0)
    returns = free_port()
    stack = await make_stack(mailbox=mailbox, rows=rows, bounce_port=returns)
    try:
        with postfix(next_hop.sockets[0].getsockname()[1], returns) as (relay_port, log):
            await asyncio.to_thread(wait_for_port_sync, relay_port)
            settings = stack.settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{relay_port}"})
            async with running(settings):
                await stack.publish(notice_doc(id="POSTFIX-1"))
                alert_id = ""
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with contextlib.suppress(Exception):
                        alert_id = (await stack.store.alerts.resolve("POSTFIX-1")).id
                    if alert_id and (await stack.store.alerts.counts(alert_id)).get("bounced") == 1:
                        break
                    await asyncio.sleep(0.25)
                counts = await stack.store.alerts.counts(alert_id)
            maillog = log.read_text()
    finally:
        next_hop.close()
    assert counts == {"sent": 5, "bounced": 1}, f"{counts}\n{maillog[-3000:]}"
    assert "status=bounced" in maillog and "sender non-delivery notification" in maillog
    delivery = await stack.store.deliveries.find(alert_id, next(iter(refused)))
    assert delivery is not None and delivery["state"] == "bounced"
    (kept,) = await stack.store.returns.of_delivery(delivery["id"])
    assert kept.kind == "bounce" and kept.status == "5.1.1" and kept.matched
    assert "User unknown" in (kept.diagnostic or "") and kept.recipient == next(iter(refused))
    assert await stack.store.returns.unmatched() == []


def wait_for_port_sync(port: int) -> None:
    asyncio.run(wait_for_port(port))
