"""CAP 1.2 and CSAF 2.0 documents written by others, and our JSON, through the one door."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceptoar.errors import InvalidNotice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat
from ceptoar.feed.formats import detect, parse_any
from tests.harness import REPO

DATA = Path(__file__).parent / "data"
CAP = DATA / "cap"
CSAF = DATA / "csaf"


def _cap(name: str) -> bytes:
    return (CAP / name).read_bytes()


# --- CAP 1.2: the specification's four examples and real alerts --------------


def test_cap_spec_a1_homeland_security_alert() -> None:
    parsed = parse_any(_cap("hsas-alert.xml"))
    n = parsed.notice
    assert parsed.format == "cap"
    assert (n.source, n.id, n.msg_type.value, n.status.value) == (
        "hsas@dhs.gov",
        "43b080713727",
        "alert",
        "actual",
    )
    assert n.sent.isoformat() == "2003-04-02T14:39:01-05:00"
    assert n.title == "Homeland Security Sets Code ORANGE"
    assert n.summary.startswith("The Department of Homeland Security has elevated")
    assert n.body.startswith("A High Condition is declared")
    assert n.cap is not None and (n.cap.severity, n.cap.urgency, n.cap.certainty) == (
        "Severe",
        "Immediate",
        "Likely",
    )
    assert n.category.value == "attack"  # CAP category Security
    assert n.tlp.value == "CLEAR"  # scope Public
    assert [str(u) for u in n.links] == ["http://www.dhs.gov/dhspublic/display?theme=29"]
    assert n.sender_name == "U.S. Government, Department of Homeland Security"


def test_cap_spec_a2_thunderstorm_warning_keeps_its_expiry() -> None:
    n = parse_any(_cap("thunderstorm-warning.xml"), "application/cap+xml").notice
    assert (n.source, n.id) == ("ksto@nws.noaa.gov", "KSTO1055887203")
    assert n.expires is not None and n.expires.isoformat() == "2003-06-17T16:00:00-07:00"
    assert n.cap is not None and n.cap.certainty == "Observed"
    assert n.area == []  # SAME geocodes are not local government codes


def test_cap_spec_a3_earthquake_update_refers_to_the_original() -> None:
    n = parse_any(_cap("earthquake-update.xml")).notice
    assert n.msg_type.value == "update"
    assert n.references == ["TRI13970876.1"]
    assert n.cap is not None and n.cap.severity == "Minor"


def test_cap_spec_a4_amber_alert_is_multilingual() -> None:
    parsed = parse_any(_cap("amber-multilingual.xml"))
    assert parsed.languages == ["en-US", "es-US"]
    assert parsed.notice.language == "en"
    assert (
        parsed.notice.title == "Amber Alert in Los Angeles County"
    )  # English first when there is no Japanese


def test_cap_in_japanese_and_english_with_lgcodes() -> None:
    parsed = parse_any(_cap("nisc-lgcode-ja-en.xml"))
    n = parsed.notice
    assert parsed.languages == ["ja-JP", "en-US"]
    assert n.language == "ja" and n.title == "LGWAN接続系端末へのマルウェア感染の確認について"
    assert n.text_for("en").title == "Malware infections on LGWAN-connected terminals"
    assert n.text_for("ja").title == n.title
    # 131016 as sent, 13103 completed with its check digit, Kanagawa's own code as the prefecture.
    assert n.area == ["131016", "131032", "14"]
    assert n.tlp.value == "GREEN"  # the TLP parameter wins over scope
    assert n.cvss is not None and n.cvss.base_score == 9.4


def test_a_signed_real_cancel_parses_with_its_references() -> None:
    n = parse_any(_cap("ipaws-signed-cancel.xml")).notice
    assert (n.source, n.msg_type.value) == ("westly.martin@ema.alabama.gov", "cancel")
    assert n.references == ["6a90b38a3fedd9125cff7287"]
    assert n.title == "Cancellation: Alabama EMA Required Weekly Test"


def test_cap_1_1_is_refused_naming_what_is_accepted() -> None:
    with pytest.raises(UnsupportedFormat) as info:
        parse_any(_cap("nws-hydrologic-outlook-cap11.xml"))
    assert "CAP 1.1 is not accepted; ceptoar accepts CAP 1.2" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            (b"<msgType>Alert</msgType>", b"<msgType>Alarm</msgType>"),
            "msgType",
            "'Alarm' is not an element of the set",
        ),
        ((b"<sender>hsas@dhs.gov</sender>", b""), "sent", "Expected is ( sender )"),
        ((b"<status>Actual</status>", b"<status>Real</status>"), "status", "'Real'"),
        (
            (b"<msgType>Alert</msgType>", b"<msgType>Ack</msgType>"),
            "msgType",
            "ceptoar's rule, not CAP's: only Alert, Update and Cancel are delivered; <msgType> is 'Ack' (line 7)",
        ),
    ],
)
def test_an_invalid_cap_alert_names_the_element(change: tuple[bytes, bytes], field: str, words: str) -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_any(_cap("hsas-alert.xml").replace(*change))
    assert info.value.field == field
    assert words in info.value.reason


def test_a_bad_lgcode_names_the_geocode() -> None:
    data = _cap("nisc-lgcode-ja-en.xml").replace(b"<value>131016</value>", b"<value>131017</value>", 1)
    with pytest.raises(InvalidNotice) as info:
        parse_any(data)
    assert info.value.field == "info[0].area[0].geocode[0]"
    assert "expected 6" in info.value.reason


def test_entities_and_doctypes_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY x SYSTEM "file:///etc/passwd">]><alert>&x;</alert>'
    )
    with pytest.raises(InvalidNotice, match="DOCTYPE"):
        parse_any(bomb, "application/xml")


def test_iso_8859_1_and_byte_order_marks_parse() -> None:
    spanish = _cap("amber-multilingual.xml").decode("utf-8")
    latin1 = spanish.replace('encoding = "UTF-8"', 'encoding = "ISO-8859-1"').encode("iso-8859-1")
    assert "Abducción de Niño".encode("iso-8859-1") in latin1
    parsed = parse_any(latin1)
    assert parsed.languages == ["en-US", "es-US"]
    with_bom = b"\xef\xbb\xbf" + _cap("hsas-alert.xml")
    assert parse_any(with_bom).notice.id == "43b080713727"
    json_bom = b"\xef\xbb\xbf" + (REPO / "examples" / "notice.json").read_bytes()
    assert parse_any(json_bom).notice.id == "NISC-2026-1128-001"


def test_malformed_xml_is_malformed() -> None:
    with pytest.raises(MalformedNotice, match="not well-formed XML"):
        parse_any(b"<alert><identifier>x</alert>", "application/cap+xml")


# --- CSAF 2.0: real advisories and the mandatory tests -----------------------


def test_csaf_bsi_advisory() -> None:
    parsed = parse_any((CSAF / "bsi-2022-0001.json").read_bytes(), "application/json")
    n = parsed.notice
    assert parsed.format == "csaf" and parsed.languages == ["en-US"]
    assert (n.source, n.id, n.msg_type.value) == ("www.bsi.bund.de", "BSI-2022-0001", "alert")
    assert n.title == "CVRF-CSAF-Converter: XML External Entities Vulnerability"
    assert n.cves == ["CVE-2022-27193"]
    assert n.cvss is not None and n.cvss.base_score == 6.1
    assert n.severity is not None and n.severity.value == "medium"  # aggregate severity Moderate
    assert n.tlp.value == "CLEAR"  # TLP:WHITE
    assert n.category.value == "vulnerability"
    assert n.sender_name == "Bundesamt für Sicherheit in der Informationstechnik"


def test_csaf_red_hat_advisory() -> None:
    n = parse_any((CSAF / "rhsa-2021_5217.json").read_bytes()).notice
    assert (n.source, n.id) == ("www.redhat.com", "RHSA-2021:5217")
    assert n.summary.startswith("A security update is now available for Red Hat Single Sign-On 7.5")
    assert "Terms of Use" not in n.body and "Details" in n.body
    assert n.severity is not None and n.severity.value == "high"  # Important
    assert n.cves == ["CVE-2021-4133"]
    assert "https://access.redhat.com/errata/RHSA-2021:5217" in [str(u) for u in n.links]


def test_a_revised_csaf_advisory_is_an_update_of_its_tracking_id() -> None:
    doc = json.loads((CSAF / "bsi-2022-0001.json").read_text(encoding="utf-8"))
    tracking = doc["document"]["tracking"]
    tracking["version"] = "2"
    tracking["revision_history"].append({"date": "2022-03-18T10:00:00.000Z", "number": "2", "summary": "Fix"})
    n = parse_any(json.dumps(doc).encode()).notice
    assert (n.id, n.msg_type.value, n.references) == ("BSI-2022-0001@2", "update", ["BSI-2022-0001"])


def test_csaf_schema_errors_name_their_json_path() -> None:
    doc = json.loads((CSAF / "bsi-2022-0001.json").read_text(encoding="utf-8"))
    doc["document"]["tracking"]["status"] = "published"
    with pytest.raises(InvalidNotice) as info:
        parse_any(json.dumps(doc).encode())
    assert info.value.field == "$.document.tracking.status"
    assert "'published' is not one of" in info.value.reason


def test_csaf_mandatory_test_6_1_1_product_used_but_not_defined() -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_any((CSAF / "oasis-6-1-01-02-missing-product-id.json").read_bytes())
    assert "6.1.1" in info.value.reason and "'CSAFPID-9080701'" in info.value.reason
    assert info.value.field == "$.vulnerabilities[0].flags[0].product_ids[1]"


def test_csaf_mandatory_test_6_1_2_product_defined_twice() -> None:
    with pytest.raises(InvalidNotice) as info:
        parse_any((CSAF / "oasis-6-1-02-01-duplicate-product-id.json").read_bytes())
    assert "6.1.2" in info.value.reason and "'CSAFPID-9080700'" in info.value.reason
    assert info.value.field == "$.product_tree.full_product_names[1].product_id"


def test_a_csaf_base_score_that_contradicts_its_vector_is_refused() -> None:
    doc = json.loads((CSAF / "bsi-2022-0001.json").read_text(encoding="utf-8"))
    doc["vulnerabilities"][0]["scores"][0]["cvss_v3"]["baseScore"] = 9.0
    with pytest.raises(InvalidNotice) as info:
        parse_any(json.dumps(doc).encode())
    assert info.value.field == "$.vulnerabilities[0].scores[0].cvss_v3.baseScore"
    assert "does not match the base score 6.1" in info.value.reason


# --- Detection ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "fmt"),
    [
        (CAP / "hsas-alert.xml", None, "cap"),
        (CAP / "hsas-alert.xml", "text/xml; charset=utf-8", "cap"),
        (CSAF / "bsi-2022-0001.json", None, "csaf"),
        (CSAF / "bsi-2022-0001.json", "application/csaf+json", "csaf"),
        (REPO / "examples" / "notice.json", "application/octet-stream", "json"),
        (REPO / "examples" / "notice.json", "application/json", "json"),
    ],
)
def test_format_by_content_type_and_by_content(path: Path, content_type: str | None, fmt: str) -> None:
    assert detect(path.read_bytes(), content_type) == fmt


def test_an_unaccepted_content_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="'text/plain' is not accepted"):
        detect(b"{}", "text/plain")
    with pytest.raises(UnsupportedFormat, match="cannot tell"):
        detect(b"hello", None)
    with pytest.raises(InvalidNotice, match="needs 'schema'"):
        detect(b'{"x": 1}', "application/json")


def test_an_area_code_means_the_same_in_every_format() -> None:
    """Two digits: the whole prefecture. Six: one organisation, a prefecture's own code its government alone."""
    cap = _cap("nisc-lgcode-ja-en.xml").replace(
        b"<geocode><valueName>LGCODE</valueName><value>14</value></geocode>",
        b"<geocode><valueName>LGCODE</valueName><value>140007</value></geocode>"
        b"<geocode><valueName>ISO3166-2</valueName><value>JP-13</value></geocode>",
    )
    assert parse_any(cap).notice.area == ["131016", "131032", "140007", "13"]
    doc = json.loads((REPO / "examples" / "notice.json").read_text(encoding="utf-8"))
    doc["area"] = ["140007", "13"]
    assert parse_any(json.dumps(doc).encode()).notice.area == ["140007", "13"]
