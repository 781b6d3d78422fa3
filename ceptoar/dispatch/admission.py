"""What a notice must pass before it is accepted: the same checks at the HTTP door and in the dispatcher.

A notice the endpoint answered 202 must not be refused afterwards for
anything it could have been told at once, so the endpoint asks exactly
what the dispatcher will: an expiry still to come, every area code a
subscribed local government, and an id not used before with another
`sent` (CAP keys a message by sender, identifier and sent).
"""

from __future__ import annotations

from datetime import datetime

from ceptoar.errors import InvalidNotice
from ceptoar.model.notice import Notice
from ceptoar.store import Store, StoredAlert

__all__ = ["admit"]


async def admit(store: Store, notice: Notice, *, now: datetime) -> StoredAlert | None:
    """The alert already made from this notice, if any; InvalidNotice for what cannot be accepted."""
    stored = await store.alerts.existing(notice.source, notice.id)
    if stored is not None:
        if stored.sent is not None and stored.sent != notice.sent:
            raise InvalidNotice(
                f"{notice.source} already used id {notice.id} with sent {stored.sent.isoformat()}; "
                "a notice is keyed by its source, id and sent time",
                field="id",
            )
        return stored
    if notice.is_expired(now):
        raise InvalidNotice(f"expired at {notice.expires:%Y-%m-%dT%H:%M:%S%z}", field="expires")
    unknown = set(await store.subscribers.unknown_codes(notice.area))
    for i, code in enumerate(notice.area):
        if code in unknown:
            raise InvalidNotice(f"{code} is not a subscribed local government", field=f"area[{i}]")
    return None
