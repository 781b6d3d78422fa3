"""The HTTP endpoint under hostile input: every refusal a 4xx naming its reason, and parsing off the loop."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx
import pytest
from structlog.testing import capture_logs

from ceptoar.api import sign
from ceptoar.feed.formats import Parsed
from ceptoar.feed.offload import ParserPool
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import MailboxServer, Stack, api_running, running, subset
from tests.hostile import REFUSED, big_csaf


async def _feed(stack: Stack, *, signed: bool = False) -> tuple[dict[str, str], str | None]:
    new = await stack.store.feeds.add(
        "nisc",
        sources=["s@x.example", "www.redhat.com", "www.bsi.bund.de"],
        signed=signed,
        sealer=stack.settings.secret_box(),
    )
    return {"Authorization": f"Bearer {new.key}"}, new.signing_secret


async def test_every_hostile_document_gets_a_4xx_that_names_its_reason(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    auth, _ = await _feed(stack)
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for name, document, content_type, reason in REFUSED:
            headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
            answer = await http.post("/v1/notices", content=document, headers=headers)
            assert answer.status_code in (400, 415, 422), (name, answer.status_code, answer.text)
            error = answer.json()["error"]
            assert reason in f"{error['field']}: {error['message']}", (name, error)


@pytest.mark.parametrize(
    ("timestamp", "code"),
    [("²³", "bad_timestamp"), ("１７６４６３５２００", "bad_timestamp"), ("9" * 5000, "bad_timestamp"),
     ("-1", "bad_timestamp"), ("1e9", "bad_timestamp"), ("１", "bad_timestamp")],
)
async def test_an_odd_signature_timestamp_is_refused_as_such(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], timestamp: str, code: str
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    auth, secret = await _feed(stack, signed=True)
    assert secret is not None
    body = REFUSED[0][1][:100]
    headers = [
        (b"authorization", auth["Authorization"].encode()),
        (b"x-ceptoar-timestamp", timestamp.encode()),  # raw UTF-8, as a careless client sends it
        (b"x-ceptoar-signature", sign(secret, "1", body).encode()),
    ]
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/notices", content=body, headers=headers)
        foreign = await http.post(
            "/v1/notices",
            content=body,
            headers=[
                (b"authorization", auth["Authorization"].encode()),
                (b"x-ceptoar-timestamp", str(int(time.time())).encode()),
                (b"x-ceptoar-signature", "sha256=é".encode()),
            ],
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, code)
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (401, "bad_signature")


async def test_a_document_that_takes_too_long_to_check_is_refused(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), parse_timeout=0.01)
    auth, _ = await _feed(stack)
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post(
            "/v1/notices", content=big_csaf(6000, 450), headers={**auth, "Content-Type": "application/json"}
        )
        health = await http.get("/healthz")
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"] == "the document could not be checked within 0.01 s; it is refused"
    assert health.status_code == 200


async def test_the_endpoint_answers_while_a_large_advisory_is_checked(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """Checking a 2.5 MB advisory takes over a second here; /healthz keeps answering all the while.

    Measured against the post itself: with the check on the event loop, no
    answer comes while it runs, so the longest silence is most of the post.
    """
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), api_max_body=8 << 20)
    auth, _ = await _feed(stack)
    document = big_csaf(20000, 450)
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        began = time.monotonic()
        posting = asyncio.create_task(
            http.post("/v1/notices", content=document, headers={**auth, "Content-Type": "application/json"})
        )
        answers = [began]
        while not posting.done():
            assert (await http.get("/healthz")).status_code == 200
            answers.append(time.monotonic())
        posted = await posting
        took = time.monotonic() - began
    assert posted.status_code == 202, posted.text
    longest_silence = max(b - a for a, b in itertools.pairwise(answers))
    assert longest_silence < took / 4, (longest_silence, took)


async def test_a_replay_is_answered_before_the_document_is_checked_again(
    make_stack: StackFactory,
    mailbox: MailboxServer,
    registry_rows: list[RegistryRow],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    auth, _ = await _feed(stack)
    document = big_csaf(2000, 100)
    headers = {**auth, "Content-Type": "application/json"}
    # Each full check of this document, counted (the real parser still does it). Counting beats
    # reading the debug log, which an earlier test's logging level may have silenced.
    parses: list[int] = []
    parse = ParserPool.parse

    async def counted(self: ParserPool, data: bytes, content_type: str | None) -> Parsed:
        parses.append(len(data))
        return await parse(self, data, content_type)

    monkeypatch.setattr(ParserPool, "parse", counted)
    async with (
        running(stack.settings),
        api_running(stack.settings) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        first = await http.post("/v1/notices", content=document, headers=headers)
        await stack.wait_settled("www.redhat.com:RHSA-2021:5217")
        checked = len(parses)
        with capture_logs() as replay_logs:
            replay = await http.post("/v1/notices", content=document, headers=headers)
    assert first.status_code == 202 and replay.status_code == 200
    assert replay.json() == {**first.json(), "status": "already received"}
    assert checked >= 1 and set(parses) == {len(document)}
    assert len(parses) == checked  # the replay was answered without checking the document again
    assert "api.replay" in [e["event"] for e in replay_logs]
