"""The notice: one incident notice, whatever format it arrived in, and the values it carries.

A notice is keyed by (source, id): the id is the source's own, so two
sources may reuse an id without colliding. Validation cleans what senders
write (`ceptoar.text`) and refuses what no later step could handle; the feed
parsers (`ceptoar.feed`) turn each format's bytes into a `Notice`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, get_args

import cvss
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ceptoar.model.codes import validate_area_code
from ceptoar.text import clean_line, clean_text, printable, unsafe_in_id

__all__ = [
    "CONTENT_TYPES",
    "LANGUAGES",
    "NOTICE_SCHEMA",
    "OPERATOR_SOURCE",
    "CapCertainty",
    "CapRating",
    "CapReference",
    "CapSeverity",
    "CapUrgency",
    "Category",
    "Cvss",
    "Format",
    "Language",
    "MsgType",
    "Notice",
    "NoticeStatus",
    "NoticeText",
    "Severity",
    "Tlp",
]

NOTICE_SCHEMA: Final = "ceptoar.notice/1"
# Notices composed by a CEPTOAR operator carry this source; only they may
# override the classified severity.
OPERATOR_SOURCE: Final = "operator"

# The formats a notice arrives in, and the content type each travels with on the feed.
Format = Literal["json", "cap", "csaf"]
CONTENT_TYPES: Final[dict[Format, str]] = {
    "json": "application/json",
    "cap": "application/cap+xml",
    "csaf": "application/csaf+json",
}

# The languages ceptoar reads notices and writes mail in, Japanese first.
Language = Literal["ja", "en"]
LANGUAGES: Final[tuple[str, ...]] = get_args(Language)


class Severity(StrEnum):
    """How urgent a notice is, most urgent first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher is more urgent."""
        return _SEVERITY_RANKS[self.value]


_SEVERITY_RANKS: Final = {"critical": 3, "high": 2, "medium": 1, "low": 0}


class MsgType(StrEnum):
    """A new alert, an update of an earlier one, or its cancellation."""

    ALERT = "alert"
    UPDATE = "update"
    CANCEL = "cancel"


class Tlp(StrEnum):
    """Traffic Light Protocol 2.0 labels."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER+STRICT"
    RED = "RED"


class NoticeStatus(StrEnum):
    """Whether a notice is real. Only `actual` notices are delivered as alerts."""

    ACTUAL = "actual"
    TEST = "test"
    EXERCISE = "exercise"
    DRAFT = "draft"
    SYSTEM = "system"


class CapSeverity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class CapUrgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class CapCertainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


class CapRating(BaseModel):
    """OASIS CAP 1.2's severity, urgency and certainty of a notice, as its sender rated them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: CapSeverity = CapSeverity.UNKNOWN
    urgency: CapUrgency = CapUrgency.UNKNOWN
    certainty: CapCertainty = CapCertainty.UNKNOWN


class Category(StrEnum):
    """What kind of event a notice is about."""

    ATTACK = "attack"
    VULNERABILITY = "vulnerability"
    MALWARE = "malware"
    PHISHING = "phishing"
    OUTAGE = "outage"
    ADVISORY = "advisory"
    OTHER = "other"


def _cleaned(clean: Callable[[str], str]) -> Callable[[Any], Any]:
    """A before-validator that cleans text and leaves anything else for the type check to refuse."""

    def validate(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        cleaned = clean(value)
        if value.strip() and not cleaned.strip():
            raise ValueError("holds nothing but control or invisible characters")
        return cleaned

    return validate


def _plain_ident(value: str) -> str:
    if (found := unsafe_in_id(value)) is not None:
        raise ValueError(
            f"holds {printable(found)!r}: an id may not hold spaces, controls or invisible characters"
        )
    return value


_Ident = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_plain_ident)]
# Text from senders, cleaned of what must not reach a mail, a database or a terminal (`ceptoar.text`).
_Title = Annotated[str, BeforeValidator(_cleaned(clean_line)), Field(min_length=1, max_length=300)]
_Summary = Annotated[str, BeforeValidator(_cleaned(clean_text)), Field(min_length=1, max_length=20_000)]
_Body = Annotated[str, BeforeValidator(_cleaned(clean_text)), Field(max_length=200_000)]
_Name = Annotated[str, BeforeValidator(_cleaned(clean_line)), Field(max_length=300)]

# The times a notice may carry: every one of them is stored in UTC and shown
# in JST, which a date near the ends of datetime's range cannot survive.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise ValueError(f"{value.isoformat()} is outside the accepted range, {EARLIEST:%Y} to {LATEST:%Y}")
    return value


_Time = Annotated[AwareDatetime, AfterValidator(_in_range)]
_AreaCode = Annotated[str, AfterValidator(validate_area_code)]


def _base_score(vector: str) -> Decimal:
    kind = cvss.CVSS4 if vector.startswith("CVSS:4.") else cvss.CVSS3
    if not vector.startswith("CVSS:"):
        kind = cvss.CVSS2
    try:
        score: Decimal = kind(vector).base_score
    except cvss.CVSSError as exc:
        raise ValueError(f"not a CVSS vector: {exc}") from exc
    return score


class Cvss(BaseModel):
    """A CVSS base score, given directly or computed from its vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vector: str | None = Field(None, max_length=200)
    score: float | None = Field(None, ge=0, le=10)

    @model_validator(mode="after")
    def _score_matches_vector(self) -> Cvss:
        if self.vector is None and self.score is None:
            raise ValueError("needs a vector, a score, or both")
        if self.vector is not None:
            computed = float(_base_score(self.vector))
            if self.score is None:
                object.__setattr__(self, "score", computed)
            elif abs(self.score - computed) > 0.05:
                raise ValueError(f"score {self.score} does not match the vector's base score {computed}")
        return self

    @property
    def base_score(self) -> float:
        assert self.score is not None  # filled in by the validator
        return self.score


