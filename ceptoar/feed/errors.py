"""Why a document at the feed's door was refused, by kind (the HTTP status follows from it)."""

from __future__ import annotations

from ceptoar.errors import InvalidNotice

__all__ = ["MalformedNotice", "UnsupportedFormat"]


class MalformedNotice(InvalidNotice):
    """Not even well-formed JSON or XML."""


class UnsupportedFormat(InvalidNotice):
    """A format or version ceptoar does not accept (CAP 1.1, an unknown content type)."""
