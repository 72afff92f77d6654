"""`crm import` options and semantics: mapping, upsert keys, dry run, formats, links,
batch events and plugin hooks, parallel validation; click's runner and a real
subprocess, on every database."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from iotools import read_csv, write_csv

from crmcore import CRM, LoyaltyScheme, hookimpl
from crmcore.config import Config
from crmcore.domain.convert import unstructure
from crmcore.io import ImportFailed, ImportOptions, import_file
from crmcore.testing import FIXED_NOW

HEADER = ["external_id", "name", "email", "phone", "stage", "tags"]


def customers_file(tmp_path: Path, rows: list[list[str]] | None = None, name: str = "customers.csv") -> Path:
    return write_csv(tmp_path / name, [HEADER, *(rows or [
        ["C1", "张伟", "zhang.wei@example.com", "+86 138 0013 8000", "customer", "vip,b2b"],
        ["C2", "Ana", "ana@example.com", "", "lead", ""],
    ])])


def test_map_options_and_mapping_file(crm_cli, tmp_path):
    file = write_csv(tmp_path / "leads.csv", [
        ["客户编号", "姓名", "E-mail", "Mobile", "Level", "Notes"],
        ["L1", "王芳", "wang.fang@example.com", "+86 139 1234 5678", "gold", "ignore me"],
    ])
    result = crm_cli.run("import", "customers", str(file), ok=False)
    assert 'leads.csv:1: column "客户编号" matches no customer field' in result.output
    assert '--map "客户编号=FIELD"' in result.output
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('"客户编号" = "external_id"\n"姓名" = "name"\nMobile = "phone"\n', encoding="utf-8")
    crm_cli.run("import", "customers", str(file), "--mapping", str(mapping), "--map", "E-mail=email",
                "--map", "Level=attributes.level", "--map", "Notes=")
    [customer] = crm_cli.customers()
    assert (customer.external_id, customer.name, customer.email, customer.phone) == (
        "L1", "王芳", "wang.fang@example.com", "+8613912345678")
    assert customer.attributes == {"level": "gold"}


def test_mapping_json_file_and_errors(crm_cli, tmp_path):
    file = write_csv(tmp_path / "c.csv", [["id_ext", "full name", "junk"], ["X1", "Eve", "zzz"]])
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"columns": {"id_ext": "external_id", "full name": "name", "junk": None}}))
    crm_cli.run("import", "customers", str(file), "--mapping", str(mapping))
    assert [c.external_id for c in crm_cli.customers()] == ["X1"]
    result = crm_cli.run("import", "customers", str(file), "--map", "id_ext=nonsense", ok=False)
    assert "--map id_ext=nonsense: customer has no field 'nonsense'" in result.output
    result = crm_cli.run("import", "customers", str(file), "--map", "missing=name", ok=False)
    assert "--map names column(s) not in the file: 'missing'" in result.output
    result = crm_cli.run("import", "customers", str(file), "--map", "junk=name", "--map", "id_ext=external_id",
                         "--map", "full name=name", ok=False)
    assert 'columns "full name" and "junk" both map to field \'name\'' in result.output, result.output
    crm_cli.run("import", "customers", str(file), "--map", "id_ext=external_id", "--map", "full name=name",
                "--ignore-unknown")


def test_required_column_missing_is_an_upfront_error(crm_cli, tmp_path):
    file = write_csv(tmp_path / "deals.csv", [["title", "amount"], ["X", "1"]])
    result = crm_cli.run("import", "deals", str(file), ok=False)
    assert "deals.csv:1: no column for required field(s) customer (external id, email or id), stage" in \
        result.output


def test_upsert_by_external_id_updates_given_fields_only(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path)))
    changes = write_csv(tmp_path / "changes.csv", [
        ["external_id", "phone", "stage", "city"],
        ["C1", "", "former", "上海"],        # blank phone keeps the stored one
        ["C3", "", "", ""],                   # new row without a name: rejected
    ])
    result = crm_cli.run("import", "customers", str(changes), "--on-error", "skip")
    assert "0 inserted, 1 updated, 1 rejected" in result.output
    assert 'changes.csv:3: column "name": is required' in result.output
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert stored["C1"].stage.value == "former" and stored["C1"].city == "上海"
    assert stored["C1"].phone == "+8613800138000" and stored["C1"].tags == ("vip", "b2b")
    assert stored["C1"].updated_at > stored["C1"].created_at or stored["C1"].updated_at >= stored["C1"].created_at


def test_upsert_by_email(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path)))
    file = write_csv(tmp_path / "by_email.csv", [
        ["email", "name", "city"],
        ["ANA@Example.com", "Ana María", "Madrid"],
        ["new@example.com", "Newbie", ""],
        ["ana@example.com", "Ana again", ""],
    ])
    result = crm_cli.run("import", "customers", str(file), "--key", "email", "--on-error", "skip")
    assert "1 inserted, 1 updated" in result.output
    assert "by_email.csv:4: column \"email\": duplicate email 'ana@example.com': line 2 of this file has it too" \
        in result.output, result.output
    by_email = {c.email.lower(): c for c in crm_cli.customers()}
    assert by_email["ana@example.com"].name == "Ana María" and by_email["ana@example.com"].external_id == "C2"
    result = crm_cli.run("import", "deals", str(file), "--key", "email", ok=None)
    assert result.exit_code == 1 and "deals can be matched by external_id, id" in result.output


def test_dry_run_writes_nothing(crm_cli, tmp_path):
    file = customers_file(tmp_path, [["C1", "A", "a@example.com", "", "lead", ""],
                                     ["C2", "B", "bad@", "", "lead", ""]])
    result = crm_cli.run("import", "customers", str(file), "--dry-run", ok=False)  # fails as the real run would
    assert "dry run, nothing written; would have: 1 inserted, 0 updated, 1 rejected" in result.output
    assert "1 of 2 rows would be rejected" in result.output
    assert "customers.csv:3: column \"email\"" in result.output
    assert crm_cli.customers() == []
    result = crm_cli.run("import", "customers", str(file), "--dry-run", "--on-error", "skip")  # as the real run
    assert "1 of 2 rows would be rejected" in result.output
    report = json.loads(crm_cli.run("--json", "import", "customers", str(file), "--dry-run", ok=False).stdout)
    assert report["inserted"] == 1 and report["rejected"] == 1 and report["committed"] is False
    assert report["errors"][0]["line"] == 3 and report["errors"][0]["column"] == "email"


def test_links_by_external_id_email_and_id(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path)))
    customers = {c.external_id: c for c in crm_cli.customers()}
    contacts = write_csv(tmp_path / "contacts.csv", [
        ["external_id", "customer", "name", "email", "is_primary"],
        ["K1", "C1", "李娜", "li.na@example.com", "yes"],
        ["K2", "Ana@EXAMPLE.com", "Pablo", "pablo@example.com", "false"],
        ["K3", str(customers["C1"].id), "By id", "", ""],
    ])
    crm_cli.run("import", "contacts", str(contacts))
    interactions = write_csv(tmp_path / "interactions.csv", [
        ["external_id", "customer", "contact", "kind", "occurred_at", "satisfaction"],
        ["I1", "C1", "K1", "call", "2026-01-02T03:04:05+08:00", "5"],
        ["I2", "C2", "li.na@example.com", "email", "2026-01-02", ""],   # K1 belongs to C1, not C2
        ["I3", "C2", "", "visit", "2026-01-03 10:00", "6"],
    ])
    result = crm_cli.run("import", "interactions", str(interactions), "--on-error", "skip")
    assert ("interactions.csv:3: column \"contact\": contact " in result.output
            and f"belongs to customer {customers['C1'].id}, not to customer {customers['C2'].id}" in result.output)
    assert 'interactions.csv:4: column "satisfaction": must be 1-5, got 6' in result.output
    crm = crm_cli.open()
    [i1] = crm.interactions.list()
    assert i1.customer_id == customers["C1"].id and i1.contact_id == {c.external_id: c for c in
                                                                      crm.contacts.list()}["K1"].id
    assert i1.occurred_at.isoformat() == "2026-01-01T19:04:05+00:00"
    assert {c.external_id: c.customer_id for c in crm.contacts.list()} == {
        "K1": customers["C1"].id, "K2": customers["C2"].id, "K3": customers["C1"].id}


def test_ambiguous_email_reference(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path, [
        ["C1", "One", "shared@example.com", "", "lead", ""], ["C2", "Two", "shared@example.com", "", "lead", ""]])),
                "--on-duplicate", "add")
    deals = write_csv(tmp_path / "deals.csv", [["customer", "title", "amount", "stage"],
                                               ["shared@example.com", "X", "1", "lead"]])
    result = crm_cli.run("import", "deals", str(deals), ok=False)
    assert "2 customers have the email 'shared@example.com'" in result.output


def test_jsonl_import_with_nested_values(crm_cli, tmp_path):
    file = tmp_path / "customers.jsonl"
    file.write_text("\n".join([
        json.dumps({"external_id": "J1", "name": "Jay", "tags": ["a,b", "c"], "attributes": {"n": 1.5, "x": [1]},
                    "consent_sms": False}, ensure_ascii=False),
        "",
        '{"external_id": "J2", "name": "Broken",',
        json.dumps({"external_id": "J3", "name": "Kim", "unknown_key": 1}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"external_id": "J4", "name": "李", "email": "li@example.com"}, ensure_ascii=False),
    ]) + "\n", encoding="utf-8")
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip")
    assert "customers.jsonl:3: not valid JSON: Expecting property name enclosed in double quotes" in result.output
    assert 'customers.jsonl:4: column "unknown_key": matches no customer field' in result.output
    assert "customers.jsonl:5: expected a JSON object, got list" in result.output
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert set(stored) == {"J1", "J4"}
    assert stored["J1"].tags == ("a,b", "c") and stored["J1"].attributes == {"n": 1.5, "x": [1]}
    assert stored["J1"].consent_sms is False


def test_jsonl_amounts_are_exact(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path)))
    file = tmp_path / "deals.jsonl"
    file.write_text('{"customer": "C1", "title": "x", "amount": 0.1, "currency": "USD", "stage": "won"}\n'
                    '{"customer": "C1", "title": "y", "amount": "12345678901234.56", "stage": "lead"}\n')
    crm_cli.run("import", "deals", str(file))
    amounts = sorted(d.amount for d in crm_cli.open().deals.list())
    assert amounts == [Decimal("0.10"), Decimal("12345678901234.56")]


def test_xlsx_import_with_typed_cells(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(customers_file(tmp_path)))
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Deals"
    sheet.append(["external_id", "customer", "title", "amount", "currency", "stage", "expected_close",
                  "probability"])
    from datetime import datetime
    sheet.append(["D1", "C1", "数字金额", 12000.5, "CNY", "proposal", datetime(2026, 7, 1), 55])
    sheet.append(["D2", "C1", "text amount", "99.99", "USD", "won", None, None])
    sheet.append([None] * 8)
    sheet.append(["D3", "C9", "unknown customer", 1, "USD", "lead", None, None])
    path = tmp_path / "deals.xlsx"
    book.save(path)
    result = crm_cli.run("import", "deals", str(path), "--on-error", "skip", "--reject-file",
                         str(tmp_path / "r.csv"))
    assert "deals.xlsx:5: column \"customer\": no customer has the external id, email or id 'C9'" in result.output
    deals = {d.external_id: d for d in crm_cli.open().deals.list()}
    assert deals["D1"].amount == Decimal("12000.50") and deals["D1"].probability == 55
    assert str(deals["D1"].expected_close) == "2026-07-01"
    assert deals["D2"].closed_at is not None  # arrived won: closed now
    assert read_csv(tmp_path / "r.csv")[1][:3] == ["5", "customer", "no customer has the external id, email or id "
                                                                     "'C9'"]
    result = crm_cli.run("import", "deals", str(path), "--sheet", "Nope", ok=False)
    assert "no sheet 'Nope' (sheets: Deals)" in result.output


def test_semicolon_delimiter_sniffed_and_stdin(crm_cli, tmp_path):
    text = "external_id;name;email\nS1;Sam;sam@example.com\nS2;\"Sue; Q\";sue@example.com\n"
    result = crm_cli.run("import", "customers", "-", input=text)
    assert "2 inserted" in result.output
    assert {c.name for c in crm_cli.customers()} == {"Sam", "Sue; Q"}


def test_declared_custom_fields_by_bare_column_name(make_cli, crm_db_url, tmp_path):
    config = tmp_path / "crm.toml"
    config.write_text('[[custom_fields]]\nentity = "customer"\nname = "level"\ntype = "int"\nrequired = false\n')
    runner = make_cli(crm_db_url, config)
    file = write_csv(tmp_path / "c.csv", [["name", "Level", "attributes.free"], ["A", "3", "x"], ["B", "high", ""]])
    result = runner.run("import", "customers", str(file), "--on-error", "skip")
    assert "c.csv:3: column \"Level\": expected an integer, got 'high'" in result.output
    [a] = runner.customers()
    assert a.attributes == {"level": 3, "free": "x"}


class Recorder:
    """Batch events and a validate hook, to check the bulk path talks to plugins."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list]] = []
        self.updated: list[str] = []

    @hookimpl
    def on_customers_imported(self, uow, customers):
        assert all(c.id is not None for c in customers)
        self.batches.append(("customers", customers))

    @hookimpl
    def on_deals_imported(self, uow, deals):
        self.batches.append(("deals", deals))

    @hookimpl
    def on_customer_created(self, uow, customer):
        raise AssertionError("imports fire batch events, not per-row ones")

    @hookimpl
    def on_customer_updated(self, uow, customer, previous):
        self.updated.append(customer.external_id)

    @hookimpl
    def validate_customer(self, uow, customer, previous):
        if customer.name == "Forbidden":
            return ("name", "is on the plugin's blocklist")
        return None


