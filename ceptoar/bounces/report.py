"""What came back to a return path: a bounce, a delay, an auto-reply, a complaint or a reply.

- RFC 3464 delivery status notifications (multipart/report,
  report-type=delivery-status) are read per recipient: Action, Status,
  Diagnostic-Code, Original- or else Final-Recipient (the original is the
  address ceptoar sent to). A failed action is a bounce, whatever its
  status class: a 4.x status on it means the MTA retried until it gave up.
  A delayed action is a delay. A report that names no recipient is read
  like a bounce without one.
- RFC 5965 feedback reports (report-type=feedback-report) are complaints.
- Microsoft Exchange's reports written for people (`ceptoar.bounces.exchange`)
  are bounces for each recipient they list.
- RFC 3834 automatic replies (Auto-Submitted other than `no`, and the
  headers vacation programs set) are auto-replies, never bounces; a
  delivery report or an Exchange report is never an auto-reply, whatever
  its Auto-Submitted says.
- Other bounces (no DSN, the MTA's own words) are read by the Japanese
  carriers' formats (`ceptoar.bounces.carriers`), then flufl.bounce's
  detectors.
- Anything else sent to a delivery's return path is a person's reply.

The token (`ceptoar.bounces.verp`) is read from the envelope recipient when
one is given (an MTA's pipe transport, the bounce SMTP server), else from
the headers an MTA writes when it delivers (Delivered-To, X-Original-To,
Envelope-To), else from To. Nothing here raises for a message's content:
what cannot be read is a report of kind `unknown` with a `problem`.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Final, Literal

from flufl.bounce import all_failures

from ceptoar.bounces.carriers import carrier_failures
from ceptoar.bounces.exchange import exchange_failures, is_exchange_ndr
from ceptoar.bounces.verp import Token, Verp
from ceptoar.model.answer import Answer, answer_in
from ceptoar.text import clean_line

__all__ = ["MAX_READ", "Kind", "RecipientStatus", "Report", "read_report"]

Kind = Literal["bounce", "delay", "auto_reply", "complaint", "reply", "unknown"]

# Bytes of a message that are read; a longer one is kept, but read only this far.
MAX_READ: Final = 1_000_000
_TOKEN_HEADERS: Final = ("delivered-to", "x-original-to", "envelope-to", "to")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"[^\s<>;\"]+@[^\s<>;\"]+")
# `failed`, also as some MTAs write it: `failed (Bad destination mailbox address)`.
_ACTION = re.compile(r"\s*([A-Za-z]+)")


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient of a delivery status notification, as the reporting MTA describes it."""

    address: str
    action: str | None = None
    status: str | None = None
    diagnostic: str | None = None

    @property
    def permanent(self) -> bool:
        """The reporting MTA gave up on this recipient: the message will not reach it."""
        return self.action == "failed"


@dataclass(frozen=True)
class Report:
    """What ceptoar reads from one returned message; it changes nothing."""

    kind: Kind
    # The delivery the return path names, and whether its MAC holds; None when no return path was found.
    token: Token | None
    recipients: list[RecipientStatus] = field(default_factory=list)
    subject: str = ""
    # Why the message could not be read as what it claims to be.
    problem: str | None = None
    # A reply's sender (From), and the answer its first line gives (`ceptoar.model.answer`).
    sender: str | None = None
    answer: Answer | None = None

    def document(self) -> dict[str, object]:
        """As `ceptoar bounces parse --json` prints it."""
        return {
            "kind": self.kind,
            "token_valid": None if self.token is None else self.token.valid,
            "delivery_id": None if self.token is None else self.token.delivery_id,
            "recipients": [
                {"address": r.address, "action": r.action, "status": r.status, "diagnostic": r.diagnostic}
                for r in self.recipients
            ],
            "subject": self.subject,
            "problem": self.problem,
            "sender": self.sender,
            "answer": None if self.answer is None else self.answer.value,
        }


def read_report(data: bytes, verp: Verp, *, envelope_to: str | None = None) -> Report:
    """Read one returned message; never raises for what the message holds."""
    try:
        msg = email.message_from_bytes(data[:MAX_READ], policy=email.policy.compat32)
    except Exception as exc:  # the parser is lenient; anything it still refuses is the message's fault
        return Report("unknown", _token(verp, envelope_to, None), problem=f"not a mail message: {exc!r}")
    token = _token(verp, envelope_to, msg)
    subject = clean_line(_header(msg, "subject"))[:300]
    problem = f"read only the first {MAX_READ} of {len(data)} bytes" if len(data) > MAX_READ else None
    try:
        kind, recipients = _classify(msg)
    except Exception as exc:
        return Report("unknown", token, subject=subject, problem=f"unreadable MIME: {exc!r}")
    if kind == "unknown" and token is not None and not _machine_made(msg):
        # A person answered the alert (its Reply-To is the return path).
        sender = email.utils.parseaddr(_header(msg, "from"))[1].lower() or None
        first = _first_line(msg)
        return Report("reply", token, [], subject, problem, sender, answer_in(first) or Answer.RECEIVED)
    return Report(kind, token, recipients, subject, problem)


