"""Reading and writing the per-recipient Maildirs under one root."""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import socket
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["MailboxEntry", "count", "deliver", "list_messages", "mailbox_path", "read_message"]


def mailbox_path(root: Path, address: str) -> Path:
    """The Maildir of one address, always one directory right under `root`.

    The address is lower-cased and anything unsafe in a file name quoted;
    a name of dots only ('.', '..') has its dots quoted too, since it would
    name the root or its parent, and an empty one is named for what it is.
    A name too long for the file system keeps its start and gains a hash
    of the whole.
    """
    name = quote(address.lower(), safe="@._+-")
    if not name.strip("."):
        name = name.replace(".", "%2E") or "%empty"  # quote() never writes %e: no address has this name
    if len(name) > _NAME_MAX:
        name = f"{name[: _NAME_MAX - 17]}~{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return root / name


# File names of most file systems stop at 255 bytes; the quoted name is ASCII.
_NAME_MAX = 200


def deliver(root: Path, address: str, data: bytes, *, envelope_from: str) -> str:
    """File one message for one recipient, on disk (fsync) before this returns; its Maildir key.

    As Maildir delivers: written in `tmp/` under a name no other delivery
    takes (time, a random part, the host), then renamed into `new/`. Safe
    from several threads at once.
    """
    box = mailbox_path(root, address)
    trace = f"Return-Path: <{envelope_from}>\r\nDelivered-To: {address.lower()}\r\n".encode()
    key = f"{time.time_ns()}.{uuid.uuid4().hex}.{_HOST}"
    if box not in _MADE:
        _make(box)
    try:
        fd = os.open(box / "tmp" / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:  # the box was removed since: make it again
        _make(box)
        fd = os.open(box / "tmp" / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(trace)
            out.write(data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(box / "tmp" / key, box / "new" / key)
    return key


# Maildirs this process made or found, so that a delivery need not look for their directories again.
_MADE: set[Path] = set()
_HOST = socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def _make(box: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    _MADE.add(box)


def _boxes(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "new").is_dir())


def _keys_in_order(box: Path) -> list[Path]:
    files = [f for sub in ("new", "cur") for f in (box / sub).iterdir() if f.is_file()]
    return sorted(files, key=lambda f: (f.stat().st_mtime_ns, f.name))


def count(root: Path, address: str | None = None) -> int:
    """Messages held for `address`, or for every address under `root`."""
    boxes = [mailbox_path(root, address)] if address else _boxes(root)
    return sum(len(_keys_in_order(b)) for b in boxes if (b / "new").is_dir())


def addresses(root: Path) -> list[str]:
    """Every address that has a mailbox."""
    return [unquote(b.name) for b in _boxes(root)]


@dataclass(frozen=True)
class MailboxEntry:
    """One stored message, numbered from 1 in arrival order."""

    number: int
    path: Path
    subject: str
    sender: str
    date: str
    message_id: str


def _parse(path: Path) -> EmailMessage:
    with path.open("rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def list_messages(root: Path, address: str) -> list[MailboxEntry]:
    """The messages of one address, oldest first."""
    box = mailbox_path(root, address)
    if not (box / "new").is_dir():
        return []
    entries = []
    for n, path in enumerate(_keys_in_order(box), start=1):
        msg = _parse(path)
        entries.append(
            MailboxEntry(
                n,
                path,
                str(msg.get("Subject", "")),
                str(msg.get("From", "")),
                str(msg.get("Date", "")),
                str(msg.get("Message-ID", "")),
            )
        )
    return entries


def read_message(root: Path, address: str, number: int) -> EmailMessage:
    """Message `number` (from 1) of one address; IndexError if there is none."""
    box = mailbox_path(root, address)
    paths = _keys_in_order(box) if (box / "new").is_dir() else []
    if not 1 <= number <= len(paths):
        raise IndexError(f"{address} has {len(paths)} message(s), not #{number}")
    return _parse(paths[number - 1])