class Points(LoyaltyScheme):
    name = "points"
    description = "one point per whole unit of a won deal"

    def points_for_deal(self, uow, deal, options):
        return int(deal.amount)


class Loyalty:
    @hookimpl
    def register_loyalty_schemes(self, register):
        register(Points())


def open_crm(url: str, *plugins) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": []}), extra_plugins=plugins,
                    clock=lambda: FIXED_NOW)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_events_and_validate_hook(crm_db_url, tmp_path, workers):
    recorder = Recorder()
    crm = open_crm(crm_db_url, recorder)
    try:
        rows = [[f"C{i}", f"Name {i}", f"n{i}@example.com", "", "lead", ""] for i in range(7)]
        rows.insert(3, ["CX", "Forbidden", "f@example.com", "", "lead", ""])
        file = customers_file(tmp_path, rows)
        with pytest.raises(ImportFailed) as failed:
            import_file(crm, "customers", file, ImportOptions(batch_size=3, workers=workers))
        assert [e.message("customers.csv") for e in failed.value.report.errors] == [
            "customers.csv:5: column \"name\": is on the plugin's blocklist"]
        assert crm.customers.count() == 0
        recorder.batches.clear()
        report = import_file(crm, "customers", file, ImportOptions(batch_size=3, workers=workers, on_error="skip"))
        assert report.inserted == 7 and report.rejected == 1
        assert [len(b) for kind, b in recorder.batches] == [3, 2, 2]  # one event per batch, ids set
        changed = customers_file(tmp_path, [["C1", "Renamed", "n1@example.com", "", "lead", ""]], "c2.csv")
        import_file(crm, "customers", changed)
        assert recorder.updated == ["C1"]
    finally:
        crm.close()


