"""Text from outside, made safe to store, to mail and to print on an operator's terminal.

Senders' text may carry C0 and C1 control characters (terminal escapes,
BEL, NUL that PostgreSQL refuses), bidirectional overrides that make text
read other than it is, and zero-width characters that make two ids look
the same. A line (a title) keeps none of them; running text (a summary, a
body) keeps its line breaks and tabs. Ids are refused rather than mended:
a mended id would be another id.
"""

from __future__ import annotations

import unicodedata

__all__ = ["clean_line", "clean_text", "columns", "fit", "printable", "unsafe_in_id", "width"]

# Bidirectional controls: they reorder what is displayed around them.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Invisible characters that only make two strings look alike.
_INVISIBLE = frozenset("\u00ad\u180e\u200b\u2060\ufeff")


def _unsafe(char: str) -> bool:
    """A control, format or surrogate character: nothing a reader of the text should get."""
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp") or char in _BIDI or char in _INVISIBLE


def clean_line(text: str) -> str:
    """One line: line breaks and tabs become spaces; every other control and format character goes."""
    text = text.replace("\r\n", " ").translate(_LINE_BREAKS)
    return "".join(c for c in text if not _unsafe(c)).strip()


def clean_text(text: str) -> str:
    """Running text: line breaks (as \\n) and tabs stay; every other control and format character goes.

    Zero-width joiners stay too: emoji sequences and some scripts need them.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in "\n\t\u200c\u200d" or not _unsafe(c))


def unsafe_in_id(text: str) -> str | None:
    """The first character an id must not hold (whitespace, control, format), or None."""
    return next((c for c in text if c.isspace() or _unsafe(c)), None)


def printable(value: object, *, multiline: bool = False) -> str:
    """`value` for an operator's terminal: controls and format characters shown as escapes, not obeyed."""
    keep = "\n\t" if multiline else ""
    return "".join(
        c if c in keep or not _unsafe(c) else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        for c in str(value)
    )


_LINE_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\t": " ", "\v": " ", "\f": " ", "\x85": " "})


def columns(c: str) -> int:
    """The display columns of one character: two for a wide or full-width one (Japanese)."""
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def width(line: str) -> int:
    """The display columns of a line: wide and full-width characters count two."""
    return sum(columns(c) for c in line)


def fit(text: str, cells: int) -> str:
    """`text` cut to at most `cells` display columns (with `…` where cut) and padded to exactly that."""
    if width(text) > cells:
        kept, used = [], 0
        for c in text:
            if used + columns(c) > cells - 1:
                break
            kept.append(c)
            used += columns(c)
        text = "".join(kept) + "…"
    return text + " " * (cells - width(text))
