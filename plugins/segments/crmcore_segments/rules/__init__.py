"""The ``rules`` strategy: a small expression language compiled to SQLAlchemy.

:mod:`.parser` turns text into a tree (lark), :mod:`.fields` says which names
exist, :mod:`.compiler` type-checks the tree and builds SQL expressions, and
:mod:`.segmenter` is the strategy itself.
"""

from .errors import RuleError, RuleNameError, RuleSyntaxError, RuleTypeError
from .parser import parse
from .segmenter import Rule, RulesOptions, RulesSegmenter

__all__ = ["Rule", "RuleError", "RuleNameError", "RuleSyntaxError", "RuleTypeError", "RulesOptions",
           "RulesSegmenter", "parse"]