def _first_line(msg: Message) -> str:
    """The first line a person wrote: of the first plain-text part, quoted lines skipped."""
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.get_filename():
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        try:
            text = raw.decode(part.get_content_charset() or "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            text = raw.decode("utf-8", "replace")
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith(">"):
                return clean_line(line)[:200]
        return ""
    return ""


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else str(value)


def _token(verp: Verp, envelope_to: str | None, msg: Message | None) -> Token | None:
    candidates: list[str] = [envelope_to] if envelope_to else []
    if msg is not None:
        for name in _TOKEN_HEADERS:
            for value in msg.get_all(name) or []:
                candidates.extend(_ADDRESS.findall(str(value)))
    for address in candidates:
        if (token := verp.read(address)) is not None:
            return token
    # An address of ours that does not parse (a mistyped or forged token) names no delivery.
    return Token(0, False) if any(verp.is_ours(a) for a in candidates) else None


def _report_type(msg: Message) -> tuple[str, Message] | None:
    """The type of the first multipart/report in the message (a list may wrap one), and the report."""
    for part in msg.walk():
        if part.get_content_type() == "multipart/report":
            return str(part.get_param("report-type", header="content-type") or "").lower(), part
    return None


def _classify(msg: Message) -> tuple[Kind, list[RecipientStatus]]:
    found = _report_type(msg)
    if found is not None and found[0] == "feedback-report":
        return "complaint", []
    if found is not None and found[0] == "delivery-status":
        recipients = list(_dsn_recipients(found[1]))
        if any(r.permanent for r in recipients):
            return "bounce", recipients
        if any(r.action == "delayed" for r in recipients):
            return "delay", recipients
        if recipients:
            return "unknown", recipients  # delivered, relayed or expanded: nothing went wrong
    if exchange := exchange_failures(msg):
        return "bounce", [RecipientStatus(a, "failed", status, words) for a, status, words in exchange]
    if _auto_replied(msg) and not _delivery_report(msg, found):
        return "auto_reply", []
    if carried := carrier_failures(msg):
        return "bounce", [RecipientStatus(a, "failed") for a in carried]
    temporary, permanent = all_failures(msg)
    if permanent or temporary:
        failed = [RecipientStatus(_text(a), "failed") for a in sorted(permanent)]
        delayed = [RecipientStatus(_text(a), "delayed") for a in sorted(temporary - permanent)]
        return ("bounce" if permanent else "delay"), failed + delayed
    if _delivery_report(msg, found):
        return "bounce", []  # a delivery report that names no recipient we can read: still a bounce
    return "unknown", []


def _delivery_report(msg: Message, found: tuple[str, Message] | None) -> bool:
    """A delivery status report or an Exchange non-delivery report, whatever its Auto-Submitted says."""
    return (found is not None and found[0] == "delivery-status") or is_exchange_ndr(msg)


def _text(address: bytes | str) -> str:
    return address.decode("utf-8", "replace") if isinstance(address, bytes) else address


def _auto_replied(msg: Message) -> bool:
    """An RFC 3834 automatic reply (a vacation program's, an out-of-office notice)."""
    if _header(msg, "auto-submitted").strip().lower().startswith("auto-replied"):
        return True
    if _header(msg, "precedence").strip().lower() == "auto_reply":
        return True
    return any(msg.get(h) is not None for h in ("x-autoreply", "x-autorespond", "x-vacation"))


def _machine_made(msg: Message) -> bool:
    """Sent by a program, not a person (`auto-generated` marks bounces too, so it is not an auto-reply)."""
    submitted = _header(msg, "auto-submitted").strip().lower()
    return bool(submitted) and not submitted.startswith("no")


def _dsn_recipients(msg: Message) -> Iterator[RecipientStatus]:
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for fields in _field_groups(part):
            if "final-recipient" not in fields and "original-recipient" not in fields:
                continue  # the per-message group
            address = _after_type(fields.get("original-recipient") or fields["final-recipient"])
            status = _STATUS.search(fields.get("status", ""))
            diagnostic = _after_type(fields["diagnostic-code"]) if "diagnostic-code" in fields else None
            action = _ACTION.match(fields.get("action") or "")
            yield RecipientStatus(
                address=address,
                action=action.group(1).lower() if action else None,
                status=status.group(0) if status else None,
                diagnostic=clean_line(diagnostic)[:500] if diagnostic else None,
            )


def _field_groups(part: Message) -> Iterable[dict[str, str]]:
    """The header groups of a message/delivery-status part, each as lower-case name to value."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses the groups as messages
        return [{k.lower(): str(v) for k, v in g.items()} for g in payload if isinstance(g, Message)]
    text = payload if isinstance(payload, str) else ""
    groups = []
    for block in re.split(r"\r?\n\s*\r?\n", text):
        fields: dict[str, str] = {}
        name = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and name:
                fields[name] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                fields[name] = value.strip()
        groups.append(fields)
    return groups


def _after_type(value: str) -> str:
    """`rfc822; a@b` → `a@b`, `smtp; 550 ...` → `550 ...`."""
    kind, sep, rest = value.partition(";")
    return (rest if sep else kind).strip()
