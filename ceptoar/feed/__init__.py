"""Feed formats: everything a source sends becomes one `ceptoar.model.Notice`.

The ceptoar JSON notice (`notice.py`), OASIS CAP 1.2 (`cap.py`, mapped by
`cap_notice.py`) and CSAF 2.0 (`csaf.py`); `formats.parse_any` detects which
and parses it, `offload.ParserPool` does so off the event loop.
"""

from ceptoar.feed.notice import parse_notice

__all__ = ["parse_notice"]
