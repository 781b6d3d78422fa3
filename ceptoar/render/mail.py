"""Alert mail: rendered once per alert and language, addressed per recipient.

Templates run in Jinja2's sandbox with StrictUndefined, so a template that
names a missing value fails loudly instead of mailing a blank. The MIME
body (text and HTML alternatives, UTF-8, base64) and the shared headers are
built once per (alert, language); each recipient's mail is those bytes with
its own To and Message-ID in front, which keeps a fan-out to thousands of
addresses cheap.

When answer links are on, each recipient's mail also carries its own link
inside both parts. The templates are rendered once with a placeholder where
the link goes; each part's base64 lines up to the placeholder are encoded
once, and only the rest of the part (the footer, as the shipped templates
place the link) is encoded per recipient.

An address whose mail system needs it (the registry's charset column) gets
ISO-2022-JP: headers as ISO-2022-JP encoded words, both parts 7-bit
ISO-2022-JP, the link written where the placeholder was. Where a character
is outside JIS X 0208 (髙, ①, half-width kana) or a line would be longer
than 7-bit mail allows, that mail goes in UTF-8 instead, and the rendering
says why (`RenderedAlert.fallback`), which the delivery keeps as an event.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.policy
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from ceptoar.config import Settings
from ceptoar.errors import PermanentDeliveryError
from ceptoar.model.alert import AlertView
from ceptoar.model.escalation import Purpose
from ceptoar.model.notice import LANGUAGES, Notice
from ceptoar.render.digest import DigestMail, digest_context, wrap_columns
from ceptoar.render.labels import SEVERITY_LABELS
from ceptoar.store.digests import DIGEST_SOURCE

__all__ = ["ANSWER_SLOT", "SEVERITY_LABELS", "RenderedAlert", "Renderer", "default_templates_dir"]

JST = timezone(timedelta(hours=9), "JST")
_CRLF = b"\r\n"
# What the templates get as `answer_url` while the body is rendered once, and each recipient's link replaces.
ANSWER_SLOT = "https://ceptoar-answer-slot.invalid/"
# Bytes per base64 line (76 characters), as the email package writes them.
_LINE_BYTES = 57


def default_templates_dir() -> Path:
    """`templates/` beside the package."""
    return Path(__file__).resolve().parents[2] / "templates"


def _base64_lines(data: bytes) -> bytes:
    """`data` as base64 in lines of 76 characters, each ended by CRLF."""
    return b"".join(
        binascii.b2a_base64(data[i : i + _LINE_BYTES], newline=False) + _CRLF
        for i in range(0, len(data), _LINE_BYTES)
    )


@dataclass(frozen=True)
class _LinkedPart:
    """A body part that carries the recipient's link: its base64 before the link is encoded once."""

    encoded_head: bytes
    # The bytes between the encoded head and the first link, and what follows each link.
    rest: bytes
    after: tuple[bytes, ...]
    escape: bool

    @classmethod
    def of(cls, text: str, *, escape: bool) -> _LinkedPart:
        # Line ends as the email package writes a text part: CRLF after every line, the last included.
        body = b"".join(line + _CRLF for line in text.encode("utf-8").splitlines())
        before, *after = body.split(ANSWER_SLOT.encode("ascii"))
        aligned = len(before) - len(before) % _LINE_BYTES
        return cls(_base64_lines(before[:aligned]), before[aligned:], tuple(after), escape)

    def encode(self, link: str) -> bytes:
        url = (html.escape(link) if self.escape else link).encode("ascii")
        linked = b"".join(url + piece for piece in self.after)
        return self.encoded_head + _base64_lines(self.rest + linked)


@dataclass(frozen=True)
class _PlainLink:
    """A link in a 7-bit part: the recipient's address as is (escaped in HTML)."""

    escape: bool

    def encode(self, link: str) -> bytes:
        return (html.escape(link) if self.escape else link).encode("ascii")


# The charset legacy Japanese mail systems read, and the longest line 7-bit mail may carry.
ISO_2022_JP = "iso-2022-jp"
_LONGEST_LINE = 998


