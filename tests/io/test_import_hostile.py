"""Hostile input inside an import (issue 14, points 2 and 3), on every database.

Each bad value is a one-line rejection naming file, line and column; under
``--on-error skip`` only the bad row is rejected and every valid row lands;
under ``--on-error abort`` nothing is written and nothing raises.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotools import read_csv, write_csv


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rejected(path: Path) -> list[tuple[str, str]]:
    rows = read_csv(path)
    return [(r[0], r[1]) for r in rows[1:]]


def _both_modes(crm_cli, tmp_path: Path, entity: str, file: Path, messages: list[str], landed: set[str],
                *extra: str) -> list[tuple[str, str]]:
    """abort: exit 1, one line per bad row naming file:line and column; skip: every good row lands."""
    service = {"customers": "customers", "deals": "deals"}[entity]
    before = {e.external_id for e in getattr(crm_cli.open(), service).list()}
    result = crm_cli.run("import", entity, str(file), *extra, ok=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for message in messages:
        assert message in result.output, result.output
    assert {e.external_id for e in getattr(crm_cli.open(), service).list()} == before
    reject = tmp_path / f"rejected-{file.stem}.csv"
    result = crm_cli.run("import", entity, str(file), *extra, "--on-error", "skip", "--reject-file", str(reject))
    for message in messages:
        assert message in result.output, result.output
    assert landed <= {e.external_id for e in getattr(crm_cli.open(), service).list()}
    return _rejected(reject)


def test_jsonl_lone_surrogate_deep_nesting_and_huge_integer(crm_cli, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    file = _jsonl(tmp_path / "customers.jsonl", [
        '{"external_id": "C1", "name": "Alice"}',
        '{"external_id": "C2", "name": "bad \\ud800 name"}',
        '{"external_id": "C3", "name": "Bob"}',
        '{"external_id": "C4", "name": "Deep", "attributes": ' + deep + "}",
        '{"external_id": "C5", "name": ' + "9" * 5000 + "}",
        '{"external_id": "C6", "name": "Carol"}',
    ])
    bad = _both_modes(crm_cli, tmp_path, "customers", file, [
        'customers.jsonl:2: column "name": ',
        'customers.jsonl:4: column "attributes": ',
        'customers.jsonl:5: column "name": ',
    ], {"C1", "C3", "C6"})
    assert bad == [("2", "name"), ("4", "attributes"), ("5", "name")]
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C3", "C6"}


def test_jsonl_types_are_types_for_text_fields(crm_cli, tmp_path):
    file = _jsonl(tmp_path / "customers.jsonl", [
        '{"external_id": "C1", "name": "Alice"}',
        '{"external_id": "C2", "name": {"first": "x"}}',
        '{"external_id": "C3", "name": ["a", "b"]}',
        '{"external_id": "C4", "name": true}',
        '{"external_id": "C5", "name": NaN}',
        '{"external_id": "C6", "name": "Dan", "city": Infinity}',
        '{"external_id": "C7", "name": "Eve", "city": 100080}',
    ])
    bad = _both_modes(crm_cli, tmp_path, "customers", file, [
        'customers.jsonl:2: column "name": ', 'customers.jsonl:3: column "name": ',
        'customers.jsonl:4: column "name": ', 'customers.jsonl:5: column "name": ',
        'customers.jsonl:6: column "city": ',
    ], {"C1", "C7"})
    assert bad == [("2", "name"), ("3", "name"), ("4", "name"), ("5", "name"), ("6", "city")]
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert set(stored) == {"C1", "C7"}
    assert stored["C7"].city == "100080"  # a JSON number is fine as text


def test_jsonl_nan_amount_refused(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "c.csv", [["external_id", "name"], ["C1", "A"]])))
    file = _jsonl(tmp_path / "deals.jsonl", [
        '{"external_id": "D1", "customer": "C1", "title": "ok", "amount": 10, "stage": "lead"}',
        '{"external_id": "D2", "customer": "C1", "title": "nan", "amount": NaN, "stage": "lead"}',
    ])
    bad = _both_modes(crm_cli, tmp_path, "deals", file, ['deals.jsonl:2: column "amount": '],
                      {"D1"})
    assert bad == [("2", "amount")]


def test_integers_beyond_64_bits_and_nul_bytes(crm_cli, tmp_path):
    customers = write_csv(tmp_path / "customers.csv", [
        ["external_id", "name", "city"],
        ["C1", "Alice", "Beijing"],
        ["C2", "Nul\x00name", "Shanghai"],
        ["C3", "Bob", "Wu\x00han"],
        ["C4\x00", "Carol", ""],
        ["C5", "Dan", ""],
    ])
    bad = _both_modes(crm_cli, tmp_path, "customers", customers, [
        'customers.csv:3: column "name": ', 'customers.csv:4: column "city": ',
        'customers.csv:5: column "external_id": ',
    ], {"C1", "C5"})
    assert bad == [("3", "name"), ("4", "city"), ("5", "external_id")]

    deals = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "stage"],
        ["D1", "C1", "ok", "10", "lead"],
        ["D2", str(10**30), "huge customer", "10", "lead"],
        ["D3", "C\x001", "nul customer", "10", "lead"],
        ["D4", "C5", "ok too", "10", "lead"],
    ])
    bad = _both_modes(crm_cli, tmp_path, "deals", deals, [
        'deals.csv:3: column "customer": ', 'deals.csv:4: column "customer": ',
    ], {"D1", "D4"})
    assert bad == [("3", "customer"), ("4", "customer")]

    ids = write_csv(tmp_path / "deals-by-id.csv", [
        ["id", "customer_id", "title", "amount", "stage"],
        [str(10**20), "1", "huge id", "10", "lead"],
        ["1", str(10**30), "huge customer id", "10", "lead"],
    ])
    result = crm_cli.run("import", "deals", str(ids), "--key", "id", "--on-error", "skip")
    assert "Traceback" not in result.output
    assert 'deals-by-id.csv:2: column "id": ' in result.output, result.output
    assert 'deals-by-id.csv:3: column "customer_id": ' in result.output, result.output


def test_customer_key_id_beyond_64_bits(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [
        ["id", "name"], [str(10**20), "Huge"], ["7", "Seven"],
    ])
    result = crm_cli.run("import", "customers", str(file), "--key", "id", "--on-error", "skip")
    assert 'customers.csv:2: column "id": ' in result.output, result.output
    assert [c.name for c in crm_cli.customers()] == ["Seven"]


def test_reject_file_keeps_hostile_values_readable(crm_cli, tmp_path):
    file = _jsonl(tmp_path / "customers.jsonl", [
        '{"external_id": "C1", "name": "bad \\ud800"}',
        '{"external_id": "C2", "name": "ok"}',
    ])
    reject = tmp_path / "rejected.jsonl"
    crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(reject))
    rows = [json.loads(line) for line in reject.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["error_line"] == 1 and rows[0]["error_column"] == "name"


@pytest.mark.parametrize("value", ["\x00", "a\x00b"])
def test_nul_in_reference_column_of_contacts(crm_cli, tmp_path, value):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "c.csv", [["external_id", "name"], ["C1", "A"]])))
    file = write_csv(tmp_path / "contacts.csv", [
        ["external_id", "customer", "name"], ["K1", "C1", "ok"], ["K2", value, "bad"],
    ])
    result = crm_cli.run("import", "contacts", str(file), "--on-error", "skip")
    assert 'contacts.csv:3: column "customer": ' in result.output, result.output
    assert [c.external_id for c in crm_cli.open().contacts.list()] == ["K1"]


# -- the reject file (issue 14 point 7, issue 13 point 5) ------------------------------------------

def test_reject_file_never_overwrites_an_input(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [["external_id", "name", "email"], ["C1", "A", "foo@"]])
    original = file.read_bytes()
    mapping = tmp_path / "map.toml"
    mapping.write_text('"external_id" = "external_id"\n', encoding="utf-8")
    for target in (str(file), str(tmp_path / "." / "customers.csv"), str(mapping)):
        result = crm_cli.run("import", "customers", str(file), "--mapping", str(mapping), "--on-error", "skip",
                             "--reject-file", target, ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "--reject-file" in result.output and "input" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert file.read_bytes() == original
    assert mapping.read_text(encoding="utf-8") == '"external_id" = "external_id"\n'
    assert crm_cli.customers() == []


def test_reject_file_never_overwrites_a_linked_input(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [["external_id", "name", "email"], ["C1", "A", "foo@"]])
    link = tmp_path / "link.csv"
    link.symlink_to(file)
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(link), ok=False)
    assert "--reject-file" in result.output
    assert read_csv(file)[1] == ["C1", "A", "foo@"]


def test_reject_file_directory_is_created(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [["external_id", "name", "email"], ["C1", "A", "foo@"],
                                                 ["C2", "B", "b@example.com"]])
    reject = tmp_path / "out" / "nested" / "rejected.csv"
    crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(reject))
    assert _rejected(reject) == [("2", "email")]


def test_reject_file_unwritable_is_one_line(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [["external_id", "name", "email"], ["C1", "A", "foo@"]])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory", encoding="utf-8")
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip",
                         "--reject-file", str(blocker / "rejected.csv"), ok=False)
    assert "Traceback" not in result.output
    assert "reject file" in result.output and len(result.output.strip().splitlines()) == 1, result.output


# -- dry run and --max-errors (issue 13 point 5) ---------------------------------------------------

def test_dry_run_with_rejections_exits_non_zero(crm_cli, tmp_path):
    file = write_csv(tmp_path / "customers.csv", [
        ["external_id", "name", "email"], ["C1", "A", "a@example.com"], ["C2", "B", "foo@"],
        ["C3", "C", "c@example.com"], ["C4", "D", "bar@"],
    ])
    result = crm_cli.run("import", "customers", str(file), "--dry-run", ok=False)
    assert result.exit_code == 1
    assert "2 of 4 rows would be rejected" in result.output, result.output
    assert crm_cli.customers() == []
    good = write_csv(tmp_path / "good.csv", [["external_id", "name"], ["C1", "A"]])
    result = crm_cli.run("import", "customers", str(good), "--dry-run")
    assert "0 of 1 rows would be rejected" not in result.output
    assert crm_cli.customers() == []


def test_max_errors_stops_at_n(crm_cli, tmp_path):
    rows = [["external_id", "name", "email"]]
    rows += [[f"C{i}", "X", "bad@" if i % 2 else f"x{i}@example.com"] for i in range(1, 41)]
    file = write_csv(tmp_path / "customers.csv", rows)
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--max-errors", "3",
                         "--batch-size", "100")
    assert "3 rejected" in result.output and "stopped early" in result.output, result.output
    # rows up to the third bad one (line 6) are read; nothing after it
    assert {c.external_id for c in crm_cli.customers()} == {"C2", "C4"}
    result = crm_cli.run("import", "customers", str(file), "--dry-run", "--max-errors", "3", ok=False)
    assert "3 of 5 rows would be rejected" in result.output, result.output
