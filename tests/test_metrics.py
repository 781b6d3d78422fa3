"""A serve's metrics port: Prometheus metrics from every process of the serve, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

from ceptoar.registry import RegistryRow
from tests.conftest import StackFactory
from tests.harness import (
    REPO,
    MailboxServer,
    cli_env,
    free_port,
    http_get,
    notice_doc,
    run_cli_async,
    serving,
    subset,
    wait_for_port,
)


async def _samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    status, text = await asyncio.to_thread(http_get, f"{base}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_every_process_of_a_serve_counts_into_one_metrics_page(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    """As the demo runs it: the registry, `ceptoar serve` with two mailer processes, `ceptoar publish`."""
    stack = await make_stack(mailbox=mailbox, rows=registry_rows)
    port = free_port()
    env = {**cli_env(stack.settings), "CEPTOAR_METRICS_PORT": str(port)}
    base = f"http://127.0.0.1:{port}"
    async with serving(env, "--mailers", "2"):
        await wait_for_port(port)
        assert await asyncio.to_thread(http_get, f"{base}/healthz") == (200, "ok\n")
        status, ready = await asyncio.to_thread(http_get, f"{base}/readyz")
        assert (status, json.loads(ready)) == (200, {"database": "ok", "broker": "ok", "relay": "ok"})
        sample = str(REPO / "examples" / "notice.json")
        published = await run_cli_async("publish", sample, env=env)
        assert published.returncode == 0, published.stderr
        assert await stack.wait_settled(published.stdout.strip(), within=300) == {"sent": 3576}
        assert (await run_cli_async("publish", sample, env=env)).returncode == 0  # again: a duplicate
        await stack.publish(notice_doc(id="NISC-2026-1128-001"))  # the same id with another `sent`: refused
        await stack.publish(notice_doc(id="METRICS-2", tlp="RED"))  # held
        await stack.wait_settled("METRICS-2")
        for _ in range(100):  # the sweeper's tick observes the settled alert
            samples = await _samples(base)
            if samples.get(("ceptoar_alert_last_mail_seconds_count", ()), 0) >= 1:
                break
            await asyncio.sleep(0.1)
    assert samples[("ceptoar_notices_total", (("outcome", "dispatched"),))] == 1
    assert samples[("ceptoar_notices_total", (("outcome", "duplicate"),))] == 1
    assert samples[("ceptoar_notices_total", (("outcome", "held"),))] == 1
    assert samples[("ceptoar_notices_total", (("outcome", "rejected"),))] == 1
    # Both mailer processes sent part of the 3,576; the page adds up what each counted.
    assert samples[("ceptoar_deliveries_total", (("state", "sent"),))] == 3576
    assert samples[("ceptoar_smtp_replies_total", (("code_class", "2xx"),))] == 3576
    assert samples[("ceptoar_smtp_send_seconds_count", ())] == 3576
    assert samples[("ceptoar_alert_first_mail_seconds_count", ())] == 1
    assert samples[("ceptoar_alert_last_mail_seconds_count", ())] == 1
    first_mail = samples[("ceptoar_alert_first_mail_seconds_sum", ())]
    assert 0 < first_mail < samples[("ceptoar_alert_last_mail_seconds_sum", ())]
    prefix = stack.settings.prefix
    assert samples[("ceptoar_queue_messages", (("queue", f"{prefix}.notices"),))] == 0
    assert samples[("ceptoar_queue_messages", (("queue", f"{prefix}.dead"),))] == 1  # the refused one


async def test_readiness_names_an_unreachable_relay(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 1))
    port = free_port()
    env = {
        **cli_env(stack.settings),
        "CEPTOAR_METRICS_PORT": str(port),
        "CEPTOAR_SMTP_URL": f"smtp://127.0.0.1:{free_port()}",
    }
    async with serving(env, "--mailers", "1"):
        await wait_for_port(port)
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
    checks = json.loads(body)
    assert status == 503
    assert (checks["database"], checks["broker"]) == ("ok", "ok")
    assert checks["relay"].startswith("failed: ConnectionRefusedError")
    # A host without the mailer role has no relay to check.
    async with serving(env, "--role", "dispatcher"):
        await wait_for_port(port)
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")
    assert (status, json.loads(body)) == (200, {"database": "ok", "broker": "ok"})
