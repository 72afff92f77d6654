"""The reports engine: a report aggregating in SQL, the core renderers (table,
CSV, JSON), options from configuration and per call, and a renderer added by
a plugin.  Figures are checked against sums computed here in Python.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
from sqlalchemy import func, select

import crmcore
from crmcore import Chart, Column, ConfigError, PluginError, Renderer, ReportResult, UnknownComponent
from crmcore.reports import rows_of
from crmcore.store import tables
from crmcore.store.dialects import utc_literal
from crmcore.testing import FIXED_NOW

from .conftest import Components

AS_OF = FIXED_NOW + timedelta(days=1)


# -- the report and renderer under test ----------------------------------------------------------

@attrs.frozen
class RevenueOptions:
    stage: str = "won"
    min_deals: int = 1


class RevenueByCountry(crmcore.Report):
    """Deals in a closing stage up to ``as_of``, grouped by the customer's country."""

    name = "revenue_by_country"
    description = "revenue per country"
    options_type = RevenueOptions

    def run(self, ctx: crmcore.ReportContext, options: RevenueOptions) -> ReportResult:
        d, c = tables.deals, tables.customers
        query = select(c.c.country, func.count(d.c.id), func.sum(d.c.amount), func.max(d.c.closed_at),
                       func.min(d.c.closed_at)).select_from(d.join(c, c.c.id == d.c.customer_id)).where(
            d.c.stage == options.stage, d.c.closed_at <= utc_literal(ctx.as_of)).group_by(c.c.country).having(
            func.count(d.c.id) >= options.min_deals).order_by(c.c.country)
        rows = rows_of(ctx.conn.execute(query))
        total = sum((r[2] for r in rows), Decimal(0))
        return ReportResult(
            title=f"Revenue by country ({options.stage})",
            columns=(Column("country"), Column("deals", "int"), Column("revenue", "decimal"),
                     Column("share", "percent"), Column("last_closed", "date", "last closed"),
                     Column("first_closed", "datetime")),
            rows=tuple((country, n, revenue, revenue / total if total else None, last.date(), first)
                       for country, n, revenue, last, first in rows),
            charts=(Chart("bar", "Revenue", "country", ("revenue",)),),
            notes=(f"{len(rows)} countries",),
        )


def render_tsv(result: ReportResult) -> str:
    lines = ["\t".join(c.name for c in result.columns)]
    lines += ["\t".join("" if v is None else str(v) for v in row) for row in result.rows]
    return "\n".join(lines) + "\n"


TSV = Renderer("tsv", render_tsv, "tsv", "tab-separated values")


def open_crm(crm_factory: Any, **kwargs: Any) -> crmcore.CRM:
    return crm_factory(extra_plugins=[Components("engine_reports", reports=(RevenueByCountry(),),
                                                 renderers=(TSV,))], **kwargs)


# -- data and the independent computation ---------------------------------------------------------

DEALS = [  # (country, amount, stage, days before FIXED_NOW it closed)
    ("CN", "0.10", "won", 3),
    ("CN", "0.20", "won", 40),
    ("CN", "12345678901.23", "won", 1),
    ("DE", "19.99", "won", 2),
    ("DE", "0.01", "won", 5),
    ("FR", "7.00", "won", 0),
    (None, "5.55", "won", 9),
    ("CN", "999.00", "won", -10),  # closes after as_of: not counted
    ("US", "100.00", "lost", 4),
    ("US", "250.50", "lost", 6),
    ("DE", "80.00", "lost", 7),
]


def seed(crm: crmcore.CRM) -> None:
    customers: dict[str | None, int] = {}
    for country, amount, stage, days in DEALS:
        if country not in customers:
            customers[country] = crm.customers.add(name=f"Buyer {country}", country=country).id
        crm.deals.add(customer_id=customers[country], title=f"{country} {amount}", amount=Decimal(amount),
                      stage=stage, closed_at=FIXED_NOW - timedelta(days=days))
    crm.deals.add(customer_id=customers["FR"], title="open", amount=Decimal("1000"), stage="proposal")


def expected_rows(stage: str = "won", min_deals: int = 1) -> dict[str | None, tuple]:
    groups: dict[str | None, list[tuple[Decimal, datetime]]] = defaultdict(list)
    for country, amount, deal_stage, days in DEALS:
        closed = FIXED_NOW - timedelta(days=days)
        if deal_stage == stage and closed <= AS_OF:
            groups[country].append((Decimal(amount), closed))
    kept = {k: v for k, v in groups.items() if len(v) >= min_deals}
    total = sum((a for v in kept.values() for a, _ in v), Decimal(0))
    return {k: (len(v), sum((a for a, _ in v), Decimal(0)), sum((a for a, _ in v), Decimal(0)) / total,
                max(t for _, t in v).date(), min(t for _, t in v)) for k, v in kept.items()}


