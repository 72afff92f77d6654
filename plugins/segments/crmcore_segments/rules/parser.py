"""The rule language: text -> a small AST (parsed with lark, positions kept).

Grammar, loosest binding first::

    expr        := expr "or" expr | expr "and" expr | "not" expr | comparison
    comparison  := operand OP operand          OP: == = != < <= > >=
                 | operand ["not"] "in" "(" operand, ... ")"
                 | operand "is" ["not"] "null"
                 | operand                     (a yes/no field, e.g. consent_email)
    operand     := NUMBER | "text" | 'text' | true | false
                 | NAME | attributes.NAME | segment("strategy") | "(" expr ")"

Keywords are lower case.  The parser only builds the tree: which names exist
and whether types fit is the compiler's business (:mod:`.compiler`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import attrs

from .errors import RuleSyntaxError

# Control characters other than the whitespace tab, CR and LF, and lone surrogates:
# no stored text holds them (PostgreSQL refuses NUL), so a rule cannot mean them.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_LENGTH = 4000  # a rule longer than this is a mistake, not a segment definition

# -- the tree ------------------------------------------------------------------------


@attrs.frozen
class Literal:
    """A number (Decimal), text (str) or yes/no (bool) written in the rule."""

    value: Decimal | str | bool
    column: int


@attrs.frozen
class Field:
    """A customer field, custom field (``attributes.NAME``) or aggregate."""

    name: str
    column: int


@attrs.frozen
class Call:
    """A function call with one text argument, e.g. ``segment("rfm")``."""

    function: str
    argument: str
    column: int


@attrs.frozen
class Compare:
    op: str  # "==", "!=", "<", "<=", ">", ">="
    left: Node
    right: Node
    column: int


@attrs.frozen
class In:
    operand: Node
    values: tuple[Node, ...]
    negated: bool
    column: int


@attrs.frozen
class IsNull:
    operand: Node
    negated: bool
    column: int


@attrs.frozen
class BoolOp:
    op: str  # "and" or "or"
    items: tuple[Node, ...]
    column: int


@attrs.frozen
class Not:
    item: Node
    column: int


Node = Literal | Field | Call | Compare | In | IsNull | BoolOp | Not


def parse(text: str) -> Node:
    """Parse a rule; raises :class:`RuleSyntaxError` (with the column) on bad input."""
    if not isinstance(text, str):
        raise RuleSyntaxError(str(text), f"a rule is text, got {type(text).__name__}", 1)
    if not text.strip():
        raise RuleSyntaxError(text, "the rule is empty", 1)
    if len(text) > MAX_LENGTH:
        raise RuleSyntaxError(text[:80] + "...", f"the rule is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        what = "a lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
        raise RuleSyntaxError(text, f"{what} U+{ord(bad.group()):04X} is not allowed in a rule", bad.start() + 1)
    from .grammar import build  # lark is imported with the first rule parsed, not with the plugin

    return build(text)
