"""The streaming readers (CSV, JSON Lines, XLSX) and the column mapping, without a database.

Property tests (hypothesis): whatever csv.writer writes -- any text, quotes,
delimiters, new lines, CJK, emoji, in UTF-8, UTF-8 with BOM or GB18030 -- the
CSV reader reads back exactly, with the line each record starts on, and a
damaged line never swallows the good lines after it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from decimal import Decimal

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmcore.io.mapping import (
    ATTRIBUTE,
    FIELD,
    IGNORE,
    REFERENCE,
    ColumnMapping,
    MappingError,
    Target,
    load_mapping_file,
    normalize_name,
    parse_map_options,
)
from crmcore.domain.spreadsheet import escape_formula
from crmcore.io.readers import RecordError, SourceError, locate_quote_error, open_reader, read_all

CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
NAMES = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


@st.composite
def tables(draw):
    header = draw(st.lists(NAMES, min_size=2, max_size=5, unique=True))
    rows = draw(st.lists(st.lists(CELL, min_size=len(header), max_size=len(header)), max_size=8))
    rows = [r for r in rows if any(c.strip() for c in r)]  # all-blank rows are skipped by design
    return header, rows


def written(header, rows, delimiter, encoding, terminator):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=terminator)
    writer.writerow(header)
    starts = []
    for row in rows:
        starts.append(buffer.getvalue().count("\n") + 1)
        writer.writerow(row)
    return buffer.getvalue().encode(encoding), starts


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables(), st.sampled_from([",", ";", "\t", "|"]), st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
       st.sampled_from(["\n", "\r\n"]))
def test_csv_reads_back_what_csv_writer_wrote(tmp_path, table, delimiter, encoding, terminator):
    header, rows = table
    if terminator == "\n":  # csv.writer quotes a lone "\r" only when it ends lines with "\r\n"
        rows = [[c.replace("\r", "") for c in row] for row in rows]
        rows = [r for r in rows if any(c.strip() for c in r)]
    data, starts = written(header, rows, delimiter, encoding, terminator)
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    # raw_csv: this is about CSV parsing; undoing an export's formula quote ('=x -> =x) is tested below
    with open_reader(path, encoding=None if encoding != "gb18030" else "gb18030", raw_csv=True) as reader:
        assert reader.columns == header
        assert reader.delimiter == delimiter
        records = list(reader.records())
    assert [r.problem for r in records] == [None] * len(rows)
    assert [r.values for r in records] == rows
    assert [r.line for r in records] == starts


def test_csv_reader_undoes_the_export_formula_quote_unless_raw(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("name,note\n'=SUM(A1),'@x\n'plain,-5\n", encoding="utf-8")
    with open_reader(path) as reader:
        assert [r.values for r in reader.records()] == [["=SUM(A1)", "@x"], ["'plain", "-5"]]
    with open_reader(path, raw_csv=True) as reader:
        assert [r.values for r in reader.records()] == [["'=SUM(A1)", "'@x"], ["'plain", "-5"]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables(), st.integers(min_value=0, max_value=7), st.sampled_from(['"x', 'x"y', '"a"b']))
def test_a_broken_line_does_not_swallow_the_lines_after_it(tmp_path, table, where, damage):
    """Damage one record's first field; every other single-line record still reads back."""
    header, rows = table
    rows = [[c.replace("\n", " ").replace("\r", " ").replace('"', "") for c in r] for r in rows]
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return
    where = where % len(rows)
    # Cells written as crm export writes them (a formula-like cell gets its protective quote, which the
    # reader takes off again): a bare "'@" would read back as "@" by design.
    lines = [",".join(header)] + [",".join(csv_field(escape_formula(c)) for c in row) for row in rows]
    lines[where + 1] = damage + "," + lines[where + 1]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open_reader(path, delimiter=",") as reader:
        records = list(reader.records())
    expected = [(i + 2, row) for i, row in enumerate(rows) if i != where]
    assert [(r.line, r.values) for r in records if r.line != where + 2] == expected
    # The damaged line itself is reported -- unless the damage happens to be valid CSV.
    assert [r.line for r in records if r.problem is not None] in ([where + 2], [])


