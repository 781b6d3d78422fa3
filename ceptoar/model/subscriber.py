"""A subscribed address as choosing an audience sees it, and the values a subscription holds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Candidate", "Role"]


class Role(StrEnum):
    """What an address is for at its organisation."""

    PRIMARY = "primary"
    SECURITY = "security"
    BACKUP = "backup"


@dataclass(frozen=True)
class Candidate:
    """An active address with what choosing an audience needs to know of it."""

    address_id: int
    email: str
    code: str
    prefecture: str
    role: str
    language: str
    min_severity: str
    categories: tuple[str, ...]
    prefectures: tuple[str, ...]
    wants_tests: bool
    contact: bool
    # The digest it takes and how low-severity notices come (`ceptoar.model.digest`).
    digest: str = "none"
    low_notices: str = "auto"
