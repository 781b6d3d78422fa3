"""The versioned JSON notice (`ceptoar.notice/1`): bytes in, a `Notice` out.

`parse_notice` turns bytes into a `Notice` or raises `InvalidNotice` naming
the first offending field, in the dotted form an operator can find in the
document (`cvss.score`, `area[2]`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ceptoar.errors import InvalidNotice
from ceptoar.feed.jsonsafe import load_json
from ceptoar.model.notice import NOTICE_SCHEMA, Notice

__all__ = ["notice_from_json", "parse_notice", "validation_error"]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def validation_error(exc: ValidationError, where: dict[str, str] | None = None) -> InvalidNotice:
    """The first problem of a failed validation, naming its field (mapped through `where`)."""
    first = exc.errors(include_url=False)[0]
    field = _loc(tuple(first["loc"])) or None
    if field is not None and where:
        head = field.split(".")[0].split("[")[0]
        field = where.get(head, field)
    return InvalidNotice(first["msg"].removeprefix("Value error, "), field=field)


def parse_notice(data: bytes | str) -> Notice:
    """Parse a JSON notice, or raise InvalidNotice naming the first bad field."""
    return notice_from_json(load_json(data))


def notice_from_json(doc: Any) -> Notice:
    """The notice a decoded JSON document holds, or InvalidNotice naming the first bad field."""
    if not isinstance(doc, dict):
        raise InvalidNotice(f"a notice is a JSON object, not {type(doc).__name__}")
    if doc.get("schema") != NOTICE_SCHEMA:
        raise InvalidNotice(
            f"unsupported schema {doc.get('schema')!r}; accepted: {NOTICE_SCHEMA}", field="schema"
        )
    try:
        return Notice.model_validate(doc)
    except ValidationError as exc:
        raise validation_error(exc) from exc
