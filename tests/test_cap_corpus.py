"""Real CAP 1.2 documents from several senders are accepted; ceptoar's own refusals say they are its own.

tests/data/SOURCES.md names where each document comes from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ceptoar.errors import InvalidNotice
from ceptoar.feed.cap import cap_source
from ceptoar.feed.formats import parse_any
from ceptoar.mailbox import list_messages
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, running, subset

CAP = Path(__file__).parent / "data" / "cap"
PUBLIC = sorted(p for p in CAP.glob("*.xml") if "cap11" not in p.name)


@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: p.name)
def test_every_cap_1_2_document_from_the_corpus_is_accepted(path: Path) -> None:
    parsed = parse_any(path.read_bytes())
    assert parsed.format == "cap" and parsed.notice.sender


def test_a_sender_that_is_a_url_is_kept_as_written_beside_its_source_key() -> None:
    notice = parse_any((CAP / "aemet-high-temperature.xml").read_bytes()).notice
    assert notice.sender == "http://www.aemet.es"
    assert notice.source == cap_source("http://www.aemet.es")
    assert notice.source.startswith("www.aemet.es+") and len(notice.source) <= 64
    assert notice.sent.isoformat() == "2026-09-06T21:50:01+00:00"  # sent as -00:00
    assert notice.title == "Moderate high-temperature warning. Este, sur y oeste de Gran Canaria"
    # Two senders never share a key, whatever their readable parts.
    assert cap_source("http://www.aemet.es") != cap_source("https://www.aemet.es")
    assert cap_source("urn:oid:2.49.0.0.578.0") != cap_source("urn-oid-2.49.0.0.578.0")
    assert cap_source("CAP@NISC.example") == "cap@nisc.example"


def test_references_are_kept_whole_with_their_times_as_written() -> None:
    notice = parse_any((CAP / "wcatwc-tsunami-update.xml").read_bytes()).notice
    assert notice.references == ["PAAQ-1-mg5a94", "PAAQ-2-mg5a94", "PAAQ-3-mg5a94"]
    first = notice.cap_references[0]
    assert (first.sender, first.identifier, first.sent) == (
        "wcatwc@noaa.gov",
        "PAAQ-1-mg5a94",
        "2013-01-05T09:01:16-00:00",
    )


def test_a_cancel_without_an_info_block_says_what_it_cancels() -> None:
    parsed = parse_any((CAP / "cancel-without-info.xml").read_bytes())
    notice = parsed.notice
    assert notice.msg_type.value == "cancel" and notice.references == ["2.49.0.0.191.0.HR.260906172333.LDZM"]
    assert notice.title == "取消: 2.49.0.0.191.0.HR.260906172333.LDZM"
    assert notice.translations["en"].summary == (
        "https://meteo.hr cancels its message 2.49.0.0.191.0.HR.260906172333.LDZM."
    )
    assert parsed.languages == ["ja", "en"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            ("<msgType>Cancel</msgType>", "<msgType>Update</msgType>"),
            "ceptoar's rule, not CAP's: an Update without an <info> block says nothing to deliver",
        ),
        (
            ("<references>https://meteo.hr,2.49.0.0.191.0.HR.260906172333.LDZM,2026-09-06T17:23:33+02:00</references>", ""),
            "ceptoar's rule, not CAP's: a Cancel must name the message it refers to; <references> is ''",
        ),
        (
            (",2026-09-06T17:23:33+02:00</references>", "</references>"),
            "ceptoar's rule, not CAP's: each reference must be sender,identifier,sent; <references> is "
            "'https://meteo.hr,2.49.0.0.191.0.HR.260906172333.LDZM' (line 9)",
        ),
        (
            ("<identifier>2.49.0.0.191.0.HR.260906190000.CANCEL</identifier>", "<identifier>" + "x" * 129 + "</identifier>"),
            "ceptoar's rule, not CAP's: String should have at most 128 characters; <identifier> is 'xxx",
        ),
    ],
)
def test_a_valid_document_refused_by_ceptoars_own_rule_says_so(change: tuple[str, str], words: str) -> None:
    text = (CAP / "cancel-without-info.xml").read_text(encoding="utf-8")
    assert change[0] in text
    with pytest.raises(InvalidNotice) as info:
        parse_any(text.replace(*change).encode())
    assert words in info.value.reason


def test_a_headline_longer_than_a_title_is_shortened_not_refused() -> None:
    text = (CAP / "aemet-high-temperature.xml").read_text(encoding="utf-8")
    long = text.replace("<headline>Moderate high-temperature warning.", "<headline>" + "Heat! " * 80, 1)
    notice = parse_any(long.encode()).notice
    assert len(notice.title) == 300 and notice.title.endswith("…")


async def test_a_cancel_without_info_from_a_url_sender_cancels_that_senders_alert(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    # Its expiry has passed; a copy that expires in 2099 is otherwise the same message.
    alert = (CAP / "dhmz-heat-hr-en.xml").read_bytes().replace(b"<expires>2026-09-08", b"<expires>2099-09-08")
    cancel = (CAP / "cancel-without-info.xml").read_bytes()
    foreign = cancel.replace(b"<references>https://meteo.hr,", b"<references>http://www.aemet.es,").replace(
        b"HR.260906190000.CANCEL", b"HR.260906190000.FOREIGN"
    )
    source = cap_source("https://meteo.hr")
    async with running(stack.settings):
        await stack.publish(alert, fmt="cap")
        await stack.wait_settled(f"{source}:2.49.0.0.191.0.HR.260906172333.LDZM")
        await stack.publish(foreign, fmt="cap")
        await stack.publish(cancel, fmt="cap")
        counts = await stack.wait_settled(f"{source}:2.49.0.0.191.0.HR.260906190000.CANCEL")
    held = await stack.store.alerts.resolve(f"{source}:2.49.0.0.191.0.HR.260906190000.FOREIGN")
    assert held.state == "held"
    assert held.held_reason is not None and "another sender" in held.held_reason
    assert counts == {"sent": 4}
    original = await stack.store.alerts.resolve(f"{source}:2.49.0.0.191.0.HR.260906172333.LDZM")
    cancelled = await stack.store.alerts.resolve(f"{source}:2.49.0.0.191.0.HR.260906190000.CANCEL")
    assert cancelled.thread_id == original.id and original.state == "cancelled"
    subjects = [m.subject for m in list_messages(mailbox.root, "primary@010006.lg.example")]
    assert subjects == [
        "【注意】[TLP:CLEAR] Yellow high temperature warning",  # CAP severity Moderate
        "【情報】【取消】[TLP:CLEAR] 取消: 2.49.0.0.191.0.HR.260906172333.LDZM",
    ]
