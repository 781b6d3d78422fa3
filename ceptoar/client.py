"""Publishing notices from a synchronous program: how a national feed hands ceptoar its notices.

    from ceptoar.client import Publisher

    with Publisher("amqp://feed:secret@broker.lg.example/", prefix="ceptoar") as feed:
        published = feed.publish(Path("notice.json").read_bytes())
        print(published.key)

A notice (JSON, CAP 1.2 or CSAF 2.0) is checked exactly as `ceptoar
publish` and the HTTP endpoint check it before anything is sent: a notice
ceptoar would refuse raises `InvalidNotice` naming the field, and nothing
reaches the broker. It then goes to the feed exchange that `ceptoar serve`
declares, persistent, with publisher confirms and the mandatory flag:
`publish` returns only once the broker has the notice in a queue. A notice
no queue would take raises `Unroutable`; a broker that refuses it, cannot
be reached, or closes the connection is tried again, reconnecting, a
bounded number of times before `PublishError`. Publishing the same notice
twice is harmless: ceptoar dispatches a (source, id) once.

Synchronous, on pika: a feed is usually a plain program, and this is all
it needs of ceptoar besides its notices.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from ceptoar.bus import Names
from ceptoar.errors import CeptoarError, InvalidNotice
from ceptoar.feed.formats import Parsed, parse_any
from ceptoar.model.notice import CONTENT_TYPES, OPERATOR_SOURCE

__all__ = ["PublishError", "Published", "Publisher", "Unroutable", "check_notice"]

# Seconds before the second try; each later try waits twice as long, up to `_LONGEST_WAIT`.
_FIRST_WAIT = 0.5
_LONGEST_WAIT = 8.0
# What the broker or the network did that another try, on a new connection if need be, may get past.
_TRANSIENT = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    OSError,
)


class PublishError(CeptoarError):
    """The broker did not confirm the notice: it may not be assumed published."""


class Unroutable(PublishError):
    """No queue is bound to take the notice (the broker returned it): is `ceptoar serve` set up there?"""


@dataclass(frozen=True)
class Published:
    """A notice the broker confirmed."""

    source: str
    id: str
    format: str

    @property
    def key(self) -> str:
        """`source:id`, as ceptoar names the notice (`ceptoar status` takes the id)."""
        return f"{self.source}:{self.id}"


def check_notice(
    document: bytes | str | Mapping[str, Any], content_type: str | None = None
) -> tuple[bytes, Parsed]:
    """A notice's bytes and what they parse to, checked as ceptoar checks what its feed receives.

    InvalidNotice names what is wrong. The operators' own source is
    refused: their notices are published by `ceptoar compose`, which audits
    them first.
    """
    if isinstance(document, Mapping):
        body = json.dumps(document, ensure_ascii=False).encode()
    elif isinstance(document, str):
        body = document.encode()
    else:
        body = bytes(document)
    parsed = parse_any(body, content_type)
    if parsed.notice.source == OPERATOR_SOURCE:
        raise InvalidNotice(
            f"source {OPERATOR_SOURCE!r} is reserved for operators' notices, which `ceptoar compose` "
            "audits before it publishes them",
            field="source",
        )
    return body, parsed


class Publisher:
    """A connection to the broker for publishing notices to ceptoar's feed exchange."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "ceptoar",
        attempts: int = 5,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._parameters = pika.URLParameters(url)
        # A broker that blocks publishers (a memory or disk alarm) ends the wait instead of holding it.
        self._parameters.blocked_connection_timeout = timeout
        self._parameters.socket_timeout = timeout
        self._parameters.client_properties = {"connection_name": f"ceptoar-client {prefix}"}
        self._exchange = Names(prefix).feed_exchange
        self._attempts = attempts
        self._sleep = sleep
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    @property
    def exchange(self) -> str:
        return self._exchange

    def publish(
        self, document: bytes | str | Mapping[str, Any], *, content_type: str | None = None
    ) -> Published:
        """Check a notice, publish it and return once the broker confirmed it.

        InvalidNotice (nothing sent), Unroutable or PublishError (the last
        try's reason) otherwise.
        """
        body, parsed = check_notice(document, content_type)
        notice = parsed.notice
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPES[parsed.format],
            message_id=f"{notice.source}:{notice.id}",
            delivery_mode=pika.spec.PERSISTENT_DELIVERY_MODE,
            timestamp=int(time.time()),
        )
        wait = _FIRST_WAIT
        for attempt in range(1, self._attempts + 1):
            try:
                self._open().basic_publish(
                    self._exchange, f"notice.{parsed.format}", body, properties, mandatory=True
                )
                return Published(notice.source, notice.id, parsed.format)
            except pika.exceptions.UnroutableError:
                failure: PublishError = Unroutable(
                    f"no queue is bound to exchange {self._exchange!r} for notice.{parsed.format}: "
                    "the broker returned the notice (is `ceptoar serve` running with this prefix?)"
                )
            except pika.exceptions.NackError:
                failure = PublishError(f"the broker refused notice {notice.source}:{notice.id} (nack)")
            except pika.exceptions.ChannelClosedByBroker as exc:
                self._channel = None
                failure = PublishError(self._closed_reason(exc))
            except _TRANSIENT as exc:
                self._reset()
                failure = PublishError(f"broker {self._where()}: {exc!r}")
            if attempt < self._attempts:
                self._sleep(wait)
                wait = min(2 * wait, _LONGEST_WAIT)
        raise failure

    def _open(self) -> BlockingChannel:
        if self._connection is None or self._connection.is_closed:
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def _closed_reason(self, exc: pika.exceptions.ChannelClosedByBroker) -> str:
        if exc.reply_code == 404:
            return (
                f"exchange {self._exchange!r} does not exist on {self._where()}: `ceptoar serve` declares it "
                "(check the prefix)"
            )
        return f"broker {self._where()} closed the channel: {exc.reply_code} {exc.reply_text}"

    def _where(self) -> str:
        return f"{self._parameters.host}:{self._parameters.port} vhost {self._parameters.virtual_host!r}"

    def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(*_TRANSIENT):
                connection.close()

    def close(self) -> None:
        """Close the connection (publish opens a new one if called again)."""
        self._reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
