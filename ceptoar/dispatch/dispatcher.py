"""The dispatcher: one notice in, one alert and its delivery jobs out.

parse (JSON, CAP 1.2 or CSAF 2.0) → validate against the registry → dedupe
→ plan (`ceptoar.dispatch.plan`: severity, lifecycle, audience, threading)
→ store alert and deliveries → publish one job per delivery (confirmed)
→ mark published → ack. An alert's first transaction holds only its first
deliveries; the rest follow in chunks, each chunk's jobs published once it
is committed, so the first mail never waits for a large audience's rows. A
critical alert's first deliveries are claimed in that transaction and
handed to this process's mailer instead of a job: its first mail does not
wait for the queue either.

A notice refused for its content is dead-lettered with a reason naming the
field and the consumer carries on; a store or broker outage is waited out
with the notice held, never dead-lettered (`ceptoar.retry.outlast_outages`
around everything after parsing). A notice seen before is acked without a
second fan-out, but if its jobs were never confirmed they are published
again (claims make that safe).

Lifecycle: an update or cancel names earlier notices of the same source in
`references`. One that names an unknown notice is held with the reason. An
update goes to the original's audience plus new members of it, threaded
under what each address got before. A cancel marks every unsent delivery
of the thread `cancelled` at once; while mail of the thread is still in
flight, the cancel waits for it in a task of its own (the notices behind it
go on), then is planned: it goes only to the addresses that were mailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import aclosing
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage
from structlog.contextvars import bound_contextvars

from ceptoar.bus import Bus, Lane, lane_for, settle
from ceptoar.config import Settings
from ceptoar.dispatch.admission import admit
from ceptoar.dispatch.plan import Plan, plan_in_chunks
from ceptoar.dispatch.rules import Classification, RuleSet
from ceptoar.dispatch.thread import load_thread
from ceptoar.errors import InvalidNotice
from ceptoar.feed.formats import Parsed, payload_text
from ceptoar.feed.offload import ParserBusy, ParserPool
from ceptoar.log import get_logger
from ceptoar.metrics import metrics
from ceptoar.model.notice import OPERATOR_SOURCE, MsgType, Notice
from ceptoar.priority import BulkGate
from ceptoar.retry import Stopping, outlast_outages, pause
from ceptoar.store import FIRST_ROWS, Claimed, Store, StoredAlert

__all__ = ["Dispatcher"]

log = get_logger(__name__)


class Dispatcher:
    """Consumes the notices queue until told to stop."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        settings: Settings,
        rules: RuleSet,
        gate: BulkGate | None = None,
        hand_off: Callable[[list[Claimed]], None] | None = None,
    ) -> None:
        self._store = store
        # Sends a critical alert's first deliveries, claimed as it is stored, in this process.
        self._hand_off = hand_off
        # Held while a notice is dispatched: its first mail should not wait for bulk work.
        self._gate = gate or BulkGate()
        self._bus = bus
        self._settings = settings
        self._rules = rules
        # Off the event loop: this process's mailer keeps sending while a large advisory is checked.
        self._parser = ParserPool(workers=1, timeout=settings.parse_timeout)
        # Cancels waiting for their thread's mail in flight, each finishing in its own task.
        self._cancels: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        # Read the registry now: the first notice after a start should not wait for it.
        try:
            await outlast_outages(self._read_registry, stop=stop, what="read the registry")
        except Stopping:
            return
        try:
            inbox = await outlast_outages(
                lambda: self._bus.consume(self._bus.names.notices, prefetch=4), stop=stop, what="consume"
            )
        except Stopping:
            self._parser.close()
            return
        try:
            while (message := await inbox.next(stop)) is not None:
                async with self._gate.holding():
                    await self.handle(message, stop)
            while self._cancels:
                await asyncio.gather(*self._cancels)
        finally:
            self._parser.close()

    async def _read_registry(self) -> None:
        async with aclosing(self._store.subscribers.candidate_chunks()) as chunks:
            async for _ in chunks:
                pass

    async def handle(self, message: AbstractIncomingMessage, stop: asyncio.Event) -> None:
        """Dispatch one notice; never raises for the notice, nor for an outage (it is waited out).

        A cancel whose thread has mail in flight stops the thread's unsent
        mail at once, then finishes in a task of its own once that mail is
        sent (`_after_in_flight`): the notices behind it do not wait.
        """
        with bound_contextvars(amqp_message_id=message.message_id):
            try:
                parsed = await self._parse(message, stop)
                thread = await outlast_outages(lambda: self._cancelling(parsed), stop=stop, what="cancel")
            except InvalidNotice as exc:
                await self._rejected(message, stop, exc)
                return
            except Stopping:
                await settle(message, ack=False)
                return
            except Exception as exc:
                await self._failed(message, stop, exc)
                return
        if thread is not None:
            task = asyncio.create_task(self._after_in_flight(message, parsed, thread, stop), name="cancel")
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)
            return
        await self._complete(message, parsed, stop)

    async def _complete(self, message: AbstractIncomingMessage, parsed: Parsed, stop: asyncio.Event) -> None:
        """Dispatch a parsed notice and settle its message, whatever comes of it."""
        with bound_contextvars(amqp_message_id=message.message_id):
            try:
                await outlast_outages(lambda: self._dispatch(message, parsed), stop=stop, what="dispatch")
            except InvalidNotice as exc:
                await self._rejected(message, stop, exc, parsed)
                return
            except Stopping:
                await settle(message, ack=False)
                return
            except Exception as exc:
                await self._failed(message, stop, exc, parsed)
                return
            await settle(message)

    async def _rejected(
        self,
        message: AbstractIncomingMessage,
        stop: asyncio.Event,
        exc: InvalidNotice,
        parsed: Parsed | None = None,
    ) -> None:
        log.warning("notice.rejected", field=exc.field, reason=exc.reason)
        metrics().notices.labels("rejected").inc()
        await self._refuse(message, stop, reason=str(exc), field=exc.field, parsed=parsed)

    async def _failed(
        self,
        message: AbstractIncomingMessage,
        stop: asyncio.Event,
        exc: Exception,
        parsed: Parsed | None = None,
    ) -> None:
        log.exception("notice.internal_error")
        metrics().notices.labels("failed").inc()
        await self._refuse(message, stop, reason=f"internal error: {exc!r}", parsed=parsed)

    async def _cancelling(self, parsed: Parsed) -> str | None:
        """For a cancel whose thread has mail being sent: stop the thread's unsent mail now and name the
        thread; None for any other notice (a repeated cancel, too, finds nothing in flight)."""
        notice = parsed.notice
        if notice.msg_type is not MsgType.CANCEL:
            return None
        thread = await load_thread(self._store, notice)
        if thread.id is None:
            return None
        cancelled = await self._store.threads.cancel(thread.id)
        if not await self._store.threads.in_flight(thread.id):
            return None
        log.info("cancel.waiting_for_in_flight", thread_id=thread.id, deliveries_cancelled=cancelled)
        return thread.id

    async def _after_in_flight(
        self, message: AbstractIncomingMessage, parsed: Parsed, thread: str, stop: asyncio.Event
    ) -> None:
        """Wait (bounded) for the thread's mail in flight, then store and send the cancel as any notice."""
        patience = min(self._settings.lease_seconds, 2 * self._settings.smtp_timeout + 5)
        deadline = time.monotonic() + patience
        in_flight = self._store.threads.in_flight
        with contextlib.suppress(Stopping):
            while await outlast_outages(lambda: in_flight(thread), stop=stop, what="cancel"):
                if time.monotonic() > deadline or await pause(0.2, stop=stop):
                    break
        if stop.is_set():
            await settle(message, ack=False)  # the next dispatcher finishes it
            return
        async with self._gate.holding():
            await self._complete(message, parsed, stop)

    async def _refuse(
        self,
        message: AbstractIncomingMessage,
        stop: asyncio.Event,
        *,
        reason: str,
        field: str | None = None,
        parsed: Parsed | None = None,
    ) -> None:
        """Dead-letter a refused notice with the reason, mark its HTTP receipt, keep the refusal for
        `ceptoar status`, then ack it.

        The broker's and the store's outages are waited out: a notice the
        endpoint answered 202 must not vanish without its sender being able
        to see why (`GET /v1/notices/{id}`).
        """
        # Named as the notice names itself; one that could not be read, by its message's id.
        named = f"{parsed.notice.source}:{parsed.notice.id}" if parsed else message.message_id
        keep = self._store.rejections.record
        try:
            # Kept first: whoever sees the dead letter can also find why in the store.
            await outlast_outages(
                lambda: keep(message_id=named, reason=reason, field=field), stop=stop, what="keep the refusal"
            )
            await outlast_outages(
                lambda: self._bus.dead_letter(message, reason=reason, field=field),
                stop=stop,
                what="dead-letter",
            )
            await outlast_outages(
                lambda: self._mark_receipt(message, reason, field), stop=stop, what="mark the receipt"
            )
        except Stopping:
            await settle(message, ack=False)
            return
        await settle(message)

    async def _mark_receipt(self, message: AbstractIncomingMessage, reason: str, field: str | None) -> None:
        """Mark the receipt of a notice that came through the HTTP endpoint as rejected, with why."""
        if not (message.headers or {}).get("x-ceptoar-feed") or not message.message_id:
            return
        source, _, source_id = message.message_id.partition(":")
        if await self._store.feeds.reject(source=source, source_id=source_id, reason=reason, field=field):
            log.info("receipt.rejected", source=source, notice_id=source_id)

    async def _parse(self, message: AbstractIncomingMessage, stop: asyncio.Event) -> Parsed:
        """The notice a message holds, parsed off the event loop; InvalidNotice says what is wrong with it.

        While a parse that overran its time still holds the parser, the
        message waits for it (`Stopping` if told to stop meanwhile).
        """
        while True:
            try:
                return await self._parser.parse(message.body, message.content_type)
            except ParserBusy:
                log.warning("parser.busy")
                if await pause(1.0, stop=stop):
                    raise Stopping("parse") from None

    async def _dispatch(self, message: AbstractIncomingMessage, parsed: Parsed) -> None:
        """Admit, plan, store and publish a parsed notice: calls to the store and the bus, repeatable."""
        payload = payload_text(message.body)
        notice = parsed.notice
        with bound_contextvars(source=notice.source, notice_id=notice.id, format=parsed.format):
            stored = await admit(self._store, notice, now=datetime.now(UTC))
            outcome = "duplicate"
            if stored is None:
                await self._check_operator(notice)
                stored, held = await self._store_alert(notice, payload, parsed.format)
                outcome = "held" if held else "dispatched"
            elif stored.jobs_published:
                log.info("notice.duplicate", alert_id=stored.alert_id)
                metrics().notices.labels(outcome).inc()
                return
            if stored.claimed and self._hand_off is not None:
                self._hand_off(stored.claimed)
            lane = lane_for(stored.severity)
            await self._bus.publish_jobs(stored.delivery_ids, lane=lane, batch=self._settings.publish_batch)
            jobs = len(stored.delivery_ids)
            if stored.pending:
                # Each chunk's jobs go out as soon as its rows are committed.
                async for ids in self._store.alerts.store_pending(stored.alert_id):
                    await self._bus.publish_jobs(ids, lane=lane, batch=self._settings.publish_batch)
                    jobs += len(ids)
            await self._store.alerts.mark_published(stored.alert_id)
            metrics().notices.labels(outcome).inc()
            log.info(
                "alert.dispatched",
                alert_id=stored.alert_id,
                jobs=jobs,
                handed_off=len(stored.claimed),
                republished=stored.duplicate,
            )

    async def _check_operator(self, notice: Notice) -> None:
        if notice.source == OPERATOR_SOURCE and not await self._store.audit.records_notice(notice.id):
            # Anyone who may publish to the feed exchange could otherwise speak as the operators.
            raise InvalidNotice(
                f"source {OPERATOR_SOURCE!r} is reserved for CEPTOAR's operators, and no operator's "
                f"action in the audit log published notice {notice.id}",
                field="source",
            )

    async def _store_alert(self, notice: Notice, payload: str, fmt: str) -> tuple[StoredAlert, bool]:
        """The stored alert, and whether it is held."""
        planned, audience = await self._plan(notice)
        if planned.cancels is not None:
            await self._cancel(planned.cancels)
            # Mail in flight has now finished: only now is it known who was mailed, and so who hears of the
            # cancel.
            planned, audience = await self._plan(notice)
        if planned.held is not None:
            log.warning("alert.held", reason=planned.held)
        elif not audience:
            log.error("alert.no_audience", tlp=notice.tlp.value, removed=dict(planned.audience.removed))
        result = planned.classification
        first, claim = self._first_rows(result)
        stored = await self._store.alerts.create(
            notice=notice,
            payload=payload,
            fmt=fmt,
            severity=result.severity.value,
            rules=result.rules,
            audience=audience,
            message_id_domain=self._settings.message_id_domain,
            lifecycle=planned.lifecycle,
            history=planned.threading,
            first=first,
            claim=claim,
            lease_seconds=self._settings.lease_seconds,
        )
        return stored, planned.held is not None

    async def _plan(self, notice: Notice) -> tuple[Plan, list[int]]:
        """The notice's plan and its recipients' address ids, the registry read a chunk at a time."""
        thread = await load_thread(self._store, notice)
        async with aclosing(self._store.subscribers.candidate_chunks()) as chunks:
            return await plan_in_chunks(notice, self._rules, chunks, thread)

    def _first_rows(self, result: Classification) -> tuple[int, bool]:
        """How many deliveries the alert's first transaction writes, and whether it claims them.

        A critical alert's first ones are claimed for this process to send
        at once; any other alert's first jobs go out after its first rows.
        """
        critical = lane_for(result.severity.value) is Lane.CRITICAL
        if critical and self._hand_off is not None and self._settings.critical_handoff > 0:
            return self._settings.critical_handoff, True
        return FIRST_ROWS, False

    async def _cancel(self, thread: str) -> None:
        """Stop every unsent delivery of the thread (mail in flight was waited for, `_after_in_flight`)."""
        cancelled = await self._store.threads.cancel(thread)
        # Another process's mailer owns those rows: the store is the only way to see them finish.
        if sending := await self._store.threads.in_flight(thread):
            log.error("cancel.in_flight_remaining", thread_id=thread, sending=sending)
        log.info("alert.cancelled", thread_id=thread, deliveries_cancelled=cancelled)

