"""Reads on a read replica (``database_read_url``), writes on the primary (crmcore.store.replica).

On PostgreSQL the test starts a real streaming replica of the test server (tests/jobs/replica.py):
reports and segment listings give the same numbers there as on the primary once replay caught up,
and with the replay paused a CRM configured with the replica shows that its reads come from the
replica (the old numbers) while its writes land on the primary (a write on the standby would fail:
it is read-only).  On SQLite a copy of the file stands in for the replica.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError

from crmcore.app import CRM
from crmcore.config import Config
from crmcore.demo import DemoSize, populate
from crmcore.domain.errors import ConfigError, CRMError
from crmcore.store import tables
from crmcore.testing import reset_database, server_url

from .replica import Replica

END = datetime(2026, 6, 30, 12, tzinfo=UTC)
PLUGINS = ["reports", "segments"]


@pytest.fixture(scope="module")
def replica():
    started = Replica(server_url("postgresql"))
    try:
        yield started.start()
    finally:
        started.stop()


def _open(url: str, clock: list[datetime], read_url: str | None = None) -> CRM:
    values = {"database_url": url, "plugins": PLUGINS}
    if read_url is not None:
        values["database_read_url"] = read_url
    return CRM.open(config=Config.from_mapping(values), clock=lambda: clock[0])


def _reports(crm: CRM, as_of: datetime) -> dict[str, object]:
    """Every report's columns and rows (or its error) as of ``as_of``."""
    found: dict[str, object] = {}
    for report in crm.reports.list():
        try:
            result = crm.reports.run(report.name, as_of)
            found[report.name] = (result.columns, result.rows)
        except CRMError as exc:
            found[report.name] = f"{type(exc).__name__}: {exc}"
    return found


def _customers(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tables.customers)).scalar_one()


def test_reports_and_segments_read_the_replica_and_writes_go_to_the_primary(replica):
    url = replica.primary_url
    reset_database(url)
    clock = [END]
    primary = _open(url, clock)
    routed = None
    try:
        populate(primary, 7, DemoSize(customers=300, interactions=1500, deals=600, months=6), END,
                 lambda moment: clock.__setitem__(0, moment))
        routed = _open(url, clock, read_url=replica.url)
        assert routed.read_engine.url.port == replica.port and routed.engine.url.port != replica.port
        first = routed.segments.run("lifecycle", as_of=END)  # a write through the routed CRM
        replica.catch_up()

        on_primary, on_replica = _reports(primary, END), _reports(routed, END)
        assert sum(isinstance(v, tuple) and len(v[1]) > 0 for v in on_primary.values()) >= 5, on_primary
        assert on_replica == on_primary
        members = routed.segments.members("lifecycle", run_id=first.id)
        assert len(members) == _customers(primary.engine) == 300
        assert members == primary.segments.members("lifecycle", run_id=first.id)
        assert routed.segments.runs("lifecycle") == primary.segments.runs("lifecycle")

        # Replay paused: the routed CRM's reads show the replica's (old) data, its writes land on
        # the primary.  The standby is read-only, so a write routed to it would raise here.
        replica.pause()
        try:
            clock[0] = END + timedelta(hours=1)
            customer = routed.customers.add(name="Replica Check", email="replica.check@example.com")
            routed.deals.add(customer_id=customer.id, title="Routed write", amount=Decimal("12345.67"),
                             currency="USD", stage="proposal")
            second = routed.segments.run("lifecycle")
            assert _customers(primary.engine) == 301 and _customers(replica.engine) == 300
            moment = END + timedelta(hours=2)
            assert routed.segments.latest_run("lifecycle").id == first.id != second.id
            assert _reports(routed, moment)["pipeline"] != _reports(primary, moment)["pipeline"]
        finally:
            replica.resume()
        replica.catch_up()
        assert routed.segments.latest_run("lifecycle").id == second.id
        assert _reports(routed, moment) == _reports(primary, moment)
        assert len(routed.segments.members("lifecycle")) == 301

        with pytest.raises(DBAPIError, match="read-only"), routed.read_engine.begin() as conn:
            conn.execute(insert(tables.customers).values(name="never", kind="customer"))
    finally:
        primary.close()
        if routed is not None:
            routed.close()


def test_sqlite_copy_as_replica_routing_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main, copy = tmp_path / "main.db", tmp_path / "copy.db"
    clock = [END]
    with _open(f"sqlite:///{main}", clock) as crm:
        crm.customers.add(name="A")
    shutil.copy(main, copy)  # the "replica" as of now: one customer, no segment run

    routed = _open(f"sqlite:///{main}", clock, read_url=f"sqlite:///{copy}")
    try:
        routed.customers.add(name="B")
        run = routed.segments.run("lifecycle", as_of=END)
        assert run.members == 2  # computed and recorded on the primary
        assert routed.segments.runs() == []  # listed from the copy
        assert routed.reports.run("customer-value", END).rows == \
            routed.reports.run("customer-value", END).rows  # runs there without error
        with routed.unit() as uow:  # a writing unit joins wherever it is opened: the primary
            assert uow.conn.engine is routed.engine
        with pytest.raises(DBAPIError, match="readonly|read-only|query_only"), routed.read_engine.begin() as conn:
            conn.execute(insert(tables.customers).values(name="never", kind="customer"))
        assert _customers(routed.read_engine) == 1 and _customers(routed.engine) == 2
    finally:
        routed.close()

    with pytest.raises(ConfigError, match="database_read_url .* is a postgresql database but database_url is sqlite"):
        _open(f"sqlite:///{main}", clock, read_url="postgresql://u:secret@127.0.0.1:1/x")
    config = Config.load(environ={"CRM_DATABASE_URL": f"sqlite:///{main}", "CRM_DATABASE_READ_URL": f"sqlite:///{copy}"})
    assert config.database_read_url == f"sqlite:///{copy}"
    assert config.sources["database_read_url"] == "environment CRM_DATABASE_READ_URL"
    with _open(f"sqlite:///{main}", clock) as plain:
        assert plain.read_engine is plain.engine
