"""schemathesis against the OpenAPI document: no 500s, no status code the document does not list.

The API runs for real (uvicorn on loopback, SQLite, the running RabbitMQ on
a prefix of its own) in a thread of its own, since schemathesis drives it
from synchronous tests.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from ceptoar.cli.api import serve_api
from ceptoar.config import Settings
from ceptoar.feed.http import create_app
from ceptoar.store import Store
from tests.harness import AMQP_URL, delete_topology, free_port, wait_for_port

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root: Path = tmp_path_factory.mktemp("api")
    config = Settings(
        var_dir=root,
        prefix=f"t{uuid.uuid4().hex[:12]}",
        amqp_url=AMQP_URL,
        database_url=f"sqlite+aiosqlite:///{root / 'api.db'}",
        retry_delays=[0.2, 0.4],
    )
    port = free_port()
    ready = threading.Event()
    found: dict[str, object] = {}

    async def main() -> None:
        async with await Store.open(config.db_url) as store:
            new = await store.feeds.add("nisc", sources=["cap@nisc.example"])
        stop = asyncio.Event()
        found.update(key=new.key, loop=asyncio.get_running_loop(), stop=stop)
        task = asyncio.create_task(serve_api(config, stop, host="127.0.0.1", port=port))
        await wait_for_port(port, unless=task)
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the API did not start"
    yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {found['key']}"}
    loop = found["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(found["stop"].set)  # type: ignore[attr-defined]
    thread.join(30)
    asyncio.run(delete_topology(config.prefix, config.retry_delays))


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_undocumented_status(
    case: schemathesis.Case[Any], live_api: tuple[str, dict[str, str]]
) -> None:
    url, auth = live_api
    headers = auth if "Authorization" not in (case.headers or {}) else None
    case.call_and_validate(
        base_url=url, headers=headers, checks=[not_a_server_error, status_code_conformance]
    )
