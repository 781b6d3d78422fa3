"""A pool of reused SMTP connections to one relay, urgent sends first.

`size` connections serve every send and `reserved` more serve urgent
(critical) sends only. A free connection goes to a waiting urgent send
before any other, so a critical alert waits for at most one message of a
bulk fan-out, and never for one when a reserved connection is free.

`send` returns the server's reply on acceptance and otherwise raises
`TemporaryDeliveryError` (4xx, a lost connection, a timeout),
`PermanentDeliveryError` (5xx, an address that cannot be sent to), or
`RelayUnavailable` when no session with the relay could be opened: then
nothing was attempted, and every send fails at once with it until
`wait_reachable` has opened a session again. A connection that failed at
the transport level is dropped and replaced; one that only got a negative
reply is reset and reused.

A relay that pushes back raises `Throttled` instead: a throttling reply
(`ceptoar.mail.throttle.is_throttling`) lowers the host's sending rate, and
a refused session (a `421` greeting, or a refused connection while other
sessions are open) lowers the number of sessions to those open, growing
again by one every `_SESSION_PROBE` seconds without a refusal. Sends are
paced by the host's `SendWindow`. With `adaptive` off, throttling replies
are temporary failures like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib
from aiosmtplib import SMTPStatus
from aiosmtplib.email import quote_address

from ceptoar.config import Settings
from ceptoar.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RelayUnavailable,
    TemporaryDeliveryError,
    Throttled,
)
from ceptoar.log import get_logger
from ceptoar.mail.throttle import SendWindow, is_throttling
from ceptoar.metrics import metrics
from ceptoar.retry import FIRST_WAIT, Stopping, pause

__all__ = ["SmtpPool", "SmtpReply"]

# An address that needs no quoting in MAIL FROM.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.+_-]+@[A-Za-z0-9.-]+\Z")

log = get_logger(__name__)

# The longest wait between two tries to reach a relay that is down: a try is
# one connection, and an alert should not wait long once the relay is back.
_PROBE_MAX = 5.0
# Seconds after the relay last refused a session before one more is tried.
_SESSION_PROBE = 30.0

_SCHEMES = {"smtp": (25, False, False), "smtp+starttls": (587, False, True), "smtps": (465, True, False)}
_TRANSPORT_ERRORS = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class SmtpReply:
    """The relay's answer to a message it accepted."""

    code: int
    message: str


# What an address on the RCPT line must not hold: it is sent as is, in ASCII.
_NOT_IN_ADDRESS = frozenset('<>()[],;:\\" \t\r\n')


def _rcpt_to(recipient: str) -> bytes:
    """The RCPT command's argument for a plain address such as the registry holds."""
    local, at, domain = recipient.rpartition("@")
    if not (local and at and domain) or not recipient.isascii() or _NOT_IN_ADDRESS.intersection(recipient):
        raise ValueError("not a plain ASCII address")
    return b"TO:<" + recipient.encode("ascii") + b">"


async def _transaction(client: aiosmtplib.SMTP, mail_from: bytes, rcpt_to: bytes, message: bytes) -> str:
    """MAIL, RCPT and DATA for one recipient, as aiosmtplib's sendmail does them; the relay's reply.

    The envelope is built once per sender and without re-parsing each
    address, which is most of what sendmail costs beyond the network.
    A refusal resets the session, as sendmail does, and raises.
    """
    try:
        size = [b"SIZE=%d" % len(message)] if client.supports_extension("size") else []
        mail = await client.execute_command(b"MAIL", mail_from, *size)
        if mail.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, mail_from.decode())
        rcpt = await client.execute_command(b"RCPT", rcpt_to)
        if rcpt.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, rcpt_to.decode())
        return (await _data(client, message)).message
    except aiosmtplib.SMTPResponseException:
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise


