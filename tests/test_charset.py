"""ISO-2022-JP for the addresses whose mail systems need it, UTF-8 where a character does not fit.

Each mail is decoded twice: by Python's email package and by iconv, an independent decoder.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import io
import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from ceptoar.errors import RegistryError
from ceptoar.feed import parse_notice
from ceptoar.mailbox import list_messages
from ceptoar.model.alert import AlertView
from ceptoar.registry import RegistryRow
from ceptoar.registry.csvio import parse_registry, write_registry
from ceptoar.render import Renderer, default_templates_dir
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, notice_doc, running, subset

LINK = "https://ceptoar.lg.example/a/12-abc&x=1"


def _alert(**changes: Any) -> AlertView:
    notice = parse_notice((REPO / "examples" / "notice.json").read_bytes())
    notice = notice.model_copy(update=changes)
    return AlertView.of_notice(notice, severity="critical", rules=["cvss-critical"], id="20261207-iso00001")


def _renderer(links: bool) -> Renderer:
    return Renderer(
        default_templates_dir(),
        sender="alerts@ceptoar.example",
        sender_name="地方公共団体CEPTOAR",
        answer_links=links,
    )


def _mail(renderer: Renderer, alert: AlertView, charset: str) -> bytes:
    return renderer.message(
        alert, language="ja", to="a@130001.lg.example", message_id="<1@c>", charset=charset, answer_url=LINK
    )


def _iconv(raw: bytes, charset: str) -> str:
    """The part's bytes decoded by iconv, not by Python."""
    done = subprocess.run(["iconv", "-f", charset, "-t", "UTF-8"], input=raw, capture_output=True, check=True)
    return done.stdout.decode("utf-8")


def _plain_bytes(msg: EmailMessage) -> bytes:
    part = msg.get_body(("plain",))
    assert part is not None
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


@pytest.mark.parametrize("links", [False, True])
def test_iso_2022_jp_mail_decodes_to_the_same_text_by_two_decoders(links: bool) -> None:
    renderer = _renderer(links)
    alert = _alert()
    raw = _mail(renderer, alert, "iso-2022-jp")
    assert raw.isascii() and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    utf8 = renderer.render(alert, "ja").text
    expected = utf8.replace("https://ceptoar-answer-slot.invalid/", LINK)
    plain = msg.get_body(("plain",))
    assert plain is not None
    assert plain.get_content_charset() == "iso-2022-jp" and plain["Content-Transfer-Encoding"] == "7bit"
    assert plain.get_content().replace("\r\n", "\n") == expected
    assert _iconv(_plain_bytes(msg), "ISO-2022-JP").replace("\r\n", "\n") == expected
    assert msg["Subject"] == renderer.render(alert, "ja").subject
    assert "=?iso-2022-jp?b?" in raw.split(b"\r\n\r\n")[0].decode()
    assert msg["From"].addresses[0].display_name == "地方公共団体CEPTOAR"
    html = msg.get_body(("html",))
    assert html is not None and html.get_content_charset() == "iso-2022-jp"
    if links:
        assert LINK.replace("&", "&amp;") in html.get_content()
    rendered = renderer.render(alert, "ja", "alert", "iso-2022-jp")
    assert (rendered.charset, rendered.fallback) == ("iso-2022-jp", None)


@pytest.mark.parametrize(
    ("title", "named"),
    [
        ("髙島市のサーバ障害について", "'髙' (U+9AD9) in the subject"),
        ("障害①の続報", "'①' (U+2460) in the subject"),
    ],
)
def test_a_character_outside_jis_x_0208_sends_the_mail_in_utf8_and_says_why(title: str, named: str) -> None:
    renderer = _renderer(True)
    alert = _alert(title=title)
    raw = _mail(renderer, alert, "iso-2022-jp")
    rendered = renderer.render(alert, "ja", "alert", "iso-2022-jp")
    assert rendered.charset == "utf-8"
    assert rendered.fallback == f"sent in UTF-8, not ISO-2022-JP: {named} is not in ISO-2022-JP"
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    plain = msg.get_body(("plain",))
    assert plain is not None and plain.get_content_charset() == "utf-8"
    assert title in plain.get_content() and title in _iconv(_plain_bytes(msg), "UTF-8")


def test_a_line_too_long_for_7_bit_mail_goes_in_utf8() -> None:
    renderer = _renderer(False)
    alert = _alert(summary="脆弱性" * 200)  # one line of 600 characters: over 998 octets in ISO-2022-JP
    rendered = renderer.render(alert, "ja", "alert", "iso-2022-jp")
    assert rendered.charset == "utf-8" and rendered.fallback is not None and "998 octets" in rendered.fallback


def test_the_registry_keeps_each_addresss_charset_and_refuses_others() -> None:
    text = (
        "code,name,email,role,charset\n"
        "130001,東京都,primary@130001.lg.example,primary,ISO-2022-JP\n"
        "130001,東京都,security@130001.lg.example,security,\n"
    )
    rows = parse_registry(io.StringIO(text))
    assert [r.charset for r in rows] == ["iso-2022-jp", "utf-8"]
    assert parse_registry(io.StringIO(write_registry(rows))) == rows
    with pytest.raises(RegistryError) as caught:
        parse_registry(io.StringIO(text.replace("ISO-2022-JP", "Shift_JIS")))
    assert str(caught.value.problems[0]) == "line 2: charset: 'Shift_JIS' is not one of utf-8, iso-2022-jp"


async def test_a_fanout_sends_each_address_in_its_charset_and_records_a_fallback(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    rows = subset(registry_rows, 2)
    legacy = {rows[0].email, rows[2].email}
    rows = [dataclasses.replace(r, charset="iso-2022-jp") if r.email in legacy else r for r in rows]
    stack = await make_stack(mailbox=mailbox, rows=rows)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="ISO-1"))
        await stack.publish(notice_doc(id="ISO-2", title="障害①の続報"))
        assert await stack.wait_settled("ISO-1") == {"sent": len(rows)}
        assert await stack.wait_settled("ISO-2") == {"sent": len(rows)}
    for row in rows:
        first, second = list_messages(mailbox.root, row.email)
        for entry, charset in ((first, row.charset), (second, "utf-8")):
            msg = email.message_from_bytes(entry.path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            plain = msg.get_body(("plain",))
            assert plain is not None and plain.get_content_charset() == charset
    fallback = await stack.store.alerts.resolve("ISO-2")
    for row in rows:
        delivery = await stack.store.deliveries.find(fallback.id, row.email)
        assert delivery is not None
        events = await stack.store.deliveries.events(delivery["id"])
        notes = [e["smtp_reply"] for e in events if e["state"] == "sending" and e["smtp_reply"]]
        if row.email in legacy:
            assert notes == [
                "sent in UTF-8, not ISO-2022-JP: '①' (U+2460) in the subject is not in ISO-2022-JP"
            ]
            assert [e["state"] for e in events][-2:] == ["sending", "sent"]
        else:
            assert notes == []
