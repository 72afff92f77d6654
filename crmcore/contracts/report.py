"""The contract every report obeys (:class:`ReportContract`)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ..reports import CORE_RENDERERS, ReportResult
from .base import Contract
from .data import BEFORE_ANY_DATA, FIXED_NOW, generate

# The Python values a cell of each column type may hold (None is always allowed).
CELL_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "decimal": (Decimal, int), "float": (float, int, Decimal),
    "percent": (float, int, Decimal), "date": (date,), "datetime": (datetime,),
}


def check_table(result: ReportResult) -> None:
    """Columns named once each; every row (of every section) as long as the columns, cells of their type."""
    for table in result.tables():
        names = [c.name for c in table.columns]
        assert names, f"{table.title!r} has no columns"
        assert len(names) == len(set(names)), f"{table.title!r} repeats a column name"
        for row in table.rows:
            assert len(row) == len(names), f"{table.title!r}: a row of {len(row)} cells for {len(names)} columns"
            for value, column in zip(row, table.columns):
                if value is None:
                    continue
                if column.type == "str":  # any scalar shows as text
                    continue
                assert isinstance(value, CELL_TYPES[column.type]) and not isinstance(value, bool), \
                    f"{table.title!r}.{column.name}: {value!r} is not a {column.type}"
        for chart in table.charts:
            assert {chart.x, *chart.y} <= set(names), f"chart {chart.title!r} names a column the table lacks"


def check_renderers(crm: Any, name: str, as_of: datetime) -> None:
    """Every core renderer renders the report; CSV and JSON carry every row."""
    result = crm.reports.run(name, as_of=as_of)
    for renderer in CORE_RENDERERS:
        assert crm.reports.render(name, format=renderer.name, as_of=as_of), f"{renderer.name} rendered nothing"
    document = json.loads(crm.reports.render(name, format="json", as_of=as_of))
    assert len(document["rows"]) == len(result.rows)
    assert [c["name"] for c in document["columns"]] == [c.name for c in result.columns]
    rows = list(csv.reader(io.StringIO(str(crm.reports.render(name, format="csv", as_of=as_of)))))
    assert rows[0] == [c.name for c in result.columns]
    if not result.sections:
        assert len(rows) == len(result.rows) + 1


class ReportContract(Contract):
    """Subclass and provide ``component`` (a :class:`crmcore.Report`).

    Checks on a generated database (``seeded_crm``) and an empty one
    (``contract_crm``): column names unique, rows as long as the columns and
    cells of their column's type, charts over existing columns, every core
    renderer (table, csv, json) works, and ``as_of`` is respected (the result
    says it, and data after it changes nothing: as of a moment before any
    data, the report reads the same as on the empty database).

    Optional fixtures: ``contract_config``, ``contract_crm`` and
    ``seeded_crm`` (default: ``contract_crm`` filled by
    :func:`crmcore.contracts.generate`).

    :cvar shows_present_state: set True in the subclass for a report that
        shows the state of now whatever ``as_of`` says (current balances,
        say); the ``as_of`` check then only checks the moment the result
        carries.  Say so in the report's description.
    """

    family = "reports"
    shows_present_state = False

    @pytest.fixture
    def seeded_crm(self, contract_crm: Any) -> Any:
        """``contract_crm`` with generated customers, deals and interactions."""
        generate(contract_crm)
        return contract_crm

    def test_rows_match_columns(self, seeded_crm: Any, component: Any) -> None:
        """The table is well formed: unique columns, full rows, typed cells."""
        result = seeded_crm.reports.run(component.name, as_of=FIXED_NOW)
        assert result.title
        check_table(result)

    def test_core_renderers(self, seeded_crm: Any, component: Any) -> None:
        """table, csv and json render it, with every row."""
        check_renderers(seeded_crm, component.name, FIXED_NOW)

    def test_empty_database(self, contract_crm: Any, component: Any) -> None:
        """With no data at all the report runs and renders."""
        check_table(contract_crm.reports.run(component.name, as_of=FIXED_NOW))
        check_renderers(contract_crm, component.name, FIXED_NOW)

    def test_as_of_respected(self, contract_crm: Any, component: Any) -> None:
        """The result carries its ``as_of``; data dated after it does not show."""
        empty = contract_crm.reports.run(component.name, as_of=BEFORE_ANY_DATA)
        assert empty.as_of == BEFORE_ANY_DATA
        generate(contract_crm)
        before = contract_crm.reports.run(component.name, as_of=BEFORE_ANY_DATA)
        assert before.as_of == BEFORE_ANY_DATA
        if self.shows_present_state:
            return
        assert before.rows == empty.rows, "data dated after as_of changed the report"
        assert [s.rows for s in before.sections] == [s.rows for s in empty.sections]
        assert contract_crm.reports.run(component.name, as_of=FIXED_NOW).as_of == FIXED_NOW
