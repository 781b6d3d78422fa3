"""structlog set-up: JSON in production or off a terminal, readable on a terminal.

Ids such as alert_id and delivery_id are bound with
`structlog.contextvars.bound_contextvars` so every line of a job carries them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from ceptoar.text import printable

__all__ = ["configure_logging", "get_logger"]


def configure_logging(*, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog once for the process."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if json_out else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json_out else structlog.dev.set_exc_info,
            # JSON escapes control characters itself; on a terminal a relay's reply must not drive it.
            *(() if json_out else (_printable_values,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line: the mailer processes of `ceptoar serve` share its
        # stderr, and a line written in two parts can be split by another's.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _printable_values(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}


def get_logger(name: str) -> Any:
    """A structlog logger that names its module."""
    return structlog.get_logger(name)
