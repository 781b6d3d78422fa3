"""The security mail magazine (digest): who takes it, its periods, and when it is sent.

An address takes a `weekly` or `monthly` digest, or `none`. Low-severity
notices come one by one, only in the digest, or both (`LowNotices`); by
default (`auto`) only in the digest for an address that takes one, else one
by one. Medium and above always come one by one, and are listed in the
digest too.

A period is a calendar month (`2026-11`) or an ISO week (`2026-W47`) in
Japan's time. The schedule is a cron expression in Japan's time: five
fields (minute, hour, day of month, month, day of week; `*`, lists,
ranges and steps), and `NW` in the day of month for the weekday nearest
day N within the month (`1W`: the month's first weekday).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Final

__all__ = [
    "JST",
    "DigestKind",
    "LowNotices",
    "Period",
    "Schedule",
    "low_in_digest",
    "low_one_by_one",
]

JST: Final = timezone(timedelta(hours=9), "JST")


class DigestKind(StrEnum):
    NONE = "none"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class LowNotices(StrEnum):
    """How an address takes low-severity notices."""

    AUTO = "auto"
    SINGLE = "single"
    DIGEST = "digest"
    BOTH = "both"


def _low_mode(digest: str, low: str) -> str:
    if low == LowNotices.AUTO:
        return LowNotices.DIGEST if digest != DigestKind.NONE else LowNotices.SINGLE
    return low


def low_one_by_one(digest: str, low: str) -> bool:
    """Whether an address gets low-severity notices mailed one by one."""
    return _low_mode(digest, low) in (LowNotices.SINGLE, LowNotices.BOTH)


def low_in_digest(digest: str, low: str) -> bool:
    """Whether an address's digest lists low-severity notices."""
    return digest != DigestKind.NONE and _low_mode(digest, low) in (LowNotices.DIGEST, LowNotices.BOTH)


_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_WEEK = re.compile(r"^(\d{4})-W(0[1-9]|[1-4]\d|5[0-3])$")


@dataclass(frozen=True)
class Period:
    """A digest's period: its kind, its name, and its start and end (Japan's time, end excluded)."""

    kind: DigestKind
    name: str
    start: datetime
    end: datetime

    @classmethod
    def parse(cls, text: str) -> Period:
        """`2026-11` (a month) or `2026-W47` (an ISO week); ValueError naming the forms otherwise."""
        text = text.strip()
        if m := _MONTH.match(text):
            year, month = int(m[1]), int(m[2])
            start = datetime(year, month, 1, tzinfo=JST)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=JST)
            return cls(DigestKind.MONTHLY, text, start, end)
        if m := _WEEK.match(text):
            try:
                monday = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            except ValueError as exc:
                raise ValueError(f"period {text!r}: {m[1]} has no week {m[2]}") from exc
            start = datetime.combine(monday, datetime.min.time(), JST)
            return cls(DigestKind.WEEKLY, text, start, start + timedelta(days=7))
        raise ValueError(f"period {text!r}: give a month as 2026-11 or an ISO week as 2026-W47")

    @classmethod
    def last_ended(cls, kind: DigestKind, now: datetime) -> Period:
        """The latest period of `kind` that has ended by `now`."""
        local = now.astimezone(JST)
        if kind == DigestKind.MONTHLY:
            first = local.date().replace(day=1) - timedelta(days=1)
            return cls.parse(f"{first:%Y-%m}")
        year, week, _ = (local.date() - timedelta(days=7)).isocalendar()
        return cls.parse(f"{year}-W{week:02d}")

    def label(self, lang: str) -> str:
        """How an issue names its period."""
        if self.kind == DigestKind.MONTHLY:
            return f"{self.start:%Y年%-m月}" if lang == "ja" else f"{self.start:%B %Y}"
        last = self.end - timedelta(days=1)
        if lang == "ja":
            return f"{self.start:%Y年%-m月%-d日}〜{last:%-m月%-d日}"
        return f"{self.start:%d %b} – {last:%d %b %Y}"


_FIELDS: Final = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


@dataclass(frozen=True)
class Schedule:
    """A cron expression in Japan's time (see the module's notes)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    # Days N of `NW` (the weekday nearest day N within the month).
    nearest_weekdays: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Schedule:
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(f"schedule {text!r}: five fields (minute hour day-of-month month day-of-week)")
        nearest: set[int] = set()
        fields = list(parts)
        if re.fullmatch(r"\d{1,2}W", parts[2]):
            nearest.add(_number(parts[2][:-1], "day of month", 1, 31, text))
            fields[2] = "*"
        values = [_field(p, name, lo, hi, text) for p, (name, lo, hi) in zip(fields, _FIELDS, strict=True)]
        weekdays = frozenset(7 if d == 0 else d for d in values[4])  # 0 and 7 are both Sunday
        return cls(
            text,
            frozenset(values[0]),
            frozenset(values[1]),
            frozenset(values[2]) if not nearest else frozenset(),
            frozenset(nearest),
            frozenset(values[3]),
            weekdays,
            parts[2] == "*",
            parts[4] == "*",
        )

    def matches(self, when: datetime) -> bool:
        """Whether the schedule fires at `when`'s minute (Japan's time)."""
        t = when.astimezone(JST)
        if t.minute not in self.minutes or t.hour not in self.hours or t.month not in self.months:
            return False
        weekday = t.isoweekday()
        if self.nearest_weekdays:
            return weekday in self.weekdays and any(
                _nearest_weekday(t.date(), d) == t.date() for d in self.nearest_weekdays
            )
        day_ok, weekday_ok = t.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:  # as cron: with one of them restricted, that one decides
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def fired_between(self, after: datetime, until: datetime) -> datetime | None:
        """The last minute in (after, until] at which the schedule fires, if any (at most a day back)."""
        t = until.astimezone(UTC).replace(second=0, microsecond=0)
        floor = max(after, until - timedelta(days=1))
        while t > floor:
            if self.matches(t):
                return t
            t -= timedelta(minutes=1)
        return None


def _nearest_weekday(day: date, n: int) -> date | None:
    """The weekday nearest day `n` of `day`'s month, staying within the month (None if no day `n`)."""
    try:
        target = day.replace(day=n)
    except ValueError:
        return None
    if target.isoweekday() == 6:  # Saturday: Friday, or Monday when Friday is in the month before
        return target - timedelta(days=1) if target.day > 1 else target + timedelta(days=2)
    if target.isoweekday() == 7:  # Sunday: Monday, or Friday when Monday is in the month after
        later = target + timedelta(days=1)
        return later if later.month == target.month else target - timedelta(days=2)
    return target


def _number(text: str, name: str, lo: int, hi: int, whole: str) -> int:
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise ValueError(f"schedule {whole!r}: {name} {text!r} is not a number from {lo} to {hi}")
    return int(text)


def _field(text: str, name: str, lo: int, hi: int, whole: str) -> set[int]:
    found: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = _number(step_text, f"{name} step", 1, hi, whole) if step_text else 1
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _number(a, name, lo, hi, whole), _number(b, name, lo, hi, whole)
            if first > last:
                raise ValueError(f"schedule {whole!r}: {name} range {body!r} runs backwards")
        else:
            first = last = _number(body, name, lo, hi, whole)
            if step_text:
                last = hi
        found.update(range(first, last + 1, step))
    return found