# -- tests -----------------------------------------------------------------------------------------

def test_report_aggregates_in_sql(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed(crm)
    result = crm.reports.run("revenue_by_country", as_of=AS_OF)
    assert result.as_of == AS_OF
    assert [c.name for c in result.columns] == ["country", "deals", "revenue", "share", "last_closed",
                                                "first_closed"]
    got = {r[0]: r[1:] for r in result.rows}
    assert got == expected_rows()
    assert got["CN"][1] == Decimal("12345678901.53") and isinstance(got["CN"][1], Decimal)
    named = [r["country"] for r in result.records() if r["country"] is not None]
    assert named == ["CN", "DE", "FR"]  # ordered in SQL (where NULL sorts is the dialect's business)
    assert [r.name for r in crm.reports.list()] == ["revenue_by_country"]


def test_csv_is_exact(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed(crm)
    text = crm.reports.render("revenue_by_country", format="csv", as_of=AS_OF)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["country", "deals", "revenue", "share", "last_closed", "first_closed"]
    expected = expected_rows()
    assert len(rows) == len(expected)
    for r in rows:
        deals, revenue, share, last, first = expected[r["country"] or None]
        assert int(r["deals"]) == deals
        assert Decimal(r["revenue"]) == revenue  # exact: no float on the way
        assert "e" not in r["revenue"].lower()
        assert Decimal(r["share"]) == share
        assert date.fromisoformat(r["last_closed"]) == last
        assert datetime.fromisoformat(r["first_closed"]) == first
    assert "12345678901.53" in text


def test_json_parses_with_decimals_as_strings(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed(crm)
    document = json.loads(crm.reports.render("revenue_by_country", format="json", as_of=AS_OF))
    assert document["title"] == "Revenue by country (won)"
    assert datetime.fromisoformat(document["as_of"]) == AS_OF
    assert document["columns"][2] == {"name": "revenue", "type": "decimal", "title": None}
    assert document["charts"] == [{"kind": "bar", "title": "Revenue", "x": "country", "y": ["revenue"]}]
    assert document["notes"] == ["4 countries"]
    expected = expected_rows()
    assert len(document["rows"]) == len(expected)
    for r in document["rows"]:
        deals, revenue, share, last, first = expected[r["country"]]
        assert isinstance(r["revenue"], str) and Decimal(r["revenue"]) == revenue
        assert isinstance(r["share"], str) and Decimal(r["share"]) == share
        assert r["deals"] == deals
        assert r["last_closed"] == last.isoformat()
        assert datetime.fromisoformat(r["first_closed"]) == first


def test_table_is_plain_text_when_not_a_terminal(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed(crm)
    text = crm.reports.render("revenue_by_country", as_of=AS_OF)  # "table" is the default
    assert isinstance(text, str) and "\x1b" not in text
    assert "Revenue by country (won)" in text
    assert "last closed" in text  # the column title, not its key
    assert "12,345,678,901.53" in text and "CN" in text and "DE" in text
    assert "4 countries" in text


def test_unknown_format_lists_formats(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    with pytest.raises(UnknownComponent) as info:
        crm.reports.render("revenue_by_country", format="pdf")
    assert "'pdf'" in str(info.value) and "csv, csv-raw, json, table, tsv" in str(info.value)
    with pytest.raises(UnknownComponent, match="revenue_by_country"):
        crm.reports.run("churn")


def test_plugin_renderer_is_usable(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    seed(crm)
    text = crm.reports.render("revenue_by_country", format="tsv", as_of=AS_OF)
    lines = text.splitlines()
    assert lines[0] == "country\tdeals\trevenue\tshare\tlast_closed\tfirst_closed"
    assert any(line.startswith("CN\t3\t12345678901.53\t") for line in lines)
    assert crm.reports.renderers.owner("tsv") == "engine_reports"


def test_renderer_name_clash_names_both_plugins(crm_factory: Any) -> None:
    clash = Components("csv_clash", renderers=(Renderer("csv", render_tsv, "csv"),))
    with pytest.raises(PluginError, match="'crmcore'.*'csv_clash'"):
        crm_factory(extra_plugins=[clash])


def test_options_from_config_and_per_call(crm_factory: Any) -> None:
    crm = open_crm(crm_factory, config={"reports": {"revenue_by_country": {"min_deals": 2}}})
    seed(crm)
    configured = crm.reports.run("revenue_by_country", as_of=AS_OF)
    assert {r[0]: r[1:] for r in configured.rows} == expected_rows(min_deals=2)
    assert {r[0] for r in configured.rows} == {"CN", "DE"}

    lost = crm.reports.run("revenue_by_country", as_of=AS_OF, options={"stage": "lost"})
    assert lost.title == "Revenue by country (lost)"
    assert {r[0]: r[1:] for r in lost.rows} == expected_rows("lost", min_deals=2)  # min_deals from config
    assert {r[0] for r in lost.rows} == {"US"}

    everything = crm.reports.run("revenue_by_country", as_of=AS_OF, options={"stage": "lost", "min_deals": "1"})
    assert {r[0]: r[1:] for r in everything.rows} == expected_rows("lost", min_deals=1)

    with pytest.raises(ConfigError, match=r"\[reports\.revenue_by_country\] min_deals"):
        crm.reports.run("revenue_by_country", options={"min_deals": "two"})
    with pytest.raises(ConfigError, match="colour"):
        crm.reports.render("revenue_by_country", format="csv", options={"colour": "red"})


def test_empty_report_renders(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    for fmt in ("table", "csv", "json", "tsv"):
        assert crm.reports.render("revenue_by_country", format=fmt, as_of=AS_OF)
    assert json.loads(crm.reports.render("revenue_by_country", format="json"))["rows"] == []
    assert crm.reports.render("revenue_by_country", format="csv").splitlines() == [
        "country,deals,revenue,share,last_closed,first_closed"]


# -- sections, chart groups, option names, files ----------------------------------------------------

class WithSections(crmcore.Report):
    """A report whose result has a second table (a section) and a grouped chart."""

    name = "with_sections"
    description = "a main table and a section"

    def run(self, ctx: crmcore.ReportContext, options: None) -> ReportResult:
        detail = ReportResult(title="Detail", columns=(Column("k"), Column("v", "decimal", currency="JPY")),
                              rows=(("a", Decimal("1")), ("b", Decimal("2"))))
        return ReportResult(title="Main", columns=(Column("month"), Column("who"), Column("n", "int")),
                            rows=(("2026-01", "x", 1), ("2026-01", "y", 2)),
                            charts=(Chart("bar", "n", "month", ("n",), group="who", exclude=("(all)",)),),
                            sections=(detail,))


def test_sections_in_every_core_format(crm_factory: Any, tmp_path: Any) -> None:
    crm = crm_factory(extra_plugins=[Components("engine_sections", reports=(WithSections(),))])
    result = crm.reports.run("with_sections")
    assert [t.title for t in result.tables()] == ["Main", "Detail"]
    assert result.sections[0].column("v") == [Decimal("1"), Decimal("2")]
    text = crm.reports.render("with_sections", "csv")
    assert text == "month,who,n\n2026-01,x,1\n2026-01,y,2\n\nDetail\nk,v\na,1\nb,2\n"
    document = json.loads(crm.reports.render("with_sections", "json"))
    assert document["sections"][0]["rows"] == [{"k": "a", "v": "1"}, {"k": "b", "v": "2"}]
    assert document["sections"][0]["columns"][1] == {"name": "v", "type": "decimal", "title": None,
                                                     "currency": "JPY"}
    assert document["charts"] == [{"kind": "bar", "title": "n", "x": "month", "y": ["n"], "group": "who",
                                    "exclude": ["(all)"]}]
    table = crm.reports.render("with_sections", "table")
    assert "Main" in table and "Detail" in table
    written = crm.reports.write("with_sections", tmp_path / "out.csv", "csv")
    assert written.read_text() == text
    with pytest.raises(crmcore.CRMError, match=r"cannot write .*nowhere/out.csv"):
        crm.reports.write("with_sections", tmp_path / "nowhere" / "out.csv", "csv")


def test_an_option_the_report_does_not_take(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    with pytest.raises(ConfigError, match=r"report 'revenue_by_country' has no filter or option 'colour', 'size' "
                                          r"\(it takes: min_deals, stage\)"):
        crm.reports.run("revenue_by_country", options={"colour": "red", "size": 1})
    crm = crm_factory(extra_plugins=[Components("engine_sections", reports=(WithSections(),))])
    with pytest.raises(ConfigError, match=r"has no filter or option 'x' \(it takes: none\)"):
        crm.reports.run("with_sections", options={"x": 1})


def test_dashboard_with_core_formats_only(crm_factory: Any, tmp_path: Any) -> None:
    crm = crm_factory(extra_plugins=[Components("engine_sections", reports=(WithSections(),))])
    entries = crm.reports.dashboard(tmp_path / "d", format="csv")
    assert [(e.name, e.file) for e in entries] == [("with_sections", "with_sections.csv")]
    assert 'href="with_sections.csv"' in (tmp_path / "d" / "index.html").read_text()
    with pytest.raises(UnknownComponent, match="unknown renderer 'html'"):
        crm.reports.dashboard(tmp_path / "e")  # no plugin gives html here
