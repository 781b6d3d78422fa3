"""Parsing off the event loop: a few worker threads, each parse within a time limit.

Checking a large CSAF advisory against its schema takes a noticeable time,
and on the event loop it would hold up everything else the process does
(the HTTP endpoint's health checks, and under `ceptoar serve --api` the
dispatcher and the mailer). A parse runs in a worker thread instead; at
most `workers` run at once, and a caller stops waiting after `timeout`
seconds. The documents are bounded (by the API's body limit, and by the
JSON nesting and number limits), so a parse that overruns still ends; its
worker slot is given back only then, so overload cannot pile up threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ceptoar.errors import CeptoarError, InvalidNotice
from ceptoar.feed.formats import Key, Parsed, parse_any, peek_key
from ceptoar.log import get_logger

__all__ = ["ParserBusy", "ParserPool", "TooSlowToParse"]

log = get_logger(__name__)

T = TypeVar("T")


class ParserBusy(CeptoarError, TimeoutError):
    """Every worker stayed busy for the whole time limit: retry later."""


class TooSlowToParse(InvalidNotice):
    """The document could not be checked within the time limit: it is refused."""


class ParserPool:
    """Worker threads that parse documents."""

    def __init__(self, *, workers: int, timeout: float) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ceptoar-parse")
        self._slots = asyncio.Semaphore(workers)
        self._timeout = timeout

    async def parse(self, data: bytes, content_type: str | None) -> Parsed:
        """`parse_any` in a worker; TooSlowToParse past the time limit, ParserBusy if none came free."""
        began = time.perf_counter()
        parsed = await self._run(lambda: parse_any(data, content_type))
        log.debug("feed.parsed", bytes=len(data), seconds=round(time.perf_counter() - began, 4))
        return parsed

    async def peek(self, data: bytes, content_type: str | None) -> Key | None:
        """`peek_key` in a worker: a document's format, source and id, read without validating it."""
        return await self._run(lambda: peek_key(data, content_type))

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout)
        except TimeoutError as exc:
            raise ParserBusy(f"every parser stayed busy for {self._timeout:g} s") from exc
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError as exc:
            raise TooSlowToParse(
                f"the document could not be checked within {self._timeout:g} s; it is refused"
            ) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
