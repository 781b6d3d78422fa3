"""From notice to deliveries: validate, dedupe, classify, choose the audience, fan out."""

from ceptoar.dispatch.classify import Classification, classify
from ceptoar.dispatch.dispatcher import Dispatcher

__all__ = ["Classification", "Dispatcher", "classify"]
