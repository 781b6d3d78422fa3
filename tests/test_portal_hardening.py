"""The HTTP application as an attacker meets it: operators' sign-in, CSRF bound to the session, opaque
origins, answer-link limits, header limits, forwarded addresses, and no Swagger UI."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from ceptoar.api.portal.ops import _key_checks, hash_key
from ceptoar.api.portal.pages import Portal
from ceptoar.bounces.links import AnswerLinks
from ceptoar.config import Settings
from ceptoar.registry import RegistryRow
from ceptoar.store import Actor, Operator, Store
from ceptoar.store.tables import answers
from tests.conftest import StackFactory
from tests.harness import MailboxServer, api_running, notice_doc, sent_to_all, subset

PUBLIC_URL = "https://ceptoar.lg.example"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _form_token(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path, follow_redirects=True)
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def _sign_in(http: httpx.AsyncClient, name: str, key: str) -> int:
    token = await _form_token(http, "/ops/signin")
    return (await http.post("/ops/signin", data={"csrf": token, "name": name, "key": key})).status_code


async def _answers(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(answers))).scalar_one())


async def test_failed_keys_are_counted_in_the_database_across_processes_and_spare_the_operators_own_client(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    # Behind a proxy (trusted), so that each client below has its own address.
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1), trusted_proxies=["127.0.0.1"])
    for name in ("alice", "bob"):
        await stack.store.portal.add_operator(name, hash_key(f"the key of {name}"), who=Actor("test"))
    own, elsewhere = {"X-Forwarded-For": "192.0.2.1"}, {"X-Forwarded-For": "192.0.2.99"}
    async with (
        api_running(stack.settings) as one,
        api_running(stack.settings) as other,
        httpx.AsyncClient(base_url=one, headers=own) as first,
        httpx.AsyncClient(base_url=other, headers=own) as second,
        httpx.AsyncClient(base_url=one, headers=elsewhere) as stranger,
    ):
        assert await _sign_in(first, "alice", "the key of alice") == 303  # this client is alice's own
        # Five wrong keys for bob, through two API processes: the sixth is refused by either.
        tries = [await _sign_in(http, "bob", "guess") for http in (first, second, first, second, first)]
        assert tries == [401] * 5
        assert await _sign_in(second, "bob", "the key of bob") == 429
        assert await _sign_in(first, "bob", "the key of bob") == 429
        assert await _sign_in(stranger, "bob", "the key of bob") == 303  # from elsewhere: not this pair

        # Guesses at alice's key from many other clients, as other processes would have counted them.
        now = datetime.now(UTC)
        for n in range(25):
            await stack.store.portal.record_signin(
                "alice", f"198.51.100.{n}", ok=False, now=now, window=timedelta(minutes=15)
            )
        # Her own client still signs her in; a client she never used is held off for a while.
        assert await _sign_in(first, "alice", "the key of alice") == 303
        assert await _sign_in(stranger, "alice", "the key of alice") == 429


async def test_an_unknown_or_disabled_name_costs_a_full_key_check_off_the_event_loop(
    tmp_path: object,
) -> None:
    portal = Portal.from_settings(Settings(var_dir=tmp_path))
    now = datetime.now(UTC)
    real = Operator("alice", hash_key("the key of alice"), now, None)
    disabled = Operator("carol", hash_key("the key of carol"), now, now)
    assert await _key_checks(portal, real, "the key of alice")
    assert not await _key_checks(portal, disabled, "the key of carol")  # its right key: still refused

    async def timed(account: Operator | None) -> float:
        began = time.perf_counter()
        for _ in range(3):
            assert not await _key_checks(portal, account, "wrong")
        return time.perf_counter() - began

    known, unknown, off = await timed(real), await timed(None), await timed(disabled)
    # The same argon2 work for each: a name cannot be told real by how fast it is refused.
    assert unknown > known / 2 and off > known / 2, (known, unknown, off)

    # While keys are checked the event loop goes on: a ticker every 5 ms keeps ticking.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    began = time.perf_counter()
    await asyncio.gather(*(_key_checks(portal, real, "wrong") for _ in range(4)))
    spent = time.perf_counter() - began
    ticking.cancel()
    assert ticks >= spent / 0.005 / 4, (ticks, spent)


async def test_csrf_tokens_are_bound_to_the_session_and_an_opaque_origin_with_a_session_is_refused(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    await stack.store.portal.add_operator("alice", hash_key("the key of alice"), who=Actor("test"))
    async with (
        api_running(stack.settings) as base,
        httpx.AsyncClient(base_url=base) as victim,
        httpx.AsyncClient(base_url=base) as attacker,
    ):
        # The sign-in form itself may come from an opaque origin (no session to ride on).
        token = await _form_token(victim, "/ops/signin")
        signed = await victim.post(
            "/ops/signin",
            data={"csrf": token, "name": "alice", "key": "the key of alice"},
            headers={"Origin": "null"},
        )
        assert signed.status_code == 303
        mine = await _form_token(victim, "/ops/alerts")
        assert mine != token
        # Signed in, a form from an opaque origin is refused even with the right token.
        opaque = await victim.post("/ops/signout", data={"csrf": mine}, headers={"Origin": "null"})
        assert opaque.status_code == 403 and "Origin: null" in opaque.text
        framed = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
        assert (await victim.post("/ops/signout", data={"csrf": mine}, headers=framed)).status_code == 403
        # Our own pages send no referrer, so a browser says `Origin: null` for them, and same-origin.
        ours = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}

        # An attacker who planted its own browser cookie in the victim's browser (a sibling host can)
        # and copies the token its own page shows: the token is bound to the attacker's (lack of a)
        # session, not the victim's.
        theirs = await _form_token(attacker, "/ops/signin")
        victim.cookies.set("ceptoar_csrf", attacker.cookies["ceptoar_csrf"], path="/")
        forged = await victim.post("/ops/signout", data={"csrf": theirs})
        assert forged.status_code == 403
        assert (await victim.get("/ops/alerts", follow_redirects=False)).status_code == 200  # still in
        # The victim's own page, with the planted cookie, gives a token that works.
        assert (
            await victim.post(
                "/ops/signout", data={"csrf": await _form_token(victim, "/ops/alerts")}, headers=ours
            )
        ).status_code == 303


async def test_answer_pages_are_limited_per_link_and_per_client_and_carry_no_inline_style(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(
        mailbox=mailbox,
        rows=subset(registry_rows, 6),
        public_url=PUBLIC_URL,
        answer_posts_per_link=3,
        answer_posts_per_client=8,
    )
    _, ids = await sent_to_all(stack.store, notice_doc(id=f"HARD-{time.time_ns()}", severity="high"))
    links = AnswerLinks.from_settings(stack.settings)
    assert links is not None
    paths = [f"/answer/{links.token(i)}" for i in ids]
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get(paths[0])
        csp = page.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "style-src 'self'" in csp
        assert 'style="' not in page.text and "<style" not in page.text
        sheet = re.search(r'<link rel="stylesheet" href="([^"]+)">', page.text)
        assert sheet is not None
        css = await http.get(httpx.URL(f"{base}{paths[0]}").join(sheet.group(1)))
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

        # One link: three answers, then 429 with Retry-After, and nothing more kept.
        statuses = [(await http.post(paths[0], data={"answer": "received"})).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        limited = await http.post(paths[0], data={"answer": "received"})
        assert limited.headers["retry-after"] == "60" and "記録しませんでした" in limited.text
        assert await _answers(stack.store) == 3
        # One client: eight answers a minute whatever links they use (the three above count).
        more = [(await http.post(p, data={"answer": "received"})).status_code for p in paths[1:8]]
        assert more == [200] * 5 + [429] * 2
        assert await _answers(stack.store) == 8
        # X-Forwarded-For from a client that is not a trusted proxy changes nothing.
        spoofed = await http.post(
            paths[9], data={"answer": "received"}, headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert spoofed.status_code == 429


async def test_forwarded_addresses_are_believed_only_from_the_proxies_named(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(
        mailbox=mailbox,
        rows=subset(registry_rows, 2),
        public_url=PUBLIC_URL,
        answer_posts_per_client=1,
        trusted_proxies=["127.0.0.1"],
    )
    _, ids = await sent_to_all(stack.store, notice_doc(id=f"HARD-{time.time_ns()}", severity="high"))
    links = AnswerLinks.from_settings(stack.settings)
    assert links is not None
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        # Behind the named proxy each organisation's own address counts, not the proxy's.
        for n, delivery in enumerate(ids[:3]):
            sent = await http.post(
                f"/answer/{links.token(delivery)}",
                data={"answer": "received"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            )
            assert sent.status_code == 200
        again = await http.post(
            f"/answer/{links.token(ids[3])}",
            data={"answer": "received"},
            headers={"X-Forwarded-For": "203.0.113.0"},
        )
        assert again.status_code == 429


async def test_oversized_headers_are_refused_and_there_is_no_swagger_ui(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    async with api_running(stack.settings) as base, httpx.AsyncClient(base_url=base) as http:
        big = await http.get("/portal/signin", headers={"X-Padding": "a" * 100_000})
        assert big.status_code == 431 and big.json()["error"]["code"] == "headers_too_large"
        many = await http.get("/healthz", headers={f"X-Field-{n}": "x" for n in range(150)})
        assert many.status_code == 431
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/redoc")).status_code == 404
        schema = await http.get("/openapi.json")
        assert schema.status_code == 200 and "/v1/notices" in schema.json()["paths"]
        assert "server" not in {k.lower() for k in (await http.get("/healthz")).headers}
