"""Taking in one returned message: read it, record it against its delivery, keep it."""

from __future__ import annotations

from ceptoar.bounces.report import Report, read_report
from ceptoar.bounces.verp import Verp
from ceptoar.metrics import metrics
from ceptoar.store import Returned, ReturnedMail, Store

__all__ = ["take_in"]


async def take_in(
    store: Store, verp: Verp, data: bytes, *, envelope_to: str | None = None
) -> tuple[Report, Returned]:
    """What the message says and what recording it did; never raises for the message's content."""
    report = read_report(data, verp, envelope_to=envelope_to)
    failed = [r for r in report.recipients if r.permanent] or report.recipients
    first = failed[0] if failed else None
    mail = ReturnedMail(
        kind=report.kind,
        delivery_id=report.token.delivery_id if report.token is not None and report.token.valid else None,
        token_valid=None if report.token is None else report.token.valid,
        recipient=first.address[:320] if first else None,
        status=first.status if first else None,
        diagnostic=first.diagnostic if first else None,
        subject=report.subject,
        message=data,
        sender=report.sender,
        answer=None if report.answer is None else report.answer.value,
        problem=report.problem,
    )
    kept = await store.returns.record(mail)
    metrics().returns.labels(report.kind).inc()
    return report, kept
