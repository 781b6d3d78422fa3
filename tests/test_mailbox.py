"""The built-in mailbox keeps every message inside its directory, and says nothing of where that is."""

from __future__ import annotations

from pathlib import Path

import aiosmtplib
from hypothesis import given
from hypothesis import strategies as st

from ceptoar.mailbox import count
from ceptoar.mailbox.maildir import mailbox_path
from tests.harness import MailboxServer

ROOT = Path("/srv/mailbox")


@given(st.text(max_size=400))
def test_every_address_has_its_mailbox_right_under_the_root(address: str) -> None:
    path = mailbox_path(ROOT, address)
    assert path.parent == ROOT
    assert path.name not in ("", ".", "..") and "/" not in path.name
    assert len(path.name.encode()) <= 255


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _session(mailbox: MailboxServer) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mailbox.port)
    await client.connect()
    await client.ehlo()
    return client


async def test_a_recipient_that_is_no_plain_address_is_refused_and_nothing_leaves_the_root(
    mailbox: MailboxServer, tmp_path: Path
) -> None:
    assert mailbox.root.parent == tmp_path
    before = _names(tmp_path)
    client = await _session(mailbox)
    try:
        for rcpt in (b"TO:<..>", b"TO:<.>", b'TO:<"..">', b"TO:<../../etc@x>"):
            await client.execute_command(b"MAIL", b"FROM:<a@ceptoar.example>")
            reply = await client.execute_command(b"RCPT", rcpt)
            assert reply.code == 553, (rcpt, reply)
            await client.rset()
        # Dots that do make an address are filed inside the root.
        await client.sendmail("a@ceptoar.example", ["..@lg.example"], b"Subject: x\r\n\r\nbody\r\n")
    finally:
        await client.quit()
    assert _names(tmp_path) == before
    assert count(mailbox.root, "..@lg.example") == 1
    assert mailbox_path(mailbox.root, "..@lg.example").parent == mailbox.root


async def test_a_message_that_cannot_be_stored_is_refused_without_naming_a_path(mailbox: MailboxServer) -> None:
    blocked = "blocked@lg.example"
    mailbox_path(mailbox.root, blocked).write_text("a file where the Maildir should be")
    client = await _session(mailbox)
    try:
        await client.execute_command(b"MAIL", b"FROM:<a@ceptoar.example>")
        await client.execute_command(b"RCPT", f"TO:<{blocked}>".encode())
        reply = await client.data(b"Subject: x\r\n\r\nbody\r\n")
    except aiosmtplib.SMTPDataError as exc:
        reply = aiosmtplib.SMTPResponse(exc.code, exc.message)
    finally:
        await client.quit()
    assert reply.code == 451
    assert str(mailbox.root) not in reply.message and "/" not in reply.message
