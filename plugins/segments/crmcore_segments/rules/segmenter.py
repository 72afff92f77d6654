"""The ``rules`` segmenter: named segments defined by expressions.

In crm.toml (order matters: the first rule a customer matches names their
segment)::

    [segments.rules]
    default = "Other"          # optional: segment of customers matching no rule
    window_days = 365          # optional: purchase window of the spend aggregates

    [segments.rules.rules]
    "Big East" = 'region in ("华东", "华北") and total_spend >= 10000 and last_purchase_days < 90'
    "Win back" = 'segment("rfm") == "At Risk"'

On the command line, one ``NAME: EXPRESSION`` per line::

    crm segment run rules -o 'rules=VIP: total_spend >= 5000'

Customers matching no rule get no membership unless ``default`` is set
(so with no rules at all a run assigns nobody, or everybody to ``default``).
``score`` is the 1-based position of the rule that matched (the default
segment scores 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Unpack

import attrs
from sqlalchemy import Integer, Select, String, case, literal, select
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import Label

import crmcore
from crmcore.store import MONEY_SCALE, tables

from ..purchases import positive_days
from .compiler import Compiler
from .errors import RuleError
from .fields import MONEY, RATIO, Catalogue, Value
from .parser import _FORBIDDEN, parse

customers = tables.customers


@attrs.frozen
class Rule:
    """One named segment and the expression that selects its customers."""

    name: str
    when: str


def to_rules(value: Any) -> Any:
    """Rules from a TOML table (name -> expression), a list of ``{name, when}``
    tables or ``"NAME: EXPRESSION"`` strings, or text with one such line per line.

    Malformed input is returned as it is, for :func:`check_rules` to report.
    """
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [line for line in value.splitlines() if line.strip()]
    try:
        if isinstance(value, dict):
            return tuple(Rule(str(k), str(v)) for k, v in value.items())
        return tuple(_one_rule(item) for item in value)
    except (TypeError, ValueError):
        return value


def check_rules(instance: Any, attribute: Any, rules: Any) -> None:
    """Every rule well-formed, names unique, and each expression parses - so a
    syntax error surfaces when the options are read, before anything runs."""
    if not isinstance(rules, tuple) or not all(isinstance(r, Rule) for r in rules):
        bad = next((item for item in rules if not isinstance(item, Rule)), rules) \
            if isinstance(rules, (list, tuple)) else rules
        raise ValueError(f"{bad!r} is not a rule: give a table of NAME = EXPRESSION, or 'NAME: EXPRESSION' "
                         "lines", attribute)
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"rule names must be unique; repeated: {', '.join(duplicates)}", attribute)
    for rule in rules:
        try:
            parse(rule.when)
        except RuleError as exc:
            raise ValueError(str(exc.for_rule(rule.name)), attribute) from None


def _one_rule(item: Any) -> Rule:
    if isinstance(item, Rule):
        return item
    if isinstance(item, dict):
        if set(item) != {"name", "when"}:
            raise ValueError(f"a rule is a table with 'name' and 'when', got {sorted(item)}")
        return Rule(_segment_name(str(item["name"])), str(item["when"]))
    name, colon, when = str(item).partition(":")
    if not colon or not name.strip() or not when.strip():
        raise ValueError(f"{item!r} is not 'NAME: EXPRESSION'")
    return Rule(_segment_name(name.strip()), when.strip())


def _segment_name(name: str) -> str:
    """A segment name is stored text: no control characters or lone surrogates (PostgreSQL
    refuses a NUL in text with a DataError, a traceback the hostile-input corpus found)."""
    bad = _FORBIDDEN.search(name)
    if bad is not None:
        raise ValueError(f"segment name {name!r}: character U+{ord(bad.group()):04X} is not allowed")
    return name


@attrs.frozen
class RulesOptions:
    """Options of the ``rules`` segmenter (``[segments.rules]``).

    :ivar rules: the named rules, first match wins (see the module docstring
        for the accepted forms).
    :ivar default: segment of customers matching no rule (None: no membership).
    :ivar window_days: only purchases in the last N days count for
        ``total_spend``, ``orders``, ``avg_order_value`` and the purchase days.
    :ivar loyalty_scheme: the scheme ``loyalty_points`` / ``loyalty_tier`` read
        (None: points summed over all schemes, the greatest tier name).
    """

    # Any: cattrs hands the raw TOML value to ``to_rules`` (a typed annotation would
    # make cattrs structure it first); after conversion it is a tuple of Rule.
    rules: Any = attrs.field(default=(), converter=to_rules, validator=check_rules)
    default: str | None = None
    window_days: int | None = attrs.field(default=None, validator=positive_days)
    loyalty_scheme: str | None = None


class RulesSegmenter(crmcore.Segmenter):
    """Named segments from expressions over customer fields and aggregates."""

    name = "rules"
    description = "Named segments from rule expressions (first matching rule wins)"
    options_type = RulesOptions

    def select(self, ctx: crmcore.SegmentContext, options: RulesOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """customer_id, the first matching rule's name (or the default), its position as score."""
        conditions = compile_rules(ctx, options)
        if not conditions:  # no rules configured: everybody is default (or nobody)
            return select(customers.c.id.label("customer_id"), literal(options.default, String).label("segment"),
                          literal(0, Integer).label("score"), literal(None).label("details")).where(
                literal(options.default is not None))
        whens = [(condition, literal(rule.name, String)) for rule, condition, _ in conditions]
        scores = [(condition, literal(i, Integer)) for i, (_, condition, _) in enumerate(conditions, 1)]
        default = literal(options.default, String) if options.default is not None else None
        assigned = select(
            customers.c.id.label("customer_id"),
            case(*whens, else_=default).label("segment"),
            case(*scores, else_=literal(0, Integer)).label("score"),
        ).subquery("rules_assigned")
        return select(assigned.c.customer_id, assigned.c.segment, assigned.c.score,
                      literal(None).label("details")).where(assigned.c.segment.is_not(None))

    def explain(self, ctx: crmcore.SegmentContext, options: RulesOptions, membership: Mapping[str, Any]
               ) -> dict[str, Any]:
        """Each rule with whether it holds for the customer, and the values it read.

        ``segment("strategy")`` reads the run of that strategy the explained run
        used (the latest one finished before it), not the latest one now.
        """
        conditions = compile_rules(ctx, options, before_run=membership.get("run_id"))
        used: dict[str, Value] = {}
        for _, _, compiler in conditions:
            used |= compiler.fields
        columns: list[Label[Any]] = [condition.label(f"rule_{i}") for i, (_, condition, _) in enumerate(conditions)]
        for i, value in enumerate(used.values()):
            columns.append(value.sql.label(f"field_{i}"))
            # A ratio always carries its denominator; other values read NULL here.
            denominator = value.denominator if value.type == RATIO and value.denominator is not None else literal(None)
            columns.append(denominator.label(f"den_{i}"))
        row = ctx.conn.execute(select(*columns).where(customers.c.id == membership["customer_id"])).one()
        verdicts = [{"rule": rule.name, "when": rule.when, "holds": bool(row[i])}
                    for i, (rule, _, _) in enumerate(conditions)]
        matched = next((v["rule"] for v in verdicts if v["holds"]), None)
        base = len(conditions)
        values = {name: _readable(value, row[base + 2 * i], row[base + 2 * i + 1])
                  for i, (name, value) in enumerate(used.items())}
        return {"matched_rule": matched if matched else f"none (default {options.default!r})",
                "rules": verdicts, "values": values}


def compile_rules(ctx: crmcore.SegmentContext, options: RulesOptions, before_run: int | None = None
                 ) -> list[tuple[Rule, ColumnElement[bool], Compiler]]:
    """(rule, SQL condition, compiler) per rule; errors name the rule.

    ``before_run``: read ``segment(...)`` from runs finished before that run (to explain it).
    """
    catalogue = Catalogue(ctx, options, before_run)
    compiled: list[tuple[Rule, ColumnElement[bool], Compiler]] = []
    for rule in options.rules:
        compiler = Compiler(catalogue, rule.when)
        try:
            compiled.append((rule, compiler.condition(parse(rule.when)), compiler))
        except RuleError as exc:
            raise exc.for_rule(rule.name) from None
    return compiled


def _readable(value: Value, raw: Any, denominator: Any) -> Any:
    """Money back in currency units (exact text), the average as total / orders."""
    if raw is None:
        return None
    if value.type == MONEY:
        return str(Decimal(int(raw)) / MONEY_SCALE)
    if value.type == RATIO:
        return str(Decimal(int(raw)) / MONEY_SCALE / int(denominator)) if denominator else None
    return raw
