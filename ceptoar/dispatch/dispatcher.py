"""The dispatcher: one notice in, one alert and its delivery jobs out.

parse → validate against the registry → dedupe → classify → audience →
store alert and deliveries → publish one job per delivery (confirmed) →
mark published → ack. A notice refused for its content is dead-lettered
with a reason naming the field and the consumer carries on; a store or
broker outage is waited out with the notice held, never dead-lettered
(`ceptoar.retry.persist`).
A notice seen before is acked without a second fan-out, but if its jobs
were never confirmed they are published again (claims make that safe).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from structlog.contextvars import bound_contextvars

from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.dispatch.classify import classify
from ceptoar.errors import InvalidNotice
from ceptoar.feed.notice import Notice, Tlp, parse_notice
from ceptoar.log import get_logger
from ceptoar.retry import Stopping, persist
from ceptoar.store import Recipient, Store, StoredAlert

__all__ = ["Dispatcher"]

log = get_logger(__name__)

# Which address roles a TLP label lets a notice reach; RED reaches no one
# automatically.
TLP_ROLES: dict[Tlp, frozenset[str] | None] = {
    Tlp.CLEAR: None,
    Tlp.GREEN: None,
    Tlp.AMBER: frozenset({"security"}),
    Tlp.AMBER_STRICT: frozenset({"security"}),
    Tlp.RED: frozenset(),
}


class Dispatcher:
    """Consumes the notices queue until told to stop."""

    def __init__(self, *, store: Store, bus: Bus, settings: Settings) -> None:
        self._store = store
        self._bus = bus
        self._settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        inbox = await self._bus.consume(self._bus.names.notices, prefetch=4)
        while (message := await inbox.next(stop)) is not None:
            await self.handle(message, stop)

    async def handle(self, message: AbstractIncomingMessage, stop: asyncio.Event) -> None:
        """Dispatch one notice; never raises for anything about the notice itself."""
        with bound_contextvars(amqp_message_id=message.message_id):
            try:
                await persist(lambda: self._dispatch(message), stop=stop, what="dispatch")
            except InvalidNotice as exc:
                log.warning("notice.rejected", field=exc.field, reason=exc.reason)
                await self._bus.dead_letter(message, reason=str(exc), field=exc.field)
                await message.ack()
            except Stopping:
                await message.nack(requeue=True)
            except Exception as exc:
                log.exception("notice.internal_error")
                await self._bus.dead_letter(message, reason=f"internal error: {exc!r}")
                await message.ack()

    async def _dispatch(self, message: AbstractIncomingMessage) -> None:
        payload = message.body.decode("utf-8", errors="replace")
        notice = parse_notice(message.body)
        with bound_contextvars(source=notice.source, notice_id=notice.id):
            stored = await self._store.alerts.existing(notice.source, notice.id)
            if stored is None:
                await self._check(notice)
                stored = await self._store_alert(notice, payload)
            elif stored.jobs_published:
                log.info("notice.duplicate", alert_id=stored.alert_id)
                await message.ack()
                return
            await self._bus.publish_jobs(stored.delivery_ids, batch=self._settings.publish_batch)
            await self._store.alerts.mark_published(stored.alert_id)
            await message.ack()
            log.info(
                "alert.dispatched",
                alert_id=stored.alert_id,
                deliveries=len(stored.delivery_ids),
                republished=stored.duplicate,
            )

    async def _check(self, notice: Notice) -> None:
        if notice.is_expired(datetime.now(UTC)):
            raise InvalidNotice(f"expired at {notice.expires:%Y-%m-%dT%H:%M:%S%z}", field="expires")
        unknown = set(await self._store.subscribers.unknown_codes(notice.area))
        for i, code in enumerate(notice.area):
            if code in unknown:
                raise InvalidNotice(f"{code} is not a subscribed local government", field=f"area[{i}]")

    async def _store_alert(self, notice: Notice, payload: str) -> StoredAlert:
        result = classify(notice)
        recipients = _allowed(notice.tlp, await self._store.subscribers.audience(notice.area))
        if not recipients:
            log.error("alert.no_audience", tlp=notice.tlp.value, area=notice.area)
        return await self._store.alerts.create(
            notice=notice,
            payload=payload,
            fmt="json",
            severity=result.severity.value,
            rules=result.rules,
            recipients=recipients,
            message_id_domain=self._settings.message_id_domain,
        )


def _allowed(tlp: Tlp, recipients: list[Recipient]) -> list[Recipient]:
    roles = TLP_ROLES[tlp]
    return recipients if roles is None else [r for r in recipients if r.role in roles]
