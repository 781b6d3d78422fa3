"""The mailer: claim → send → record, a batch of delivery jobs at a time.

It works two lanes (`ceptoar.bus.Lane`). While a batch of the critical lane
is in hand (or the process's dispatcher is storing a notice), the bulk loops
start no new batch (`ceptoar.priority.BulkGate`), and critical sends take
the next free SMTP connection before any bulk send: a critical alert
published during a fan-out to every address overtakes it. The first
deliveries of a critical alert come without a job: the dispatcher claims
them as it stores the alert and hands them over (`Mailer.hand_off`).

A job only names a delivery; the row is the truth. A job whose claim wins
nothing (already sent, cancelled, or claimed by another worker) is a
duplicate and is acked without sending. What a failed attempt leads to is
the retry policy's to say (`ceptoar.retry.RetryPolicy`): a temporary failure
leaves the row `deferred` and parks a new job in the retry queue for the
delay the policy draws; once attempts run out, or on a permanent failure,
the row is `failed` with the server's reply kept. A job's message is acked only after its outcome is
stored and any retry job is confirmed by the broker; an ack the broker can
no longer take (it restarted) is left, since the job comes back and finds
its work done.

Each delivery fails on its own: an error nothing foresaw (a template that
raises) fails that delivery, never its batch. A relay that cannot be
reached costs no attempt: those deliveries go back to `queued`, and the
mailer waits for the relay before it sends them. TLP is checked once more
before each send (`ceptoar.model.tlp`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractIncomingMessage

from ceptoar.bounces.links import AnswerLinks, UnsubscribeLinks
from ceptoar.bounces.verp import Verp
from ceptoar.bus import JOB_SIZE, Bus, Inbox, Lane, job_delivery_ids, settle
from ceptoar.config import Settings
from ceptoar.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from ceptoar.log import get_logger
from ceptoar.mail.pool import SmtpPool
from ceptoar.mail.recorder import Recorder
from ceptoar.metrics import metrics
from ceptoar.model.alert import AlertView
from ceptoar.model.states import DeliveryState
from ceptoar.model.tlp import tlp_withholds, withheld_reply
from ceptoar.priority import BulkGate
from ceptoar.render import Renderer
from ceptoar.render.digest import DigestMail
from ceptoar.retry import GiveUp, Retry, RetryPolicy, Stopping, is_transient, outlast_outages, pause
from ceptoar.store import DIGEST_SOURCE, Claimed, Outcome, Store
from ceptoar.store.leases import heartbeat

if TYPE_CHECKING:
    from ceptoar.mail.dkim import DkimSigner

__all__ = ["Mailer"]

log = get_logger(__name__)


class Mailer:
    """Works the delivery queue until told to stop."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        pool: SmtpPool,
        renderer: Renderer,
        settings: Settings,
        gate: BulkGate | None = None,
    ) -> None:
        self._store = store
        self._bus = bus
        self._pool = pool
        self._renderer = renderer
        self._settings = settings
        self._policy = RetryPolicy.from_settings(settings)
        # Each delivery's own return path, so that what comes back names it.
        self._verp = Verp.from_settings(settings)
        # Each delivery's answer page, when the service has a public address.
        self._links = AnswerLinks.from_settings(settings)
        # Each digest address's one-click unsubscribe link (RFC 8058).
        self._unsubscribe = UnsubscribeLinks.from_settings(settings)
        # The digest issues being sent, by the alert that carries each.
        self._digests: dict[str, dict[str, Any]] = {}
        # Each mail's DKIM signature, when a key is configured.
        self._signer = _signer(settings)
        self._alerts: dict[str, AlertView] = {}
        self._gate = gate or BulkGate()
        self._hand_offs: set[asyncio.Task[None]] = set()
        # Deliveries this process has claimed and not yet recorded: the leases it renews.
        self._in_hand: set[int] = set()
        # Writes every loop's outcomes as they come, with the stop event its waits end on.
        self._recorder: tuple[asyncio.Event, Recorder] | None = None

    @property
    def relay(self) -> str:
        """The relay it sends through, as logs name it."""
        return self._pool.relay

    @property
    def relay_address(self) -> tuple[str, int]:
        """The relay's host and port."""
        return self._pool.address

    async def warm_up(self) -> None:
        """Compile the templates and open the SMTP sessions, so the first job is sent at full speed."""
        for broken in self._renderer.load_templates():
            log.error("template.broken", error=broken)
        if (unreachable := await self._pool.open()) is not None:
            log.warning("relay.unreachable", error=unreachable)

    async def run(self, stop: asyncio.Event, *, workers: int = 2) -> None:
        """Consume both lanes with `workers` batch loops each, so one batch's I/O overlaps another's."""
        warming = asyncio.create_task(self.warm_up(), name="mailer-warm-up")
        renewing = asyncio.create_task(self._renew_leases(stop), name="mailer-leases")
        size = self._settings.mailer_batch
        prefetch = max(2, size // JOB_SIZE + 1) * workers
        loops = []
        try:
            for lane in Lane:
                inbox = await outlast_outages(
                    functools.partial(self._bus.consume, self._bus.names.jobs(lane), prefetch=prefetch),
                    stop=stop,
                    what="consume",
                )
                loops += [self._loop(inbox, lane, stop) for _ in range(workers)]
        except Stopping:
            loops = []  # stopped while the broker was away: nothing was taken
        await asyncio.gather(*loops)
        await self.drain()
        for task in (warming, renewing):
            task.cancel()  # a relay that never answers must not hold up stopping
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        """Renew the leases of what this process holds, several times per lease, until it stops.

        A store that cannot be reached is tried again at the next beat: the
        leases still run for most of their length.
        """
        lease = self._settings.lease_seconds
        while not stop.is_set():
            await pause(heartbeat(lease), stop=stop)
            if not self._in_hand:
                continue
            try:
                await self._store.leases.renew(set(self._in_hand), lease_seconds=lease)
            except Exception as exc:
                log.warning("leases.renew_failed", held=len(self._in_hand), error=repr(exc))

    async def _loop(self, inbox: Inbox, lane: Lane, stop: asyncio.Event) -> None:
        size = self._settings.mailer_batch
        while batch := await inbox.batch(size, stop, weight=_job_weight):
            if lane is Lane.CRITICAL:
                async with self._gate.holding():
                    await self.process(batch, stop, lane=lane)
            else:
                # Every holder finishes, so this wait ends even when stopping.
                await self._gate.opened()
                await self.process(batch, stop, lane=lane)

    async def process(
        self, messages: list[AbstractIncomingMessage], stop: asyncio.Event, *, lane: Lane = Lane.BULK
    ) -> None:
        """Claim, send and record the deliveries a batch of jobs names; ack the jobs once that is stored."""
        ids: list[int] = []
        waiting: list[AbstractIncomingMessage] = []
        for message in messages:
            try:
                ids.extend(job_delivery_ids(message.body))
                waiting.append(message)
            except ValueError as exc:
                log.error("job.malformed", reason=str(exc))
                await self._dead_letter(message, reason=str(exc))
        done = True
        try:
            await self._work(list(dict.fromkeys(ids)), stop, lane)
        except Stopping:
            # Rows left `sending` are re-sent by the sweeper once their lease, no longer renewed, runs out.
            done = False
        except Exception:
            log.exception("mailer.batch_failed", deliveries=len(ids))
            done = False
        for message in waiting:
            await settle(message, ack=done)

    async def _dead_letter(self, message: AbstractIncomingMessage, *, reason: str) -> None:
        """Keep a message that is not a job in the dead-letter queue; while the broker is away, it returns."""
        try:
            await self._bus.dead_letter(message, reason=reason, field="delivery_ids")
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("job.dead_letter_failed", error=repr(exc))
            return
        await settle(message)

    async def _work(self, ids: list[int], stop: asyncio.Event, lane: Lane) -> None:
        # Never more than mailer_batch deliveries claimed at once: what is
        # claimed will be sent even if the alert is cancelled meanwhile.
        size = self._settings.mailer_batch
        for start in range(0, len(ids), size):
            await self._work_chunk(ids[start : start + size], stop, lane)

    async def _work_chunk(self, ids: list[int], stop: asyncio.Event, lane: Lane) -> None:
        claimed = await self._claim(ids, stop)
        if len(claimed) < len(ids):
            log.debug("job.duplicates", count=len(ids) - len(claimed))
        await self._deliver(claimed, stop, lane)

    async def _claim(self, ids: list[int], stop: asyncio.Event) -> list[Claimed]:
        lease, most = self._settings.lease_seconds, self._policy.max_attempts
        claimed = await outlast_outages(
            lambda: self._store.deliveries.claim(ids, lease_seconds=lease, max_attempts=most),
            stop=stop,
            what="claim",
        )
        self._in_hand.update(c.id for c in claimed)
        return claimed

    def hand_off(self, claimed: list[Claimed], stop: asyncio.Event) -> None:
        """Send deliveries already claimed for this process (a critical alert's first ones), now.

        Nothing waits for the sends. Should they never be recorded (the
        process dies, or stops first), the lease runs out and the sweeper
        publishes their jobs. Their leases are renewed as this process's own.
        """
        self._in_hand.update(c.id for c in claimed)
        task = asyncio.create_task(self._handed_off(claimed, stop), name="mailer-hand-off")
        self._hand_offs.add(task)
        task.add_done_callback(self._hand_offs.discard)

    async def drain(self) -> None:
        """Wait for every hand-off still sending."""
        while self._hand_offs:
            await asyncio.gather(*self._hand_offs)

    async def _handed_off(self, claimed: list[Claimed], stop: asyncio.Event) -> None:
        async with self._gate.holding():
            try:
                await self._deliver(claimed, stop, Lane.CRITICAL)
            except Stopping:
                log.warning("mailer.hand_off_stopped", deliveries=len(claimed))
            except Exception:
                log.exception("mailer.hand_off_failed", deliveries=len(claimed))

    async def _deliver(self, claimed: list[Claimed], stop: asyncio.Event, lane: Lane) -> None:
        """Send claimed deliveries, record their outcomes, and park a retry job for each deferred one.

        Deliveries the relay could not even be reached for, or refused for
        load or rate, go back to `queued` without spending an attempt; they
        are claimed and sent again before any other work of this loop: at
        once after throttling (the pool's window paces them), once the relay
        answers again after an outage (`Stopping` if told to stop meanwhile).
        """
        while claimed:
            returned = await self._deliver_once(claimed, stop, lane)
            if not returned:
                return
            if self._pool.down:
                log.warning("mailer.waiting_for_relay", deliveries=len(returned), relay=self._pool.relay)
                await self._pool.wait_reachable(stop)
            else:  # refused for load or rate: sent again at once, as the window now allows
                log.info("mailer.resending_throttled", deliveries=len(returned), relay=self._pool.relay)
            claimed = await self._claim(returned, stop)

    async def _deliver_once(self, claimed: list[Claimed], stop: asyncio.Event, lane: Lane) -> list[int]:
        """One attempt at each claimed delivery; the ids given back because the relay was away.

        Each outcome is stored within `record_window` of the relay's answer,
        or as soon as the batch has no send left (`Recorder`), so a process
        that dies leaves little sent but unrecorded, to be sent again.
        """
        try:
            await outlast_outages(
                lambda: self._preload({c.alert_id for c in claimed}), stop=stop, what="load alerts"
            )
            recorder = self._recorder_for(stop)
            urgent, unsent = lane is Lane.CRITICAL, len(claimed)

            async def attempt(c: Claimed) -> tuple[Outcome, Retry | None, bool]:
                nonlocal unsent
                outcome, retry = await self._attempt(c, urgent=urgent)
                unsent -= 1
                recording = recorder.submit(outcome)
                if not unsent:
                    recorder.hurry()  # the batch's last outcome: nothing to wait for
                return outcome, retry, await recording

            results = await asyncio.gather(*(attempt(c) for c in claimed), return_exceptions=True)
        finally:
            self._in_hand.difference_update(c.id for c in claimed)
        attempted = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            attempted.append(result)
        applied = [outcome for outcome, _, ok in attempted if ok]
        retries = {outcome.delivery_id: retry for outcome, retry, _ in attempted if retry is not None}
        counted = metrics().deliveries
        for state, n in Counter(o.state.value for o in applied).items():
            counted.labels(state).inc(n)
        log.debug(
            "mailer.batch",
            lane=lane.name.lower(),
            pid=os.getpid(),
            claimed=len(claimed),
            sent=sum(o.state is DeliveryState.SENT for o in applied),
        )
        for outcome in applied:
            if outcome.state is DeliveryState.DEFERRED:
                await self._defer(outcome, retries[outcome.delivery_id], stop, lane)
            elif outcome.state is DeliveryState.FAILED:
                log.warning(
                    "delivery.failed", delivery_id=outcome.delivery_id, code=outcome.code, reply=outcome.reply
                )
        return [o.delivery_id for o in applied if not o.counted]

    def _recorder_for(self, stop: asyncio.Event) -> Recorder:
        """The process's one recorder, so that every loop's outcomes share its writes."""
        if self._recorder is None or self._recorder[0] is not stop:
            write = self._store.deliveries.record
            self._recorder = stop, Recorder(
                lambda group: outlast_outages(lambda: write(group), stop=stop, what="record"),
                window=self._settings.record_window,
            )
        return self._recorder[1]

    async def _defer(self, outcome: Outcome, retry: Retry, stop: asyncio.Event, lane: Lane) -> None:
        await outlast_outages(
            lambda: self._bus.publish_retry(outcome.delivery_id, retry, lane=lane), stop=stop, what="defer"
        )
        log.info(
            "delivery.deferred",
            delivery_id=outcome.delivery_id,
            attempt=outcome.attempt,
            retry_in=round(retry.delay, 3),
            reply=outcome.reply,
        )

    async def _preload(self, alert_ids: set[str]) -> None:
        """Load each alert once before its sends: concurrent cache misses would each query the store."""
        for alert_id in alert_ids:
            with contextlib.suppress(PermanentDeliveryError):  # each attempt records it as failed
                await self._alert(alert_id)

    async def _alert(self, alert_id: str) -> AlertView:
        alert = self._alerts.get(alert_id)
        if alert is None:
            alert = await self._store.alerts.get(alert_id)
            if alert is None:
                raise PermanentDeliveryError(f"alert {alert_id} is not in the store")
            if len(self._alerts) > 256:
                self._alerts.clear()
            self._alerts[alert_id] = alert
        return alert

    async def _attempt(self, c: Claimed, *, urgent: bool) -> tuple[Outcome, Retry | None]:
        """One try at one delivery: its outcome, and when to try again if it is deferred."""
        try:
            alert = await self._alert(c.alert_id)
            if alert.is_expired(datetime.now(UTC)):
                expired = f"not sent: the alert expired at {alert.expires_at:%Y-%m-%dT%H:%M:%S%z}"
                return Outcome(c.id, DeliveryState.CANCELLED, c.attempt, None, expired), None
            released = alert.released_by is not None
            if tlp_withholds(alert.tlp, role=c.role, contact=c.contact, released=released) is not None:
                # However the delivery came to be (a resend, a role changed since), TLP has the last word.
                log.error("delivery.withheld_by_tlp", delivery_id=c.id, alert_id=c.alert_id, tlp=alert.tlp)
                withheld = withheld_reply(alert.tlp)
                return Outcome(c.id, DeliveryState.CANCELLED, c.attempt, None, withheld), None
            # Bounces and replies come back here, naming this delivery.
            return_path = self._verp.address(c.id)
            digest, unsubscribe = None, None
            if alert.source == DIGEST_SOURCE:
                digest, unsubscribe = await self._digest(alert, c)
            data = self._renderer.message(
                alert,
                language=c.language,
                to=c.email,
                message_id=c.message_id,
                in_reply_to=c.in_reply_to,
                references=c.references,
                reply_to=return_path,
                answer_url=None if self._links is None or digest else self._links.url(c.id),
                purpose=c.purpose,
                charset=c.charset,
                digest=digest,
                unsubscribe_url=unsubscribe,
            )
            # Mail that could not go in the address's charset went in UTF-8: the delivery says so.
            note = self._renderer.render(alert, c.language, c.purpose, c.charset, digest=digest).fallback
            if self._signer is not None:
                data = self._signer.sign(data)
            reply = await self._pool.send(
                sender=return_path, recipient=c.email, message=data, urgent=urgent
            )
        except Exception as exc:
            if not isinstance(exc, DeliveryError):
                # A bug or a value nothing foresaw fails this delivery alone: failing
                # the batch would send its other mail again, and this one for ever.
                log.exception("delivery.internal_error", delivery_id=c.id, alert_id=c.alert_id)
            return self._failed(c, exc)
        at = datetime.now(UTC)
        return Outcome(c.id, DeliveryState.SENT, c.attempt, reply.code, reply.message, at, note=note), None

    async def _digest(self, alert: AlertView, c: Claimed) -> tuple[DigestMail, str]:
        """The digest issue an alert carries, the variant for this delivery, and its unsubscribe link."""
        content = self._digests.get(alert.id)
        if content is None:
            issue = await self._store.digests.of_alert(alert.id)
            if issue is None or issue.content is None:
                # `digest send` records the issue before it publishes jobs; one that died in between
                # records it when run again, so this delivery waits.
                raise TemporaryDeliveryError(f"digest issue of alert {alert.id} not recorded yet")
            if len(self._digests) > 16:
                self._digests.clear()
            content = self._digests[alert.id] = issue.content
        if c.variant is None or not 0 <= c.variant < len(content["variants"]) or self._unsubscribe is None:
            raise PermanentDeliveryError(f"digest delivery {c.id}: no variant of its issue, or no public URL")
        return DigestMail(content, c.variant), self._unsubscribe.url(c.address_id)

    def _failed(self, c: Claimed, exc: Exception) -> tuple[Outcome, Retry | None]:
        """The outcome of a failed attempt, as the retry policy decides it."""
        step = self._policy.next_step(c.attempt, exc)
        code, now = (exc.code if isinstance(exc, DeliveryError) else None), datetime.now(UTC)
        if isinstance(step, GiveUp):
            return Outcome(c.id, DeliveryState.FAILED, c.attempt, code, step.reason, now), None
        if not step.counts:
            return Outcome(c.id, DeliveryState.QUEUED, c.attempt, code, step.reason, now, counted=False), None
        return Outcome(c.id, DeliveryState.DEFERRED, c.attempt, code, step.reason, now), step


def _signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer, when a key is configured; OpenSSL's bindings are only loaded then (about 8 MB)."""
    if settings.dkim_key is None:
        return None
    from ceptoar.mail.dkim import DkimSigner

    return DkimSigner.from_settings(settings)


def _job_weight(message: AbstractIncomingMessage) -> int:
    """How many deliveries a job names (a malformed one counts as one)."""
    try:
        return len(job_delivery_ids(message.body))
    except ValueError:
        return 1
