"""A plugin the HTTP API has never heard of: one segmenter, one report and one format.

tests/web/test_api_segments.py and test_api_reports.py load it with ``plugins_dir``
and find its routes, typed options and format in the API with no HTTP code here.
"""

from __future__ import annotations

from decimal import Decimal

import attrs
from sqlalchemy import case, func, literal, null, select

import crmcore
from crmcore.store import tables


@attrs.frozen
class CityOptions:
    """Options of ``probe-city``.

    :ivar city: the city whose customers are ``in-city``.
    :ivar mode: ``exact`` or ``prefix`` match of the city.
    :ivar min_id: only customers with at least this id.
    """

    city: str = "Lyon"
    mode: str = attrs.field(default="exact", validator=attrs.validators.in_(("exact", "prefix")))
    min_id: int = attrs.field(default=1, validator=attrs.validators.ge(1))


class CitySegmenter(crmcore.Segmenter):
    name = "probe-city"
    description = "in-city or elsewhere, by the customer's city"
    options_type = CityOptions

    def select(self, ctx, options):
        c = tables.customers
        hit = c.c.city == options.city if options.mode == "exact" else c.c.city.like(options.city + "%")
        return select(c.c.id.label("customer_id"),
                      case((hit, literal("in-city")), else_=literal("elsewhere")).label("segment"),
                      null().label("score"), null().label("details")).where(c.c.id >= options.min_id)


@attrs.frozen
class TotalsOptions:
    """Options of ``probe-totals``.

    :ivar currency: only deals in this currency.
    :ivar min_amount: only deals of at least this amount.
    :ivar with_count: add the number of deals.
    """

    currency: str = "EUR"
    min_amount: Decimal = Decimal("0")
    with_count: bool = True


class TotalsReport(crmcore.Report):
    name = "probe-totals"
    description = "deal amounts per owner in one currency"
    options_type = TotalsOptions

    def run(self, ctx, options):
        d = tables.deals
        rows = ctx.conn.execute(
            select(d.c.owner, func.count(), func.sum(d.c.amount))
            .where(d.c.currency == options.currency, d.c.amount >= options.min_amount, d.c.owner.is_not(None))
            .group_by(d.c.owner).order_by(d.c.owner)).all()
        columns = [crmcore.Column("owner"), crmcore.Column("amount", "decimal", None, options.currency)]
        if options.with_count:
            columns.insert(1, crmcore.Column("deals", "int"))
        return crmcore.ReportResult(
            title=f"Totals in {options.currency}", columns=tuple(columns),
            rows=tuple((o, int(n), Decimal(a)) if options.with_count else (o, Decimal(a)) for o, n, a in rows))


def render_tsv(result):
    lines = ["\t".join(c.name for c in result.columns)]
    lines += ["\t".join("" if v is None else str(v) for v in row) for row in result.rows]
    return "\n".join(lines) + "\n"


@crmcore.hookimpl
def register_segmenters(register):
    register(CitySegmenter())


@crmcore.hookimpl
def register_reports(register):
    register(TotalsReport())


@crmcore.hookimpl
def register_renderers(register):
    register(crmcore.Renderer("probe-tsv", render_tsv, "tsv", "tab-separated values"))