class NoticeText(BaseModel):
    """The notice's text in one more language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: _Title
    summary: _Summary
    body: _Body = ""


class CapReference(BaseModel):
    """One entry of a CAP message's `references`, kept as the sender wrote it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: Annotated[str, Field(min_length=1, max_length=300)]
    identifier: _Ident
    sent: Annotated[str, Field(min_length=1, max_length=64)]


class Notice(BaseModel):
    """One incident notice, whatever format it arrived in."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["ceptoar.notice/1"] = Field(NOTICE_SCHEMA, alias="schema")
    # A feed's name, a CAP sender's address or a CSAF publisher's host.
    source: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._@+-]{0,63}$")]
    id: _Ident
    sent: _Time
    msg_type: MsgType = MsgType.ALERT
    status: NoticeStatus = NoticeStatus.ACTUAL
    references: list[_Ident] = Field(default_factory=list, max_length=100, validate_default=True)
    title: _Title
    summary: _Summary
    body: _Body = ""
    category: Category
    severity: Severity | None = None
    severity_override: Severity | None = None
    cvss: Cvss | None = None
    cap: CapRating | None = None
    known_exploited: bool = False
    tlp: Tlp
    expires: _Time | None = None
    links: list[HttpUrl] = Field(default_factory=list, max_length=50)
    area: list[_AreaCode] = Field(default_factory=list, max_length=2000)
    language: Language = "ja"
    # The same text in the other language, where the sender gave it.
    translations: dict[Language, NoticeText] = Field(default_factory=dict)
    # Who wrote it, as the sender names itself (CAP senderName, CSAF publisher).
    sender_name: _Name | None = None
    # The sender as it wrote itself (a CAP sender, a CSAF publisher's namespace), `source` being
    # ceptoar's key derived from it.
    sender: _Name | None = None
    # A CAP message's references in full (sender, identifier, sent as written); `references` holds the ids.
    cap_references: list[CapReference] = Field(default_factory=list, max_length=100)
    cves: list[Annotated[str, Field(pattern=r"^CVE-[0-9]{4}-[0-9]{4,}$")]] = Field(
        default_factory=list, max_length=500
    )

    @field_validator("severity_override")
    @classmethod
    def _override_is_the_operators(cls, value: Severity | None, info: ValidationInfo) -> Severity | None:
        if value is not None and info.data.get("source") != OPERATOR_SOURCE:
            raise ValueError(f"only source {OPERATOR_SOURCE!r} may override the severity")
        return value

    @field_validator("references")
    @classmethod
    def _refers_when_update_or_cancel(cls, value: list[str], info: ValidationInfo) -> list[str]:
        msg_type = info.data.get("msg_type")
        if msg_type in (MsgType.UPDATE, MsgType.CANCEL) and not value:
            raise ValueError(f"msg_type {msg_type.value} must name the notice id(s) it refers to")
        return value

    @field_validator("expires")
    @classmethod
    def _expires_not_before_sent(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        sent = info.data.get("sent")
        if value is not None and sent is not None and value < sent:
            raise ValueError("must not be before sent")
        return value

    @property
    def key(self) -> tuple[str, str]:
        """The dedupe key: the source and its own id for the notice."""
        return (self.source, self.id)

    def is_expired(self, now: datetime) -> bool:
        return self.expires is not None and self.expires <= now

    def text_for(self, language: str) -> NoticeText:
        """Title, summary and body in `language`, else Japanese, else English, else as sent."""
        for lang in (language, "ja", "en"):
            if lang == self.language:
                break
            if lang in self.translations:
                return self.translations[lang]
        return NoticeText(title=self.title, summary=self.summary, body=self.body)
