"""The rule grammar and the lark parser that turns a rule's text into :mod:`.parser`'s nodes.

Imported by :func:`.parser.parse` on the first rule parsed: importing lark and this
module cost every command's start-up about 15 ms, and most commands parse no rule.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any, cast

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)
from lark.tree import Meta

from .errors import RuleSyntaxError
from .parser import BoolOp, Call, Compare, Field, In, IsNull, Literal, Node, Not

GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr
        | or_expr "or" and_expr -> or_
?and_expr: not_expr
         | and_expr "and" not_expr -> and_
?not_expr: comparison
         | "not" not_expr -> not_
?comparison: operand
           | operand COMPARE operand -> compare
           | operand "in" "(" values ")" -> in_
           | operand "not" "in" "(" values ")" -> not_in
           | operand "is" "null" -> is_null
           | operand "is" "not" "null" -> is_not_null
?operand: NUMBER -> number
        | STRING -> string
        | "true" -> true
        | "false" -> false
        | NAME -> field
        | NAME "." NAME -> dotted_field
        | NAME "(" STRING ")" -> call
        | "(" expr ")"
values: operand ("," operand)*

COMPARE: "==" | "!=" | ">=" | "<=" | ">" | "<" | "="
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /-?(\d+(\.\d*)?|\.\d+)/
STRING: /"([^"\\\n]|\\.)*"/ | /'([^'\\\n]|\\.)*'/
%ignore /[ \t\r\n]+/
"""



@functools.cache
def _parser() -> Lark:
    """The LALR parser, built on the first parse: building it costs more than the
    whole import of this module, and ``crm --help`` never parses a rule."""
    return Lark(GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False)


@v_args(meta=True)
class _Build(Transformer[Token, "Node"]):
    """lark tree -> the attrs nodes above (columns are 1-based, as lark reports them)."""

    def number(self, meta: Meta, items: list[Token]) -> Literal:
        return Literal(Decimal(str(items[0])), meta.column)

    def string(self, meta: Meta, items: list[Token]) -> Literal:
        return Literal(_unquote(items[0]), meta.column)

    def true(self, meta: Meta, items: list[Token]) -> Literal:
        return Literal(True, meta.column)

    def false(self, meta: Meta, items: list[Token]) -> Literal:
        return Literal(False, meta.column)

    def field(self, meta: Meta, items: list[Token]) -> Field:
        return Field(str(items[0]), meta.column)

    def dotted_field(self, meta: Meta, items: list[Token]) -> Field:
        return Field(f"{items[0]}.{items[1]}", meta.column)

    def call(self, meta: Meta, items: list[Token]) -> Call:
        return Call(str(items[0]), _unquote(items[1]), meta.column)

    def compare(self, meta: Meta, items: list[Any]) -> Compare:
        # The grammar fixes the children: [operand, COMPARE token, operand].
        left, op, right = items
        return Compare("==" if str(op) == "=" else str(op), left, right, meta.column)

    def values(self, meta: Meta, items: list[Node]) -> tuple[Node, ...]:
        return tuple(items)

    def in_(self, meta: Meta, items: list[Any]) -> In:
        # [operand, the values() tuple], as for not_in.
        return In(items[0], items[1], False, meta.column)

    def not_in(self, meta: Meta, items: list[Any]) -> In:
        return In(items[0], items[1], True, meta.column)

    def is_null(self, meta: Meta, items: list[Node]) -> IsNull:
        return IsNull(items[0], False, meta.column)

    def is_not_null(self, meta: Meta, items: list[Node]) -> IsNull:
        return IsNull(items[0], True, meta.column)

    def and_(self, meta: Meta, items: list[Node]) -> BoolOp:
        return _flatten("and", items, meta.column)

    def or_(self, meta: Meta, items: list[Node]) -> BoolOp:
        return _flatten("or", items, meta.column)

    def not_(self, meta: Meta, items: list[Node]) -> Not:
        return Not(items[0], meta.column)


def _flatten(op: str, items: list[Node], column: int) -> BoolOp:
    """``a and b and c`` as one node with three items (the grammar nests them)."""
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, BoolOp) and item.op == op else [item])
    return BoolOp(op, tuple(flat), column)


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


def _unquote(token: Token) -> str:
    """The text of a quoted literal; escapes are \\\\, \\", \\', \\n and \\t."""
    text = str(token)[1:-1]
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            escaped = text[i + 1]  # the grammar guarantees a character after a backslash
            if escaped not in _ESCAPES:
                raise RuleSyntaxError(str(token), f"unknown escape \\{escaped} in text",
                                      (token.column or 1) + i + 1)
            out.append(_ESCAPES[escaped])
            i += 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


def build(text: str) -> Node:
    """Parse ``text`` (already checked by :func:`.parser.parse`) into nodes; raises
    :class:`RuleSyntaxError` (with the column) on bad input."""
    try:
        tree = _parser().parse(text)
        return _Build().transform(tree)
    except UnexpectedInput as exc:
        raise RuleSyntaxError(text, _describe(exc), _column(text, exc)) from None
    except RuleSyntaxError:
        raise
    except LarkError as exc:  # VisitError around a RuleSyntaxError from _unquote, or lark internals
        original = getattr(exc, "orig_exc", None)
        if isinstance(original, RuleSyntaxError):
            raise RuleSyntaxError(text, original.reason, original.column) from None
        raise RuleSyntaxError(text, str(exc).splitlines()[0], 1) from None
    except RecursionError:
        raise RuleSyntaxError(text, "the rule is nested too deeply", 1) from None


def _column(text: str, exc: UnexpectedInput) -> int:
    """1-based column in the whole text (lark counts columns per line)."""
    at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    # lark declares ``pos_in_stream = None`` on UnexpectedInput without an annotation
    # (so mypy sees only None); the subclasses set an int offset or leave None.
    position = cast("int | None", getattr(exc, "pos_in_stream", None))
    if at_end or isinstance(exc, UnexpectedEOF) or position is None:
        return len(text) + 1
    return position + 1


def _describe(exc: UnexpectedInput) -> str:
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    if isinstance(exc, UnexpectedEOF):
        return "the rule ends too early"
    if isinstance(exc, UnexpectedToken):
        if exc.token.type == "$END":
            return "the rule ends too early"
        return f"unexpected {str(exc.token)!r}"
    return "syntax error"
