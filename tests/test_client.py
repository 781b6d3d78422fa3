"""The feed's client (`ceptoar.client.Publisher`, pika) against the running RabbitMQ.

Each test has its own prefix; the topology is declared by ceptoar's own bus,
as `ceptoar serve` declares it, and what arrived is read back from the
notices queue.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from ceptoar.bus import Bus
from ceptoar.client import Publisher, PublishError, Unroutable
from ceptoar.config import Settings
from ceptoar.errors import InvalidNotice
from ceptoar.mailbox import count
from ceptoar.model.notice import OPERATOR_SOURCE
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, notice_doc, running


@pytest.fixture
async def bus(make_settings: Callable[..., Settings]) -> AsyncIterator[Bus]:
    """The topology `ceptoar serve` declares, on the test's prefix."""
    bus = Bus.from_settings(make_settings())
    await bus.connect(name="ceptoar-test")
    yield bus
    await bus.close()


async def _queued(channel: aio_pika.abc.AbstractChannel, queue: str) -> list[aio_pika.abc.AbstractMessage]:
    found: list[aio_pika.abc.AbstractMessage] = []
    source = await channel.get_queue(queue)
    while (message := await source.get(fail=False, no_ack=True)) is not None:
        found.append(message)
    return found


def _publisher(settings: Settings, **options: Any) -> Publisher:
    return Publisher(settings.amqp_url, prefix=settings.prefix, **options)


async def test_a_notice_goes_persistent_and_confirmed_under_its_source_and_id(
    bus: Bus, make_settings: Callable[..., Settings], amqp_channel: aio_pika.abc.AbstractChannel
) -> None:
    cap = (REPO / "examples" / "notice-cap.xml").read_bytes()
    with _publisher(make_settings()) as feed:
        published = await asyncio.to_thread(feed.publish, cap)
        again = await asyncio.to_thread(feed.publish, notice_doc(id="N-2"))
    (first, second) = await _queued(amqp_channel, bus.names.notices)
    assert first.body == cap
    assert (first.content_type, first.delivery_mode) == (
        "application/cap+xml",
        aio_pika.DeliveryMode.PERSISTENT,
    )
    assert first.message_id == published.key and published.format == "cap"
    assert second.message_id == again.key and json.loads(second.body)["id"] == "N-2"


@pytest.mark.parametrize(
    ("doc", "field"),
    [(notice_doc(tlp="PINK"), "tlp"), (notice_doc(source=OPERATOR_SOURCE), "source"), (b"<alert", None)],
)
async def test_a_notice_ceptoar_would_refuse_is_refused_before_anything_is_sent(
    bus: Bus,
    make_settings: Callable[..., Settings],
    amqp_channel: aio_pika.abc.AbstractChannel,
    doc: dict[str, Any] | bytes,
    field: str | None,
) -> None:
    with _publisher(make_settings()) as feed, pytest.raises(InvalidNotice) as refused:
        await asyncio.to_thread(feed.publish, doc)
    if field is not None:
        assert refused.value.field == field
    assert await _queued(amqp_channel, bus.names.notices) == []


async def test_a_notice_no_queue_takes_is_an_error_not_a_silent_drop(
    make_settings: Callable[..., Settings], amqp_channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = make_settings()
    feed_exchange = f"{settings.prefix}.feed"
    await amqp_channel.declare_exchange(feed_exchange, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    waits: list[float] = []
    with _publisher(settings, attempts=3, sleep=waits.append) as feed, pytest.raises(Unroutable) as returned:
        await asyncio.to_thread(feed.publish, notice_doc())
    assert feed_exchange in str(returned.value) and "notice.json" in str(returned.value)
    assert waits == [0.5, 1.0]  # tried three times, the waits doubling


async def test_a_missing_exchange_is_named_after_the_bounded_retries(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(prefix="ceptoar-test-nothing-here")
    with (
        _publisher(settings, attempts=2, sleep=lambda _: None) as feed,
        pytest.raises(PublishError) as failed,
    ):
        await asyncio.to_thread(feed.publish, notice_doc())
    assert "exchange 'ceptoar-test-nothing-here.feed' does not exist" in str(failed.value)


async def test_a_connection_the_broker_closed_is_opened_again(
    bus: Bus, make_settings: Callable[..., Settings], amqp_channel: aio_pika.abc.AbstractChannel
) -> None:
    settings = make_settings()
    with _publisher(settings, sleep=lambda _: None) as feed:
        await asyncio.to_thread(feed.publish, notice_doc(id="N-1"))
        await _close_connections(f"ceptoar-client {settings.prefix}")
        await asyncio.to_thread(feed.publish, notice_doc(id="N-2"))
    ids = [json.loads(m.body)["id"] for m in await _queued(amqp_channel, bus.names.notices)]
    assert ids == ["N-1", "N-2"]


async def test_a_broker_restart_during_publish_is_retried(
    bus: Bus, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    with _publisher(settings, attempts=12) as feed:
        await asyncio.to_thread(feed.publish, notice_doc(id="BEFORE"))  # connected
        await _rabbitmqctl("stop_app")
        try:
            publishing = asyncio.create_task(asyncio.to_thread(feed.publish, notice_doc(id="DURING")))
            await asyncio.sleep(3)
            assert not publishing.done()  # still trying
        finally:
            await _rabbitmqctl("start_app")
            await _rabbitmqctl("await_startup")
        published = await asyncio.wait_for(publishing, 60)
    assert published.id == "DURING"
    async with await aio_pika.connect(settings.amqp_url) as connection:
        queued = await _queued(await connection.channel(), bus.names.notices)
    assert [json.loads(m.body)["id"] for m in queued] == ["BEFORE", "DURING"]


async def test_a_notice_published_from_plain_synchronous_code_is_delivered(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    """A feed's own program, no event loop, only `ceptoar.client`; `ceptoar serve` on the other side."""
    tokyo = [r for r in registry_rows if r.code.startswith("13")]
    stack = await make_stack(mailbox=mailbox, rows=tokyo)
    feed = tmp_path / "feed.py"
    feed.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from ceptoar.client import Publisher\n"
        "with Publisher(sys.argv[1], prefix=sys.argv[2]) as feed:\n"
        "    print(feed.publish(Path(sys.argv[3]).read_bytes()).id)\n",
        encoding="utf-8",
    )
    sample = REPO / "examples" / "notice-tokyo-outage.json"
    async with running(stack.settings):
        ran = await asyncio.create_subprocess_exec(
            sys.executable, str(feed), stack.settings.amqp_url, stack.settings.prefix, str(sample),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(ran.communicate(), 60)
        assert ran.returncode == 0, err.decode()
        notice_id = out.decode().strip()
        assert notice_id == json.loads(sample.read_text())["id"]
        counts = await stack.wait_settled(notice_id)
    assert counts["sent"] > 0 and count(mailbox.root) == counts["sent"]


async def _close_connections(name: str) -> None:
    """Have RabbitMQ close the connections a client named `name`, as a broker node going away would."""
    listed = await _rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    # Each line: the connection's process id, a tab, its client properties (an Erlang term).
    pids = [
        line.split("\t", 1)[0] for line in listed.splitlines() if f'{{"connection_name","{name}"}}' in line
    ]
    assert pids, f"no connection named {name!r}"
    for pid in pids:
        await _rabbitmqctl("close_connection", pid, "closed by the test")


async def _rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"
    return out.decode()
