"""`crm export`: formats, the filters and sort of `list`, output targets, and
memory that stays flat as the data grows (import and export)."""

from __future__ import annotations

import json
import tracemalloc

import openpyxl
from iotools import read_csv, write_csv

from crmcore import CRM
from crmcore.config import Config
from crmcore.io import ImportOptions, export_entities, import_file

HEADER = ["external_id", "name", "email", "stage", "tags", "attributes.tier"]
ROWS = [
    ["C1", "张伟", "zhang@example.com", "customer", "vip", "gold"],
    ["C2", "=HYPERLINK(\"x\")", "eq@example.com", "lead", "", "silver"],
    ["C3", "Ana 🌮", "ana@example.com", "customer", "a,b", "gold"],
]


def seeded(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "in.csv", [HEADER, *ROWS])))
    deals = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "currency", "stage"],
        ["D1", "C1", "small", "10.50", "CNY", "won"],
        ["D2", "C3", "big", "9000", "CNY", "won"],
        ["D3", "C3", "open", "5", "CNY", "lead"],
    ])
    crm_cli.run("import", "deals", str(deals))


def test_filters_sort_and_limit_like_list(crm_cli, tmp_path):
    seeded(crm_cli, tmp_path)
    out = tmp_path / "won.csv"
    result = crm_cli.run("export", "deals", "--where", "stage=won", "--sort", "-amount", "-o", str(out))
    assert "exported 2 deals" in result.output
    rows = read_csv(out)
    assert rows[0][:4] == ["id", "external_id", "customer", "customer_id"]
    assert [(r[1], r[2], r[rows[0].index("amount")]) for r in rows[1:]] == [("D2", "C3", "9000.00"),
                                                                           ("D1", "C1", "10.50")]
    result = crm_cli.run("export", "customers", "--where", "attributes.tier=gold", "--where", "name~张",
                         "--limit", "5")
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and ",C1,张伟," in lines[1]
    result = crm_cli.run("export", "customers", "--sort", "nonsense", ok=False)
    assert "customers have no column 'nonsense'" in result.output


def test_json_flag_writes_json_lines_to_stdout(crm_cli, tmp_path):
    seeded(crm_cli, tmp_path)
    result = crm_cli.run("--json", "export", "customers", "--where", "external_id=C3")
    [record] = [json.loads(line) for line in result.output.splitlines()]
    assert record["name"] == "Ana 🌮" and record["tags"] == ["a", "b"] and record["attributes"] == {"tier": "gold"}
    assert record["created_at"].endswith("+00:00")


def test_xlsx_keeps_text_as_text(crm_cli, tmp_path):
    seeded(crm_cli, tmp_path)
    result = crm_cli.run("export", "customers", "--format", "xlsx", ok=False)
    assert "XLSX needs an output file" in result.output
    out = tmp_path / "c.xlsx"
    crm_cli.run("export", "customers", "-o", str(out))
    sheet = openpyxl.load_workbook(out, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    names = [r[rows[0].index("name")] for r in rows[1:]]
    assert names == ["张伟", '=HYPERLINK("x")', "Ana 🌮"]  # a leading "=" is text, not a formula
    deals = tmp_path / "d.xlsx"
    crm_cli.run("export", "deals", "-o", str(deals))
    sheet = openpyxl.load_workbook(deals, read_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    assert [r[rows[0].index("amount")] for r in rows[1:]] == [10.5, 9000, 5]  # numbers a spreadsheet can sum


def test_gb18030_export_imports_back(crm_cli, tmp_path, sqlite_cli):
    seeded(crm_cli, tmp_path)
    out = tmp_path / "gb.csv"
    crm_cli.run("export", "customers", "-o", str(out), "--encoding", "gb18030", "--delimiter", ";")
    assert "张伟".encode("gb18030") in out.read_bytes()
    sqlite_cli.run("import", "customers", str(out), "--encoding", "gb18030")
    assert sorted(c.name for c in sqlite_cli.customers()) == sorted(r[1] for r in ROWS)


def _peak(function) -> int:
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_files_grow(tmp_path):
    """Peak Python memory for 8,000 rows is close to that for 2,000: nothing grows with the file."""
    peaks = {}
    for rows in (2_000, 8_000):
        file = write_csv(tmp_path / f"c{rows}.csv", [HEADER] + [
            [f"C{i}", f"客户 {i}", f"user{i}@example.com", "lead", "vip", "gold"] for i in range(rows)])
        crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{tmp_path / f'm{rows}.db'}",
                                                   "plugins": []}))
        try:
            options = ImportOptions(workers=0, batch_size=500)
            imported = _peak(lambda: import_file(crm, "customers", file, options))
            exported = _peak(lambda: export_entities(crm, "customers", tmp_path / f"out{rows}.csv"))
        finally:
            crm.close()
        peaks[rows] = (imported, exported)
    (small_in, small_out), (big_in, big_out) = peaks[2_000], peaks[8_000]
    assert big_in < 1.5 * small_in, peaks
    assert big_out < 1.5 * small_out, peaks
