"""Non-delivery reports of Microsoft Exchange and Exchange Online written for people.

Exchange (2007 and later) and Exchange Online often send their reports as
`multipart/report; report-type=delivery-status` with no machine-readable
status part, or as plain mail, and mark them `Auto-Submitted: auto-replied`
and `X-MS-Exchange-Message-Is-Ndr`. What failed is said in their words:

    Delivery has failed to these recipients or groups:
    kijitora@example.jp (kijitora@example.jp)
    ...
    Diagnostic information for administrators:
    Generating server: mx.example.jp
    kijitora@example.jp
    Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'
    Original message headers:

Exchange Online writes `Error Details` / `Reported error: 550 5.1.10 …` and
`Recipient Address: …` instead. sisimai's Exchange2007 and Office365
readers were the reference for these forms. Every recipient listed is
final: Exchange has given up on it.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Final

from ceptoar.bounces.carriers import first_text

__all__ = ["exchange_failures", "is_exchange_ndr"]

_SUBJECT: Final = re.compile(
    r"^\s*(?:Undeliverable|Undelivered|配信不能|Onbestelbaar|Unzustellbar)\s*:", re.I
)
_OUTLOOK: Final = re.compile(r"\.(?:outbound\.protection|prod)\.outlook\.com\b", re.I)
# Where the report's own words begin, and where the returned message's headers begin.
_START: Final = re.compile(
    r"^\s*(?:Delivery has failed to these recipients or groups:|Diagnostic information for administrators:"
    r"|Original Message Details|Error Details|Your message to .+ couldn't be delivered)",
    re.I,
)
_END: Final = re.compile(r"^\s*(?:Original message headers:?|Message Hops|Content-Type: message/)", re.I)
# `a@b`, `a@b (a@b)`, `Name<mailto:a@b>`, `Recipient Address: a@b`: a line that names one recipient.
_RECIPIENT: Final = re.compile(
    r"^\s*(?:Recipient Address:\s*)?<?(?P<address>[^\s<>()@'\"]+@[^\s<>()'\"]+?)>?"
    r"\s*(?:\([^)]*\))?\s*(?:<mailto:[^>]*>)?\s*$"
    r"|^[^<>@]{1,200}<mailto:(?P<mailto>[^\s<>@]+@[^\s<>]+)>\s*$",
    re.I,
)
_REPLY: Final = re.compile(r"\b(?P<code>[45]\d\d)[ -](?P<status>[45]\.\d{1,3}\.\d{1,3})\b")


def is_exchange_ndr(msg: Message) -> bool:
    """Whether the message is an Exchange non-delivery report (its own header, or two of its marks)."""
    if msg.get("x-ms-exchange-message-is-ndr") is not None:
        return True
    marks = int(bool(_SUBJECT.search(str(msg.get("subject", "")))))
    marks += any(str(h).lower().startswith("x-ms-exchange-crosstenant-") for h in msg)
    marks += any(_OUTLOOK.search(str(r)) for r in msg.get_all("received") or [])
    marks += "Diagnostic information for administrators" in _text(msg)
    return marks >= 2


def exchange_failures(msg: Message) -> list[tuple[str, str, str | None]]:
    """Per recipient an Exchange report gives up on: address, status and the server's words; empty
    when the message is no such report or names no recipient."""
    if not is_exchange_ndr(msg):
        return []
    found: dict[str, tuple[str, str | None]] = {}
    unclaimed: tuple[str, str] | None = None  # a reply read before any recipient (Exchange Online)
    last: str | None = None
    reading = False
    for line in _text(msg).splitlines():
        if _END.match(line):
            break
        if not reading:
            reading = bool(_START.match(line))
            continue
        if (recipient := _RECIPIENT.match(line)) is not None:
            last = (recipient.group("address") or recipient.group("mailto")).lower()
            found.setdefault(last, ("5.0.0", None))
        elif (reply := _REPLY.search(line)) is not None:
            words = line.strip().strip("#").strip()[:500]
            if last is not None:
                found[last] = (reply.group("status"), words)
            else:
                unclaimed = (reply.group("status"), words)
    return [
        (address, *(unclaimed if unclaimed is not None and words is None else (status, words)))
        for address, (status, words) in found.items()
    ]


def _text(msg: Message) -> str:
    return first_text(msg, charset="utf-8")
