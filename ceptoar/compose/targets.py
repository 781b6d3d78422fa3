"""What an operator may type as a target, and the closest valid ones when it is wrong.

`all`; a prefecture by number (13), name (東京都), short name (東京) or
English name (Tokyo); an organisation by its six-digit code, its five
digits without the check digit, or its name (神奈川県横浜市, 横浜市 when
that is unambiguous).

One meaning in every format: a prefecture (two digits) is the whole
prefecture, its government and every municipality in it; a six-digit code
is one organisation, so a prefecture's own code (130001) is the
prefectural government alone.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from ceptoar.errors import CeptoarError
from ceptoar.model.codes import check_digit, validate_lgcode
from ceptoar.registry.prefectures import PREFECTURE_NAMES, PREFECTURES

__all__ = ["TargetError", "describe_area", "parse_targets"]

_PREF_BY_NAME = {key.lower(): p.number for p in PREFECTURES for key in (p.name, p.short, p.english) if key}


class TargetError(CeptoarError, ValueError):
    """A target that names nothing; `suggestions` are the closest valid ones."""

    def __init__(self, target: str, reason: str, suggestions: Iterable[str] = ()) -> None:
        self.target = target
        self.suggestions = list(suggestions)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"target {target!r}: {reason}{hint}")


def _label(code: str, organisations: Mapping[str, str]) -> str:
    return f"{code} ({organisations[code]})" if code in organisations else code


def _code(token: str, organisations: Mapping[str, str]) -> str:
    code = token + str(check_digit(token)) if len(token) == 5 else token
    try:
        validate_lgcode(code)
    except ValueError as exc:
        near = []
        if code[:5].isdigit() and (fixed := code[:5] + str(check_digit(code[:5]))) in organisations:
            near.append(_label(fixed, organisations))
        raise TargetError(token, str(exc), near) from exc
    if code not in organisations:
        near = difflib.get_close_matches(code, list(organisations), n=3, cutoff=0.6)
        raise TargetError(
            token, "no subscribed local government has this code", [_label(c, organisations) for c in near]
        )
    return code


def _name(token: str, organisations: Mapping[str, str]) -> str:
    pref = _PREF_BY_NAME.get(token.lower())
    if pref is not None:
        return pref
    exact = [c for c, name in organisations.items() if name == token]
    if not exact:
        exact = [c for c, name in organisations.items() if name.endswith(token) and len(token) >= 2]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise TargetError(
            token, "names more than one organisation", [_label(c, organisations) for c in exact[:5]]
        )
    names = list(_PREF_BY_NAME) + list(organisations.values())
    near = difflib.get_close_matches(token.lower() if token.isascii() else token, names, n=3, cutoff=0.5)
    raise TargetError(token, "is no prefecture or local government", near)


def parse_targets(tokens: Iterable[str], organisations: Mapping[str, str]) -> list[str]:
    """Area codes for the notice (empty list: every organisation)."""
    words = [w for t in tokens for w in t.replace(",", " ").split()]
    if not words:
        raise TargetError("", "say where: `all`, prefectures or local government codes")
    if any(w.lower() == "all" for w in words):
        if len(words) > 1:
            raise TargetError(" ".join(words), "`all` cannot be combined with other targets")
        return []
    area: list[str] = []
    for word in words:
        if word.isdigit() and len(word) == 2:
            if not 1 <= int(word) <= 47:
                raise TargetError(word, "prefecture numbers run from 01 to 47")
            entry = word
        elif word.isdigit() and len(word) in (5, 6):
            entry = _code(word, organisations)
        elif word.isdigit():
            raise TargetError(word, "a code has 2 (prefecture), 5 or 6 digits")
        else:
            entry = _name(word, organisations)
        if entry not in area:
            area.append(entry)
    return area


def describe_area(entry: str, organisations: Mapping[str, str]) -> str:
    """What one area entry reaches, in words an operator can check before sending."""
    if len(entry) == 2:
        inside = sum(1 for code in organisations if code[:2] == entry)
        name = PREFECTURE_NAMES.get(entry, entry)
        return f"{entry} = {name}, the whole prefecture: its government and municipalities ({inside} in all)"
    name = organisations.get(entry, "an organisation not in the registry")
    return f"{entry} = {name} alone (one organisation)"


