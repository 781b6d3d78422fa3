"""A pool of reused SMTP connections to one relay.

`send` returns the server's reply on acceptance and otherwise raises
`TemporaryDeliveryError` (4xx, refused or lost connection, timeout) or
`PermanentDeliveryError` (5xx, an address that cannot be sent to). A
connection that failed at the transport level is dropped and replaced; one
that only got a negative reply is reset by aiosmtplib and reused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib

from ceptoar.errors import ConfigError, PermanentDeliveryError, TemporaryDeliveryError

__all__ = ["SmtpPool", "SmtpReply"]

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


def _response_error(code: int, message: str) -> TemporaryDeliveryError | PermanentDeliveryError:
    if 400 <= code < 500:
        return TemporaryDeliveryError(message, code=code)
    return PermanentDeliveryError(message, code=code)


class SmtpPool:
    """Up to `size` concurrent sessions with one relay, kept open between messages."""

    def __init__(self, url: str, *, size: int, timeout: float, helo_name: str) -> None:
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
        self._slots = asyncio.Semaphore(size)
        self._idle: list[aiosmtplib.SMTP] = []

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
        return client

    async def _checkout(self) -> aiosmtplib.SMTP:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        try:
            return await self._connect()
        except (*_TRANSPORT_ERRORS, aiosmtplib.SMTPResponseException) as exc:
            raise TemporaryDeliveryError(f"relay {self.relay}: {exc}") from exc

    async def send(self, *, sender: str, recipient: str, message: bytes) -> SmtpReply:
        """Hand one message for one recipient to the relay."""
        async with self._slots:
            client = await self._checkout()
            try:
                _, reply = await client.sendmail(sender, [recipient], message)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._idle.append(client)
                refused = exc.recipients[0]
                raise _response_error(refused.code, refused.message) from exc
            except _TRANSPORT_ERRORS as exc:
                client.close()
                raise TemporaryDeliveryError(f"relay {self.relay}: {exc}") from exc
            except aiosmtplib.SMTPResponseException as exc:
                # 421: the server is closing the session; don't reuse it.
                if exc.code == 421:
                    client.close()
                else:
                    self._idle.append(client)
                raise _response_error(exc.code, exc.message) from exc
            except (ValueError, aiosmtplib.SMTPNotSupported) as exc:
                self._idle.append(client)
                raise PermanentDeliveryError(f"cannot send to {recipient!r}: {exc}") from exc
            self._idle.append(client)
            return SmtpReply(250, reply)

    async def close(self) -> None:
        """Quit every idle session."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
