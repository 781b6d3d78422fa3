"""JSON from senders, parsed with limits: every refusal is a MalformedNotice that says why.

Python's own parser accepts what a notice never needs and what breaks
later steps: nesting deep enough to exhaust the stack of any recursive
validator, numbers thousands of digits long (`int()` refuses them with a
ValueError), NaN and Infinity (not JSON at all), and lone surrogates that
cannot be stored or mailed as UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from ceptoar.feed.errors import MalformedNotice

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "load_json"]

# Real CSAF advisories nest about 10 levels; a notice 2.
MAX_DEPTH: Final = 64
# No number a notice or an advisory carries needs more digits.
MAX_DIGITS: Final = 64


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number of {len(text)} digits; at most {MAX_DIGITS} are accepted")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_DIGITS + 16:
        raise ValueError(f"a number written with {len(text)} characters; at most {MAX_DIGITS + 16}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def load_json(data: bytes | str) -> Any:
    """The JSON value in `data`, or MalformedNotice naming what is wrong with it."""
    try:
        doc = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError as exc:
        raise MalformedNotice(f"not accepted JSON: nested deeper than {MAX_DEPTH} levels") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedNotice(f"not valid JSON: {exc}") from exc
    except ValueError as exc:  # from the number and constant hooks
        raise MalformedNotice(f"not accepted JSON: {exc}") from exc
    _check(doc)
    return doc


def _check(doc: Any) -> None:
    """Refuse nesting beyond MAX_DEPTH and strings that are not valid Unicode, without recursion."""
    stack: list[tuple[Any, int, str]] = [(doc, 1, "$")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise MalformedNotice(
                f"not accepted JSON: nested deeper than {MAX_DEPTH} levels", field=path[:200]
            )
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key, path)
                stack.append((value, depth + 1, f"{path}.{key}"))
        else:
            stack.extend((value, depth + 1, f"{path}[{i}]") for i, value in enumerate(node))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedNotice(
            f"not accepted JSON: {path} holds a lone surrogate (\\u{ord(text[exc.start]):04x}), not text",
            field=path,
        ) from exc