def test_imported_won_deals_earn_points_and_get_stage_history(crm_db_url, tmp_path):
    crm = open_crm(crm_db_url, Loyalty())
    try:
        import_file(crm, "customers", customers_file(tmp_path))
        deals = write_csv(tmp_path / "deals.csv", [
            ["external_id", "customer", "title", "amount", "currency", "stage"],
            ["D1", "C1", "won at once", "120.50", "CNY", "won"],
            ["D2", "C1", "open", "999", "CNY", "proposal"],
        ])
        import_file(crm, "deals", deals)
        customer = crm.customers.find(external_id="C1")
        assert crm.loyalty.balance(customer.id, "points") == 120
        with crm.unit() as uow:
            d1 = uow.deals.find(external_id="D1")
            assert [h["to_stage"] for h in uow.deals.stage_history(d1.id)] == ["won"]
        # Re-importing the file changes nothing and earns nothing twice; moving D2 to won through the
        # import goes through the deal use case (stage change event, earning).
        import_file(crm, "deals", deals)
        assert crm.loyalty.balance(customer.id, "points") == 120
        moved = write_csv(tmp_path / "moved.csv", [["external_id", "stage"], ["D2", "won"]])
        report = import_file(crm, "deals", moved)
        assert report.updated == 1
        assert crm.loyalty.balance(customer.id, "points") == 120 + 999
        assert crm.deals.find(external_id="D2").closed_at is not None
    finally:
        crm.close()


