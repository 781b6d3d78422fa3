"""Alert mail: labels, parts, headers, per-recipient addressing."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape
from pathlib import Path
from typing import Any

import pytest

from ceptoar.errors import PermanentDeliveryError
from ceptoar.feed import parse_notice
from ceptoar.model.alert import AlertView
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.render.mail import ANSWER_SLOT
from tests.harness import REPO, notice_doc


def _alert(severity: str = "high", tlp: str = "CLEAR", **fields: Any) -> AlertView:
    notice = parse_notice(json.dumps(notice_doc(tlp=tlp, **fields)))
    return AlertView.of_notice(
        notice,
        severity=severity,
        rules=["sender-high"],
        id="20261128-0000abcd",
        created_at=datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    )


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(
        default_templates_dir(), sender="alerts@ceptoar.example", sender_name="地方公共団体CEPTOAR"
    )


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_templates_dir_is_the_one_beside_the_package() -> None:
    assert default_templates_dir() == REPO / "templates"


@pytest.mark.parametrize(
    ("severity", "label"),
    [("critical", "【緊急】"), ("high", "【重要】"), ("medium", "【注意】"), ("low", "【情報】")],
)
def test_subject_carries_the_severity_label_and_tlp(renderer: Renderer, severity: str, label: str) -> None:
    data = renderer.message(
        _alert(severity, tlp="GREEN"), language="ja", to="a@131016.lg.example", message_id="<m@x>"
    )
    subject = _parse(data)["Subject"]
    assert subject.startswith(label)
    assert "[TLP:GREEN]" in subject
    assert "試験用の注意喚起" in subject


def test_each_recipient_gets_its_own_to_and_message_id(renderer: Renderer) -> None:
    alert = _alert()
    one = _parse(renderer.message(alert, language="ja", to="a@x.example", message_id="<1@c.example>"))
    two = _parse(renderer.message(alert, language="ja", to="b@x.example", message_id="<2@c.example>"))
    assert (one["To"], one["Message-ID"]) == ("a@x.example", "<1@c.example>")
    assert (two["To"], two["Message-ID"]) == ("b@x.example", "<2@c.example>")
    assert one.get_body(("plain",)).get_content() == two.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_mail_has_text_and_html_parts_in_utf8(renderer: Renderer) -> None:
    msg = _parse(renderer.message(_alert(), language="ja", to="a@x.example", message_id="<1@c>"))
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content_charset() == "utf-8"
    assert "試験のための通知です。" in text.get_content()
    assert "<h1" in html.get_content()
    assert msg["From"].addresses[0].display_name == "地方公共団体CEPTOAR"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert msg["X-Ceptoar-Alert-Id"] == "20261128-0000abcd"
    assert msg["Date"].endswith("+0900")
    # Every line of what goes on the wire is 7-bit and within SMTP's limit.
    raw = renderer.message(_alert(), language="ja", to="a@x.example", message_id="<1@c>")
    assert all(len(line) <= 998 and line.isascii() for line in raw.split(b"\r\n"))


def test_english_recipients_get_the_english_template(renderer: Renderer) -> None:
    msg = _parse(renderer.message(_alert("critical"), language="en", to="a@x", message_id="<1@c>"))
    assert msg["Subject"].startswith("[CRITICAL]")
    body = msg.get_body(("plain",))
    assert body is not None and "local-governments CEPTOAR" in body.get_content()


def test_html_part_escapes_notice_text(renderer: Renderer) -> None:
    alert = _alert(title="<script>alert(1)</script>", summary="a & b")
    msg = _parse(renderer.message(alert, language="ja", to="a@x", message_id="<1@c>"))
    html = msg.get_body(("html",))
    assert html is not None
    assert "<script>" not in html.get_content()
    assert "&lt;script&gt;" in html.get_content()


def _renderer_with_subject(root: Path, subject: str) -> Renderer:
    """A renderer over templates whose subject is `subject` and whose body is trivial."""
    for lang in ("ja", "en"):
        (root / lang).mkdir()
        (root / lang / "alert.subject.j2").write_text(subject)
        (root / lang / "alert.txt.j2").write_text("x")
        (root / lang / "alert.html.j2").write_text("x")
    return Renderer(root, sender="a@ceptoar.example", sender_name="x")


def test_a_broken_template_is_a_permanent_failure(tmp_path: Path) -> None:
    broken = _renderer_with_subject(tmp_path, "{{ no_such_value }}")
    with pytest.raises(PermanentDeliveryError, match="no_such_value"):
        broken.message(_alert(), language="ja", to="a@x", message_id="<1@c>")


def test_templates_run_sandboxed(tmp_path: Path) -> None:
    sandboxed = _renderer_with_subject(tmp_path, "{{ alert.__class__.__mro__ }}")
    with pytest.raises(PermanentDeliveryError, match="unsafe"):
        sandboxed.message(_alert(), language="ja", to="a@x", message_id="<1@c>")


def test_templates_compile_ahead_of_the_first_alert_and_syntax_errors_are_named(tmp_path: Path) -> None:
    assert (
        Renderer(default_templates_dir(), sender="a@ceptoar.example", sender_name="x").load_templates() == []
    )
    broken = _renderer_with_subject(tmp_path, "{% if %}")
    errors = broken.load_templates()
    assert [e.split(":")[0] for e in errors] == ["ja/alert.subject.j2", "en/alert.subject.j2"]


def test_times_at_the_edge_of_the_accepted_range_render(renderer: Renderer) -> None:
    """The latest time a notice may carry still converts to JST for the mail."""
    alert = _alert(sent="1970-01-01T00:00:00+00:00", expires="2199-12-31T23:59:59+00:00")
    text = _parse(
        renderer.message(alert, language="ja", to="a@x.lg.example", message_id="<m@ceptoar.example>")
    ).get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "1970" in body and "2200" in body  # 2199-12-31T23:59:59Z is 2200-01-01 08:59:59 JST


def test_a_title_with_terminal_escapes_reaches_no_subject(renderer: Renderer) -> None:
    alert = _alert(title="重要\x1b[2J\x07なお知らせ\u202e")
    subject = _parse(
        renderer.message(alert, language="ja", to="a@x.lg.example", message_id="<m@ceptoar.example>")
    )["Subject"]
    assert subject == "【重要】[TLP:CLEAR] 重要[2Jなお知らせ"


@pytest.mark.parametrize("lang", ["ja", "en"])
@pytest.mark.parametrize("summary_chars", [0, 1, 2, 56, 57, 58, 3000])
def test_each_recipient_gets_its_own_answer_link_in_both_parts(lang: str, summary_chars: int) -> None:
    linked = Renderer(
        default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR", answer_links=True
    )
    alert = _alert(summary="概要" + "あ" * summary_chars)
    rendered = linked.render(alert, lang)
    for n, url in enumerate(["https://c.lg.example/answer/1-ab", "https://c.lg.example/p?x=1&y=2<>/answer/2"]):
        raw = linked.message(alert, language=lang, to=f"{n}@x.example", message_id="<1@c>", answer_url=url)
        msg = _parse(raw)
        text, html = (part.get_content() for part in msg.iter_parts())
        # As the email package would write the mail rendered for this recipient alone.
        alone = "".join(line + "\r\n" for line in rendered.text.replace(ANSWER_SLOT, url).splitlines())
        assert text == alone
        assert f'<a href="{escape(url)}">{escape(url)}</a>' in html
        assert ANSWER_SLOT not in text + html
        assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_mail_without_answer_links_names_no_link(renderer: Renderer) -> None:
    msg = _parse(renderer.message(_alert(), language="ja", to="a@x", message_id="<1@c>"))
    text, html = (part.get_content() for part in msg.iter_parts())
    assert "/answer/" not in text + html
    assert "返信" in text


def test_a_linked_mail_needs_its_recipients_link() -> None:
    linked = Renderer(
        default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR", answer_links=True
    )
    with pytest.raises(PermanentDeliveryError, match="answer link"):
        linked.message(_alert(), language="ja", to="a@x", message_id="<1@c>")
