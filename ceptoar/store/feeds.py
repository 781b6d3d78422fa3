"""Feed credentials and receipts for the HTTP ingestion endpoint.

An API key is 32 random bytes; only its SHA-256 is stored, which is enough
for a key of that strength. A signing secret must be kept to check HMACs,
so it is kept sealed under the service's key (`ceptoar.sealing`). A feed
may post notices only under the source names it was given. A receipt
records a notice the endpoint accepted, so the same POST again is answered
with the existing id instead of a second publish.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ceptoar.errors import CeptoarError
from ceptoar.model.notice import OPERATOR_SOURCE
from ceptoar.store.engine import reading
from ceptoar.store.tables import feeds, receipts

__all__ = [
    "Feed",
    "FeedExists",
    "FeedRepo",
    "NewFeed",
    "Receipt",
    "ReservedSource",
    "Sealer",
    "hash_key",
    "seal_context",
]

KEY_PREFIX = "cep_"
# Longer than any publish may take (the endpoint gives the broker 10 s to confirm).
ABANDONED_AFTER = 60


class Sealer(Protocol):
    """What keeps a secret sealed (`ceptoar.sealing.SecretBox`)."""

    def seal(self, secret: str, *, context: str) -> str: ...


class FeedExists(CeptoarError, ValueError):
    """A feed of that name is already registered."""


class ReservedSource(CeptoarError, ValueError):
    """A feed asked for the source name that only the operators' own notices carry."""


def seal_context(name: str) -> str:
    """What a feed's sealed secret is bound to: it opens for that feed only."""
    return f"feed:{name}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Feed:
    """A registered source of notices."""

    name: str
    sources: tuple[str, ...]
    # The signing secret as kept: sealed (`ceptoar.sealing`), or in the clear from an older release.
    signing_secret: str | None
    revoked: bool


@dataclass(frozen=True)
class Receipt:
    """A notice the endpoint accepted: `publishing`, `published`, or `rejected` later with the reason."""

    state: str
    reason: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class NewFeed:
    """What `add` hands out once: the key, and the signing secret when asked for."""

    name: str
    key: str
    signing_secret: str | None


class FeedRepo:
    """Feeds and their receipts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        name: str,
        *,
        sources: Sequence[str] = (),
        signed: bool = False,
        sealer: Sealer | None = None,
    ) -> NewFeed:
        """Register a feed; its key, and with `signed` its signing secret, are handed out once in NewFeed.

        Only the key's hash is kept, and the signing secret only as `sealer`
        sealed it: a signed feed needs one.
        """
        if signed and sealer is None:
            raise ValueError("a signed feed's secret is kept sealed: pass a sealer")
        if OPERATOR_SOURCE in (name, *sources):
            raise ReservedSource(
                f"{OPERATOR_SOURCE!r} is reserved for CEPTOAR's operators (ceptoar compose, cancel, "
                "release); a feed may neither be named so nor post as it"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        secret = secrets.token_urlsafe(32) if signed else None
        kept = sealer.seal(secret, context=seal_context(name)) if secret and sealer else None
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(feeds).values(
                        name=name,
                        key_hash=hash_key(key),
                        sources=sorted({name, *sources}),
                        signing_secret=kept,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError as exc:
            raise FeedExists(f"feed {name!r} already exists; revoke it or choose another name") from exc
        return NewFeed(name, key, secret)

    async def revoke(self, name: str) -> bool:
        """Revoke a feed's key; False if there is no such active feed."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(feeds)
                .where(feeds.c.name == name, feeds.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount == 1

    async def reseal(self, name: str, kept: str) -> None:
        """Replace a feed's signing secret kept in the clear (by an older release) with its sealed form."""
        async with self._engine.begin() as conn:
            await conn.execute(update(feeds).where(feeds.c.name == name).values(signing_secret=kept))

    async def by_key(self, key: str) -> Feed | None:
        """The feed a presented API key belongs to (revoked ones too; the caller decides)."""
        found = await self._select(feeds.c.key_hash == hash_key(key))
        return found[0] if found else None

    async def all(self) -> list[Feed]:
        return await self._select(None)

    async def _select(self, where: ColumnElement[bool] | None) -> list[Feed]:
        query = select(feeds).order_by(feeds.c.name)
        if where is not None:
            query = query.where(where)
        async with reading(self._engine) as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Feed(r["name"], tuple(r["sources"]), r["signing_secret"], r["revoked_at"] is not None)
            for r in rows
        ]

    async def receive(self, *, source: str, source_id: str, fmt: str, feed: str) -> str | None:
        """Record that a notice is being accepted; return the state of an earlier receipt, if any.

        A receipt left `publishing` for over ABANDONED_AFTER seconds belongs to a
        request that died before the broker answered, and one `rejected` to a
        notice the dispatcher refused (the sender may have mended what was
        wrong, such as the registry): either is taken over.
        """
        stale = datetime.now(UTC) - timedelta(seconds=ABANDONED_AFTER)
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(receipts).where(
                    receipts.c.source == source,
                    receipts.c.source_id == source_id,
                    ((receipts.c.state == "publishing") & (receipts.c.received_at < stale))
                    | (receipts.c.state == "rejected"),
                )
            )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(receipts).values(
                        source=source,
                        source_id=source_id,
                        format=fmt,
                        feed=feed,
                        state="publishing",
                        received_at=datetime.now(UTC),
                    )
                )
            return None
        except IntegrityError:
            return await self.receive_state(source=source, source_id=source_id)

    async def receive_state(self, *, source: str, source_id: str) -> str | None:
        """`publishing`, `published` or `rejected` for a notice the endpoint took, else None."""
        found = await self.receipt(source=source, source_id=source_id)
        return None if found is None else found.state

    async def receipt(self, *, source: str, source_id: str) -> Receipt | None:
        """What became of a notice the endpoint took, as far as the receipt says."""
        async with reading(self._engine) as conn:
            row = (
                await conn.execute(
                    select(receipts.c.state, receipts.c.reason, receipts.c.field).where(
                        receipts.c.source == source, receipts.c.source_id == source_id
                    )
                )
            ).first()
        return None if row is None else Receipt(row.state, row.reason, row.field)

    async def reject(self, *, source: str, source_id: str, reason: str, field: str | None) -> bool:
        """Mark the receipt of a notice the dispatcher refused, with why; False if there is none."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(receipts)
                .where(receipts.c.source == source, receipts.c.source_id == source_id)
                .values(state="rejected", reason=reason, field=field)
            )
        return result.rowcount == 1

    async def published(self, *, source: str, source_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(receipts)
                .where(receipts.c.source == source, receipts.c.source_id == source_id)
                .values(state="published")
            )

    async def forget(self, *, source: str, source_id: str) -> None:
        """Drop a receipt whose publish failed, so the sender's retry is accepted."""
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(receipts).where(receipts.c.source == source, receipts.c.source_id == source_id)
            )
