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
    _route_libraries(renderer, json_out=json_out, level=level)


def _route_libraries(renderer: Any, *, json_out: bool, level: str) -> None:
    """The libraries' own log records (aio-pika's lost connection, uvicorn's errors) in the same form as
    ceptoar's lines: one JSON object each off a terminal, never a bare traceback between them."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                *((structlog.processors.format_exc_info,) if json_out else ()),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # The libraries say much at info; their warnings and errors are what an operator needs.
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def _printable_values(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: printable(v) if isinstance(v, str) else v for k, v in event.items()}


def get_logger(name: str) -> Any:
    """A structlog logger that names its module."""
    return structlog.get_logger(name)
