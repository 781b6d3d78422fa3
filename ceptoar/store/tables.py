"""The tables: subscribers and their addresses, notices, alerts, deliveries and
the append-only delivery event log.

Times are stored in UTC; `UtcDateTime` refuses naive datetimes so a local
time can never slip in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator

from ceptoar.model.escalation import Purpose
from ceptoar.model.states import AlertState

__all__ = [
    "NAMING",
    "UtcDateTime",
    "addresses",
    "alerts",
    "answers",
    "audit",
    "deliveries",
    "delivery_events",
    "digests",
    "escalations",
    "feeds",
    "metadata",
    "notices",
    "operators",
    "portal_sessions",
    "receipts",
    "returned",
    "signin_links",
    "subscribers",
]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused; pass an aware one")
        value = value.astimezone(UTC)
        # SQLite keeps text: store naive UTC so comparisons order correctly.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_Id = BigInteger().with_variant(Integer(), "sqlite")

# How constraints and indexes are named, so that a revision can name the ones it changes.
NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

subscribers = Table(
    "subscribers",
    metadata,
    Column("code", String(6), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefecture", String(2), nullable=False, index=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

addresses = Table(
    "addresses",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("subscriber_code", ForeignKey("subscribers.code"), nullable=False, index=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("language", String(2), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("updated_at", UtcDateTime, nullable=False),
    # The address's subscription (schema 2).
    Column("min_severity", String(16), nullable=False, server_default="low"),
    Column("categories", JSON, nullable=False, server_default="[]"),
    Column("prefectures", JSON, nullable=False, server_default="[]"),
    Column("wants_tests", Boolean, nullable=False, server_default=false()),
    Column("contact", Boolean, nullable=False, server_default=false()),
    # How the address's mail is encoded: utf-8 or iso-2022-jp (schema 12).
    Column("charset", String(16), nullable=False, server_default="utf-8"),
    # The security mail magazine it takes: none, weekly or monthly; and how low-severity notices come:
    # auto (in the digest when it takes one, else one by one), single, digest or both (revision 0003).
    Column("digest", String(8), nullable=False, server_default="none"),
    Column("low_notices", String(8), nullable=False, server_default="auto"),
)

notices = Table(
    "notices",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("source_id", String(128), nullable=False),
    Column("format", String(16), nullable=False),
    Column("sent_at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("source", "source_id"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("notice_id", ForeignKey("notices.id"), nullable=False, unique=True),
    Column("source", String(64), nullable=False),
    Column("source_id", String(128), nullable=False, index=True),
    Column("msg_type", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("severity_rules", JSON, nullable=False),
    Column("tlp", String(16), nullable=False),
    Column("title", String(300), nullable=False),
    Column("notice", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # Lifecycle (schema 2): active, held (with the reason) or cancelled; the
    # first alert of a thread is its own thread_id; an update or cancel
    # names the alert it refers to in parent_id.
    Column("state", String(16), nullable=False, server_default=AlertState.ACTIVE.value),
    Column("held_reason", Text, nullable=True),
    Column("thread_id", String(32), nullable=True, index=True),
    Column("parent_id", String(32), nullable=True),
    Column("status", String(16), nullable=False, server_default="actual"),
    Column("expires_at", UtcDateTime, nullable=True),
    # Set once every delivery job is confirmed by the broker; until then a
    # redelivered notice or the sweeper publishes the jobs again.
    Column("jobs_published_at", UtcDateTime, nullable=True),
    # Schema 5: the audience whose delivery rows are still to be written
    # (`AlertRepo.store_pending`); NULL once they are.
    Column("pending", JSON(none_as_null=True), nullable=True),
    # Schema 8: the operator who released a held alert to an audience of their choosing, and when.
    Column("released_by", String(128), nullable=True),
    Column("released_at", UtcDateTime, nullable=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id"), nullable=False),
    Column("address_id", ForeignKey("addresses.id"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("last_code", Integer, nullable=True),
    Column("last_reply", Text, nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    # Who claimed it last (`ceptoar.store.leases.Holder`: host/pid/start), which renews its lease while
    # it works (revision 0004).
    Column("holder", String(255), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    # Threading headers of this mail (schema 2): the Message-IDs this address
    # already got in the alert's thread.
    Column("in_reply_to", String(255), nullable=True),
    Column("references", Text, nullable=True),
    # What the mail is for (`ceptoar.model.escalation.Purpose`): the alert, or a reminder or backup copy.
    Column("purpose", String(16), nullable=False, server_default=Purpose.ALERT.value),
    # Which variant of a mail personalised by address this one is: for a digest, the index of the
    # selection of items its address's subscription and role admit (revision 0003).
    Column("variant", Integer, nullable=True),
    # One alert mail per address and alert, and at most one reminder and one backup copy (schema 11).
    UniqueConstraint("alert_id", "address_id", "purpose", name="uq_deliveries_alert_address_purpose"),
    Index(None, "alert_id", "state"),
    Index(None, "state", "lease_until"),
)

# Notices the dispatcher refused after they were accepted (revision 0004), whatever door they came
# through: each is also dead-lettered, and `ceptoar status` and `ceptoar alerts --rejected` show why.
rejections = Table(
    "rejections",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    # From the message's id (`source:notice-id`, as every door publishes it); none when it had none.
    Column("source", String(64), nullable=True),
    Column("source_id", String(128), nullable=True, index=True),
    Column("reason", Text, nullable=False),
    Column("field", String(128), nullable=True),
)

# Sources allowed to post to the HTTP feed endpoint (schema 3). Only a hash
# of each API key is kept; the signing secret must be kept to check HMACs.
feeds = Table(
    "feeds",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("sources", JSON, nullable=False),
    Column("signing_secret", String(128), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

# What the HTTP endpoint accepted (schema 3): a second POST of the same
# notice is answered from here, even before the dispatcher has stored it.
receipts = Table(
    "receipts",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("source_id", String(128), primary_key=True),
    Column("format", String(16), nullable=False),
    Column("feed", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # Schema 7: why the dispatcher refused a notice the endpoint had accepted (state `rejected`).
    Column("reason", Text, nullable=True),
    Column("field", String(200), nullable=True),
)

# Everything that came back to a delivery's return path (schema 9): bounces, delays, auto-replies,
# complaints, replies, and what matched no delivery, with why. Append-only; the message is kept,
# cut at RETURNED_KEEP bytes.
returned = Table(
    "returned",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("received_at", UtcDateTime, nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("delivery_id", ForeignKey("deliveries.id"), nullable=True, index=True),
    Column("matched", Boolean, nullable=False),
    # What recording it did, or why it matched no delivery.
    Column("outcome", Text, nullable=False),
    Column("recipient", String(320), nullable=True),
    Column("status", String(16), nullable=True),
    Column("diagnostic", Text, nullable=True),
    Column("subject", String(300), nullable=False, default=""),
    Column("size", Integer, nullable=False),
    Column("message", LargeBinary, nullable=False),
)

# What each organisation answered to an alert (schema 10), by reply or by link; append-only, the
# latest row of an organisation being its answer.
answers = Table(
    "answers",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("delivery_id", ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("alert_id", ForeignKey("alerts.id"), nullable=False, index=True),
    Column("subscriber_code", String(6), nullable=False),
    Column("answer", String(16), nullable=False),
    Column("via", String(8), nullable=False),
    # The address that answered (a reply's From); none for a link.
    Column("by", String(320), nullable=True),
    # An organisation's latest answer to an alert, which every answer page shows (revision 0005).
    Index("ix_answers_alert_organisation", "alert_id", "subscriber_code", "id"),
)

# Each organisation's escalation steps per alert (schema 11): at most one of each, however many
# processes escalate at once.
escalations = Table(
    "escalations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("alert_id", ForeignKey("alerts.id"), nullable=False),
    Column("subscriber_code", String(6), nullable=False),
    Column("step", String(16), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # The sweeper, or the operator who escalated by hand.
    Column("by", String(128), nullable=False),
    # The reminders and backup copies it queued.
    Column("deliveries", Integer, nullable=False),
    UniqueConstraint("alert_id", "subscriber_code", "step", name="uq_escalations_alert_subscriber_step"),
)

# Every operator action (schema 4), append-only like the delivery events.
audit = Table(
    "audit",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("operator", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("alert_id", String(32), nullable=True),
    Column("notice_id", String(128), nullable=True, index=True),
    Column("detail", JSON, nullable=False),
    # Schema 6: the account and host the operator's command ran under.
    Column("os_user", String(64), nullable=True),
    Column("host", String(255), nullable=True),
)

# Append-only: rows are inserted, never updated or deleted.
delivery_events = Table(
    "delivery_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("delivery_id", ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("smtp_code", Integer, nullable=True),
    Column("smtp_reply", Text, nullable=True),
)

# The portal's operators (revision 0002): not subscribers; each signs in with its own key, of which
# only an argon2 hash is kept.
operators = Table(
    "operators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key_hash", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("disabled_at", UtcDateTime, nullable=True),
)

# One-time sign-in links mailed to a registered address (revision 0002): only the token's hash is
# kept; a link is used once (`used_at`) and dies at `expires_at`.
signin_links = Table(
    "signin_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("address_id", ForeignKey("addresses.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
    Index(None, "address_id", "created_at"),
)

# Operators' sign-in attempts (revision 0005), counted by name and client in the database so that
# every API process limits guessing alike; a success is kept to know the operator's own clients.
signin_attempts = Table(
    "signin_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("client", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Index(None, "name", "at"),
    Index(None, "client", "at"),
)

# Signed-in portal visitors (revision 0002): an address of a local government, or an operator.
# The cookie carries the token; only its hash is kept. Signing out deletes the row.
portal_sessions = Table(
    "portal_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("address_id", ForeignKey("addresses.id"), nullable=True),
    Column("operator", ForeignKey("operators.name"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Issues of the security mail magazine (revision 0003), one per kind and period: composed (a draft the
# editor may change), then sent once as an alert of source `digest`, whose deliveries carry it.
digests = Table(
    "digests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("period", String(8), nullable=False),
    # 第N号: numbered per kind, in the order issues were composed.
    Column("number", Integer, nullable=False),
    Column("articles", JSON, nullable=False),
    Column("state", String(8), nullable=False),
    Column("composed_at", UtcDateTime, nullable=False),
    Column("composed_by", String(128), nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Column("alert_id", ForeignKey("alerts.id"), nullable=True),
    # What was sent: the items and each variant's selection of them (`ceptoar.model.digest`).
    Column("content", JSON, nullable=True),
    UniqueConstraint("kind", "period"),
    UniqueConstraint("kind", "number"),
)
