"""An operator's alert before it is sent: its fields, its id, its confirmation code."""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ceptoar.errors import ConfigError
from ceptoar.feed.notice import parse_notice
from ceptoar.model.notice import OPERATOR_SOURCE, Notice
from ceptoar.store.audit import Actor

__all__ = ["SENDER_NAME", "Draft", "build_notice", "current_actor", "short_code"]

SENDER_NAME = "地方公共団体CEPTOAR"


# Letters (any script), digits, and . @ - _ with single inner spaces: a name, never a line of its own.
_OPERATOR = re.compile(r"[^\W_](?:[\w.@-]| (?! )){0,62}[\w.]|[^\W_]")


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (a container), nor LOGNAME
        return str(os.getuid())


def current_actor() -> Actor:
    """Who is acting: CEPTOAR_OPERATOR, else the login name; with the account and host it runs under.

    ConfigError when the name could forge or garble an audit line.
    """
    login = _login()
    name = os.environ.get("CEPTOAR_OPERATOR", login)
    if not _OPERATOR.fullmatch(name):
        raise ConfigError(
            f"CEPTOAR_OPERATOR: {name!r} is not a usable operator name: letters, digits, '.', '@', "
            "'-' and '_', single spaces between, at most 64 characters"
        )
    return Actor(name, login[:64], socket.gethostname()[:255])


def short_code(notice_id: str) -> str:
    """The few characters an operator types to confirm a grave alert."""
    return notice_id.rsplit("-", 1)[-1]


@dataclass
class Draft:
    """What the operator has said so far."""

    title: str
    summary: str
    category: str
    tlp: str
    area: list[str]
    body: str = ""
    severity: str | None = None
    expires: datetime | None = None
    language: str = "ja"
    translations: dict[str, dict[str, str]] = field(default_factory=dict)
    msg_type: str = "alert"
    references: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def build_notice(draft: Draft, *, now: datetime | None = None) -> Notice:
    """The operator's notice, validated like any other (InvalidNotice names a bad field)."""
    sent = now or datetime.now(UTC)
    doc: dict[str, Any] = {
        "schema": "ceptoar.notice/1",
        "source": OPERATOR_SOURCE,
        "id": f"OP-{sent:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}",
        "sent": sent.isoformat(),
        "msg_type": draft.msg_type,
        "references": draft.references,
        "title": draft.title,
        "summary": draft.summary,
        "body": draft.body,
        "category": draft.category,
        "tlp": draft.tlp,
        "area": draft.area,
        "language": draft.language,
        "translations": draft.translations,
        "links": draft.links,
        "sender_name": SENDER_NAME,
    }
    if draft.severity:
        doc["severity_override"] = draft.severity
    if draft.expires:
        doc["expires"] = draft.expires.isoformat()
    return parse_notice(json.dumps(doc, ensure_ascii=False))
