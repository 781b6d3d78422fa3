"""Bounces from Japanese mobile carriers' mail systems, which write no RFC 3464 report.

au (KDDI) returns mail in two forms that flufl.bounce's detectors do not know:

- EZweb (`Postmaster@ezweb.ne.jp`, `Postmaster@au.com`, subject
  `Mail System Error - Returned Mail`): the failed recipients as `<address>`
  lines, or `Recipient: <address>`, before a line of dashes and the returned
  message;
- au one net (`no-reply@….dion.ne.jp`, Reply-To `no-reply@app.auone-net.jp`):
  `Could not be delivered to: <address>` under `Your mail sent on: …`.

Both are final: the carrier has given up. NTT docomo and SoftBank relay
through MTAs that write standard reports, read elsewhere.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Final

__all__ = ["carrier_failures", "first_text"]

_FROM_CARRIER: Final = re.compile(
    r"postmaster@(?:ezweb\.ne\.jp|au\.com)|no-reply@[\w.-]*\.dion\.ne\.jp", re.I
)
_RECEIVED_CARRIER: Final = re.compile(r"ezweb\.ne\.jp \(EZweb Mail\) with|\.au\.com \(", re.I)
_RECIPIENT: Final = re.compile(
    r"^(?:<(?P<bare>[^\s<>@]+@[^\s<>]+)>:?.*"
    r"|\s+Recipient:\s*<(?P<listed>[^\s<>@]+@[^\s<>]+)>.*"
    r"|\s+Could not be delivered to:\s*<(?P<kddi>[^\s<>@]+@[^\s<>]+)>.*)$"
)
# Where the carrier's own words end and the returned message begins.
_RETURNED: Final = re.compile(r"^-{50}|^Received: ")


def _is_carrier(msg: Message) -> bool:
    hits = 0
    hits += bool(_FROM_CARRIER.search(str(msg.get("from", ""))))
    hits += str(msg.get("reply-to", "")).strip().lower() == "no-reply@app.auone-net.jp"
    hits += any(_RECEIVED_CARRIER.search(str(r)) for r in msg.get_all("received") or [])
    hits += str(msg.get("message-id", "")).rstrip().endswith((".ezweb.ne.jp>", ".au.com>"))
    return hits >= 2


def first_text(msg: Message, *, charset: str) -> str:
    """The report's own first text/plain part, decoded (`charset` when it names none); the returned
    message's parts are not read."""
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            break
        if part.get_content_type() != "text/plain":
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            return ""
        try:
            return raw.decode(part.get_content_charset() or charset, "replace")
        except LookupError:
            return raw.decode("latin-1")
    return ""


def carrier_failures(msg: Message) -> list[str]:
    """The recipients a carrier's own bounce names, in order; empty when it is not one."""
    if not _is_carrier(msg):
        return []
    found: list[str] = []
    for line in first_text(msg, charset="iso-2022-jp").splitlines():  # au writes ISO-2022-JP
        if _RETURNED.match(line):
            break
        if m := _RECIPIENT.match(line.rstrip()):
            address = m.group("bare") or m.group("listed") or m.group("kddi")
            if address not in found:
                found.append(address)
    return found