def test_parallel_workers_store_exactly_what_one_process_stores(make_cli, tmp_path):
    rows = [[f"C{i}", f"名字 {i} 🌟", f"User{i}@Example.COM", f"+86 138 {i:04d} {i:04d}", "lead", "a,b"]
            for i in range(1, 60)]
    rows[10][2] = "broken@"
    rows[20][3] = "+86 1"
    file = customers_file(tmp_path, rows)
    stored = []
    for workers in ("0", "2"):
        runner = make_cli(f"sqlite:///{tmp_path / f'w{workers}.db'}")
        reject = tmp_path / f"rejects{workers}.csv"
        runner.run("import", "customers", str(file), "--workers", workers, "--batch-size", "7",
                   "--on-error", "skip", "--reject-file", str(reject))
        stored.append(([{k: v for k, v in unstructure(c).items() if k not in ("created_at", "updated_at")}
                        for c in runner.customers()], read_csv(reject)))
    assert stored[0] == stored[1]
    assert len(stored[0][0]) == 57 and [r[0] for r in stored[0][1][1:]] == ["12", "22"]


def test_subprocess_import_and_export(crm_cli, tmp_path):
    file = customers_file(tmp_path)
    proc = crm_cli.subprocess("import", "customers", str(file))
    assert "2 inserted" in proc.stdout
    proc = crm_cli.subprocess("export", "customers", "--where", "stage=lead")
    rows = [line for line in proc.stdout.splitlines() if line]
    assert rows[0].startswith("id,external_id,name") and len(rows) == 2 and ",C2,Ana," in rows[1]
    bad = write_csv(tmp_path / "bad.csv", [HEADER, ["C9", "X", "x@", "", "lead", ""]])
    proc = crm_cli.subprocess("import", "customers", str(bad), check=False)
    assert proc.returncode == 1
    assert "bad.csv:2: column \"email\": 'x@' is not a valid email address" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_entity_and_format(crm_cli, tmp_path):
    file = customers_file(tmp_path)
    assert crm_cli.run("import", "widgets", str(file), ok=False).exit_code == 2
    other = tmp_path / "customers.dat"
    other.write_text("x")
    result = crm_cli.run("import", "customers", str(other), ok=False)
    assert "cannot tell the format from the extension '.dat'; give --format csv|jsonl|xlsx" in result.output


