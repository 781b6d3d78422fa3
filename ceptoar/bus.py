"""The RabbitMQ topology and the only code that talks AMQP.

    {p}.feed (topic) ──► {p}.notices ──(dispatcher)
    {p}.deliveries (direct) ─"job"──────► {p}.deliveries           bulk lane ──(mailers)
                            ─"critical"─► {p}.deliveries.critical  critical lane ──(mailers, first)
    {lane queue}.retry.<ms>ms  TTL queues that dead-letter back to their lane
    {p}.dead (fanout) ──► {p}.dead   rejected notices and jobs, with the reason

Jobs of critical alerts travel in their own lane, with their own retry
queues, so a critical alert never waits behind the jobs of a bulk fan-out.
All queues are durable quorum queues. Publishing waits for the broker's
confirm and raises on an unroutable message, so a caller only acks its own
input after what it published is safe. `x-delivery-limit` dead-letters a
message that keeps crashing its consumer instead of looping for ever.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from ceptoar.config import Settings
from ceptoar.log import get_logger
from ceptoar.model.notice import CONTENT_TYPES, Format
from ceptoar.retry import Retry

__all__ = [
    "JOB_SIZE",
    "Bus",
    "Inbox",
    "Lane",
    "Names",
    "by_lane",
    "delete_topology",
    "job_delivery_ids",
    "lane_for",
    "settle",
]

log = get_logger(__name__)

DELIVERY_LIMIT = 10
# Seconds the broker has to answer a start-up's declarations or a consumer's set-up before the try is
# given up (a TimeoutError, waited out and tried again like any outage).
_BROKER_ANSWER = 30.0


class Lane(StrEnum):
    """A job queue by urgency; its value is the routing key of its jobs."""

    CRITICAL = "critical"
    BULK = "job"


def lane_for(severity: str) -> Lane:
    """The lane of an alert's jobs: critical alerts overtake everything else."""
    return Lane.CRITICAL if severity == "critical" else Lane.BULK


def by_lane(pairs: Iterable[tuple[int, str]]) -> dict[Lane, list[int]]:
    """Delivery ids grouped by the lane of their alert's severity, from (id, severity) pairs."""
    lanes: dict[Lane, list[int]] = defaultdict(list)
    for delivery_id, severity in pairs:
        lanes[lane_for(severity)].append(delivery_id)
    return dict(lanes)


@dataclass(frozen=True)
class Names:
    """Exchange and queue names under one prefix, so instances and tests don't collide."""

    prefix: str

    @property
    def feed_exchange(self) -> str:
        return f"{self.prefix}.feed"

    @property
    def notices(self) -> str:
        return f"{self.prefix}.notices"

    @property
    def deliveries_exchange(self) -> str:
        return f"{self.prefix}.deliveries"

    def jobs(self, lane: Lane) -> str:
        """The job queue of a lane."""
        base = f"{self.prefix}.deliveries"
        return base if lane is Lane.BULK else f"{base}.{lane.value}"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def retry(self, delay_seconds: float, lane: Lane = Lane.BULK) -> str:
        return f"{self.jobs(lane)}.retry.{round(delay_seconds * 1000)}ms"

    def queues(self, retry_delays: Sequence[float]) -> list[str]:
        """Every queue declared under the prefix with these retry delays."""
        delays = sorted(set(retry_delays))
        return [
            self.notices,
            *(self.jobs(lane) for lane in Lane),
            self.dead,
            *(self.retry(d, lane) for lane in Lane for d in delays),
        ]

    @property
    def exchanges(self) -> list[str]:
        return [self.feed_exchange, self.deliveries_exchange, self.dead_exchange]


async def delete_topology(url: str, *, prefix: str, retry_delays: Sequence[float]) -> None:
    """Remove every queue and exchange under `prefix` (a test's or a benchmark's own)."""
    names = Names(prefix)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in names.queues(retry_delays):
            await channel.queue_delete(queue)
        for exchange in names.exchanges:
            await channel.exchange_delete(exchange)


