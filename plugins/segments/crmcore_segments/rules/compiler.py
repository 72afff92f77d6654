"""Rule AST -> SQLAlchemy boolean expression, with type checks.

Literals become bound parameters, names come from the whitelist in
:mod:`.fields`; no SQL text is ever assembled from the rule.

Missing values (a customer without purchases has no ``last_purchase_days``;
a custom field may be unset) make a comparison *false*, and ``not`` of that
is true: every condition is wrapped in ``COALESCE(..., FALSE)`` so the
language has two truth values, not SQL's three.  ``x is null`` tests for a
missing value explicitly.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, and_, false, func, literal, not_, or_
from sqlalchemy.sql import ColumnElement

from crmcore.store import MONEY_SCALE

from . import parser as ast
from .errors import RuleTypeError
from .fields import BOOL, MONEY, NUMBER, RATIO, TEXT, Catalogue, Value

#: The largest number a rule may write: a signed 64-bit integer, the widest column.
MAX_NUMBER = 2**63 - 1

#: SQL comparison of two operands (column expressions, or a scaled integer for money literals).
Comparison = Callable[[ColumnElement[Any] | int, ColumnElement[Any] | int], ColumnElement[bool]]

COMPARE: dict[str, Comparison] = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                                  ">": operator.gt, ">=": operator.ge}
NUMERIC = (NUMBER, MONEY, RATIO)
DESCRIBE = {NUMBER: "a number", MONEY: "an amount of money", RATIO: "an amount of money", TEXT: "text",
            BOOL: "yes/no"}


class Compiler:
    """Compiles one rule's AST against a :class:`Catalogue`."""

    def __init__(self, catalogue: Catalogue, expression: str):
        self.catalogue, self.expression = catalogue, expression
        self.fields: dict[str, Value] = {}  # every name the rule used, for explanations

    def condition(self, node: ast.Node) -> ColumnElement[bool]:
        """A boolean SQL expression that is never NULL."""
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(item) for item in node.items]
            return and_(*parts) if node.op == "and" else or_(*parts)
        if isinstance(node, ast.Not):
            return not_(self.condition(node.item))
        if isinstance(node, ast.Compare):
            return _known(self._compare(node))
        if isinstance(node, ast.In):
            return _known(self._in(node))
        if isinstance(node, ast.IsNull):
            value = self.value(node.operand)
            return value.sql.is_not(None) if node.negated else value.sql.is_(None)
        value = self.value(node)
        if value.type != BOOL:
            raise self._type_error(node, f"{_label(node)} is {DESCRIBE[value.type]}, not a condition: "
                                         f"compare it (e.g. {_label(node)} > 0)")
        return _known(value.sql)

    def value(self, node: ast.Node) -> Value:
        """The typed SQL value of an operand (a parenthesised condition is a yes/no value)."""
        if isinstance(node, ast.Literal):
            return _literal(self._in_range(node).value)
        if isinstance(node, ast.Field):
            found = self.catalogue.field(node.name, self.expression, node.column)
            self.fields[node.name] = found
            return found
        if isinstance(node, ast.Call):
            found = self.catalogue.call(node.function, node.argument, self.expression, node.column)
            self.fields[f'{node.function}("{node.argument}")'] = found
            return found
        # A parenthesised condition used as a value: (a > 1) == true
        return Value(self.condition(node), BOOL)

    # -- comparisons -------------------------------------------------------------------
    def _compare(self, node: ast.Compare) -> ColumnElement[bool]:
        left, right = self.value(node.left), self.value(node.right)
        op = COMPARE[node.op]
        if left.type in NUMERIC and right.type in NUMERIC:
            return _numeric(op, left, right, node, self)
        if left.type != right.type:
            raise self._type_error(node, f"cannot compare {_label(node.left)} ({DESCRIBE[left.type]}) with "
                                         f"{_label(node.right)} ({DESCRIBE[right.type]})")
        if left.type == BOOL and node.op not in ("==", "!="):
            raise self._type_error(node, f"yes/no values only compare with == or !=, not {node.op}")
        return op(left.sql, right.sql)

    def _in(self, node: ast.In) -> ColumnElement[bool]:
        operand = self.value(node.operand)
        if operand.type == RATIO:
            raise self._type_error(node, f"{_label(node.operand)} cannot be used with 'in'; use comparisons")
        items: list[Any] = []  # bound values: Decimal, str, bool or a scaled money int
        for item in node.values:
            if not isinstance(item, ast.Literal):
                raise self._type_error(item, "the list after 'in' holds literal values only")
            value = _literal(self._in_range(item).value)
            if not (value.type == operand.type or (value.type == NUMBER and operand.type in (NUMBER, MONEY))):
                raise self._type_error(item, f"{_label(node.operand)} is {DESCRIBE[operand.type]} but "
                                             f"{_label(item)} is {DESCRIBE[value.type]}")
            items.append(_money_literal(item, self) if operand.type == MONEY else item.value)
        found = operand.sql.in_(items)
        return not_(found) if node.negated else found

    def _in_range(self, node: ast.Literal) -> ast.Literal:
        """``node``, if a number, fits a signed 64-bit column (what every database compares)."""
        if isinstance(node.value, Decimal) and not isinstance(node.value, bool) and abs(node.value) > MAX_NUMBER:
            raise self._type_error(node, f"the number {node.value} is out of range (at most {MAX_NUMBER} either way)")
        return node

    def _type_error(self, node: ast.Node, reason: str) -> RuleTypeError:
        return RuleTypeError(self.expression, reason, getattr(node, "column", 1))


