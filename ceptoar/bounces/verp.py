"""Each delivery's own return path (VERP), with a keyed MAC so that only ceptoar can make one.

A delivery's envelope sender is `LOCAL+ID-MAC@DOMAIN` (from the base
address `bounces@ceptoar.example`, say: `bounces+12345-3fa9c2b1d0e4@...`):
ID is the delivery's row id and MAC the first 12 hex digits of an
HMAC-SHA256 of it under a key derived from the service's secret key. What
comes back to that address, a bounce or a reply, names its delivery; a
forged or mistyped address names none. Lower case only, since mail systems
may fold the local part's case.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from ceptoar.config import Settings

__all__ = ["PURPOSE", "Token", "Verp"]

# What the key for these MACs is derived for (`Settings.derived_key`).
PURPOSE: Final = "verp"
_MAC_DIGITS: Final = 12


@dataclass(frozen=True)
class Token:
    """What an address ceptoar sent from says: the delivery it names, and whether its MAC holds."""

    delivery_id: int
    valid: bool


class Verp:
    """Makes and reads the return paths of one base address under one key."""

    def __init__(self, base: str, key: bytes) -> None:
        local, _, domain = base.rpartition("@")
        if not local or not domain:
            raise ValueError(f"{base!r} is not an address")
        self._local, self._domain = local.lower(), domain.lower()
        self._key = key
        self._pattern = re.compile(
            rf"^{re.escape(self._local)}\+(\d{{1,18}})-([0-9a-f]{{{_MAC_DIGITS}}})@{re.escape(self._domain)}$"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Verp:
        """The service's return paths: its bounce address, under a key derived from its secret key."""
        return cls(settings.return_path, settings.derived_key(PURPOSE))

    def _mac(self, delivery_id: int) -> str:
        return hmac.new(self._key, str(delivery_id).encode(), hashlib.sha256).hexdigest()[:_MAC_DIGITS]

    def address(self, delivery_id: int) -> str:
        """The return path of one delivery."""
        return f"{self._local}+{delivery_id}-{self._mac(delivery_id)}@{self._domain}"

    def read(self, address: str) -> Token | None:
        """The token of one of this base's addresses (valid or not), or None for any other address."""
        m = self._pattern.match(address.strip().strip("<>").lower())
        if m is None:
            return None
        delivery_id = int(m.group(1))
        return Token(delivery_id, hmac.compare_digest(m.group(2), self._mac(delivery_id)))

    def is_ours(self, address: str) -> bool:
        """Whether `address` is one of this base's return paths, good or forged."""
        local, _, domain = address.strip().strip("<>").lower().rpartition("@")
        return domain == self._domain and local.startswith(self._local + "+")
