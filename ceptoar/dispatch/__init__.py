"""From notice to deliveries: validate, dedupe, classify, choose the audience, fan out."""

from ceptoar.dispatch.dispatcher import Dispatcher
from ceptoar.dispatch.rules import Classification, RulesError, RuleSet, classify, load_rules

__all__ = ["Classification", "Dispatcher", "RuleSet", "RulesError", "classify", "load_rules"]