class Listener:
    """Listening to batch events turns the SQLite bound-values path off (entities are needed)."""

    @hookimpl
    def on_customers_imported(self, uow, customers):
        pass

    @hookimpl
    def on_contacts_imported(self, uow, contacts):
        pass

    @hookimpl
    def on_interactions_imported(self, uow, interactions):
        pass


def test_sqlite_bound_values_path_stores_what_core_insert_stores(tmp_path):
    """The bulk path binds values with the columns' own processors; a Core insert must store the same bytes."""
    import sqlite3

    customers = write_csv(tmp_path / "c.csv", [
        ["external_id", "name", "email", "phone", "birthday", "consent_sms", "tags", "attributes", "created_at"],
        ["C1", "张伟 🌟", "Z@Example.COM", "+86 138 0013 8000", "1990-01-02", "no", "b,a", '{"k": [1, "二"]}', ""],
        ["C2", "Ana", "", "", "", "yes", '["x,y"]', "", "2020-02-29T23:59:59.999999+05:30"],
    ])
    contacts = write_csv(tmp_path / "k.csv", [["external_id", "customer", "name", "is_primary"],
                                              ["K1", "C1", "李", "true"]])
    interactions = write_csv(tmp_path / "i.csv", [
        ["customer", "contact", "kind", "occurred_at", "follow_up_due", "satisfaction"],
        ["C1", "K1", "call", "2026-01-02T03:04:05.123456+08:00", "2026-02-01", "3"]])
    dumps = []
    for name, plugins in (("bound", ()), ("core", (Listener(),))):
        path = tmp_path / f"{name}.db"
        crm = open_crm(f"sqlite:///{path}", *plugins)
        try:
            for kind, file in (("customers", customers), ("contacts", contacts), ("interactions", interactions)):
                import_file(crm, kind, file)
        finally:
            crm.close()
        with sqlite3.connect(path) as conn:
            dumps.append({t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()
                          for t in ("customers", "contacts", "interactions")})
        # Customers' import_digest is the bound path's bookkeeping (crmcore.io.fingerprint; the core
        # path writes none), not a value of the row: compared without it (it is the last column).
        dumps[-1]["customers"] = [row[:-1] for row in dumps[-1]["customers"]]
    bound, core = dumps
    assert bound == core
    assert len(bound["customers"]) == 2 and len(bound["interactions"]) == 1


