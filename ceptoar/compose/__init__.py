"""The operator's side: composing alerts, previewing them, and acting on what was sent."""

from ceptoar.compose.draft import Draft, build_notice, operator_name, short_code
from ceptoar.compose.targets import TargetError, parse_targets

__all__ = ["Draft", "TargetError", "build_notice", "operator_name", "parse_targets", "short_code"]
