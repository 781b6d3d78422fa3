"""Prometheus metrics: what every role counts, for the dashboards a national service already has.

`metrics()` makes them on first use. Under `ceptoar serve` with
CEPTOAR_METRICS_PORT, the serve sets PROMETHEUS_MULTIPROC_DIR before that
(`use_directory`), its mailer processes inherit it, and every process
writes its samples there; the serve's `/metrics` adds them up
(`ceptoar.health`). Elsewhere (a CLI command) they count in the process
and nobody reads them.

- `ceptoar_notices_total{outcome}`: dispatched, duplicate, rejected, held.
- `ceptoar_deliveries_total{state}`: transitions recorded (sent, deferred,
  failed, cancelled by the mailer; bounced, acknowledged from what comes
  back; queued again after throttling).
- `ceptoar_smtp_replies_total{code_class}`: the relay's replies (2xx, 4xx,
  5xx; `none` when no reply came: the relay was not reached).
- `ceptoar_smtp_send_seconds`: one message handed to the relay.
- `ceptoar_alert_first_mail_seconds`, `ceptoar_alert_last_mail_seconds`:
  from an alert's creation (its notice's arrival) to its first and its
  last mail accepted by the relay, once per alert when it settles.
- `ceptoar_queue_messages{queue}`: messages waiting, read at each scrape.
- `ceptoar_escalations_total{step}`: organisations reminded, or listed to call.
- `ceptoar_returns_total{kind}`: what came back: bounce, delay, auto-reply,
  complaint, reply, unknown.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for real only in `metrics()`: prometheus_client reads ENV as it is imported
    from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ENV", "Metrics", "metrics", "use_directory"]

# prometheus_client's multiprocess mode: set in the environment before the first metric is made.
ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: an SMTP transaction on a good day is milliseconds; a relay in trouble takes its timeout.
_SEND_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds from an alert's creation to its first and last mail: well under a second, to an hour of retries.
_ALERT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True)
class Metrics:
    """ceptoar's metrics (see the module's text)."""

    notices: Counter
    deliveries: Counter
    smtp_replies: Counter
    send_seconds: Histogram
    first_mail_seconds: Histogram
    last_mail_seconds: Histogram
    queue_messages: Gauge
    escalations: Counter
    returns: Counter


def use_directory(directory: Path) -> None:
    """Count in multiprocess mode in `directory` (emptied first), here and in the processes started from here.

    Call before the first `metrics()`.
    """
    if metrics.cache_info().currsize:
        raise RuntimeError("metrics were made before their directory was set")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700, parents=True)
    os.environ[ENV] = str(directory)


@cache
def metrics() -> Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    return Metrics(
        notices=Counter("ceptoar_notices", "Notices taken from the feed, by outcome.", ["outcome"]),
        deliveries=Counter("ceptoar_deliveries", "Delivery state transitions recorded.", ["state"]),
        smtp_replies=Counter("ceptoar_smtp_replies", "Replies of the relay, by code class.", ["code_class"]),
        send_seconds=Histogram(
            "ceptoar_smtp_send_seconds", "Seconds to hand one message to the relay.", buckets=_SEND_BUCKETS
        ),
        first_mail_seconds=Histogram(
            "ceptoar_alert_first_mail_seconds",
            "Seconds from an alert's creation to its first mail accepted by the relay.",
            buckets=_ALERT_BUCKETS,
        ),
        last_mail_seconds=Histogram(
            "ceptoar_alert_last_mail_seconds",
            "Seconds from an alert's creation to its last mail accepted by the relay, once it settled.",
            buckets=_ALERT_BUCKETS,
        ),
        queue_messages=Gauge(
            "ceptoar_queue_messages",
            "Messages waiting in a queue of the service, when last read.",
            ["queue"],
            multiprocess_mode="mostrecent",
        ),
        escalations=Counter("ceptoar_escalations", "Organisations escalated, by step.", ["step"]),
        returns=Counter("ceptoar_returns", "Messages that came back to the return paths, by kind.", ["kind"]),
    )