async def _data(client: aiosmtplib.SMTP, message: bytes) -> aiosmtplib.SMTPResponse:
    """DATA and the message, as `SMTP.data` sends them, for a message already in CRLF lines.

    Such a message (every one ceptoar renders) is dot-stuffed with a bytes
    replace instead of aiosmtplib's two regular expressions over it, which
    cost a mailer a fifth of its time at full speed. Any other message
    goes through `SMTP.data`.
    """
    if not _crlf_lines(message):
        return await client.data(message)
    start = await client.execute_command(b"DATA")
    if start.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        protocol.write(_dot_stuffed(message))
        reply = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()  # as SMTP.data does: a session that lost track of its replies is not reused
        raise
    if reply.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply


def _crlf_lines(message: bytes) -> bool:
    """True when every line of the message ends in CRLF: no bare CR or LF anywhere."""
    crlf = message.count(b"\r\n")
    return message.count(b"\n") == crlf and message.count(b"\r") == crlf


def _dot_stuffed(message: bytes) -> bytes:
    """A message in CRLF lines as the DATA command carries it: leading periods doubled, then the end mark."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _response_error(code: int, message: str) -> TemporaryDeliveryError | PermanentDeliveryError:
    if 400 <= code < 500:
        return TemporaryDeliveryError(message, code=code)
    return PermanentDeliveryError(message, code=code)


class _Slots:
    """`size` slots for any send and `reserved` for urgent ones; a freed slot goes to urgent waiters first.

    The number of shared slots can be lowered (a relay that refuses more
    sessions) and raised again: a lowered count takes back slots as they are
    released, so `free` may be negative meanwhile.
    """

    def __init__(self, size: int, reserved: int) -> None:
        self.size = size
        self._free = size
        self._reserved = reserved
        self._urgent: deque[asyncio.Future[bool]] = deque()
        self._other: deque[asyncio.Future[bool]] = deque()

    def resize(self, size: int) -> None:
        """Use `size` shared slots from now on (slots in use are taken back as they are released)."""
        self._free += size - self.size
        self.size = size
        while self._free > 0 and self._hand_over(reserved=False):
            self._free -= 1

    async def acquire(self, *, urgent: bool) -> bool:
        """Wait for a slot; True if it is a reserved one (give it back with `release(True)`)."""
        if urgent and not self._urgent:
            if self._free > 0:
                self._free -= 1
                return False
            if self._reserved:
                self._reserved -= 1
                return True
        elif not urgent and not self._urgent and not self._other and self._free > 0:
            self._free -= 1
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._other).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as it was cancelled
            raise

    def release(self, reserved: bool) -> None:
        """Hand the slot to the first live waiter that may use it, or free it."""
        if not reserved and self._free < 0:
            self._free += 1  # taken back: the pool was made smaller
            return
        if self._hand_over(reserved=reserved):
            return
        if reserved:
            self._reserved += 1
        else:
            self._free += 1

    def _hand_over(self, *, reserved: bool) -> bool:
        for queue in (self._urgent,) if reserved else (self._urgent, self._other):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(reserved)
                    return True
        return False


class SmtpPool:
    """Up to `size` (+ `reserved` urgent) concurrent sessions with one relay, kept open between messages."""

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpPool:
        """The pool to the configured relay (connections open on first use).

        With `smtp_max_connections` set, the host's mailer processes share
        that many sessions: each takes its part, one reserved for critical
        alerts when its part allows.
        """
        size, reserved = settings.smtp_connections, settings.smtp_critical_connections
        if settings.smtp_max_connections:
            part = max(1, settings.smtp_max_connections // settings.mailers)
            reserved = min(reserved, part - 1)
            size = max(1, min(size, part - reserved))
        return cls(
            settings.smtp_url,
            size=size,
            timeout=settings.smtp_timeout,
            helo_name=settings.helo_name,
            reserved=reserved,
            max_rate=settings.smtp_max_rate,
            adaptive=settings.smtp_adaptive,
        )

    def __init__(
        self,
        url: str,
        *,
        size: int,
        timeout: float,
        helo_name: str,
        reserved: int = 0,
        max_rate: float | None = None,
        adaptive: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"smtp_url: scheme {parts.scheme!r} is not one of {', '.join(_SCHEMES)}")
        default_port, self._use_tls, self._start_tls = _SCHEMES[parts.scheme]
        self._host = parts.hostname or "localhost"
        self._port = parts.port or default_port
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        self._helo = helo_name
        self._slots = _Slots(size, reserved)
        self._size = size
        self._capacity = size + reserved
        self._idle: list[aiosmtplib.SMTP] = []
        # Sessions open now, idle or sending.
        self._live: set[aiosmtplib.SMTP] = set()
        # Why the relay is taken to be down (a connection could not be opened), until one opens again.
        self._down: str | None = None
        self._probing = asyncio.Lock()
        # Throttling replies slow the host down instead of costing attempts (`ceptoar.mail.throttle`).
        self._adaptive = adaptive
        self._window = SendWindow(self.relay, max_rate=max_rate) if adaptive or max_rate else None
        # After the relay refused a session: no new session before this time, and when the count may grow.
        self._refused_at = 0.0
        self._connect_wait = 0.0

    @property
    def address(self) -> tuple[str, int]:
        """The relay's host and port."""
        return self._host, self._port

    @property
    def relay(self) -> str:
        return f"{self._host}:{self._port}"

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            timeout=self._timeout,
            local_hostname=self._helo,
            use_tls=self._use_tls,
            start_tls=self._start_tls if self._start_tls else False,
            username=self._username,
            password=self._password,
        )
        await client.connect()
        if client.is_ehlo_or_helo_needed:  # as aiosmtplib's sendmail would before its first command
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()
        self._live.add(client)
        return client

    def _drop(self, client: aiosmtplib.SMTP) -> None:
        self._live.discard(client)
        client.close()

    async def open(self) -> str | None:
        """Open every session now, so the first alert is not kept waiting; the error, if any failed.

        A session that cannot be opened is tried again at its first send.
        """
        wanted = self._capacity - len(self._idle)
        opened = await asyncio.gather(*(self._connect() for _ in range(wanted)), return_exceptions=True)
        failed = None
        for client in opened:
            if not isinstance(client, aiosmtplib.SMTP):
                failed = f"relay {self.relay}: {client}"
            elif len(self._idle) < self._capacity:  # sends may have opened some meanwhile
                self._idle.append(client)
            else:
                self._drop(client)
        return failed

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            self._live.discard(client)
        if self._down is not None:
            # Every send would wait out its own connection timeout otherwise.
            raise RelayUnavailable(self._down)
        if (wait := self._refused_at + self._connect_wait - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        try:
            return await self._connect()
        except aiosmtplib.SMTPResponseException as exc:
            # The relay answered, refusing a session: it is up, and busy.
            if self._adaptive and is_throttling(exc.code, exc.message):
                raise self._session_refused(exc.message, exc.code) from exc
            self._down = f"relay {self.relay} unreachable: {exc}"
            raise RelayUnavailable(self._down) from exc
        except _TRANSPORT_ERRORS as exc:
            if self._adaptive and self._live:
                # Sessions of ours are open, so the relay is up: it refuses more of them.
                raise self._session_refused(str(exc) or exc.__class__.__name__, None) from exc
            self._down = f"relay {self.relay} unreachable: {exc}"
            raise RelayUnavailable(self._down) from exc

    def _session_refused(self, reply: str, code: int | None) -> Throttled:
        """Keep to the sessions the relay allows now, and wait a little longer before the next new one."""
        self._slots.resize(max(1, len(self._live)))
        self._refused_at = time.monotonic()
        self._connect_wait = min(max(2 * self._connect_wait, FIRST_WAIT / 5), _PROBE_MAX)
        log.warning("relay.session_refused", relay=self.relay, sessions=self._slots.size, reply=reply)
        return Throttled(reply, code=code)

    def _grow_sessions(self) -> None:
        """A while after the relay last refused a session, try one more (up to the configured size)."""
        if self._slots.size < self._size and time.monotonic() - self._refused_at > _SESSION_PROBE:
            self._slots.resize(self._slots.size + 1)
            self._refused_at = time.monotonic()
            self._connect_wait = 0.0

    async def wait_reachable(self, stop: asyncio.Event) -> None:
        """Return once a session with the relay opens, trying ever less often; Stopping if told to stop."""
        async with self._probing:
            wait = FIRST_WAIT
            while self._down is not None:
                try:
                    client = await self._connect()
                except (*_TRANSPORT_ERRORS, aiosmtplib.SMTPResponseException) as exc:
                    log.warning("relay.unreachable", relay=self.relay, error=str(exc), retry_in=wait)
                    if await pause(wait, stop=stop):
                        raise Stopping("wait for the relay") from exc
                    wait = min(2 * wait, _PROBE_MAX)
                    continue
                self._down = None
                self._idle.append(client)
                log.info("relay.reachable", relay=self.relay)

    @property
    def down(self) -> bool:
        """True while no session with the relay could be opened."""
        return self._down is not None

    async def send(self, *, sender: str, recipient: str, message: bytes, urgent: bool = False) -> SmtpReply:
        """Hand one message for one recipient to the relay; `urgent` sends go first."""
        reserved = await self._slots.acquire(urgent=urgent)
        try:
            if self._window is not None and (wait := self._window.reserve()) > 0:
                await asyncio.sleep(wait)
            reply = await self._measured(sender, recipient, message)
        finally:
            self._slots.release(reserved)
        if self._window is not None:
            self._window.accepted()
        self._grow_sessions()
        return reply

    async def _measured(self, sender: str, recipient: str, message: bytes) -> SmtpReply:
        """`_send`, counted by the class of the relay's reply (`none`: no reply came) and timed."""
        m = metrics()
        began = time.perf_counter()
        try:
            reply = await self._send(sender, recipient, message)
        except DeliveryError as exc:
            m.smtp_replies.labels(f"{exc.code // 100}xx" if exc.code else "none").inc()
            raise
        finally:
            m.send_seconds.observe(time.perf_counter() - began)
        m.smtp_replies.labels("2xx").inc()
        return reply

    async def _send(self, sender: str, recipient: str, message: bytes) -> SmtpReply:
        try:
            mail_from = self._envelope(sender)
        except ValueError as exc:
            raise PermanentDeliveryError(f"cannot send from {sender!r}: {exc}") from exc
        try:
            rcpt_to = _rcpt_to(recipient)
        except ValueError as exc:
            raise PermanentDeliveryError(f"cannot send to {recipient!r}: {exc}") from exc
        client = await self._checkout()
        try:
            reply = await _transaction(client, mail_from, rcpt_to, message)
        except _TRANSPORT_ERRORS as exc:
            self._drop(client)
            # The idle sessions were most likely cut too (a relay that restarted):
            # open fresh ones rather than fail one delivery on each of them.
            idle, self._idle = self._idle, []
            for other in idle:
                self._drop(other)
            raise TemporaryDeliveryError(f"relay {self.relay}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 421: the server is closing the session; don't reuse it.
            if exc.code == 421:
                self._drop(client)
            else:
                self._idle.append(client)
            if self._adaptive and is_throttling(exc.code, exc.message):
                if self._window is not None:
                    self._window.throttled()
                raise Throttled(exc.message, code=exc.code) from exc
            raise _response_error(exc.code, exc.message) from exc
        self._idle.append(client)
        return SmtpReply(250, reply)

    def _envelope(self, sender: str) -> bytes:
        """The MAIL command's argument for `sender` (each delivery has its own), quoted as aiosmtplib quotes.

        A plain address, as every return path ceptoar makes is, needs no quoting.
        """
        if _PLAIN_ADDRESS.match(sender):
            return b"FROM:<" + sender.encode("ascii") + b">"
        return b"FROM:" + quote_address(sender).encode("ascii")

    async def close(self) -> None:
        """Quit every idle session."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
            self._live.discard(client)
        if self._window is not None:
            self._window.close()
