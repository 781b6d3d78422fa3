"""The one exception hierarchy of ceptoar.

Every error raised on purpose derives from `CeptoarError`. Leaves carry the
data an operator needs (the field, the line, the SMTP reply) as attributes,
and inherit the builtin they resemble so generic handlers still work.
Whether a delivery failure is worth retrying is a type, never a parsed string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CeptoarError",
    "ConfigError",
    "DeliveryError",
    "InvalidNotice",
    "PermanentDeliveryError",
    "RegistryError",
    "RegistryProblem",
    "RelayUnavailable",
    "TemporaryDeliveryError",
    "Throttled",
    "UnknownAlert",
]


class CeptoarError(Exception):
    """Root of every error ceptoar raises on purpose."""


class ConfigError(CeptoarError, ValueError):
    """The configuration is unusable (an insecure or contradictory value)."""


class InvalidNotice(CeptoarError, ValueError):
    """A notice cannot be accepted; `field` names the offending part when known."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class UnknownAlert(CeptoarError, LookupError):
    """No alert or notice carries the id an operator asked for."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        super().__init__(f"no alert or notice with id {ident!r}")


@dataclass(frozen=True)
class RegistryProblem:
    """One bad row of a registry file."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.message}"


class RegistryError(CeptoarError, ValueError):
    """A registry file was refused as a whole; `problems` lists every bad row."""

    def __init__(self, problems: Sequence[RegistryProblem]) -> None:
        self.problems = tuple(problems)
        shown = "\n".join(str(p) for p in self.problems[:20])
        more = len(self.problems) - 20
        tail = f"\n... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} bad row(s), nothing imported:\n{shown}{tail}")


class DeliveryError(CeptoarError):
    """A mail could not be handed to the relay; `code` and `reply` are the server's words."""

    def __init__(self, reply: str, *, code: int | None = None) -> None:
        self.code = code
        self.reply = reply
        super().__init__(f"{code} {reply}" if code is not None else reply)


class TemporaryDeliveryError(DeliveryError, ConnectionError):
    """Worth retrying later: a 4xx reply, a refused or lost connection, a timeout."""


class RelayUnavailable(TemporaryDeliveryError):
    """The relay could not be reached, or would not open a session: nothing was attempted.

    It says nothing about the recipient, so it costs a delivery no attempt;
    the mailer waits for the relay instead.
    """


class Throttled(TemporaryDeliveryError):
    """The relay refused for load or rate (`421`, `451 4.7.1 too much mail`, a refused greeting).

    Like `RelayUnavailable` it says nothing about the recipient and costs no
    attempt; the mailer sends the delivery again, slower.
    """


class PermanentDeliveryError(DeliveryError):
    """Retrying will not help: a 5xx reply, or a message that cannot be built."""
