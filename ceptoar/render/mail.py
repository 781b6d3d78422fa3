"""Alert mail: rendered once per alert and language, addressed per recipient.

Templates run in Jinja2's sandbox with StrictUndefined, so a template that
names a missing value fails loudly instead of mailing a blank. The MIME
body (text and HTML alternatives, UTF-8, base64) and the shared headers are
built once per (alert, language); each recipient's mail is those bytes with
its own To and Message-ID in front, which keeps a fan-out to thousands of
addresses cheap.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from ceptoar.config import Settings
from ceptoar.errors import PermanentDeliveryError
from ceptoar.model.alert import AlertView
from ceptoar.model.notice import LANGUAGES, Notice

__all__ = ["SEVERITY_LABELS", "RenderedAlert", "Renderer", "default_templates_dir"]

SEVERITY_LABELS: dict[str, dict[str, str]] = {
    "ja": {"critical": "【緊急】", "high": "【重要】", "medium": "【注意】", "low": "【情報】"},
    "en": {"critical": "[CRITICAL]", "high": "[HIGH]", "medium": "[MEDIUM]", "low": "[INFO]"},
}
JST = timezone(timedelta(hours=9), "JST")
_CRLF = b"\r\n"


def default_templates_dir() -> Path:
    """`templates/` beside the package."""
    return Path(__file__).resolve().parents[2] / "templates"


@dataclass(frozen=True)
class RenderedAlert:
    """One alert in one language: the shared header block and the MIME body."""

    subject: str
    text: str
    html: str
    head_and_body: bytes

    def for_recipient(
        self,
        *,
        to: str,
        message_id: str,
        in_reply_to: str | None = None,
        references: str | None = None,
        reply_to: str | None = None,
    ) -> bytes:
        """The complete message for one address, threaded under what it got before.

        `reply_to`: where a reply goes (the delivery's return path, so a reply names its delivery).
        """
        head = [b"To: ", to.encode("ascii"), _CRLF, b"Message-ID: ", message_id.encode("ascii"), _CRLF]
        if reply_to:
            head += [b"Reply-To: ", reply_to.encode("ascii"), _CRLF]
        if in_reply_to:
            head += [b"In-Reply-To: ", in_reply_to.encode("ascii"), _CRLF]
        if references:
            # Folded one id per line so a long thread stays within line limits.
            head += [b"References: ", references.replace(" ", "\r\n ").encode("ascii"), _CRLF]
        return b"".join((*head, self.head_and_body))


class Renderer:
    """Renders alerts with the templates in one directory."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Renderer:
        """The renderer of the configured templates (the packaged ones by default) and sender."""
        return cls(
            settings.templates_dir or default_templates_dir(),
            sender=settings.mail_from,
            sender_name=settings.mail_from_name,
        )

    def __init__(self, templates_dir: Path, *, sender: str, sender_name: str) -> None:
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(["html", "html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._from = Address(display_name=sender_name, addr_spec=sender)
        self._cache: dict[tuple[str, str], RenderedAlert] = {}

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

    def render(self, alert: AlertView, language: str) -> RenderedAlert:
        """The alert in `language` (cached; an unknown language falls back to Japanese)."""
        lang = language if language in LANGUAGES else "ja"
        key = (alert.id, lang)
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 256:
                self._cache.clear()
            cached = self._cache[key] = self._render(alert, lang)
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
    ) -> bytes:
        """The bytes to send to one recipient; PermanentDeliveryError if it cannot be built."""
        try:
            rendered = self.render(alert, language)
            return rendered.for_recipient(
                to=to,
                message_id=message_id,
                in_reply_to=in_reply_to,
                references=references,
                reply_to=reply_to,
            )
        except (TemplateError, UnicodeError, ValueError) as exc:
            raise PermanentDeliveryError(f"cannot render the alert mail: {exc}") from exc

    def context(self, alert: AlertView, lang: str) -> dict[str, Any]:
        notice = alert.notice
        text = Notice.model_validate(notice).text_for(lang)
        return {
            "alert": alert,
            "notice": notice,
            "text": text,
            "lang": lang,
            "severity": alert.severity,
            "severity_label": SEVERITY_LABELS[lang][alert.severity],
            "rules": alert.severity_rules,
            "tlp": alert.tlp,
            "sent": datetime.fromisoformat(notice["sent"]).astimezone(JST),
            "expires": (
                datetime.fromisoformat(notice["expires"]).astimezone(JST) if notice.get("expires") else None
            ),
        }

    def _render(self, alert: AlertView, lang: str) -> RenderedAlert:
        ctx = self.context(alert, lang)
        subject = " ".join(self._env.get_template(f"{lang}/alert.subject.j2").render(ctx).split())
        text = self._env.get_template(f"{lang}/alert.txt.j2").render(ctx)
        html = self._env.get_template(f"{lang}/alert.html.j2").render(ctx)
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = self._from
        msg["Subject"] = subject
        msg["Date"] = format_datetime(alert.created_at.astimezone(JST))
        msg["Auto-Submitted"] = "auto-generated"
        msg["Content-Language"] = lang
        msg["X-Ceptoar-Alert-Id"] = alert.id
        msg["X-Ceptoar-Severity"] = alert.severity
        msg["X-Ceptoar-TLP"] = alert.tlp
        msg.set_content(text, subtype="plain", charset="utf-8", cte="base64")
        msg.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
        return RenderedAlert(subject, text, html, msg.as_bytes())