def csv_field(value: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([value])
    return buffer.getvalue()


@given(st.lists(CELL.filter(lambda c: "\n" not in c and "\r" not in c), min_size=1, max_size=6))
def test_locate_quote_error_finds_nothing_in_a_well_formed_line(fields):
    assert locate_quote_error(csv_field_line(fields), ",") == (None, None)


def csv_field_line(fields):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


@given(st.lists(st.from_regex(r"[a-z ]{0,5}", fullmatch=True), min_size=1, max_size=6), st.data())
def test_locate_quote_error_points_at_the_unclosed_field(fields, data):
    index = data.draw(st.integers(min_value=0, max_value=len(fields) - 1))
    cells = [f'"{f}"' for f in fields]
    cells[index] = '"' + fields[index]  # opened, never closed
    assert locate_quote_error(",".join(cells), ",")[0] == index


def test_csv_problems_name_line_and_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("a,b,c\n1,2,3\n1,2\n1,2,3,4\n\n,,\n\"x\ny\",2,3\n".encode())
    with open_reader(path) as reader:
        records = list(reader.records())
    assert [(r.line, r.problem) for r in records] == [
        (2, None),
        (3, ("c", "2 values but the header has 3 columns: no value for this column or the ones after it")),
        (4, ("#4", "4 values but the header has 3 columns: unexpected value '4'")),
        (7, None),
    ]
    assert records[-1].values == ["x\ny", "2", "3"]
    with open_reader(path) as reader, pytest.raises(RecordError, match=r"c.csv:3: column \"c\": 2 values"):
        list(reader)


def test_decode_errors_are_per_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"name,city\nok,x\n\xd5\xc5,y\nfine,z\n")
    with open_reader(path) as reader:
        records = list(reader.records())
    assert records[0].problem is None and records[2].problem is None
    assert records[1].line == 3 and records[1].problem[0] == "name"
    assert "byte d5 at position 1 is not valid utf-8" in records[1].problem[1]


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\n\n  \n", "the file is empty"),
    (b"\xef\xbb\xbf", "the file is empty"),
    (b"a,b,a\n1,2,3\n", 'c.csv:1: column "a" appears twice in the header (columns 1 and 3)'),
])
def test_whole_file_problems(tmp_path, content, message):
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=re.escape(message)):
        open_reader(path)


def test_excel_sep_hint_and_bom(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffsep=;\nname;email\n张伟;z@example.com\n".encode())
    assert read_all(path) == [(3, {"name": "张伟", "email": "z@example.com"})]


def test_unsupported_encoding(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a\n1\n")
    with pytest.raises(SourceError, match="unknown encoding 'klingon'"):
        open_reader(path, encoding="klingon")


def test_jsonl(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"a": 1.10, "b": "x"}\n\n{"a": \n[1]\n', encoding="utf-8")
    with open_reader(path) as reader:
        records = list(reader.records())
    assert records[0] == (1, {"a": Decimal("1.10"), "b": "x"}, None)
    assert records[1].line == 3 and "not valid JSON" in records[1].problem[1]
    assert records[2].problem == (None, "expected a JSON object, got list")


def test_xlsx(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["name", "amount", "when", "flag", None])
    sheet.append(["张伟", 12000.5, datetime(2026, 1, 2, 3, 4, 5), True, None])
    sheet.append([None, None, None, None, None])
    sheet.append(["x", 3, None, False, "stray"])
    path = tmp_path / "b.xlsx"
    book.save(path)
    with open_reader(path) as reader:
        assert reader.columns == ["name", "amount", "when", "flag"]
        records = list(reader.records())
    assert records[0] == (2, ["张伟", Decimal("12000.5"), datetime(2026, 1, 2, 3, 4, 5), True], None)
    assert records[1].line == 4 and records[1].problem == ("#5", "a value 'stray' in a column without a header")
    empty = tmp_path / "e.xlsx"
    openpyxl.Workbook().save(empty)
    with pytest.raises(SourceError, match="the sheet is empty"):
        open_reader(empty)
    bogus = tmp_path / "bogus.xlsx"
    bogus.write_text("not a zip")
    with pytest.raises(SourceError, match="not a readable XLSX workbook"):
        open_reader(bogus)


# -- mapping --------------------------------------------------------------------

@given(st.text(max_size=30))
def test_normalize_name_is_idempotent(name):
    assert normalize_name(normalize_name(name)) == normalize_name(name)


@given(st.dictionaries(st.text(min_size=1, max_size=15).filter(lambda c: c.strip() == c and c),
                       st.sampled_from(["name", "email", "", "attributes.x", "customer"]), max_size=6))
def test_parse_map_options_round_trips(mapping):
    assert parse_map_options([f"{c}={f}" for c, f in mapping.items()]) == mapping


def test_mapping_targets():
    from crmcore.domain.customfields import CustomField

    mapping = ColumnMapping("interaction", {"Who": "customer", "Skip": ""},
                            {"score": CustomField("interaction", "score", "int")})
    assert mapping.target("Who") == Target(REFERENCE, "customer")
    assert mapping.target("Skip") == Target(IGNORE)
    assert mapping.target("Occurred At") == Target(FIELD, "occurred_at")
    assert mapping.target("Score") == Target(ATTRIBUTE, "score")
    assert mapping.target("attributes.Anything Else") == Target(ATTRIBUTE, "Anything Else")
    assert mapping.target("contact") == Target(REFERENCE, "contact")
    assert mapping.target("error_reason") == Target(IGNORE)
    assert mapping.target("mystery") is None
    with pytest.raises(MappingError, match="interaction has no field 'nope'"):
        ColumnMapping("interaction", {"x": "nope"})


def test_mapping_files(tmp_path):
    toml = tmp_path / "m.toml"
    toml.write_text('[columns]\n"邮箱" = "email"\nNotes = ""\n', encoding="utf-8")
    assert load_mapping_file(toml) == {"邮箱": "email", "Notes": ""}
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"a": 1}))
    with pytest.raises(MappingError, match="column 'a' must map to a field name"):
        load_mapping_file(bad)
    with pytest.raises(MappingError, match="cannot read mapping file"):
        load_mapping_file(tmp_path / "missing.toml")
