"""The HTTP feed endpoint end to end: real uvicorn, the running RabbitMQ, real mailboxes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aio_pika
import httpx
import pytest

from ceptoar.api import sign
from ceptoar.mailbox import count, list_messages
from ceptoar.mailbox.maildir import addresses
from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import (
    AMQP_URL,
    REPO,
    MailboxServer,
    Stack,
    api_running,
    free_port,
    notice_doc,
    running,
    subset,
)

CAP = Path(__file__).parent / "data" / "cap"
XML = {"Content-Type": "application/cap+xml"}


def _nisc_cap(*, identifier: str = "NISC-CAP-2026-1128-0001", area: bool = True) -> bytes:
    data = (CAP / "nisc-lgcode-ja-en.xml").read_bytes()
    data = data.replace(b"NISC-CAP-2026-1128-0001", identifier.encode())
    if not area:
        data = re.sub(rb"<geocode>.*?</geocode>", b"", data)
    return data


def _cap_cancel(identifier: str, *, of: str, sent: str = "2026-11-28T19:05:00+09:00") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>cap@nisc.example</sender>
  <sent>2026-11-28T19:30:00+09:00</sent>
  <status>Actual</status>
  <msgType>Cancel</msgType>
  <scope>Public</scope>
  <references>cap@nisc.example,{of},{sent}</references>
  <info>
    <language>ja-JP</language>
    <category>Security</category>
    <event>不正アクセス</event>
    <urgency>Past</urgency>
    <severity>Minor</severity>
    <certainty>Observed</certainty>
    <headline>先の通知を取り消します</headline>
    <description>誤報のため、先に送付した通知を取り消します。</description>
  </info>
</alert>""".encode()


async def _feed(stack: Stack, *, signed: bool = False) -> tuple[dict[str, str], str | None]:
    new = await stack.store.feeds.add(
        "nisc", sources=["cap@nisc.example"], signed=signed, sealer=stack.settings.secret_box()
    )
    return {"Authorization": f"Bearer {new.key}"}, new.signing_secret