def _numeric(op: Comparison, left: Value, right: Value, node: ast.Compare, compiler: Compiler) -> ColumnElement[bool]:
    """Numbers, money and ratios compared exactly: money stays a scaled integer,
    a ratio ``a / b`` compares as ``a OP x * b`` with ``b > 0`` (no division)."""
    if MONEY in (left.type, right.type) or RATIO in (left.type, right.type):
        lsql = _scaled(left, node.left, compiler)
        rsql = _scaled(right, node.right, compiler)
    else:
        lsql, rsql = left.sql, right.sql
    guards: list[ColumnElement[bool]] = []
    if left.type == RATIO:
        assert left.denominator is not None  # a ratio always carries its denominator
        guards.append(left.denominator > 0)
        rsql = rsql * left.denominator
    if right.type == RATIO:
        assert right.denominator is not None
        guards.append(right.denominator > 0)
        lsql = lsql * right.denominator
    return and_(*guards, op(lsql, rsql))


def _scaled(value: Value, node: ast.Node, compiler: Compiler) -> ColumnElement[Any] | int:
    """``value`` in money's scaled integer units."""
    if value.type in (MONEY, RATIO):
        return value.sql
    if isinstance(node, ast.Literal):
        return _money_literal(node, compiler)
    return value.sql * MONEY_SCALE


def _money_literal(node: ast.Literal, compiler: Compiler) -> int:
    scaled = Decimal(node.value) * MONEY_SCALE
    if abs(scaled) > MAX_NUMBER:
        largest = Decimal(MAX_NUMBER) / MONEY_SCALE
        raise compiler._type_error(node, f"the amount {node.value} is out of range (at most {largest} either way)")
    if scaled != scaled.to_integral_value():
        raise compiler._type_error(node, f"amounts have at most {len(str(MONEY_SCALE)) - 1} decimals, "
                                         f"got {node.value}")
    return int(scaled)


def _literal(value: Decimal | str | bool) -> Value:
    if isinstance(value, bool):
        return Value(literal(value, Boolean), BOOL)
    if isinstance(value, Decimal):
        # Integral numbers bind as integers: SQLite compares an integer column
        # with a Decimal bound as text otherwise.
        return Value(literal(int(value)) if value == value.to_integral_value() else literal(value), NUMBER)
    return Value(literal(value), TEXT)


def _known(condition: ColumnElement[Any]) -> ColumnElement[bool]:
    """NULL (a missing value) counts as false."""
    return func.coalesce(condition, false(), type_=Boolean)


def _label(node: ast.Node) -> str:
    if isinstance(node, ast.Field):
        return node.name
    if isinstance(node, ast.Call):
        return f'{node.function}("{node.argument}")'
    if isinstance(node, ast.Literal):
        if isinstance(node.value, bool):
            return str(node.value).lower()
        return repr(node.value) if isinstance(node.value, str) else str(node.value)
    return "the expression"

