"""The delivery store: subscribers, alerts, deliveries and their event log, feeds and the audit log."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.model.alert import AlertStatus, AlertView
from ceptoar.store import migrations
from ceptoar.store.alerts import FIRST_ROWS, AlertRepo, Lifecycle, StoredAlert
from ceptoar.store.answers import Answered, AnswerRepo, AnswerTarget
from ceptoar.store.audit import Actor, AuditEntry, AuditRepo
from ceptoar.store.deliveries import Claimed, DeliveryRepo, Outcome
from ceptoar.store.digests import DIGEST_SOURCE, DigestIssue, DigestRepo, IssueSent
from ceptoar.store.engine import create_engine, dispose, exclusive, reading
from ceptoar.store.escalations import Escalated, EscalationRepo, Listed
from ceptoar.store.feeds import Feed, FeedRepo, NewFeed
from ceptoar.store.holds import HoldRepo, NotHeld
from ceptoar.store.leases import LeaseRepo
from ceptoar.store.migrations import SchemaOutOfDate
from ceptoar.store.portal import Operator, PortalRepo, Visitor
from ceptoar.store.rejections import Rejection, RejectionRepo
from ceptoar.store.retention import Pruned, RetentionRepo
from ceptoar.store.returns import Bouncing, Returned, ReturnedMail, ReturnsRepo, Silent
from ceptoar.store.subscribers import ImportResult, RegistryCounts, SubscriberRepo
from ceptoar.store.threads import ThreadRepo

__all__ = [
    "DIGEST_SOURCE",
    "FIRST_ROWS",
    "Actor",
    "AnswerTarget",
    "Answered",
    "AuditEntry",
    "Bouncing",
    "Claimed",
    "DigestIssue",
    "Escalated",
    "Feed",
    "ImportResult",
    "IssueSent",
    "Lifecycle",
    "Listed",
    "NewFeed",
    "NotHeld",
    "Operator",
    "Outcome",
    "PortalRepo",
    "Pruned",
    "RegistryCounts",
    "Rejection",
    "Returned",
    "ReturnedMail",
    "SchemaOutOfDate",
    "Silent",
    "Store",
    "StoredAlert",
    "Visitor",
]


class Store:
    """One database, reached through thirteen repositories.

    `subscribers` (organisations and their addresses), `alerts` (notices and
    the alerts made from them), `deliveries` (one row per mail and its event
    log), `leases` (who holds a claimed delivery), `threads` (an alert with its updates and
    cancel), `holds` (held
    alerts an operator releases), `feeds` (HTTP feed credentials and
    receipts), `audit` (what operators did), `retention` (pruning old
    events and receipts), `returns` (what came back to the return paths) and
    `answers` (what organisations answered, by reply or by link),
    `escalations` (the reminders and call lists of silent organisations) and `portal` (operators,
    sign-in links, sessions and what one organisation may read on the portal) and `digests` (the
    security mail magazine's issues) and `rejections` (notices the dispatcher refused, and why).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.subscribers = SubscriberRepo(engine)
        self.alerts = AlertRepo(engine)
        self.deliveries = DeliveryRepo(engine)
        self.leases = LeaseRepo(engine)
        self.feeds = FeedRepo(engine)
        self.audit = AuditRepo(engine)
        self.threads = ThreadRepo(engine)
        self.holds = HoldRepo(engine)
        self.retention = RetentionRepo(engine)
        self.returns = ReturnsRepo(engine)
        self.answers = AnswerRepo(engine)
        self.escalations = EscalationRepo(engine)
        self.portal = PortalRepo(engine)
        self.digests = DigestRepo(engine)
        self.rejections = RejectionRepo(engine)

    @classmethod
    async def open(cls, url: str, *, upgrade: bool = False) -> Store:
        """Connect; a new database gets its tables.

        A database at another revision is refused with SchemaOutOfDate
        naming what to run, unless `upgrade` (`ceptoar serve`, `ceptoar db
        upgrade`) brings it to this ceptoar's revision (`ceptoar.store.migrations`).
        """
        engine = create_engine(url)
        try:
            await (migrations.upgrade(engine) if upgrade else migrations.check(engine))
        except BaseException:
            await dispose(engine)
            raise
        return cls(engine)

    async def status(self, alert: AlertView) -> AlertStatus:
        """The alert with its deliveries by state and its organisations' answers: what `ceptoar status`
        and the HTTP endpoint show."""
        organisations = await self.returns.organisations(alert.id)
        steps = await self.escalations.counts(alert.id)
        organisations = organisations.model_copy(
            update={"escalated": steps.get("reminded", 0), "to_call": steps.get("call", 0)}
        )
        return AlertStatus.of(alert, await self.alerts.counts(alert.id), organisations)

    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Whether this process does `name`'s once-per-tick work now, of every host (`engine.exclusive`)."""
        return exclusive(self.engine, name)

    async def ping(self) -> None:
        async with reading(self.engine) as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await dispose(self.engine)

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
