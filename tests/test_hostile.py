"""Hostile and careless documents: each is refused with its reason, none crashes a parser."""

from __future__ import annotations

import pytest

from ceptoar.errors import InvalidNotice
from ceptoar.feed.formats import parse_any, peek_key
from tests.hostile import REFUSED, deep_csaf


@pytest.mark.parametrize(("document", "content_type", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_a_hostile_document_is_refused_saying_why(document: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_any(document, content_type)
    assert reason in str(info.value)
    assert peek_key(document, content_type) is None  # nor can a replay check read a key from it


def test_a_product_tree_as_deep_as_real_ones_get_is_accepted() -> None:
    parsed = parse_any(deep_csaf(20), "application/csaf+json")
    assert parsed.notice.source == "www.bsi.bund.de"


def test_a_cap_document_in_utf_16_is_read() -> None:
    from tests.hostile import DATA

    text = (DATA / "cap" / "hsas-alert.xml").read_text(encoding="utf-8")
    assert 'encoding = "UTF-8"' in text
    wide = text.replace('encoding = "UTF-8"', 'encoding = "UTF-16"').encode("utf-16")
    parsed = parse_any(wide, None)
    assert (parsed.format, parsed.notice.source) == ("cap", "hsas@dhs.gov")