class _DoesNotFit(Exception):
    """The mail cannot go in ISO-2022-JP; the message says why."""


def _iso_2022_jp_problem(value: str, what: str) -> str | None:
    try:
        value.encode("iso2022_jp")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        return f"{char!r} (U+{ord(char):04X}) in the {what} is not in ISO-2022-JP"
    return None


@dataclass(frozen=True)
class RenderedAlert:
    """One alert in one language: the shared header block and the MIME body.

    `segments` are the bytes shared by every recipient, with one `parts` entry (the text part, then the
    HTML part; in a 7-bit ISO-2022-JP mail, each link) between each two when the mail carries answer
    links; a single segment when it does not.
    """

    subject: str
    text: str
    html: str
    segments: tuple[bytes, ...]
    parts: tuple[_LinkedPart | _PlainLink, ...] = ()
    # How the mail is encoded, and why not in the charset asked for, when it is not.
    charset: str = "utf-8"
    fallback: str | None = None

    def for_recipient(
        self,
        *,
        to: str,
        message_id: str,
        in_reply_to: str | None = None,
        references: str | None = None,
        reply_to: str | None = None,
        answer_url: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """The complete message for one address, threaded under what it got before.

        `reply_to`: where a reply goes (the delivery's return path, so a reply names its delivery).
        `answer_url`: the recipient's answer link, needed when the mail carries links.
        `extra`: header fields of this recipient's alone (ASCII), such as a digest's unsubscribe link.
        """
        head = [b"To: ", to.encode("ascii"), _CRLF, b"Message-ID: ", message_id.encode("ascii"), _CRLF]
        for name, value in extra:
            head += [name.encode("ascii"), b": ", value.encode("ascii"), _CRLF]
        if reply_to:
            head += [b"Reply-To: ", reply_to.encode("ascii"), _CRLF]
        if in_reply_to:
            head += [b"In-Reply-To: ", in_reply_to.encode("ascii"), _CRLF]
        if references:
            # Folded one id per line so a long thread stays within line limits.
            head += [b"References: ", references.replace(" ", "\r\n ").encode("ascii"), _CRLF]
        if not self.parts:
            return b"".join((*head, *self.segments))
        if answer_url is None:
            raise ValueError("this alert's mail carries an answer link: give each recipient's")
        body = [self.segments[0]]
        for part, segment in zip(self.parts, self.segments[1:], strict=True):
            body += [part.encode(answer_url), segment]
        return b"".join((*head, *body))


class Renderer:
    """Renders alerts with the templates in one directory."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """The renderer of the configured templates (the packaged ones by default) and sender."""
        return cls(
            settings.templates_dir or default_templates_dir(),
            sender=settings.mail_from,
            sender_name=settings.mail_from_name,
            answer_links=settings.public_url is not None,
        )

    def __init__(
        self, templates_dir: Path, *, sender: str, sender_name: str, answer_links: bool = False
    ) -> None:
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["wrap_columns"] = wrap_columns
        self._from = Address(display_name=sender_name, addr_spec=sender)
        self._cache: dict[tuple[str, str, str, str, int | None], RenderedAlert] = {}
        # Whether each mail carries its recipient's answer link (`ceptoar.bounces.links`).
        self._answer_links = answer_links

    def load_templates(self) -> list[str]:
        """Compile every language's templates now rather than at the first alert; return the errors."""
        errors = []
        for lang in LANGUAGES:
            for part in ("subject", "txt", "html"):
                name = f"{lang}/alert.{part}.j2"
                try:
                    self._env.get_template(name)
                except TemplateError as exc:
                    errors.append(f"{name}: {exc}")
        return errors

    def render(
        self,
        alert: AlertView,
        language: str,
        purpose: str = Purpose.ALERT,
        charset: str = "utf-8",
        *,
        digest: DigestMail | None = None,
    ) -> RenderedAlert:
        """The alert in `language` (cached; an unknown language falls back to Japanese).

        `purpose`: the alert itself, or a reminder or backup copy of it (`ceptoar.model.escalation`).
        `charset`: utf-8, or iso-2022-jp where every character fits (else UTF-8, saying why).
        `digest`: for an alert that carries a digest issue, the issue and the variant to render.
        """
        lang = language if language in LANGUAGES else "ja"
        key = (alert.id, lang, purpose, charset, None if digest is None else digest.variant)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 256:
                self._cache.clear()
            cached = self._cache[key] = self._render(alert, lang, purpose, charset, digest)
        return cached

    def message(
        self,
        alert: AlertView,
        *,
        language: str,
        to: str,
        message_id: str,
        in_reply_to: str | None = None,
        references: str | None = None,
        reply_to: str | None = None,
        answer_url: str | None = None,
        purpose: str = Purpose.ALERT,
        charset: str = "utf-8",
        digest: DigestMail | None = None,
        unsubscribe_url: str | None = None,
    ) -> bytes:
        """The bytes to send to one recipient; PermanentDeliveryError if it cannot be built.

        A digest's mail carries the recipient's one-click unsubscribe link (RFC 8058); an alert never does.
        """
        try:
            rendered = self.render(alert, language, purpose, charset, digest=digest)
            extra: list[tuple[str, str]] = []
            if digest is not None:
                if unsubscribe_url is None:
                    raise ValueError("a digest's mail needs its recipient's unsubscribe link")
                extra = [
                    ("List-Unsubscribe", f"<{unsubscribe_url}>"),
                    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                ]
            return rendered.for_recipient(
                to=to,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=references,
                reply_to=reply_to,
                answer_url=answer_url,
                extra=extra,
            )
        except (TemplateError, UnicodeError, ValueError) as exc:
            raise PermanentDeliveryError(f"cannot render the alert mail: {exc}") from exc

    def context(self, alert: AlertView, lang: str, purpose: str = Purpose.ALERT) -> dict[str, Any]:
        notice = alert.notice
        text = Notice.model_validate(notice).text_for(lang)
        return {
            "alert": alert,
            "notice": notice,
            "text": text,
            "lang": lang,
            "purpose": purpose,
            "severity": alert.severity,
            "severity_label": SEVERITY_LABELS[lang][alert.severity],
            "rules": alert.severity_rules,
            "answer_url": ANSWER_SLOT if self._answer_links else None,
            "tlp": alert.tlp,
            "sent": datetime.fromisoformat(notice["sent"]).astimezone(JST),
            "expires": (
                datetime.fromisoformat(notice["expires"]).astimezone(JST) if notice.get("expires") else None
            ),
        }

    def _render(
        self, alert: AlertView, lang: str, purpose: str, charset: str, digest: DigestMail | None
    ) -> RenderedAlert:
        if digest is None:
            ctx = self.context(alert, lang, purpose)
            name, links = "alert", self._answer_links
        else:
            ctx = digest_context(digest, lang)
            name, links = "digest", False
        subject = " ".join(self._env.get_template(f"{lang}/{name}.subject.j2").render(ctx).split())
        text = self._env.get_template(f"{lang}/{name}.txt.j2").render(ctx)
        html = self._env.get_template(f"{lang}/{name}.html.j2").render(ctx)
        parts = (alert, lang, subject, text, html, links)
        if charset != ISO_2022_JP:
            return self._utf8(*parts)
        try:
            return self._iso_2022_jp(*parts)
        except _DoesNotFit as exc:
            utf8 = self._utf8(*parts)
            return dataclasses.replace(utf8, fallback=f"sent in UTF-8, not ISO-2022-JP: {exc}")

    def _headers(self, alert: AlertView, lang: str) -> list[tuple[str, str]]:
        """The header fields every variant shares, after From and Subject."""
        if alert.source == DIGEST_SOURCE:
            domain = self._from.addr_spec.rpartition("@")[2]
            kind = alert.source_id.partition("-")[0]
            # A newsletter, and says so: a list that can be left (the link is per recipient).
            return [
                ("Date", format_datetime(alert.created_at.astimezone(JST))),
                ("List-Id", f"CEPTOAR security digest <{kind}.digest.{domain}>"),
                ("Content-Language", lang),
                ("X-Ceptoar-Alert-Id", alert.id),
            ]
        return [
            ("Date", format_datetime(alert.created_at.astimezone(JST))),
            ("Auto-Submitted", "auto-generated"),
            # Exchange-based systems answer no out-of-office or auto-reply to it. (No Precedence: bulk,
            # which some filters take as a reason to file mail away from the inbox.)
            ("X-Auto-Response-Suppress", "OOF, AutoReply"),
            ("Content-Language", lang),
            ("X-Ceptoar-Alert-Id", alert.id),
            ("X-Ceptoar-Severity", alert.severity),
            ("X-Ceptoar-TLP", alert.tlp),
        ]

    def _iso_2022_jp(
        self, alert: AlertView, lang: str, subject: str, text: str, html: str, links: bool
    ) -> RenderedAlert:
        """Both parts 7-bit ISO-2022-JP, the headers encoded words; `_DoesNotFit` says why it cannot be."""
        name = self._from.display_name
        for value, what in ((subject, "subject"), (name, "sender's name"), (text, "text"), (html, "HTML")):
            if (problem := _iso_2022_jp_problem(value, what)) is not None:
                raise _DoesNotFit(problem)
        policy = email.policy.compat32.clone(linesep="\r\n")
        msg = MIMEMultipart("alternative", policy=policy)
        msg["From"] = formataddr((Header(name, ISO_2022_JP).encode(), self._from.addr_spec))
        # A Header is written as ISO-2022-JP encoded words (the email package's compat32 API takes one).
        msg["Subject"] = Header(subject, ISO_2022_JP)  # type: ignore[assignment]
        for field_name, value in self._headers(alert, lang):
            msg[field_name] = value
        for body, subtype in ((text, "plain"), (html, "html")):
            part = MIMEText(body, subtype, ISO_2022_JP, policy=policy)
            del part["MIME-Version"]
            msg.attach(part)
        whole = msg.as_bytes(policy=policy)
        if any(len(line) > _LONGEST_LINE for line in whole.split(_CRLF)):
            raise _DoesNotFit(f"a line would be longer than the {_LONGEST_LINE} octets 7-bit mail allows")
        if not links:
            return RenderedAlert(subject, text, html, (whole,), charset=ISO_2022_JP)
        # The placeholder is ASCII, which ISO-2022-JP writes as is: each recipient's link goes there.
        pieces = whole.split(ANSWER_SLOT.encode("ascii"))
        html_at = whole.index(b"Content-Type: text/html")
        slots, at = [], 0
        for piece in pieces[:-1]:
            at += len(piece) + len(ANSWER_SLOT)
            slots.append(_PlainLink(escape=at > html_at))
        return RenderedAlert(subject, text, html, tuple(pieces), tuple(slots), charset=ISO_2022_JP)

    def _utf8(
        self, alert: AlertView, lang: str, subject: str, text: str, html: str, links: bool
    ) -> RenderedAlert:
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = self._from
        msg["Subject"] = subject
        for field_name, value in self._headers(alert, lang):
            msg[field_name] = value
        if not links:
            msg.set_content(text, subtype="plain", charset="utf-8", cte="base64")
            msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
            return RenderedAlert(subject, text, html, (msg.as_bytes(),))
        # Each part's body is written as a marker, then cut out: the bytes around them are shared.
        markers = [f"\x00ceptoar part {n}\x00" for n in (1, 2)]
        msg.set_content(markers[0], subtype="plain", charset="utf-8", cte="base64")
        msg.add_alternative(markers[1], subtype="html", charset="utf-8", cte="base64")
        whole = msg.as_bytes()
        segments: list[bytes] = []
        for marker in markers:
            encoded = _base64_lines(marker.encode("utf-8") + _CRLF)
            before, found, whole = whole.partition(encoded)
            if not found:
                raise ValueError("the MIME body is not laid out as expected")
            segments.append(before)
        segments.append(whole)
        parts = (_LinkedPart.of(text, escape=False), _LinkedPart.of(html, escape=True))
        return RenderedAlert(subject, text, html, tuple(segments), parts)
