"""Local government codes (全国地方公共団体コード).

A code is five digits (two for the prefecture, three for the body) and a
check digit: weights 6,5,4,3,2 over the five digits, then
(11 - sum mod 11) mod 10. A prefecture itself is `PP000` plus its check
digit (Tokyo: 130001). Codes are validated, never guessed.
"""

from __future__ import annotations

__all__ = [
    "check_digit",
    "is_prefecture",
    "prefecture_of",
    "validate_area_code",
    "validate_lgcode",
]

_WEIGHTS = (6, 5, 4, 3, 2)


def check_digit(five: str) -> int:
    """The check digit of a five-digit code."""
    if len(five) != 5 or not five.isascii() or not five.isdigit():
        raise ValueError(f"{five!r} is not five digits")
    total = sum(int(d) * w for d, w in zip(five, _WEIGHTS, strict=True))
    return (11 - total % 11) % 10


def validate_lgcode(code: str) -> str:
    """Return `code` if it is a well-formed six-digit code, else raise ValueError saying why."""
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        raise ValueError(f"{code!r} is not a six-digit local government code")
    pref = int(code[:2])
    if not 1 <= pref <= 47:
        raise ValueError(f"{code!r} names prefecture {code[:2]}, which does not exist (01-47)")
    expected = check_digit(code[:5])
    if int(code[5]) != expected:
        raise ValueError(f"{code!r} has check digit {code[5]}, expected {expected} ({code[:5]}{expected})")
    return code


def validate_area_code(code: str) -> str:
    """A notice's area entry: a two-digit prefecture number (01-47) or a six-digit code."""
    if len(code) == 2 and code.isascii() and code.isdigit():
        if not 1 <= int(code) <= 47:
            raise ValueError(f"{code!r} is not a prefecture number (01-47)")
        return code
    return validate_lgcode(code)


def is_prefecture(code: str) -> bool:
    """True for the code of a prefecture itself."""
    return code[2:5] == "000"


def prefecture_of(code: str) -> str:
    """The two-digit prefecture number a code belongs to."""
    return code[:2]
