"""The SMTP pool against a real SMTP server: replies become outcomes of the right type."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from ceptoar.errors import ConfigError, PermanentDeliveryError, TemporaryDeliveryError
from ceptoar.mail import SmtpPool
from ceptoar.mail.pool import _crlf_lines, _dot_stuffed
from ceptoar.mailbox import count, list_messages, read_message
from tests.harness import FaultyMailbox, MailboxServer, free_port

MESSAGE = b"From: a@ceptoar.example\r\nSubject: t\r\nMessage-ID: <x@c>\r\n\r\nbody\r\n"


def _pool(url: str, size: int = 2) -> SmtpPool:
    return SmtpPool(url, size=size, timeout=5, helo_name="ceptoar.example")


async def test_accepted_mail_is_stored_and_reply_returned(mailbox: MailboxServer) -> None:
    pool = _pool(mailbox.url)
    reply = await pool.send(sender="a@ceptoar.example", recipient="p@131016.lg.example", message=MESSAGE)
    await pool.close()
    assert reply.code == 250 and "stored as" in reply.message
    assert count(mailbox.root, "p@131016.lg.example") == 1
    assert list_messages(mailbox.root, "P@131016.lg.example")[0].message_id == "<x@c>"


BODIES = [
    b".\r\n..\r\n.hidden\r\nend\r\n",  # lines that begin with periods
    b"no CRLF after the last line\r\n.",
    b"bare\nLF\r\n.and a lone\rCR\n",  # not in CRLF lines: sent by aiosmtplib's own DATA
    b"\r\n.\r\n.\r\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_dot_stuffing_is_what_aiosmtplib_would_send(body: bytes) -> None:
    message = b"Subject: t\r\n\r\n" + body
    assert _crlf_lines(message) == (b"bare" not in body)
    if _crlf_lines(message):
        assert _dot_stuffed(message) == PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@pytest.mark.parametrize("body", BODIES)
async def test_lines_that_begin_with_a_period_arrive_as_written(mailbox: MailboxServer, body: bytes) -> None:
    message = b"From: a@ceptoar.example\r\nSubject: t\r\nMessage-ID: <dots@c>\r\n\r\n" + body
    pool = _pool(mailbox.url)
    await pool.send(sender="a@ceptoar.example", recipient="dots@x.example", message=message)
    await pool.close()
    got = read_message(mailbox.root, "dots@x.example", 1).get_payload()
    assert isinstance(got, str)
    lines = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode()
    assert got.replace("\r\n", "\n").rstrip("\n") == lines.rstrip("\n")


async def test_4xx_is_temporary_and_5xx_permanent_with_the_reply(mailbox: MailboxServer) -> None:
    assert isinstance(mailbox.handler, FaultyMailbox)  # the replies below are scripted on it
    mailbox.handler.script.update(
        {"busy@x.example": ["451 4.3.0 Mailbox busy"], "gone@x.example": ["550 5.1.1 No such user"]}
    )
    pool = _pool(mailbox.url, size=1)
    with pytest.raises(TemporaryDeliveryError) as temp:
        await pool.send(sender="a@ceptoar.example", recipient="busy@x.example", message=MESSAGE)
    with pytest.raises(PermanentDeliveryError) as perm:
        await pool.send(sender="a@ceptoar.example", recipient="gone@x.example", message=MESSAGE)
    # The session survives negative replies and is reused.
    await pool.send(sender="a@ceptoar.example", recipient="busy@x.example", message=MESSAGE)
    await pool.close()
    assert (temp.value.code, temp.value.reply) == (451, "4.3.0 Mailbox busy")
    assert (perm.value.code, perm.value.reply) == (550, "5.1.1 No such user")
    assert count(mailbox.root, "busy@x.example") == 1
    assert count(mailbox.root, "gone@x.example") == 0


@pytest.mark.parametrize(
    "recipient",
    ["no-at-sign.example", "a@b.example\r\nRCPT TO:<c@d.example>", "東京@x.example", "a b@x.example"],
)
async def test_an_address_that_cannot_go_on_the_rcpt_line_is_permanent(
    mailbox: MailboxServer, recipient: str
) -> None:
    pool = _pool(mailbox.url, size=1)
    with pytest.raises(PermanentDeliveryError, match="cannot send to"):
        await pool.send(sender="a@ceptoar.example", recipient=recipient, message=MESSAGE)
    await pool.send(sender="a@ceptoar.example", recipient="ok@x.example", message=MESSAGE)
    await pool.close()
    assert count(mailbox.root) == 1


async def test_open_makes_every_session_ahead_of_the_first_send(mailbox: MailboxServer) -> None:
    pool = SmtpPool(mailbox.url, size=2, reserved=1, timeout=5, helo_name="ceptoar.example")
    assert await pool.open() is None
    opened = list(pool._idle)
    await pool.send(sender="a@ceptoar.example", recipient="p@x.example", message=MESSAGE)
    assert len(opened) == 3 and set(pool._idle) == set(opened)  # the send used one of them
    await pool.close()


async def test_open_names_a_relay_it_cannot_reach() -> None:
    pool = _pool(f"smtp://127.0.0.1:{free_port()}")
    assert "relay 127.0.0.1" in (await pool.open() or "")
    assert pool._idle == []


async def test_unreachable_relay_is_temporary() -> None:
    pool = _pool(f"smtp://127.0.0.1:{free_port()}")
    with pytest.raises(TemporaryDeliveryError, match=r"relay 127\.0\.0\.1"):
        await pool.send(sender="a@ceptoar.example", recipient="p@x.example", message=MESSAGE)


async def test_concurrent_sends_share_a_bounded_pool(mailbox: MailboxServer) -> None:
    pool = _pool(mailbox.url, size=3)
    await asyncio.gather(
        *(
            pool.send(sender="a@ceptoar.example", recipient=f"r{i}@x.example", message=MESSAGE)
            for i in range(30)
        )
    )
    idle = len(pool._idle)
    await pool.close()
    assert count(mailbox.root) == 30
    assert idle <= 3


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="smtp_url"):
        _pool("http://127.0.0.1:25")
