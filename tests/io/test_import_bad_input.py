"""Bad input, through the real `crm import` (click's runner), on every database.

Each case: with --on-error abort (the default) nothing is written and the error
names file, line, column and reason; with --on-error skip every valid row lands
and every bad row is in the reject file, with its line, column and reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iotools import read_csv, write_csv

HEADER = ["external_id", "name", "email", "phone", "stage"]
GOOD = [
    ["C1", "张伟", "zhang.wei@example.com", "+86 138 0013 8000", "customer"],
    ["C2", "Ana Núñez 🌮", "ana@example.com", "+34 612 345 678", "lead"],
    ["C3", "Bob", "bob@Example.COM", "", "prospect"],
]


def rejects(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    rows = read_csv(path, encoding)
    header = rows[0]
    assert header[:3] == ["error_line", "error_column", "error_reason"]
    return [dict(zip(header, row)) for row in rows[1:]]


def check_both_modes(crm_cli, tmp_path: Path, file: Path, entity: str, expected_errors: list[str],
                     landed: set[str], extra: tuple[str, ...] = (), encoding: str = "utf-8"
                     ) -> list[dict[str, str]]:
    """abort: exit 1, nothing written, each expected message printed; skip: the good rows land."""
    result = crm_cli.run("import", entity, str(file), *extra, ok=False)
    assert result.exit_code == 1
    for message in expected_errors:
        assert message in result.output, result.output
    assert "nothing written" in result.output
    table = {"customers": "customers", "deals": "deals", "contacts": "contacts", "interactions": "interactions"}[
        entity]
    crm = crm_cli.open()
    service = getattr(crm, table)
    before = {e.external_id for e in service.list()}
    assert not (landed & before), "abort mode wrote rows"

    reject = tmp_path / f"rejected-{file.stem}.csv"
    result = crm_cli.run("import", entity, str(file), *extra, "--on-error", "skip", "--reject-file", str(reject))
    for message in expected_errors:
        assert message in result.output, result.output
    after = {e.external_id for e in service.list()}
    assert landed <= after
    return rejects(reject, encoding)


def test_broken_quote(crm_cli, tmp_path):
    file = tmp_path / "customers.csv"
    file.write_text("external_id,name,email\n"
                    "C1,Alice,alice@example.com\n"
                    'C2,"Bob,bob@example.com\n'
                    "C3,Carol,carol@example.com\n"
                    'C4,"Dan"x,dan@example.com\n'
                    "C5,Eve,eve@example.com\n", encoding="utf-8")
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        'customers.csv:3: column "name": a quoted value is not closed',
        'customers.csv:5: column "name": unexpected \'x\' after the closing quote',
    ], landed={"C1", "C3", "C5"})
    assert [r["error_line"] for r in bad] == ["3", "5"]
    assert bad[0]["error_column"] == "name" and bad[0]["external_id"] == "C2"
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C3", "C5"}


def test_wrong_column_count(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [
        ["external_id", "name", "email"],
        ["C1", "Alice", "alice@example.com"],
        ["C2", "Bob"],
        ["C3", "Carol", "carol@example.com", "surplus"],
        ["C4", "Dan", "dan@example.com"],
    ])
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        'customers.csv:3: column "email": 2 values but the header has 3 columns',
        "customers.csv:4: column \"#4\": 4 values but the header has 3 columns: unexpected value 'surplus'",
    ], landed={"C1", "C4"})
    assert [(r["error_line"], r["error_column"]) for r in bad] == [("3", "email"), ("4", "#4")]
    # the reject file keeps the row as it was, extra value included
    assert read_csv(tmp_path / "rejected-customers.csv")[2][3:] == ["C3", "Carol", "carol@example.com", "surplus"]


def test_invalid_email(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [HEADER, *GOOD, ["C4", "Foo", "foo@", "", "lead"]])
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        "customers.csv:5: column \"email\": 'foo@' is not a valid email address",
    ], landed={"C1", "C2", "C3"})
    assert [(r["error_line"], r["error_column"], r["external_id"]) for r in bad] == [("5", "email", "C4")]
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert stored["C3"].email == "bob@example.com"  # domain normalised
    assert stored["C1"].phone == "+8613800138000"


def test_unknown_stage(crm_cli, tmp_path):
    customers = write_csv(tmp_path / "customers.csv", [HEADER, *GOOD])
    crm_cli.run("import", "customers", str(customers))
    deals = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "currency", "stage"],
        ["D1", "C1", "Renewal", "1200.50", "CNY", "proposal"],
        ["D2", "C2", "Upsell", "99", "EUR", "negotiating"],
        ["D3", "bob@example.com", "Starter", "10", "USD", "won"],
    ])
    bad = check_both_modes(crm_cli, tmp_path, deals, "deals", [
        "deals.csv:3: column \"stage\": 'negotiating' is not a stage of pipeline 'default'",
    ], landed={"D1", "D3"})
    assert [(r["error_line"], r["error_column"]) for r in bad] == [("3", "stage")]


def test_negative_amount(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "customers.csv", [HEADER, *GOOD])))
    deals = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "currency", "stage"],
        ["D1", "C1", "Renewal", "1200.50", "CNY", "proposal"],
        ["D2", "C2", "Refund?", "-5.00", "EUR", "lead"],
        ["D3", "C3", "Yen", "1000", "JPY", "won"],
    ])
    bad = check_both_modes(crm_cli, tmp_path, deals, "deals", [
        'deals.csv:3: column "amount": amount must not be negative, got -5.00',
    ], landed={"D1", "D3"})
    assert [(r["error_line"], r["error_column"]) for r in bad] == [("3", "amount")]


def test_duplicate_external_id_in_the_file(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [HEADER, *GOOD, ["C2", "Ana again", "ana2@example.com", "", "lead"],
                                                  ["C5", "Eve", "eve@example.com", "", "lead"]])
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        "customers.csv:5: column \"external_id\": duplicate external_id 'C2': line 3 of this file has it too",
    ], landed={"C1", "C2", "C3", "C5"})
    assert [(r["error_line"], r["error_column"]) for r in bad] == [("5", "external_id")]
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert stored["C2"].name == "Ana Núñez 🌮"  # the first occurrence wins; the duplicate is rejected


def test_duplicate_external_id_across_batches(crm_cli, tmp_path):
    rows = [HEADER] + [[f"C{i}", f"Name {i}", f"n{i}@example.com", "", "lead"] for i in range(1, 8)]
    rows.append(["C2", "Late duplicate", "late@example.com", "", "lead"])
    file = write_csv(tmp_path / "customers.csv", rows)
    result = crm_cli.run("import", "customers", str(file), "--batch-size", "3", "--on-error", "skip")
    assert "customers.csv:9: column \"external_id\": duplicate external_id 'C2': line 3 of this file has it too" \
        in result.output
    assert len(crm_cli.customers()) == 7


def test_unknown_customer_reference(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "customers.csv", [HEADER, *GOOD])))
    contacts = write_csv(tmp_path / "contacts.csv", [
        ["external_id", "customer", "name", "email"],
        ["K1", "C1", "李娜", "li.na@example.com"],
        ["K2", "C-999", "Ghost", "ghost@example.com"],
        ["K3", "ana@example.com", "Pablo", "pablo@example.com"],
        ["K4", "nobody@example.com", "Nemo", ""],
    ])
    bad = check_both_modes(crm_cli, tmp_path, contacts, "contacts", [
        "contacts.csv:3: column \"customer\": no customer has the external id, email or id 'C-999'",
        "contacts.csv:5: column \"customer\": no customer has the external id, email or id 'nobody@example.com'",
    ], landed={"K1", "K3"})
    assert [(r["error_line"], r["error_column"]) for r in bad] == [("3", "customer"), ("5", "customer")]
    crm = crm_cli.open()
    by_ext = {c.external_id: c for c in crm.customers.list()}
    contacts_by_ext = {c.external_id: c for c in crm.contacts.list()}
    assert contacts_by_ext["K3"].customer_id == by_ext["C2"].id


def test_empty_file(crm_cli, tmp_path):
    file = tmp_path / "customers.csv"
    file.write_bytes(b"")
    result = crm_cli.run("import", "customers", str(file), ok=False)
    assert result.exit_code == 1
    assert "customers.csv:1: the file is empty (expected a header line naming the columns)" in result.output
    assert "Traceback" not in result.output
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", ok=False)
    assert "the file is empty" in result.output


def test_header_only_file_imports_nothing(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [HEADER])
    result = crm_cli.run("import", "customers", str(file))
    assert "0 customer rows: 0 inserted" in result.output


def test_gb18030_file(crm_cli, tmp_path):
    rows = [HEADER, ["C1", "张伟", "zhang.wei@example.com", "+86 138 0013 8000", "customer"],
            ["C2", "欧阳娜娜", "nana@example.com", "", "lead"], ["C3", "王芳", "bad@", "", "lead"]]
    file = write_csv(tmp_path / "customers.csv", rows, encoding="gb18030")
    # Read as UTF-8 it is an error naming the line and column, not mojibake in the database.
    result = crm_cli.run("import", "customers", str(file), ok=False)
    assert 'customers.csv:2: column "name": byte' in result.output
    assert "try --encoding gb18030" in result.output
    assert crm_cli.customers() == []
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        "customers.csv:4: column \"email\": 'bad@' is not a valid email address",
    ], landed={"C1", "C2"}, extra=("--encoding", "gb18030"), encoding="gb18030")
    assert [r["name"] for r in bad] == ["王芳"]
    assert {c.name for c in crm_cli.customers()} == {"张伟", "欧阳娜娜"}
    # the reject file is written in the input's encoding
    assert "王芳" in (tmp_path / "rejected-customers.csv").read_bytes().decode("gb18030")


def test_utf8_bom_file(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [HEADER, *GOOD, ["C4", "", "x@example.com", "", "lead"]],
                     encoding="utf-8-sig")
    assert file.read_bytes().startswith(b"\xef\xbb\xbf")
    bad = check_both_modes(crm_cli, tmp_path, file, "customers", [
        'customers.csv:5: column "name": is required',
    ], landed={"C1", "C2", "C3"})
    assert len(bad) == 1
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C2", "C3"}


def test_every_bad_row_reported_with_many_problems(crm_cli, tmp_path):
    """A mixed file: every bad row is reported (not just the first) and the rest land."""
    file = write_csv(tmp_path / "customers.csv", [
        HEADER, *GOOD,
        ["C4", "Phone", "p@example.com", "12", "lead"],
        ["C5", "Stage", "s@example.com", "", "vip"],
        ["C6", "Both", "both@", "x", "lead"],
    ])
    reject = tmp_path / "rejects.csv"
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(reject))
    assert "3 inserted" in result.output and "3 rejected" in result.output
    bad = rejects(reject)
    assert [r["error_line"] for r in bad] == ["5", "6", "7"]
    assert bad[1]["error_column"] == "stage" and "'vip' is not one of: lead, prospect, customer, former" in \
        bad[1]["error_reason"]
    assert bad[2]["error_column"] == "email; phone"


@pytest.mark.parametrize("mode", ["abort", "skip"])
def test_fixed_reject_file_imports_as_is(crm_cli, tmp_path, mode):
    file = write_csv(tmp_path / "customers.csv", [HEADER, *GOOD, ["C4", "Foo", "foo@", "", "lead"]])
    reject = tmp_path / "rejects.csv"
    crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(reject))
    rows = read_csv(reject)
    rows[1][rows[0].index("email")] = "foo@example.com"
    write_csv(reject, rows)
    crm_cli.run("import", "customers", str(reject), "--on-error", mode)
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C2", "C3", "C4"}
