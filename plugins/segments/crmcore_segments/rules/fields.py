"""What a rule may name: whitelisted customer fields, declared custom fields,
per-customer aggregates and ``segment("strategy")``.

Every name maps to a SQLAlchemy expression over ``customers`` (aggregates are
correlated scalar subqueries on indexed ``customer_id`` columns, so a rule
over all customers is one statement with index lookups, not a loop in
Python).  Nothing here builds SQL text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import BigInteger, Numeric, cast, false, func, select, type_coerce
from sqlalchemy.sql import ColumnElement

import crmcore
from crmcore.store import days_between, tables, utc_literal

from ..purchases import purchase_conditions
from .errors import RuleNameError

if TYPE_CHECKING:
    from .segmenter import RulesOptions

customers = tables.customers
deals = tables.deals
interactions = tables.interactions
accounts = tables.loyalty_accounts
memberships = tables.segment_memberships
runs = tables.segment_runs

# Types a value can have in a rule.  "money" is a scaled integer (Money in
# storage) and "ratio" a money quotient kept as numerator / denominator, so
# comparisons stay exact integer arithmetic on every dialect.
NUMBER, MONEY, RATIO, TEXT, BOOL = "number", "money", "ratio", "text", "bool"

TEXT_COLUMNS = ("kind", "name", "email", "phone", "country", "region", "city", "industry", "source", "owner",
                "stage", "external_id")
BOOL_COLUMNS = ("consent_email", "consent_sms", "consent_marketing")
AGGREGATES = {
    "total_spend": "sum of won deals up to as_of (within window_days when set)",
    "orders": "number of won deals up to as_of (within window_days when set)",
    "avg_order_value": "total_spend / orders (no value without orders)",
    "last_purchase_days": "days from the last won deal to as_of (no value without purchases)",
    "first_purchase_days": "days from the first won deal to as_of (no value without purchases)",
    "interactions_90d": "interactions in the 90 days up to as_of",
    "complaints_90d": "complaints in the 90 days up to as_of",
    "loyalty_points": "current points balance (of loyalty_scheme, else of all schemes)",
    "loyalty_tier": "current tier (of loyalty_scheme, else the greatest tier name)",
}
FUNCTIONS = {"segment": 'segment("strategy"): the customer\'s segment in that strategy\'s latest run'}


@attrs.frozen
class Value:
    """A typed SQL value; ``denominator`` only for ratios."""

    sql: ColumnElement[Any]
    type: str
    denominator: ColumnElement[Any] | None = None


class Catalogue:
    """The names a rule can use in one run (``as_of``, options and custom fields fixed)."""

    def __init__(self, ctx: crmcore.SegmentContext, options: RulesOptions, before_run: int | None = None):
        # before_run: explain a past run with the inputs it had (runs finished before it), not the latest.
        self.ctx, self.options, self.before_run = ctx, options, before_run
        declared = ctx.uow.crm.custom_fields.get("customer", {})
        self.custom = {f"attributes.{name}": field for name, field in declared.items()}

    def known(self) -> list[str]:
        """Every field name, for 'unknown field' messages."""
        return [*TEXT_COLUMNS, *BOOL_COLUMNS, *AGGREGATES, *sorted(self.custom)]

    def field(self, name: str, expression: str, column: int) -> Value:
        if name in TEXT_COLUMNS:
            return Value(customers.c[name], TEXT)
        if name in BOOL_COLUMNS:
            return Value(customers.c[name], BOOL)
        if name in AGGREGATES:
            aggregate: Callable[[], Value] = getattr(self, f"_{name}")
            return aggregate()
        if name in self.custom:
            return _custom(self.custom[name])
        raise RuleNameError(expression, f"unknown field {name!r} (known: {', '.join(self.known())})", column)

    def call(self, function: str, argument: str, expression: str, column: int) -> Value:
        if function != "segment":
            raise RuleNameError(expression, f"unknown function {function!r} (known: {', '.join(FUNCTIONS)})",
                                column)
        # The latest *finished* run: the run in progress (this one) has no member count yet.
        query = select(func.max(runs.c.id)).where(runs.c.strategy == argument, runs.c.members.is_not(None))
        if self.before_run is not None:
            query = query.where(runs.c.id < self.before_run)
        latest = self.ctx.conn.execute(query).scalar()
        if latest is None:
            raise RuleNameError(expression, f"segment({argument!r}): {argument!r} has no finished run yet "
                                            f"(run `crm segment run {argument}` first)", column)
        return Value(select(memberships.c.segment).where(
            memberships.c.run_id == latest, memberships.c.customer_id == customers.c.id).scalar_subquery(), TEXT)

    # -- aggregates ------------------------------------------------------------------
    def _purchases(self) -> list[ColumnElement[bool]]:
        return [deals.c.customer_id == customers.c.id,
                *purchase_conditions(self.ctx, self.options.window_days, None)]

    def _total_spend(self) -> Value:
        amount = type_coerce(deals.c.amount, BigInteger)  # the scaled integer, exact
        total = select(func.coalesce(func.sum(amount), 0)).where(*self._purchases()).scalar_subquery()
        return Value(total, MONEY)

    def _orders(self) -> Value:
        return Value(select(func.count()).where(*self._purchases()).scalar_subquery(), NUMBER)

    def _avg_order_value(self) -> Value:
        return Value(self._total_spend().sql, RATIO, self._orders().sql)

    def _last_purchase_days(self) -> Value:
        last = select(func.max(deals.c.closed_at)).where(*self._purchases()).scalar_subquery()
        return Value(days_between(last, utc_literal(self.ctx.as_of)), NUMBER)

    def _first_purchase_days(self) -> Value:
        first = select(func.min(deals.c.closed_at)).where(*self._purchases()).scalar_subquery()
        return Value(days_between(first, utc_literal(self.ctx.as_of)), NUMBER)

    def _recent_interactions(self, complaints: bool) -> Value:
        since = utc_literal(self.ctx.as_of - timedelta(days=90))
        conditions = [interactions.c.customer_id == customers.c.id, interactions.c.occurred_at > since,
                      interactions.c.occurred_at <= utc_literal(self.ctx.as_of)]
        if complaints:
            conditions.append(interactions.c.kind == "complaint")
        return Value(select(func.count()).where(*conditions).scalar_subquery(), NUMBER)

    def _interactions_90d(self) -> Value:
        return self._recent_interactions(complaints=False)

    def _complaints_90d(self) -> Value:
        return self._recent_interactions(complaints=True)

    def _loyalty(self) -> list[ColumnElement[bool]]:
        conditions = [accounts.c.customer_id == customers.c.id]
        if self.options.loyalty_scheme:
            conditions.append(accounts.c.scheme == self.options.loyalty_scheme)
        return conditions

    def _loyalty_points(self) -> Value:
        points = select(func.coalesce(func.sum(accounts.c.balance), 0)).where(*self._loyalty())
        return Value(points.scalar_subquery(), NUMBER)

    def _loyalty_tier(self) -> Value:
        return Value(select(func.max(accounts.c.tier)).where(*self._loyalty()).scalar_subquery(), TEXT)


def _custom(field: crmcore.CustomField) -> Value:
    """A declared custom field, typed by its declaration (values live in ``attributes``)."""
    element = customers.c.attributes[field.name]
    if field.type == "int":
        return Value(element.as_integer(), NUMBER)
    if field.type == "decimal":  # stored as exact text ("12.50")
        return Value(cast(element.as_string(), Numeric(28, 8)), NUMBER)
    if field.type == "bool":
        return Value(func.coalesce(element.as_boolean(), false()), BOOL)
    return Value(element.as_string(), TEXT)  # str, choice, date (ISO text orders like the date)
