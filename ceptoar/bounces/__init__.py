"""What comes back after the relay said 250: each delivery's own return path (`verp.py`) and
reading what returns to it (`report.py`)."""

from ceptoar.bounces.report import Report, read_report
from ceptoar.bounces.verp import Token, Verp

__all__ = ["Report", "Token", "Verp", "read_report"]
