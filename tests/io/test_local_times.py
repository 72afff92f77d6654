"""One rule for every time given as input: without a zone it is read in the configured
``timezone`` (like a bare ``--as-of``), in imports (ISO text, 2024/1/2 13:05, Excel serials,
worker processes too), ``add`` options and ``--where`` filters; on every database."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from iotools import read_csv, write_csv

from crmcore import CRM
from crmcore.application.clock import parse_as_of
from crmcore.config import Config
from crmcore.domain.convert import local_zone, parse_datetime, to_utc
from crmcore.io import ImportOptions, import_file

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2024-01-02 08:00 in Shanghai (UTC+8) is midnight UTC.
MIDNIGHT_UTC = datetime(2024, 1, 2, tzinfo=timezone.utc)


def test_the_rule():
    assert parse_datetime("2024-01-02T08:00") == datetime(2024, 1, 2, 8, tzinfo=timezone.utc)  # nothing set: UTC
    with local_zone(SHANGHAI):
        assert parse_datetime("2024-01-02T08:00") == MIDNIGHT_UTC
        assert parse_datetime("2024-01-02") == datetime(2024, 1, 1, 16, tzinfo=timezone.utc)  # start of the day
        assert parse_datetime("2024-01-02T08:00Z") == datetime(2024, 1, 2, 8, tzinfo=timezone.utc)  # has a zone
    assert to_utc(datetime(2024, 1, 2, 8), SHANGHAI) == MIDNIGHT_UTC
    # --as-of: a naive time the same way; a bare date is the end of that day there.
    assert parse_as_of("2024-01-02T08:00", zone=SHANGHAI) == MIDNIGHT_UTC
    assert parse_as_of("2024-01-02", zone=SHANGHAI) == datetime(2024, 1, 2, 15, 59, 59, 999999, tzinfo=timezone.utc)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "conf" / "crm.toml"  # not the working directory's crm.toml, which every run reads
    path.parent.mkdir()
    path.write_text('timezone = "Asia/Shanghai"\n', encoding="utf-8")
    return path


def open_crm(url: str, config) -> CRM:
    return CRM.open(config=Config.load(config, database_url=url, plugins=[]))


@pytest.mark.parametrize("workers", [0, 2])
def test_imported_times_are_local(crm_db_url, config, tmp_path, workers):
    crm = open_crm(crm_db_url, config)
    try:
        import_file(crm, "customers", write_csv(tmp_path / "c.csv", [["external_id", "name"], ["C1", "张伟"]]))
        deals = write_csv(tmp_path / "d.csv", [
            ["external_id", "customer", "title", "amount", "stage", "closed_at"],
            ["D1", "C1", "iso", "1", "won", "2024-01-02T08:00:00"],
            ["D2", "C1", "loose", "1", "won", "2024/1/2 08:00"],
            ["D3", "C1", "excel", "1", "won", "45293.3333333333"],  # 2024-01-02 08:00
            ["D4", "C1", "aware", "1", "won", "2024-01-02T00:00:00Z"],
            ["D5", "C1", "date", "1", "won", "2024-01-02"],
        ])
        # skip mode validates outside any unit of work; workers validate in other processes
        import_file(crm, "deals", deals, ImportOptions(workers=workers, on_error="skip", batch_size=2))
        closed = {d.external_id: d.closed_at for d in crm.deals.list()}
        assert closed == {"D1": MIDNIGHT_UTC, "D2": MIDNIGHT_UTC, "D3": MIDNIGHT_UTC, "D4": MIDNIGHT_UTC,
                          "D5": datetime(2024, 1, 1, 16, tzinfo=timezone.utc)}
    finally:
        crm.close()


def test_cli_options_and_filters_are_local(make_cli, crm_db_url, config, tmp_path):
    cli = make_cli(crm_db_url, config)
    cli.run("customer", "add", "--name", "张伟")
    cli.run("interaction", "add", "--customer", "1", "--kind", "call", "--occurred-at", "2024-01-02 08:00")
    crm = cli.open()
    assert [i.occurred_at for i in crm.interactions.list()] == [MIDNIGHT_UTC]
    # A filter on a time field reads its value the same way, in listings and exports.
    assert "call" in cli.run("interaction", "list", "--where", "occurred_at>=2024-01-02 08:00").output
    assert "call" not in cli.run("interaction", "list", "--where", "occurred_at>2024-01-02 08:00").output
    out = tmp_path / "out.csv"
    cli.run("export", "interactions", "--where", "occurred_at>=2024-01-02 08:00", "-o", str(out))
    assert len(read_csv(out)) == 2
    cli.run("export", "interactions", "--where", "occurred_at<=2024-01-02 07:59", "-o", str(out))
    assert len(read_csv(out)) == 1  # the header only: 07:59 in Shanghai is 23:59 UTC the day before