async def _queued_notices(stack: Stack) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(stack.bus.names.notices, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def _until_sent(
    http: httpx.AsyncClient, notice_id: str, auth: dict[str, str], *, at_least: int
) -> None:
    """Poll the endpoint, as a feed would, until that many deliveries are sent."""
    for _ in range(600):
        state = (await http.get(f"/v1/notices/{notice_id}", headers=auth)).json()
        if state.get("counts", {}).get("sent", 0) >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{notice_id}: fewer than {at_least} sent after 30s")


async def test_a_cap_alert_posted_with_a_key_reaches_the_mailboxes_once(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    auth, _ = await _feed(stack)
    async with (
        running(stack.settings),
        api_running(stack.settings) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        first = await http.post("/v1/notices", content=_nisc_cap(), headers={**auth, **XML})
        assert first.status_code == 202, first.text
        assert first.json() == {
            "id": "NISC-CAP-2026-1128-0001",
            "source": "cap@nisc.example",
            "format": "cap",
            "status": "accepted",
        }
        again = await http.post("/v1/notices", content=_nisc_cap(), headers={**auth, **XML})
        assert again.status_code == 200 and again.json()["status"] == "already received"
        counts = await stack.wait_settled("cap@nisc.example:NISC-CAP-2026-1128-0001")
        state = (await http.get("/v1/notices/NISC-CAP-2026-1128-0001", headers=auth)).json()
        by_alert = await http.get(f"/v1/alerts/{state['alert_id']}", headers=auth)
    # 千代田区 and 港区 (one as sent, one completed from five digits) and all of Kanagawa: 36 organisations.
    wanted = {r.email for r in registry_rows if r.code in {"131016", "131032"} or r.code.startswith("14")}
    assert counts == {"sent": len(wanted)} == {"sent": 72}
    assert set(addresses(mailbox.root)) == wanted
    assert {count(mailbox.root, a) for a in wanted} == {1}
    assert state["counts"]["sent"] == 72 and state["severity"] == "critical" and state["tlp"] == "GREEN"
    assert by_alert.json() == state
    subject = list_messages(mailbox.root, "primary@131016.lg.example")[0].subject
    assert subject == "【緊急】[TLP:GREEN] LGWAN接続系端末へのマルウェア感染の確認について"


async def test_a_cap_cancel_stops_what_was_not_yet_sent(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    mailbox.handler.delay = 0.02  # type: ignore[union-attr]
    stack = await make_stack(
        mailbox=mailbox, rows=subset(registry_rows, 150), smtp_connections=2, mailer_batch=8
    )
    auth, _ = await _feed(stack)
    key = "cap@nisc.example:NISC-CAP-BIG"
    async with (
        running(stack.settings),
        api_running(stack.settings) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        posted = await http.post(
            "/v1/notices", content=_nisc_cap(identifier="NISC-CAP-BIG", area=False), headers={**auth, **XML}
        )
        assert posted.status_code == 202, posted.text
        await _until_sent(http, "NISC-CAP-BIG", auth, at_least=20)
        cancel = await http.post(
            "/v1/notices", content=_cap_cancel("NISC-CAP-BIG-C", of="NISC-CAP-BIG"), headers={**auth, **XML}
        )
        assert cancel.status_code == 202, cancel.text
        cancel_counts = await stack.wait_settled("cap@nisc.example:NISC-CAP-BIG-C")
        original = await stack.store.alerts.counts((await stack.store.alerts.resolve(key)).id)
    assert original["cancelled"] > 0 and original["sent"] >= 20
    assert original["sent"] + original["cancelled"] == 300
    assert cancel_counts == {"sent": original["sent"]}
    subjects = [e.subject for a in addresses(mailbox.root) for e in list_messages(mailbox.root, a)]
    assert sum("【取消】" not in s for s in subjects) == original["sent"]
    assert sum("【取消】" in s for s in subjects) == original["sent"]


async def test_refused_requests_publish_nothing(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), api_max_body=64 * 1024)
    auth, _ = await _feed(stack)
    other = await stack.store.feeds.add("jpcert")
    signed = await stack.store.feeds.add(
        "signed-feed", sources=["cap@nisc.example"], signed=True, sealer=stack.settings.secret_box()
    )
    revoked = await stack.store.feeds.add("old")
    await stack.store.feeds.revoke("old")
    body = _nisc_cap(area=False)
    now = str(int(time.time()))
    stale = str(int(time.time()) - 301)
    assert signed.signing_secret is not None
    cases = [
        ({}, body, 401, "unauthenticated"),
        ({"Authorization": "Bearer cep_wrong"}, body, 401, "invalid_key"),
        ({"Authorization": f"Bearer {revoked.key}"}, body, 401, "invalid_key"),
        ({"Authorization": f"Bearer {other.key}"}, body, 403, "wrong_source"),
        ({"Authorization": f"Bearer {signed.key}"}, body, 401, "signature_required"),
        (
            {
                "Authorization": f"Bearer {signed.key}",
                "X-Ceptoar-Timestamp": stale,
                "X-Ceptoar-Signature": sign(signed.signing_secret, stale, body),
            },
            body,
            401,
            "stale_signature",
        ),
        (
            {
                "Authorization": f"Bearer {signed.key}",
                "X-Ceptoar-Timestamp": now,
                "X-Ceptoar-Signature": sign(signed.signing_secret, now, body + b" "),
            },
            body,
            401,
            "bad_signature",
        ),
        (auth, b"<alert>" + b" " * (64 * 1024) + b"</alert>", 413, "too_large"),
        (auth, (CAP / "nws-hydrologic-outlook-cap11.xml").read_bytes(), 415, "unsupported_format"),
        (auth, b"<alert><unclosed></alert>", 400, "malformed"),
        (auth, body.replace(b"<msgType>Alert</msgType>", b"<msgType>Alarm</msgType>"), 422, "invalid_notice"),
    ]
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        for headers, data, status, code in cases:
            response = await http.post("/v1/notices", content=data, headers={**XML, **headers})
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
        text = await http.post(
            "/v1/notices", content=b"hello", headers={**auth, "Content-Type": "text/plain"}
        )
        assert text.status_code == 415 and "'text/plain' is not accepted" in text.json()["error"]["message"]
        invalid = await http.post(
            "/v1/notices",
            content=body.replace(b"<msgType>Alert</msgType>", b"<msgType>Alarm</msgType>"),
            headers={**auth, **XML},
        )
        assert invalid.json()["error"]["field"] == "msgType"
        good = await http.post(
            "/v1/notices",
            content=body,
            headers={
                **XML,
                "Authorization": f"Bearer {signed.key}",
                "X-Ceptoar-Timestamp": now,
                "X-Ceptoar-Signature": sign(signed.signing_secret, now, body),
            },
        )
        assert good.status_code == 202, good.text
    assert await _queued_notices(stack) == 1  # only the one properly signed notice


async def test_json_notices_must_be_in_the_feeds_own_name(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    auth, _ = await _feed(stack)
    json_type = {"Content-Type": "application/json"}
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        mine = await http.post("/v1/notices", json=notice_doc(id="J-1", source="nisc"), headers=auth)
        theirs = await http.post("/v1/notices", json=notice_doc(id="J-2", source="jpcert"), headers=auth)
        csaf = await http.post(
            "/v1/notices",
            content=(REPO / "tests/data/csaf/bsi-2022-0001.json").read_bytes(),
            headers={**auth, **json_type},
        )
    assert mine.status_code == 202
    assert theirs.status_code == 403 and theirs.json()["error"]["field"] == "source"
    assert csaf.status_code == 403 and "'www.bsi.bund.de'" in csaf.json()["error"]["message"]


async def test_with_the_broker_down_it_answers_503_and_accepts_nothing(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    auth, _ = await _feed(stack)
    down = stack.settings.model_copy(update={"amqp_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/"})
    async with api_running(down) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.post("/v1/notices", content=_nisc_cap(area=False), headers={**auth, **XML})
        ready = await http.get("/readyz")
        health = await http.get("/healthz")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "broker_unavailable"
    assert ready.status_code == 503 and ready.json() == {"store": "ok", "broker": "unreachable"}
    assert health.status_code == 200
    # Nothing was half-accepted: with the broker back, the same notice is new.
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        retried = await http.post("/v1/notices", content=_nisc_cap(area=False), headers={**auth, **XML})
        assert (await http.get("/readyz")).status_code == 200
    assert retried.status_code == 202


async def test_lookups_are_scoped_to_the_feed(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    auth, _ = await _feed(stack)
    other = await stack.store.feeds.add("jpcert")
    async with (
        running(stack.settings),
        api_running(stack.settings) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        await http.post("/v1/notices", json=notice_doc(id="SCOPE-1", source="nisc"), headers=auth)
        await stack.wait_settled("SCOPE-1")
        mine = await http.get("/v1/notices/SCOPE-1", headers=auth)
        theirs = await http.get("/v1/notices/SCOPE-1", headers={"Authorization": f"Bearer {other.key}"})
        alert = await http.get(
            f"/v1/alerts/{mine.json()['alert_id']}", headers={"Authorization": f"Bearer {other.key}"}
        )
        anonymous = await http.get("/v1/notices/SCOPE-1")
    assert mine.status_code == 200 and mine.json()["counts"]["sent"] == 4
    assert theirs.status_code == 404 and alert.status_code == 404
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "path", ["/v1/notices", "/v1/notices/{notice_id}", "/v1/alerts/{alert_id}", "/healthz", "/readyz"]
)
def test_the_openapi_document_describes_every_route(path: str) -> None:
    from ceptoar.api import create_app
    from ceptoar.config import Settings

    doc = create_app(Settings()).openapi()
    assert path in doc["paths"]
    if path == "/v1/notices":
        post = doc["paths"][path]["post"]
        assert set(post["responses"]) == {"200", "202", "400", "401", "403", "413", "415", "422", "503"}
        assert set(post["requestBody"]["content"]) >= {
            "application/json",
            "application/cap+xml",
            "application/csaf+json",
        }
        assert json.dumps(doc["components"]["securitySchemes"]).count("bearer") >= 1


async def test_no_feed_may_post_as_the_operators(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """Even a feed stored with the reserved source (as an older release allowed) is refused."""
    from sqlalchemy import update

    from ceptoar.store.feeds import ReservedSource
    from ceptoar.store.tables import feeds

    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    for name, sources in (("rogue", ["operator"]), ("operator", [])):
        with pytest.raises(ReservedSource, match="'operator' is reserved"):
            await stack.store.feeds.add(name, sources=sources)
    rogue = await stack.store.feeds.add("rogue")
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(feeds).where(feeds.c.name == "rogue").values(sources=["rogue", "operator"]))
    forged = notice_doc(id="OP-FORGED", source="operator", severity_override="critical", tlp="CLEAR")
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post("/v1/notices", json=forged, headers={"Authorization": f"Bearer {rogue.key}"})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == {
        "code": "reserved_source",
        "message": "source 'operator' is reserved for CEPTOAR's operators; no feed may post as it",
        "field": "source",
    }
    assert await _queued_notices(stack) == 0


async def test_what_the_dispatcher_would_refuse_is_refused_at_the_door(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """A 202 is never taken back for anything the endpoint could have said at once."""
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2))
    auth, _ = await _feed(stack)
    cap = _nisc_cap(identifier="REUSED-1", area=False)
    cases = [
        (notice_doc(id="Y1", sent="0001-01-01T00:00:00+14:00"), "sent", "outside the accepted range"),
        (notice_doc(id="Y9", expires="9999-12-31T23:59:59Z"), "expires", "outside the accepted range"),
        (notice_doc(id="AREA", area=["010006", "131016"]), "area[1]", "131016 is not a subscribed"),
    ]
    async with (
        running(stack.settings),
        api_running(stack.settings) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        for doc, field, words in cases:
            answer = await http.post("/v1/notices", json=doc, headers=auth)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["field"] == field and words in answer.json()["error"]["message"]
        assert (await http.post("/v1/notices", content=cap, headers={**auth, **XML})).status_code == 202
        await stack.wait_settled("cap@nisc.example:REUSED-1")
        reused = cap.replace(b"<sent>2026-11-28T19:05:00+09:00</sent>", b"<sent>2026-11-28T20:00:00+09:00</sent>")
        assert reused != cap
        again = await http.post("/v1/notices", content=reused, headers={**auth, **XML})
    assert again.status_code == 422 and again.json()["error"]["field"] == "id"
    assert "already used id REUSED-1 with sent" in again.json()["error"]["message"]
    assert await _queued_notices(stack) == 0


async def test_a_notice_refused_after_it_was_accepted_says_why_and_may_be_sent_again(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 3)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    auth, _ = await _feed(stack)
    doc = notice_doc(id="LATER-1", area=[rows[4].code])
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        accepted = await http.post("/v1/notices", json=doc, headers=auth)
        assert accepted.status_code == 202, accepted.text
        # Before the dispatcher gets to it, the organisation leaves the registry.
        await stack.store.subscribers.import_rows(rows[:4], replace=True)
        async with running(stack.settings):
            dead = await stack.get_dead()
            state = (await http.get("/v1/notices/LATER-1", headers=auth)).json()
            await stack.store.subscribers.import_rows(rows)  # mended
            retried = await http.post("/v1/notices", json=doc, headers=auth)
            counts = await stack.wait_settled("LATER-1")
    assert (dead.headers or {})["x-ceptoar-field"] == "area[0]"
    assert state["state"] == "rejected" and state["alert_id"] is None
    assert state["rejected_field"] == "area[0]"
    assert state["rejected_reason"] == f"area[0]: {rows[4].code} is not a subscribed local government"
    assert retried.status_code == 202, retried.text
    assert counts == {"sent": 2}
