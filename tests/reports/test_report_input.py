"""Bad input to reports, through the API and the crm command line: each a clear
error naming what is wrong, never a traceback; and the CLI's filters, formats,
output files and dashboard working end to end."""

from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from decimal import Decimal

import openpyxl
import pytest
from click.testing import CliRunner

from crmcore import ConfigError
from crmcore.cli import cli
from crmcore.testing import FIXED_NOW

REPORTS = ["activity", "customer-value", "forecast", "funnel", "pipeline", "retention-cohorts",
           "sales-performance", "segments", "service-quality", "win-loss"]


def seed(crm):
    customer = crm.customers.add(name="李娜", region="华东", owner="alice")
    crm.deals.add(customer_id=customer.id, title="a", amount=Decimal("120.50"), currency="USD", stage="won",
                  owner="alice", closed_at=FIXED_NOW - timedelta(days=3))
    crm.deals.add(customer_id=customer.id, title="b", amount=Decimal("99.99"), currency="EUR", stage="won",
                  owner="alice", closed_at=FIXED_NOW - timedelta(days=2))
    crm.deals.add(customer_id=customer.id, title="c", amount=Decimal("1000"), currency="USD", stage="proposal",
                  owner="bob")
    return crm


@pytest.fixture
def crm(crm_factory):
    """On every database: what touches data."""
    return seed(crm_factory(plugins=["reports"]))


@pytest.fixture(scope="module")
def sqlite_crm(tmp_path_factory):
    """Option checks happen before any query: one SQLite CRM serves them all."""
    from crmcore import CRM, Config

    crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{tmp_path_factory.mktemp('input')}/c.db",
                                               "plugins": ["reports"]}), clock=lambda: FIXED_NOW)
    yield seed(crm)
    crm.close()


# -- API -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", REPORTS)
def test_unknown_filter_names_the_ones_there_are(sqlite_crm, name):
    crm = sqlite_crm
    with pytest.raises(ConfigError, match=rf"report '{name}' has no filter or option 'colour' \(it takes: .*start"):
        crm.reports.run(name, options={"colour": "red"})


@pytest.mark.parametrize("name", REPORTS)
def test_end_before_start(sqlite_crm, name):
    crm = sqlite_crm
    with pytest.raises(ConfigError, match=rf"\[reports.{name}\] end 2026-01-01 is before start 2026-03-01"):
        crm.reports.run(name, options={"start": "2026-03-01", "end": "2026-01-01"})


def test_bad_values_name_the_option(sqlite_crm):
    crm = sqlite_crm
    with pytest.raises(ConfigError, match=r"\[reports.forecast\] start: not a date YYYY-MM-DD: '2026-13-01'"):
        crm.reports.run("forecast", options={"start": "2026-13-01"})
    with pytest.raises(ConfigError, match=r"\[reports.win-loss\] by:"):
        crm.reports.run("win-loss", options={"by": "colour"})
    with pytest.raises(ConfigError, match="'XYZ' is not an ISO 4217 currency code"):
        crm.reports.run("customer-value", options={"currency": "xyz"})
    with pytest.raises(ConfigError, match="unknown pipeline 'nope'"):
        crm.reports.run("funnel", options={"pipeline": "nope"})
    with pytest.raises(ConfigError, match=r"targets.*2026-13.*is not a month YYYY-MM or a quarter"):
        crm.reports.run("sales-performance", options={"targets": [{"owner": "a", "period": "2026-13", "amount": 1}]})
    with pytest.raises(ConfigError, match="give exactly one of owner or region"):
        crm.reports.run("sales-performance", options={"targets": [{"period": "2026-01", "amount": "1"}]})
    with pytest.raises(ConfigError, match=r"targets\[0\]: use a Decimal or text for money, not float 1.5"):
        crm.reports.run("sales-performance", options={"targets": [{"owner": "a", "period": "2026-01", "amount": 1.5}]})


def test_segments_report_without_runs_is_empty_but_says_why(crm):
    result = crm.reports.run("segments")
    assert result.rows == () and "No segmentation run yet" in result.notes[0]
    with pytest.raises(ConfigError, match=r"run: segmentation run 3 not found \(there are no runs yet\)"):
        crm.reports.run("segments", options={"run": 3})


def test_unwritable_output(crm, tmp_path):
    from crmcore import CRMError

    with pytest.raises(CRMError, match=r"cannot write .*missing/out.html: No such file or directory"):
        crm.reports.write("pipeline", tmp_path / "missing" / "out.html", "html")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CRMError, match=r"cannot create output directory .*file/dash"):
        crm.reports.dashboard(blocker / "dash")


def test_one_currency_at_a_time_with_a_note(crm):
    value = crm.reports.run("customer-value", as_of=FIXED_NOW)
    assert value.sections[0].rows[0][2] == Decimal("120.50")
    assert any("1 in EUR" in n for n in value.notes)
    eur = crm.reports.run("customer-value", as_of=FIXED_NOW, options={"currency": "EUR"})
    assert eur.sections[0].rows[0][2] == Decimal("99.99") and any("1 in USD" in n for n in eur.notes)


