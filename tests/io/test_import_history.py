"""History loads of deals: rows without an external id are matched to stored deals on
(customer, title, amount, closed_at) unless --allow-duplicates, and --no-earn writes no
loyalty entries; on every database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from iotools import write_csv
from sqlalchemy import func, select

from crmcore import CRM, LoyaltyScheme, hookimpl
from crmcore.config import Config
from crmcore.io import ImportOptions, import_file
from crmcore.store.tables import loyalty_ledger
from crmcore.testing import FIXED_NOW

DEAL_HEADER = ["customer", "title", "amount", "currency", "stage", "closed_at"]


class Points(LoyaltyScheme):
    name = "points"
    description = "one point per whole unit of a won deal"

    def points_for_deal(self, uow, deal, options):
        return int(deal.amount)


class Loyalty:
    @hookimpl
    def register_loyalty_schemes(self, register):
        register(Points())


def open_crm(url: str) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": []}), extra_plugins=[Loyalty()],
                    clock=lambda: FIXED_NOW)


def setup_customers(crm: CRM, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "customers.csv", [["external_id", "name"], ["C1", "张伟"], ["C2", "Ana"]])
    import_file(crm, "customers", file)


def history(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "deals.csv", [
        DEAL_HEADER,
        ["C1", "年度合同", "12000.50", "CNY", "won", "2025-03-01T10:00:00Z"],
        ["C1", "年度合同", "12000.50", "CNY", "won", "2025-03-01T10:00:00Z"],  # bought twice that moment
        ["C1", "年度合同", "12000.50", "CNY", "won", "2025-04-01T10:00:00Z"],
        ["C2", "Pilot", "99", "CNY", "won", "2025-03-01T10:00:00Z"],
        ["C2", "Open deal", "5", "CNY", "proposal", ""],
    ])


def ledger_rows(crm: CRM) -> int:
    with crm.unit() as uow:
        return uow.conn.execute(select(func.count()).select_from(loyalty_ledger)).scalar_one()


def test_reimporting_deals_without_external_id_matches_them(crm_db_url, tmp_path):
    crm = open_crm(crm_db_url)
    try:
        setup_customers(crm, tmp_path)
        file = history(tmp_path)
        first = import_file(crm, "deals", file, ImportOptions(batch_size=2))
        assert (first.inserted, first.matched, first.notes) == (5, 0, [])
        again = import_file(crm, "deals", file, ImportOptions(batch_size=2))
        assert (again.inserted, again.updated, again.unchanged, again.matched) == (0, 0, 5, 5)
        assert crm.deals.count() == 5
        assert "5 deal rows without external_id matched stored deals on customer, title, amount and " \
               "closed_at" in again.notes[0]
        # A row that differs in one of the four is a new deal; other fields of a match are updated.
        changed = write_csv(tmp_path / "changed.csv", [
            DEAL_HEADER + ["owner"],
            ["C2", "Pilot", "99.00", "CNY", "won", "2025-03-01 10:00:00+00:00", "li"],  # same, other spelling
            ["C2", "Pilot", "100", "CNY", "won", "2025-03-01T10:00:00Z", ""],
        ])
        report = import_file(crm, "deals", changed)
        assert (report.inserted, report.updated, report.matched) == (1, 1, 1)
        assert sorted(d.owner or "" for d in crm.deals.list({"title": "Pilot"})) == ["", "li"]
        # The loyalty points of the history were earned once, not again on the re-import.
        customer = crm.customers.find(external_id="C1")
        assert crm.loyalty.balance(customer.id, "points") == 3 * 12000
    finally:
        crm.close()


def test_allow_duplicates_inserts_again(crm_db_url, tmp_path):
    crm = open_crm(crm_db_url)
    try:
        setup_customers(crm, tmp_path)
        file = history(tmp_path)
        import_file(crm, "deals", file)
        report = import_file(crm, "deals", file, ImportOptions(allow_duplicates=True))
        assert (report.inserted, report.matched) == (5, 0)
        assert crm.deals.count() == 10
        assert "5 rows had no external_id and were added as new" in report.notes[0]
    finally:
        crm.close()


def test_no_earn_writes_no_ledger_entries_and_the_default_earns(crm_db_url, tmp_path):
    crm = open_crm(crm_db_url)
    try:
        setup_customers(crm, tmp_path)
        import_file(crm, "deals", history(tmp_path), ImportOptions(earn=False))
        assert crm.deals.count() == 5 and ledger_rows(crm) == 0
        # An update that moves a deal to won during a --no-earn import earns nothing either.
        open_deal = write_csv(tmp_path / "open.csv", [["external_id", *DEAL_HEADER],
                                                      ["D9", "C2", "Open", "5", "CNY", "proposal", ""]])
        import_file(crm, "deals", open_deal)
        moved = write_csv(tmp_path / "moved.csv", [["external_id", "stage"], ["D9", "won"]])
        report = import_file(crm, "deals", moved, ImportOptions(earn=False))
        assert report.updated == 1 and ledger_rows(crm) == 0
        # The default earns, for inserted deals ...
        new = write_csv(tmp_path / "new.csv", [DEAL_HEADER, ["C2", "Renewal", "7", "CNY", "won",
                                                             "2026-06-01T00:00:00Z"]])
        import_file(crm, "deals", new)
        customer = crm.customers.find(external_id="C2")
        assert crm.loyalty.balance(customer.id, "points") == 7 and ledger_rows(crm) == 1
    finally:
        crm.close()


def test_no_earn_on_the_command_line(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "c.csv", [["external_id", "name"], ["C1", "A"]])))
    file = write_csv(tmp_path / "d.csv", [DEAL_HEADER, ["C1", "Old", "10", "CNY", "won", "2020-01-01"]])
    result = crm_cli.run("import", "deals", str(file), "--no-earn")
    assert "1 inserted" in result.output
    result = crm_cli.run("import", "deals", str(file))
    assert "0 inserted, 0 updated, 1 unchanged" in result.output
    assert "1 deal row without external_id matched a stored deal" in result.output
    result = crm_cli.run("import", "deals", str(file), "--allow-duplicates")
    assert "1 inserted" in result.output
    assert [d.amount for d in crm_cli.open().deals.list()] == [Decimal("10.00")] * 2
