"""Hypothesis over every route of the HTTP application: no input gives a 5xx.

Each example picks a route (every route the application has: a new one
without a way to call it here fails the first test), fills its path
parameters, its query parameters and, for a POST, a form of the portal's
field names, from values real and hostile alike: the ids and tokens that
exist, numbers far out of range, impossible dates, control characters,
very long text. It calls the route as nobody, as a signed-in operator or
as a signed-in local government, with the visitor's right CSRF token or a
wrong one. The application runs for real (uvicorn on loopback, SQLite, the
running RabbitMQ on a prefix of its own), with an alert sent to every
address of a small registry.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ceptoar.api import create_app
from ceptoar.api.portal.ops import ACTIONS, hash_key
from ceptoar.api.portal.security import CSRF_COOKIE, CSRF_PURPOSE, OPS_COOKIE, ORG_COOKIE, bound_csrf, hashed
from ceptoar.bounces.links import AnswerLinks, UnsubscribeLinks
from ceptoar.config import Settings
from ceptoar.registry import read_registry
from ceptoar.store import Actor, Store
from tests.conftest import RETRY_DELAYS
from tests.harness import AMQP_URL, REPO, api_in_thread, free_port, notice_doc, sent_to_all, subset

# The fields the portal's forms have, and one no form has.
FORM_FIELDS = (
    "csrf", "email", "name", "key", "answer", "address", "min_severity", "category",
    "digest", "low_notices", "typed", "unknown",
)  # fmt: skip
HOSTILE = (
    "", "0", "-1", "1e309", "nan", "99999999999999999999", "9" * 5000, "0001-01-01", "9999-12-31",
    "2026-02-30", "2026-13-01", "../../etc/passwd", "\x00", "\r\nSet-Cookie: x=1", "<script>", "%",
    "critical", "urgent", "received", "affected", "vulnerability", "daily", "monthly", "on", "ｘ" * 300,
    "東京都" * 100,
)  # fmt: skip


@dataclass
class Site:
    base: str
    feed_key: str
    alert_id: str
    answer_token: str
    signin_token: str
    unsubscribe_token: str
    address_id: int
    ops_session: str
    org_session: str
    csrf_key: bytes


def _routes() -> list[tuple[str, str, list[str], list[str]]]:
    """(method, path, path parameters, query parameters) of every route the application has."""
    app = create_app(Settings(public_url="https://ceptoar.lg.example"))

    def walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
        for route in routes:
            if hasattr(route, "original_router"):
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                yield prefix, route

    found = []
    for prefix, route in walk(app.routes):
        dependant = getattr(route, "dependant", None)
        path_names = [p.name for p in dependant.path_params] if dependant else []
        query_names = [p.name for p in dependant.query_params] if dependant else []
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            found.append((method, prefix + route.path, path_names, query_names))
    return found


ROUTES = _routes()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    config = Settings(
        var_dir=root,
        prefix=f"t{uuid.uuid4().hex[:12]}",
        amqp_url=AMQP_URL,
        database_url=f"sqlite+aiosqlite:///{root / 'site.db'}",
        retry_delays=RETRY_DELAYS,
        public_url="https://ceptoar.lg.example",
        # Nothing listens there: sign-in mails fail, as a relay that is away would make them.
        smtp_url=f"smtp://127.0.0.1:{free_port()}",
    )
    answers, unsubscribe = AnswerLinks.from_settings(config), UnsubscribeLinks.from_settings(config)
    assert answers is not None and unsubscribe is not None

    async def prepare(store: Store) -> Site:
        await store.subscribers.import_rows(subset(read_registry(REPO / "subscribers" / "registry.csv"), 3))
        feed = await store.feeds.add("nisc", sources=["nisc"])
        alert_id, delivered = await sent_to_all(
            store, notice_doc(id="FUZZ-1", title="経路の検査", severity="high")
        )
        until = datetime.now(UTC) + timedelta(hours=2)
        await store.portal.add_operator("fuzz", hash_key("the fuzzer's key"), who=Actor("test"))
        ops, org, link = (f"{kind}{uuid.uuid4().hex}" * 2 for kind in "opl")
        await store.portal.start_session(hashed(ops), expires_at=until, operator="fuzz")
        address = (await store.subscribers.candidates())[0].address_id
        await store.portal.start_session(hashed(org), expires_at=until, address_id=address)
        since = datetime.now(UTC) - timedelta(hours=1)
        await store.portal.add_link(address, hashed(link), expires_at=until, since=since, most=100)
        return Site(
            base="",
            feed_key=feed.key,
            alert_id=alert_id,
            answer_token=answers.token(delivered[0]),
            signin_token=link,
            unsubscribe_token=unsubscribe.token(address),
            address_id=address,
            ops_session=ops,
            org_session=org,
            csrf_key=config.derived_key(CSRF_PURPOSE),
        )

    with api_in_thread(config, prepare) as (base, prepared):
        yield dataclasses.replace(prepared, base=base)


def _real(site: Site, name: str) -> list[str]:
    """The values of a path parameter that name something that exists."""
    return {
        "alert_id": [site.alert_id, "FUZZ-1"],
        "notice_id": ["FUZZ-1"],
        "token": [site.answer_token, site.signin_token, site.unsubscribe_token],
        "action": list(ACTIONS),
        "name": ["portal.css", "portal.js", "answer.css"],
    }.get(name, [])


values = st.one_of(
    st.sampled_from(HOSTILE), st.text(max_size=40), st.from_regex(r"[0-9]{1,40}", fullmatch=True)
)


def test_every_route_is_called_here() -> None:
    paths = {path for _, path, _, _ in ROUTES}
    assert (
        "/portal/settings" in paths
        and "/answer/{token}" in paths
        and "/ops/alerts/{alert_id}/do/{action}" in paths
    )
    for _, _, path_names, _ in ROUTES:
        unknown = set(path_names) - {"alert_id", "notice_id", "token", "action", "name"}
        assert not unknown, f"a path parameter this test has no real values for: {unknown}"


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_route_answers_5xx_to_any_input(
    site: Site, route: tuple[str, str, list[str], list[str]], data: st.DataObject
) -> None:
    method, template, path_names, query_names = route
    path = template
    for name in path_names:
        value = data.draw(st.one_of(st.sampled_from(_real(site, name)), values), label=name)
        path = path.replace("{" + name + "}", quote(value, safe="") or "x")
    query = {n: data.draw(values, label=n) for n in query_names if data.draw(st.booleans(), label=f"?{n}")}
    who = data.draw(st.sampled_from(["nobody", "operator", "local"]), label="who")
    browser = "b" * 43
    cookies = {CSRF_COOKIE: browser}
    if who == "operator":
        cookies[OPS_COOKIE] = site.ops_session
    elif who == "local":
        cookies[ORG_COOKIE] = site.org_session
    sessions = [cookies.get(OPS_COOKIE, ""), cookies.get(ORG_COOKIE, "")]
    right = bound_csrf(site.csrf_key, browser, sessions)
    headers = {"Authorization": f"Bearer {site.feed_key}"} if data.draw(st.booleans(), label="key") else {}
    form: dict[str, Any] = {}
    if method == "POST":
        for field in data.draw(st.lists(st.sampled_from(FORM_FIELDS), max_size=6), label="fields"):
            form.setdefault(field, []).append(data.draw(values, label=field))
        if data.draw(st.booleans(), label="right csrf"):
            form["csrf"] = [right]
        if "address" in form and data.draw(st.booleans(), label="real address"):
            form["address"] = [str(site.address_id)]
    with httpx.Client(base_url=site.base, cookies=cookies, timeout=30) as http:
        request = http.build_request(method, path, params=query, data=form or None, headers=headers)
        answer = http.send(request, stream=True)  # the live counts are endless event streams
        try:
            status = answer.status_code
        finally:
            answer.close()
    event(f"{status // 100}xx")  # pytest --hypothesis-show-statistics shows what the examples met
    assert status < 500, (method, path, query, who, form, status)
