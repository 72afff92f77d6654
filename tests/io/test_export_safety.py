"""Exports are safe to open in a spreadsheet (issue 14 point 5).

CSV cells of text that starts with ``=``, ``+``, ``-``, ``@``, a tab or a CR
get a leading single quote (the OWASP CSV-injection rule); numbers, negative
ones included, are left alone; ``--raw-csv`` turns the escaping off; an
escaped file imports back to the original values.  XLSX never holds user text
as a formula.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal

import openpyxl
import pytest
from click.testing import CliRunner

from crmcore.cli import cli
from crmcore.domain.spreadsheet import escape_formula, unescape_formula
from crmcore.reports.protocol import Column, ReportResult
from crmcore.reports.renderers import render_csv
from iotools import read_csv, write_csv

# Text a user can store (a one-line field refuses a leading tab or CR at the door: escape_formula's own
# cases below cover those two prefixes).
HOSTILE = ['=HYPERLINK("http://evil.example/x","click")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3",
           "'=already quoted", "Plain 名字"]


@pytest.mark.parametrize("text", [*HOSTILE, "\tTabbed", "\rReturn", "-5", "+86", "-5.00", "1e5", "'-5", "''=x", "", "'", "=", "-"])
def test_escape_is_undone_by_unescape(text):
    assert unescape_formula(escape_formula(text)) == text


def test_escape_rule():
    assert escape_formula("=1+1") == "'=1+1"
    assert escape_formula("+86 138 0013 8000") == "'+86 138 0013 8000"
    assert escape_formula("@x") == "'@x" and escape_formula("\tx") == "'\tx" and escape_formula("\rx") == "'\rx"
    assert escape_formula("-5.00") == "-5.00" and escape_formula("+5") == "+5"  # numbers stay numbers
    assert escape_formula("-2+3") == "'-2+3"
    assert escape_formula("Plain") == "Plain"


def _seed(crm_cli, tmp_path):
    rows = [["external_id", "name", "city"]] + [[f"C{i}", name, "-north"] for i, name in enumerate(HOSTILE)]
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "seed.csv", rows)), "--raw-csv")  # as written


def test_export_csv_escapes_text_and_round_trips(crm_cli, make_cli, tmp_path):
    _seed(crm_cli, tmp_path)
    out = tmp_path / "out.csv"
    crm_cli.run("export", "customers", "-o", str(out))
    rows = read_csv(out)
    header = rows[0]
    names = [dict(zip(header, r))["name"] for r in rows[1:]]
    assert names == [escape_formula(n) for n in HOSTILE]
    assert names[0] == "'" + HOSTILE[0] and names[-1] == "Plain 名字"
    assert {dict(zip(header, r))["city"] for r in rows[1:]} == {"'-north"}
    # back in, in another database: the original values
    other = make_cli(f"sqlite:///{tmp_path / 'other.db'}")
    other.run("import", "customers", str(out))
    assert sorted(c.name for c in other.customers()) == sorted(HOSTILE)
    raw = tmp_path / "raw.csv"
    crm_cli.run("export", "customers", "-o", str(raw), "--raw-csv")
    assert [dict(zip(read_csv(raw)[0], r))["name"] for r in read_csv(raw)[1:]] == HOSTILE


def test_export_xlsx_never_writes_a_formula(crm_cli, tmp_path):
    _seed(crm_cli, tmp_path)
    out = tmp_path / "out.xlsx"
    crm_cli.run("export", "customers", "-o", str(out))
    sheet = openpyxl.load_workbook(out).active
    header = [c.value for c in sheet[1]]
    column = header.index("name") + 1
    cells = [sheet.cell(r, column) for r in range(2, sheet.max_row + 1)]
    assert all(c.data_type == "s" for c in cells)
    assert cells[0].value == HOSTILE[0]


def test_reject_file_escapes_text_but_not_numbers(crm_cli, tmp_path):
    file = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "stage"],
        ["D1", "nobody", "=HYPERLINK(1)", "-5.00", "lead"],
    ])
    reject = tmp_path / "rejected.csv"
    crm_cli.run("import", "deals", str(file), "--on-error", "skip", "--reject-file", str(reject))
    row = dict(zip(*read_csv(reject)[:2]))
    assert row["title"] == "'=HYPERLINK(1)" and row["amount"] == "-5.00"
    raw = tmp_path / "rejected-raw.csv"
    crm_cli.run("import", "deals", str(file), "--on-error", "skip", "--reject-file", str(raw), "--raw-csv")
    assert dict(zip(*read_csv(raw)[:2]))["title"] == "=HYPERLINK(1)"


def _result() -> ReportResult:
    return ReportResult(title="t", columns=(Column("owner"), Column("delta", "decimal", currency="CNY")),
                        rows=(("=HYPERLINK(\"http://x\")", Decimal("-5.00")), ("bob", Decimal("3"))),
                        as_of=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_report_csv_escapes_text_not_numbers():
    rows = list(csv.reader(io.StringIO(render_csv(_result()))))
    assert rows[1] == ["'=HYPERLINK(\"http://x\")", "-5.00"]


def test_report_csv_raw_format():
    from crmcore.reports.renderers import CORE_RENDERERS

    raw = next(r for r in CORE_RENDERERS if r.name == "csv-raw")
    rows = list(csv.reader(io.StringIO(raw.render(_result()))))
    assert rows[1] == ["=HYPERLINK(\"http://x\")", "-5.00"]


def test_report_xlsx_never_writes_a_formula():
    from crmcore_reports.xlsx import render_xlsx

    book = openpyxl.load_workbook(io.BytesIO(render_xlsx(_result())))
    cell = book.worksheets[0]["A2"]
    assert cell.data_type == "s" and cell.value == "=HYPERLINK(\"http://x\")"
    assert book.worksheets[0]["B2"].value == -5


def test_segment_export_escapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)
    db = f"sqlite:///{tmp_path / 'seg.db'}"

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--db", db, "--plugins", "segments", *args])
        assert result.exit_code == 0, result.output
        return result.output

    run("db", "upgrade")
    run("customer", "add", "--name", "=1+1", "--email", "a@example.com", "--external-id", "A")
    run("deal", "add", "--customer", "A", "--title", "t", "--amount", "10", "--currency", "CNY", "--stage", "won")
    run("--as-of", "2030-01-01", "segment", "run", "value-tier")
    out = tmp_path / "members.csv"
    run("segment", "export", "value-tier", "--output", str(out))
    assert dict(zip(*read_csv(out)[:2]))["name"] == "'=1+1"
    run("segment", "export", "value-tier", "--output", str(out), "--raw-csv")
    assert dict(zip(*read_csv(out)[:2]))["name"] == "=1+1"
