"""Files for Excel: CSV exports and reject files with a UTF-8 byte order mark (--excel, or
excel_csv in crm.toml), and XLSX exports that look like the report workbooks (bold frozen
header, widths, real dates and times, money formats); on every database."""

from __future__ import annotations

import codecs
from datetime import datetime

import openpyxl
import pytest
from iotools import write_csv

from crmcore.config import Config
from crmcore.domain.errors import ConfigError

BOM = codecs.BOM_UTF8


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "conf" / "crm.toml"  # not the working directory's crm.toml, which every run reads
    path.parent.mkdir()
    path.write_text('timezone = "Asia/Shanghai"\nexcel_csv = true\n', encoding="utf-8")
    return path


@pytest.fixture
def seeded(crm_cli, tmp_path):
    customers = write_csv(tmp_path / "c.csv", [["external_id", "name", "email"],
                                               ["C1", "张伟", "zw@example.com"], ["C2", "Ana", ""]])
    crm_cli.run("import", "customers", str(customers))
    deals = write_csv(tmp_path / "d.csv", [
        ["external_id", "customer", "title", "amount", "currency", "stage", "closed_at"],
        ["D1", "C1", "年度合同", "12000.50", "CNY", "won", "2024-01-02T00:00:00Z"],
        ["D2", "C2", "Yen", "5000", "JPY", "won", "2024-01-03T12:00:00.123456Z"],
    ])
    crm_cli.run("import", "deals", str(deals))
    return crm_cli


def test_excel_csv_has_a_byte_order_mark_and_imports_back(seeded, tmp_path, sqlite_cli):
    out = tmp_path / "excel.csv"
    seeded.run("export", "customers", "--excel", "-o", str(out))
    data = out.read_bytes()
    assert data.startswith(BOM) and "张伟".encode() in data and data.count(BOM) == 1
    sqlite_cli.run("import", "customers", str(out))
    assert sorted(c.name for c in sqlite_cli.customers()) == ["Ana", "张伟"]
    plain = tmp_path / "plain.csv"
    seeded.run("export", "customers", "-o", str(plain))
    assert not plain.read_bytes().startswith(BOM)  # the default without configuration: no BOM
    result = seeded.run("export", "customers", "--excel", "--encoding", "gb18030", "-o", str(plain), ok=False)
    assert result.exit_code == 1 and "--excel writes UTF-8 with a byte order mark" in result.output
    assert "Traceback" not in result.output


def test_configured_default_and_overrides(seeded, make_cli, crm_db_url, config, tmp_path):
    cli = make_cli(crm_db_url, config)
    out = tmp_path / "x.csv"
    cli.run("export", "customers", "-o", str(out))
    assert out.read_bytes().startswith(BOM)
    cli.run("export", "customers", "--no-excel", "-o", str(out))
    assert not out.read_bytes().startswith(BOM)
    cli.run("export", "customers", "--encoding", "gb18030", "-o", str(out))  # an explicit encoding wins
    assert not out.read_bytes().startswith(BOM) and "张伟".encode("gb18030") in out.read_bytes()
    jsonl = tmp_path / "x.jsonl"
    cli.run("export", "customers", "-o", str(jsonl))
    assert not jsonl.read_bytes().startswith(BOM)  # a BOM belongs in CSV only


def test_reject_files_for_excel(crm_cli, make_cli, crm_db_url, config, tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [["external_id", "name", "email"], ["C1", "张伟", "not an email"],
                                           ["C2", "Ana", "ana@example.com"]])
    rejects = tmp_path / "rejects.csv"
    crm_cli.run("import", "customers", str(bad), "--on-error", "skip", "--reject-file", str(rejects), "--excel")
    assert rejects.read_bytes().startswith(BOM) and "张伟".encode() in rejects.read_bytes()
    crm_cli.run("import", "customers", str(bad), "--on-error", "skip", "--reject-file", str(rejects))
    assert not rejects.read_bytes().startswith(BOM)
    configured = make_cli(crm_db_url, config)
    configured.run("import", "customers", str(bad), "--on-error", "skip", "--reject-file", str(rejects))
    assert rejects.read_bytes().startswith(BOM)
    # Corrected, the reject file imports back as it is.
    rejects.write_bytes(rejects.read_bytes().replace(b"not an email", b"zw@example.com"))
    result = configured.run("import", "customers", str(rejects))
    assert "1 updated" in result.output or "1 inserted" in result.output


def test_xlsx_export_looks_like_the_report_workbooks(seeded, make_cli, crm_db_url, config, tmp_path):
    cli = make_cli(crm_db_url, config)
    out = tmp_path / "deals.xlsx"
    cli.run("export", "deals", "-o", str(out))
    sheet = openpyxl.load_workbook(out).worksheets[0]
    header = [c.value for c in sheet[1]]
    assert all(c.font.bold for c in sheet[1]) and sheet.freeze_panes == "A2"
    column = {name: i + 1 for i, name in enumerate(header)}
    letter = sheet.cell(1, column["closed_at"]).column_letter
    assert sheet.column_dimensions[letter].width == 20
    d1, d2 = sheet[2], sheet[3]
    amount, closed = column["amount"] - 1, column["closed_at"] - 1
    assert (d1[amount].value, d1[amount].number_format) == (12000.5, "#,##0.00")
    assert (d2[amount].value, d2[amount].number_format) == (5000, "#,##0")  # JPY has no minor unit
    # A time is a date-time cell in the configured timezone (Shanghai, UTC+8) ...
    assert d1[closed].value == datetime(2024, 1, 2, 8, 0)
    assert d1[closed].number_format == "yyyy-mm-dd hh:mm:ss"
    # ... unless a spreadsheet would lose its microseconds: then exact ISO text.
    assert d2[closed].value == "2024-01-03T12:00:00.123456+00:00"
    # It imports back to the same instants in another CRM with the same timezone.
    other = make_cli(f"sqlite:///{tmp_path / 'other.db'}", config)
    other.run("import", "customers", str(tmp_path / "c.csv"))
    other.run("import", "deals", str(out))
    assert {d.external_id: d.closed_at for d in other.open().deals.list()} == {
        d.external_id: d.closed_at for d in cli.open().deals.list()}


def test_excel_csv_must_be_a_boolean():
    assert Config.from_mapping({}).excel_csv is False
    with pytest.raises(ConfigError, match="excel_csv must be true or false, got 'yes'"):
        Config.from_mapping({"excel_csv": "yes"})
