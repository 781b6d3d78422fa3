"""Answer links: each delivery's own page for its organisation's answer, with a keyed MAC.

An alert mail carries `PUBLIC_URL/answer/ID-MAC`: ID is the delivery's row
id and MAC the first 20 hex digits of an HMAC-SHA256 of it under a key
derived for this purpose alone, so neither a return path's token nor a
guessed number opens a page. The link lives as long as its alert (until it
expires, or for a window after it was sent when it never does) plus a grace
period; after that the page says so and records nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ceptoar.config import Settings

__all__ = ["PURPOSE", "AnswerLinks", "UnsubscribeLinks", "link_valid_until"]

# What the key for these MACs is derived for (`Settings.derived_key`); not the return paths' key.
PURPOSE: Final = "answer-link"
UNSUBSCRIBE_PURPOSE: Final = "digest-unsubscribe"
_MAC_DIGITS: Final = 20
_TOKEN: Final = re.compile(rf"^(\d{{1,18}})-([0-9a-f]{{{_MAC_DIGITS}}})$")


def link_valid_until(
    created_at: datetime, expires_at: datetime | None, *, window: timedelta, grace: timedelta
) -> datetime:
    """Until when an alert's answer links take answers.

    Its expiry, else `window` after it was made; plus `grace` either way.
    """
    return (expires_at or created_at + window) + grace


@dataclass(frozen=True)
class AnswerLinks:
    """Makes and reads the answer links under one public address and one key."""

    base_url: str
    key: bytes
    # The links' path under the public address.
    path: str = "answer"

    @classmethod
    def from_settings(cls, settings: Settings) -> AnswerLinks | None:
        """The service's answer links; None when no public address is set (answers come by reply only)."""
        if settings.public_url is None:
            return None
        return cls(settings.public_url.rstrip("/"), settings.derived_key(PURPOSE))

    def _mac(self, delivery_id: int) -> str:
        return hmac.new(self.key, str(delivery_id).encode(), hashlib.sha256).hexdigest()[:_MAC_DIGITS]

    def token(self, delivery_id: int) -> str:
        return f"{delivery_id}-{self._mac(delivery_id)}"

    def url(self, delivery_id: int) -> str:
        """The answer page of one delivery."""
        return f"{self.base_url}/{self.path}/{self.token(delivery_id)}"

    def read(self, token: str) -> int | None:
        """The delivery a token names, or None if it is not one this key made."""
        m = _TOKEN.match(token)
        if m is None:
            return None
        delivery_id = int(m.group(1))
        return delivery_id if hmac.compare_digest(m.group(2), self._mac(delivery_id)) else None


@dataclass(frozen=True)
class UnsubscribeLinks(AnswerLinks):
    """A digest's one-click unsubscribe links, `PUBLIC_URL/digest/unsubscribe/ADDRESS_ID-MAC`: the same
    construction as answer links, naming an address instead of a delivery, under a key of their own.
    They live as long as the key: a digest read years later can still be left."""

    path: str = "digest/unsubscribe"

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks | None:
        if settings.public_url is None:
            return None
        return cls(settings.public_url.rstrip("/"), settings.derived_key(UNSUBSCRIBE_PURPOSE))