def test_max_errors_stops_reading(crm_cli, tmp_path):
    rows = [[f"C{i}", f"N{i}", "bad@" if i % 2 else f"ok{i}@example.com", "", "lead", ""] for i in range(40)]
    file = customers_file(tmp_path, rows)
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--batch-size", "4",
                         "--max-errors", "3")
    assert "stopped early at --max-errors" in result.output
    assert len(crm_cli.customers()) < 20


@pytest.mark.parametrize("suffix", ["jsonl", "xlsx"])
def test_reject_file_formats(crm_cli, tmp_path, suffix):
    file = customers_file(tmp_path, [["C1", "A", "a@example.com", "", "lead", ""], ["C2", "B", "b@", "", "lead", ""]])
    reject = tmp_path / f"rejects.{suffix}"
    crm_cli.run("import", "customers", str(file), "--on-error", "skip", "--reject-file", str(reject))
    if suffix == "jsonl":
        [record] = [json.loads(line) for line in reject.read_text().splitlines()]
    else:
        rows = list(openpyxl.load_workbook(reject, read_only=True).worksheets[0].iter_rows(values_only=True))
        record = dict(zip(rows[0], rows[1]))
    assert record["error_line"] in (3, "3") and record["error_column"] == "email"
    assert record["external_id"] == "C2" and "not a valid email address" in record["error_reason"]


def test_progress_bar_draws_on_a_terminal(monkeypatch):
    from crmcore.cli.transfer import _ProgressBar
    from crmcore.io import ImportProgress

    with _ProgressBar(enabled=True) as bar:
        bar.update(ImportProgress(rows=10, bytes_read=100, total_bytes=1000))
        assert bar.progress.tasks[0].completed == 100 and bar.progress.tasks[0].fields["rows"] == 10
    assert bar.progress is None
    with _ProgressBar(enabled=False) as quiet:
        quiet.update(ImportProgress(rows=1, bytes_read=1, total_bytes=None))
        assert quiet.progress is None


@pytest.mark.parametrize(("cpus", "expected"), [(1, 0), (2, 1), (3, 2), (16, 4)])
def test_automatic_workers_leave_a_core_to_the_writing_process(tmp_path, monkeypatch, cpus, expected):
    """Without --workers, a large file gets one validation worker per core but one (at most 4):
    the importing process writes every row and needs a core of its own."""
    file = tmp_path / "big.csv"
    filler = "x" * 4000  # past the few MB below which no pool is started
    write_csv(file, [["external_id", "name", "attributes.note"], *([f"C{i}", f"Name {i}", filler] for i in range(1100))])
    assert file.stat().st_size > 4_000_000
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    crm = open_crm(f"sqlite:///{tmp_path / 'crm.db'}")
    try:
        report = import_file(crm, "customers", file)
        assert (report.workers, report.inserted) == (expected, 1100)
    finally:
        crm.close()
