"""The operator's side: composing alerts, previewing them, and acting on what was sent."""

from ceptoar.compose.draft import Draft, build_notice, current_actor, short_code
from ceptoar.compose.targets import TargetError, parse_targets

__all__ = ["Draft", "TargetError", "build_notice", "current_actor", "parse_targets", "short_code"]
