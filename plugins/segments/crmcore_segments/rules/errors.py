"""Errors of the rule language: what is wrong, where (1-based column), and the rule."""

from __future__ import annotations

import crmcore


class RuleError(crmcore.CRMError):
    """A rule that cannot run.  ``column`` points into ``expression``.

    The message shows the rule with a caret under the column, e.g.::

        column 16: unexpected 'and'
          total_spend >= and orders > 2
                         ^
    """

    def __init__(self, expression: str, reason: str, column: int, rule: str | None = None):
        self.expression, self.reason, self.column, self.rule = expression, reason, column, rule
        where = f"rule {rule!r}, " if rule else ""
        line = expression.replace("\n", " ").replace("\t", " ")
        caret = " " * (max(column, 1) - 1) + "^"
        super().__init__(f"{where}column {column}: {reason}\n  {line}\n  {caret}")

    def for_rule(self, rule: str) -> RuleError:
        """The same error, naming the rule it belongs to."""
        return type(self)(self.expression, self.reason, self.column, rule)


class RuleSyntaxError(RuleError):
    """The text is not a rule (bad token, unbalanced parenthesis, unterminated text)."""


class RuleNameError(RuleError):
    """An unknown field or function; the message lists the known ones."""


class RuleTypeError(RuleError):
    """Types that do not fit, e.g. text compared with a number."""
