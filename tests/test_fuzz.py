"""A bounded fuzz run over the three parsers and POST /v1/notices, and a replay of what was found.

Documents start from accepted ones and are changed as careless senders
and attackers change them (`tests.fuzzing`). Whatever comes in is either
accepted, and then can be stored and mailed, or refused with its reason;
no exception escapes a parser and the endpoint answers no 5xx but a 503
that asks to retry. An input that breaks this is written to
tests/data/fuzz/ (name it and keep it), and every file there is replayed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from ceptoar.errors import InvalidNotice
from ceptoar.feed.formats import Parsed, parse_any
from ceptoar.model.alert import AlertView
from ceptoar.render import Renderer, default_templates_dir
from ceptoar.text import printable
from tests.fuzzing import documents
from tests.hostile import FUZZ

# Examples per run of the parser fuzz (the endpoint gets a third): CEPTOAR_FUZZ_EXAMPLES=20000 for a long run.
EXAMPLES = int(os.environ.get("CEPTOAR_FUZZ_EXAMPLES", "1000"))
RENDERER = Renderer(default_templates_dir(), sender="alerts@ceptoar.example", sender_name="地方公共団体CEPTOAR")
CORPUS = sorted(p for p in FUZZ.iterdir() if p.suffix in (".json", ".xml", ".bin"))


def _keep(data: bytes) -> None:
    """Write an input that broke a property to the corpus, for a person to name and keep."""
    (FUZZ / f"found-{hashlib.sha256(data).hexdigest()[:12]}.bin").write_bytes(data)


def _can_be_stored_and_mailed(parsed: Parsed) -> None:
    n = parsed.notice
    stored = n.model_dump_json(by_alias=True)
    assert "\\u0000" not in stored  # PostgreSQL refuses NUL in text
    stored.encode("utf-8")
    for text in (n.title, n.sender_name or "", *(t.title for t in n.translations.values())):
        assert printable(text) == text, f"a control character in {text!r}"
    alert = AlertView.of_notice(n, severity="high", rules=["fuzz"], id="20261202-0000f022")
    for language in ("ja", "en"):
        RENDERER.message(alert, language=language, to="a@lg.example", message_id="<f@ceptoar.example>")


def _accepted_or_refused_with_a_reason(data: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_any(data, content_type)
    except InvalidNotice as exc:
        assert exc.reason.strip(), "a refusal without a reason"
        return
    _can_be_stored_and_mailed(parsed)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(documents())
def test_the_parsers_accept_what_can_be_mailed_and_refuse_the_rest_with_a_reason(
    document: tuple[bytes, str | None],
) -> None:
    data, content_type = document
    try:
        _accepted_or_refused_with_a_reason(data, content_type)
    except BaseException:
        _keep(data)
        raise


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_what_was_found_before_is_refused_with_a_reason(path: Path) -> None:
    data = path.read_bytes()
    for content_type in (None, "application/json", "application/cap+xml"):
        _accepted_or_refused_with_a_reason(data, content_type)


def _answered_properly(client: httpx.Client, data: bytes, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post("/v1/notices", content=data, headers=headers)
    assert answer.status_code in (200, 202, 400, 403, 413, 415, 422), (answer.status_code, answer.text)
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert error["code"] and error["message"].strip(), answer.text


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(document=documents())
def test_the_endpoint_answers_every_document_without_a_server_error(
    live_api: tuple[str, dict[str, str]], document: tuple[bytes, str | None]
) -> None:
    url, auth = live_api
    data, content_type = document
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        try:
            _answered_properly(client, data, content_type)
        except BaseException:
            _keep(data)
            raise


def test_the_endpoint_answers_what_was_found_before(live_api: tuple[str, dict[str, str]]) -> None:
    url, auth = live_api
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        for path in CORPUS:
            _answered_properly(client, path.read_bytes(), None)