def _quorum(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _dead_lettering(exchange: str, **extra: Any) -> dict[str, Any]:
    # at-least-once: the broker keeps a message until the dead-letter target
    # confirmed it (quorum queues need reject-publish overflow for that).
    return _quorum(
        **{
            "x-dead-letter-exchange": exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
        **extra,
    )


# Deliveries named by one job message: fewer, larger messages cost the broker
# and both ends far less than one message per address.
JOB_SIZE = 100


def job_body(delivery_ids: Sequence[int]) -> bytes:
    return json.dumps({"delivery_ids": list(delivery_ids)}).encode()


def job_delivery_ids(body: bytes) -> list[int]:
    """The delivery ids a job names; ValueError if the body is not a job."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("a job is a JSON object")
    ids = doc.get("delivery_ids", [doc["delivery_id"]] if "delivery_id" in doc else None)
    if not isinstance(ids, list) or not ids:
        raise ValueError("delivery_ids: missing or empty")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise ValueError("delivery_ids: not all positive integers")
    return ids


# What acking or rejecting a message raises once its channel is gone.
_CHANNEL_GONE = (
    aio_pika.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.AMQPConnectionError,
    aio_pika.exceptions.AMQPChannelError,
    ConnectionError,
    asyncio.TimeoutError,
)


async def settle(message: AbstractIncomingMessage, *, ack: bool = True) -> bool:
    """Ack a message, or else give it back to its queue; False when its channel is gone.

    An ack that cannot be delivered is harmless: the broker delivers the
    message again, and whatever it asks is found done already (a claimed
    delivery, a stored notice). So a broker restart costs a few duplicate
    messages, never the consumer that held them.
    """
    try:
        if ack:
            await message.ack()
        else:
            await message.nack(requeue=True)
    except _CHANNEL_GONE as exc:
        log.warning("amqp.settle_lost", ack=ack, routing_key=message.routing_key, error=repr(exc))
        return False
    return True


class Inbox:
    """Messages a consumer received and has not yet acked."""

    def __init__(self, queue: asyncio.Queue[AbstractIncomingMessage]) -> None:
        self._queue = queue

    async def next(self, stop: asyncio.Event) -> AbstractIncomingMessage | None:
        """The next message, or None once `stop` is set."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def batch(
        self,
        size: int,
        stop: asyncio.Event,
        *,
        weight: Callable[[AbstractIncomingMessage], int] = lambda _: 1,
    ) -> list[AbstractIncomingMessage]:
        """Wait for one message, then take what else is already here while their weight is below `size`."""
        first = await self.next(stop)
        if first is None:
            return []
        taken = [first]
        total = weight(first)
        while total < size and not self._queue.empty():
            message = self._queue.get_nowait()
            taken.append(message)
            total += weight(message)
        return taken


class Bus:
    """A robust connection, a confirming publisher channel, and the topology."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Bus:
        """The bus a ceptoar process configured by `settings` talks to (not yet connected)."""
        return cls(settings.amqp_url, prefix=settings.prefix, retry_delays=settings.retry_delays)

    def __init__(self, url: str, *, prefix: str, retry_delays: Sequence[float]) -> None:
        self.url = url
        self.names = Names(prefix)
        self.retry_delays = tuple(retry_delays)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    @asynccontextmanager
    async def session(cls, settings: Settings, *, name: str) -> AsyncIterator[Bus]:
        """A bus connected for a command that publishes once (resend, release, compose), closed after."""
        bus = cls.from_settings(settings)
        try:
            await bus.connect(name=name)
            yield bus
        finally:
            await bus.close()

    async def connect(self, *, name: str = "ceptoar", within: float | None = None) -> None:
        """Connect (giving up after `within` seconds, or the broker's usual 30 s to answer), open the
        publisher channel, declare the topology. A broker that takes the connection and never answers
        is an outage like one that refuses it."""
        self._connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": name}, timeout=within or _BROKER_ANSWER
        )
        try:
            async with asyncio.timeout(_BROKER_ANSWER):
                self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                await self.declare()
        except RuntimeError as exc:  # the connection closed under us: the broker went away meanwhile
            if "closed" not in str(exc).lower():
                raise
            raise ConnectionError(f"the broker connection closed while declaring: {exc}") from exc

    @property
    def connected(self) -> bool:
        """Whether the publisher channel is open right now."""
        return self._channel is not None and not self._channel.is_closed

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("Bus.connect() has not been called")
        return self._channel

    async def declare(self) -> None:
        """Declare exchanges, queues and bindings (idempotent)."""
        n, ch = self.names, self.channel
        direct, topic, fanout = (
            aio_pika.ExchangeType.DIRECT,
            aio_pika.ExchangeType.TOPIC,
            aio_pika.ExchangeType.FANOUT,
        )
        dead_x = await ch.declare_exchange(n.dead_exchange, fanout, durable=True)
        dead_q = await ch.declare_queue(n.dead, durable=True, arguments=_quorum())
        await dead_q.bind(dead_x)
        feed_x = await ch.declare_exchange(n.feed_exchange, topic, durable=True)
        notices_q = await ch.declare_queue(
            n.notices,
            durable=True,
            arguments=_dead_lettering(n.dead_exchange, **{"x-delivery-limit": DELIVERY_LIMIT}),
        )
        await notices_q.bind(feed_x, routing_key="#")
        jobs_x = await ch.declare_exchange(n.deliveries_exchange, direct, durable=True)
        for lane in Lane:
            jobs_q = await ch.declare_queue(
                n.jobs(lane),
                durable=True,
                arguments=_dead_lettering(n.dead_exchange, **{"x-delivery-limit": DELIVERY_LIMIT}),
            )
            await jobs_q.bind(jobs_x, routing_key=lane.value)
            for delay in sorted(set(self.retry_delays)):
                await ch.declare_queue(
                    n.retry(delay, lane),
                    durable=True,
                    arguments=_dead_lettering(
                        n.deliveries_exchange,
                        **{"x-message-ttl": round(delay * 1000), "x-dead-letter-routing-key": lane.value},
                    ),
                )
        self._exchanges = {"feed": feed_x, "jobs": jobs_x, "dead": dead_x}

    async def publish_notice(
        self,
        body: bytes,
        *,
        fmt: Format,
        key: tuple[str, str] | None,
        headers: Mapping[str, Any] | None = None,
        confirm_within: float | None = None,
    ) -> None:
        """Publish a notice's bytes, in format `fmt`, to the feed exchange; return once the broker confirmed.

        How the service's own parts publish a notice (the composer, the HTTP
        endpoint), as `ceptoar.client.Publisher` does for a feed: routed
        `notice.FORMAT` with its content type, persistent, and identified by
        its `key`, (source, id), as `source:id`.
        """
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPES[fmt],
            message_id=None if key is None else f"{key[0]}:{key[1]}",
            headers=dict(headers or {}),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=datetime.now(UTC),
        )
        await self._exchanges["feed"].publish(message, routing_key=f"notice.{fmt}", timeout=confirm_within)

    async def publish_jobs(
        self, delivery_ids: Sequence[int], *, lane: Lane = Lane.BULK, batch: int = 500
    ) -> None:
        """Publish jobs for the deliveries on a lane, JOB_SIZE to a message; return once all are confirmed."""
        jobs = self._exchanges["jobs"]
        chunks = [delivery_ids[i : i + JOB_SIZE] for i in range(0, len(delivery_ids), JOB_SIZE)]
        for start in range(0, len(chunks), batch):
            await asyncio.gather(
                *(jobs.publish(_job(c), routing_key=lane.value) for c in chunks[start : start + batch])
            )

    async def publish_lanes(self, lanes: Mapping[Lane, Sequence[int]], *, batch: int = 500) -> None:
        """Publish jobs for deliveries already sorted by lane, critical first."""
        for lane in Lane:
            if lanes.get(lane):
                await self.publish_jobs(lanes[lane], lane=lane, batch=batch)

    async def publish_retry(self, delivery_id: int, retry: Retry, *, lane: Lane = Lane.BULK) -> None:
        """Park a delivery's job in its lane's retry queue for the delay the retry policy drew.

        The queue of the configured delay holds it (its TTL is that delay);
        the message's own expiration, a little shorter, is the drawn delay.
        """
        await self.channel.default_exchange.publish(
            _job([delivery_id], expiration=retry.delay), routing_key=self.names.retry(retry.queue_delay, lane)
        )

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        *,
        reason: str,
        field: str | None = None,
    ) -> None:
        """Keep a refused message, with why, in the dead-letter queue."""
        headers = dict(message.headers or {})
        headers.update(
            {
                "x-ceptoar-reason": reason,
                "x-ceptoar-field": field or "",
                "x-ceptoar-origin": message.routing_key or "",
                "x-ceptoar-dead-at": datetime.now(UTC).isoformat(),
            }
        )
        await self._exchanges["dead"].publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="",
        )

    async def consume(self, queue_name: str, *, prefetch: int) -> Inbox:
        """Start consuming `queue_name` on its own channel.

        While the connection is being reopened (the broker restarted, even in
        the middle of a start-up), this raises ConnectionError, which callers
        wait out (`ceptoar.retry.outlast_outages`); once consuming, the robust
        channel resumes by itself after a reconnect.
        """
        if self._connection is None:
            raise RuntimeError("Bus.connect() has not been called")
        try:
            async with asyncio.timeout(_BROKER_ANSWER):
                channel = await self._connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                queue = await channel.get_queue(queue_name, ensure=True)
                inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                await queue.consume(inbox.put)
        except RuntimeError as exc:
            if "closed" not in str(exc).lower():
                raise
            raise ConnectionError(f"the broker connection is being reopened: {exc}") from exc
        return Inbox(inbox)

    async def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each of the service's queues (the job lanes, the notices, the dead letters)."""
        if self._connection is None:
            raise RuntimeError("Bus.connect() has not been called")
        n = self.names
        names = [n.notices, *(n.jobs(lane) for lane in Lane), n.dead]
        depths: dict[str, int] = {}
        channel = await self._connection.channel()
        try:
            for name in names:
                declared = await channel.declare_queue(name, passive=True)
                depths[name] = declared.declaration_result.message_count or 0
        finally:
            await channel.close()
        return depths

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._channel = None


def _job(delivery_ids: Sequence[int], *, expiration: float | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        job_body(delivery_ids),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
    )