# -- command line -------------------------------------------------------------------------------------

@pytest.fixture
def run(crm, crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL", "CRM_PLUGINS_DIR", "CRM_PLUGINS_BLOCK"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["--db", crm_db_url, "--plugins", "reports", *args])
    return invoke


def user_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output, result.output


def test_cli_bad_input(run, tmp_path):
    user_error(run("report", "run", "forecast", "--option", "colour=red"),
               "report 'forecast' has no filter or option 'colour'")
    user_error(run("report", "run", "win-loss", "--from", "2026-03-01", "--to", "2026-01-01"),
               "end 2026-01-01 is before start 2026-03-01")
    user_error(run("report", "run", "segments", "--option", "run=99"), "segmentation run 99 not found")
    user_error(run("report", "run", "forecast", "--segment", "gold"),
               "no segment 'gold' in the latest run of any strategy")
    user_error(run("report", "run", "pipeline", "--format", "html", "--output", str(tmp_path / "no" / "p.html")),
               "cannot write")
    user_error(run("report", "run", "pipeline", "--format", "pdf"), "unknown renderer 'pdf'")
    user_error(run("report", "run", "pipeline", "--format", "xlsx"), "format 'xlsx' is binary: use --output FILE")
    user_error(run("--as-of", "yesterday", "report", "run", "pipeline"), "--as-of 'yesterday' is not a date")


def test_cli_formats_filters_and_dashboard(run, tmp_path):
    result = run("--as-of", "2026-06-30", "report", "run", "win-loss", "--owner", "alice", "--currency", "eur",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["rows"][0]["owner"] == "alice" and document["rows"][0]["won_amount"] == "99.99"
    assert document["sections"][0]["title"] == "Lost reasons"

    out = tmp_path / "pipeline.html"
    result = run("report", "run", "pipeline", "--format", "html", "--output", str(out), "--region", "华东")
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") == 1 and "region=华东" in page

    xlsx = tmp_path / "value.xlsx"
    assert run("report", "run", "customer-value", "--format", "xlsx", "-o", str(xlsx)).exit_code == 0
    book = openpyxl.load_workbook(io.BytesIO(xlsx.read_bytes()))
    assert book.sheetnames[:3] == ["Customer value (currency=USD)", "Summary (USD)", "Purchase frequency"]

    markdown = run("report", "run", "activity", "--format", "markdown")
    assert markdown.exit_code == 0 and markdown.output.startswith("# Activity by kind")

    result = run("--as-of", "2026-06-30", "report", "dashboard", "--output", str(tmp_path / "dash"))
    assert result.exit_code == 0, result.output
    assert "10 report(s) and index.html written" in result.output
    index = (tmp_path / "dash" / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{name}.html"' in index for name in REPORTS)
    assert sorted(os.listdir(tmp_path / "dash")) == sorted([*(f"{n}.html" for n in REPORTS), "index.html"])

    listing = run("report", "list")
    assert "formats: " in listing.output and "html" in listing.output and "xlsx" in listing.output


def test_cli_help_documents_the_filters(run):
    text = run("report", "run", "--help").output
    for flag in ("--from", "--to", "--region", "--owner", "--pipeline", "--segment", "--currency"):
        assert flag in text


def test_targets_and_sla_from_crm_toml(tmp_path):
    """Targets and SLAs are configuration: [reports.NAME] tables in crm.toml, overridden per call."""
    from crmcore import CRM

    (tmp_path / "crm.toml").write_text(
        f'database_url = "sqlite:///{tmp_path / "c.db"}"\nplugins = ["reports"]\n\n'
        '[reports.service-quality]\nresolution_sla_hours = 2\n\n'
        '[[reports.sales-performance.targets]]\nowner = "alice"\nperiod = "2026-06"\namount = "241.00"\n\n'
        '[[reports.sales-performance.targets]]\nregion = "华东"\nperiod = "2026-Q2"\namount = "1000"\n',
        encoding="utf-8")
    crm = CRM.open(config_file=tmp_path / "crm.toml", clock=lambda: FIXED_NOW)
    try:
        seed(crm)
        rows = crm.reports.run("sales-performance", as_of=FIXED_NOW).records()
        alice = next(r for r in rows if r["owner"] == "alice")
        assert (alice["period"], alice["won_revenue"], alice["target"], alice["attainment"]) == (
            "2026-06", Decimal("120.50"), Decimal("241.00"), Decimal("0.5000"))
        quarter = crm.reports.run("sales-performance", as_of=FIXED_NOW,
                                  options={"period": "quarter", "by": "region"}).records()
        assert [(r["period"], r["region"], r["target"], r["attainment"]) for r in quarter] == [
            ("2026-Q2", "华东", Decimal("1000"), Decimal("0.1205"))]
        service = crm.reports.run("service-quality", as_of=FIXED_NOW)
        assert "resolved within 2 h" in service.columns[8].label
        service = crm.reports.run("service-quality", as_of=FIXED_NOW, options={"resolution_sla_hours": 36})
        assert "resolved within 36 h" in service.columns[8].label
    finally:
        crm.close()
