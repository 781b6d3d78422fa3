"""What ceptoar keeps on disk is its owner's alone, and secrets it must keep are never kept in the clear."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
import time
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select

from ceptoar.api import sign
from ceptoar.errors import ConfigError
from ceptoar.registry import RegistryRow
from ceptoar.sealing import is_sealed
from ceptoar.store import Store
from ceptoar.store.tables import feeds
from tests.conftest import StackFactory
from tests.harness import (
    REPO,
    MailboxServer,
    api_running,
    free_port,
    notice_doc,
    run_cli_async,
    subset,
    wait_for_port,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_the_key_and_the_mail_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = {"CEPTOAR_VAR_DIR": str(var), "CEPTOAR_LOG_FORMAT": "json"}
    imported = await run_cli_async("subscribers", "import", str(REPO / "subscribers" / "registry.csv"), env=env)
    assert imported.returncode == 0, imported.stderr
    added = await run_cli_async("feeds", "add", "nisc", "--signed", env=env)
    assert added.returncode == 0, added.stderr
    port = free_port()
    mailbox = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ceptoar", "mailbox", "serve", "--port", str(port), env={**os.environ, **env}
    )
    try:
        await wait_for_port(port)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            await smtp.sendmail("a@ceptoar.example", ["primary@131016.lg.example"], b"Subject: x\r\n\r\nsecret\r\n")
    finally:
        mailbox.terminate()
        await mailbox.wait()
    assert _mode(var) == 0o700
    assert _mode(var / "ceptoar.db") == 0o600
    assert _mode(var / "secret.key") == 0o600
    box = var / "mailbox" / "primary@131016.lg.example"
    assert _mode(var / "mailbox") == 0o700 and _mode(box) == 0o700
    (mail,) = (box / "new").iterdir()
    assert _mode(mail) == 0o600
    for side in var.glob("ceptoar.db-*"):  # WAL and shared memory, while they exist
        assert _mode(side) == 0o600, side


async def test_a_signing_secret_is_kept_sealed_and_one_kept_in_the_clear_is_sealed_at_first_use(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    box = stack.settings.secret_box()
    new = await stack.store.feeds.add("nisc", signed=True, sealer=box)
    older = await stack.store.feeds.add("older", signed=True, sealer=box)
    in_the_clear = "kept by an older release as it was handed out"
    async with stack.store.engine.begin() as conn:
        await conn.execute(feeds.update().where(feeds.c.name == "older").values(signing_secret=in_the_clear))
    assert new.signing_secret is not None
    assert is_sealed(await _kept(stack.store, "nisc"))
    assert new.signing_secret not in await _kept(stack.store, "nisc")
    async with api_running(stack.settings) as url, httpx.AsyncClient(base_url=url) as http:
        mine = await _post_signed(http, new.key, new.signing_secret, notice_doc(id="SEALED-1"))
        theirs = await _post_signed(http, older.key, in_the_clear, notice_doc(id="SEALED-2", source="older"))
    assert mine.status_code == 202, mine.text
    assert theirs.status_code == 202, theirs.text
    assert is_sealed(await _kept(stack.store, "older"))
    assert box.open(await _kept(stack.store, "older"), context="feed:older") == in_the_clear
    with pytest.raises(ConfigError, match="does not open"):
        box.open(await _kept(stack.store, "older"), context="feed:nisc")  # bound to its own feed


async def _kept(store: Store, name: str) -> str:
    async with store.engine.connect() as conn:
        kept = (await conn.execute(select(feeds.c.signing_secret).where(feeds.c.name == name))).scalar_one()
    assert isinstance(kept, str)
    return kept


async def _post_signed(http: httpx.AsyncClient, key: str, secret: str, doc: dict[str, object]) -> httpx.Response:
    body = json.dumps(doc).encode()
    now = str(int(time.time()))
    return await http.post(
        "/v1/notices",
        content=body,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Ceptoar-Timestamp": now,
            "X-Ceptoar-Signature": sign(secret, now, body),
        },
    )
