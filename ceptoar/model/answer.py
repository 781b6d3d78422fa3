"""What a local government answers to an alert, in its own words or by a button."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["ANSWER_WORDS", "Answer", "answer_in"]


class Answer(StrEnum):
    """An organisation's answer. Any answer says the alert was received."""

    RECEIVED = "received"
    NOT_AFFECTED = "not_affected"
    AFFECTED = "affected"
    NEEDS_HELP = "needs_help"

    @property
    def label(self) -> str:
        """The answer as the Japanese mail and page name it."""
        return ANSWER_WORDS[self][0]


# The words that give each answer at the start of a reply's first line, Japanese first.
ANSWER_WORDS: Final[dict[Answer, tuple[str, ...]]] = {
    Answer.RECEIVED: ("受領", "received"),
    Answer.NOT_AFFECTED: ("影響なし", "not affected"),
    Answer.AFFECTED: ("影響あり・対応中", "影響あり", "affected"),
    Answer.NEEDS_HELP: ("支援要請", "needs help"),
}


def answer_in(first_line: str) -> Answer | None:
    """The answer a reply's first line starts with, if any; the longest word wins (影響あり・対応中)."""
    line = first_line.strip().lower()
    return next((answer for word, answer in _LONGEST_FIRST if line.startswith(word)), None)


# Every answer word, lower case, longest first, so that 影響あり・対応中 is tried before 影響あり.
_LONGEST_FIRST: Final = sorted(
    ((w.lower(), a) for a, ws in ANSWER_WORDS.items() for w in ws), key=lambda wa: -len(wa[0])
)
