"""The append-only consent history (revision 0009_consent_history), on every database:
every decision path appends exactly one row with its source and actor, the current
state (customer_consents) is the latest history row per key, the migration backfills
the history, deletes are refused, and ``crm customer consent --history`` lists it."""

from __future__ import annotations

import io
import json
import random
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, event, insert, select
from sqlalchemy.exc import IntegrityError

from crmcore import HasHistory, NotFound, migrations
from crmcore.application import consent_history
from crmcore.cli import cli
from crmcore.notify import consent
from crmcore.store import tables
from crmcore.store.engine import make_engine
from crmcore.testing import FIXED_NOW

from .campaign_fixtures import SECRET, open_crm

PREVIOUS_HEAD = "0008_users_audit"
FIELDS = ("customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor")


def history_rows(crm) -> list[dict]:
    """The whole history, straight from the table, in id order."""
    h = tables.consent_history
    with crm.unit(readonly=True) as uow:
        return [dict(r._mapping) for r in uow.conn.execute(select(h).order_by(h.c.id))]


def current_rows(crm) -> dict[tuple, dict]:
    c = tables.customer_consents
    with crm.unit(readonly=True) as uow:
        return {(r.customer_id, r.channel, r.purpose): {f: getattr(r, f) for f in FIELDS}
                for r in uow.conn.execute(select(c))}


def latest_per_key(rows: list[dict]) -> dict[tuple, dict]:
    """Computed here, not by crmcore: the history row with the highest id of each key."""
    latest: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        latest[row["customer_id"], row["channel"], row["purpose"]] = {f: row[f] for f in FIELDS}
    return latest


def wsgi_post(app, token: str) -> str:
    """One POST to the unsubscribe WSGI application, in process."""
    body = f"token={token}".encode()
    environ = {"REQUEST_METHOD": "POST", "QUERY_STRING": "", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    status: list[str] = []
    app(environ, lambda s, headers: status.append(s))
    return status[0]


def test_every_decision_path_appends_exactly_one_row_with_source_and_actor(crm_factory, crm_db_url, tmp_path,
                                                                           monkeypatch):
    crm = open_crm(crm_factory)
    crm.users.add("li.wei")
    ada = crm.customers.add(name="Ada", email="ada@example.com", consent_marketing=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crm.toml").write_text(f'[notify]\nunsubscribe_secret = "{SECRET}"\n'
                                       'unsubscribe_url = "https://crm.example/u?t={token}"\n', encoding="utf-8")
    base = ["--db", crm_db_url, "--plugins", "notify", "--json", "--as", "li.wei"]  # a CRM with users
    runner = CliRunner()
    token = consent.make_token(SECRET, ada.id, "mail", "marketing")

    def cli_run(*args: str) -> None:
        out = runner.invoke(cli, [*base, *args])
        assert out.exit_code == 0, out.output

    def api_set() -> None:
        with crm.acting("li.wei"):
            crm.messages.set_consent(ada.id, True, "mail", "transactional", source="web form")

    # The API and the link's web page act as the system unless a user is named.

    # (what, the decision (channel, purpose, granted, source, actor) it must append)
    paths = [
        (lambda: cli_run("customer", "unsubscribe", str(ada.id), "--channel", "console"),
         ("console", "marketing", False, "cli", "li.wei")),
        (lambda: cli_run("customer", "resubscribe", "ada@example.com", "--source", "phone call"),
         ("*", "marketing", True, "phone call", "li.wei")),
        (api_set, ("mail", "transactional", True, "web form", "li.wei")),
        (lambda: cli_run("notify", "unsubscribe", token), ("mail", "marketing", False, "cli-token", "li.wei")),
        (lambda: crm.messages.unsubscribe(token), ("mail", "marketing", False, "link", "system")),
        (lambda: wsgi_post(consent.unsubscribe_app(crm), consent.make_token(SECRET, ada.id)),
         ("*", "marketing", False, "link", "system")),
    ]
    for run, (channel, purpose, granted, source, actor) in paths:
        before = history_rows(crm)
        run()
        after = history_rows(crm)
        assert after[:len(before)] == before  # nothing earlier changed
        assert [{f: r[f] for f in FIELDS if f != "recorded_at"} for r in after[len(before):]] == [
            {"customer_id": ada.id, "channel": channel, "purpose": purpose, "granted": granted, "source": source,
             "actor": actor}]
        assert current_rows(crm) == latest_per_key(after)
    # The same key decided three times: one standing decision, three in the history.
    assert [d.source for d in crm.messages.consent_history(ada.id) if d.channel == "mail"
            and d.purpose == "marketing"] == ["cli-token", "link"]
    # 7: added with consent_marketing, a recorded "*" grant (source api), then the six above.
    assert len(crm.messages.consents(ada.id)) == 4 and len(crm.messages.consent_history(ada.id)) == 7


def test_current_state_is_the_latest_history_row_per_key(crm_factory):
    crm = open_crm(crm_factory)
    ids = [crm.customers.add(name=f"C{n}").id for n in range(4)]
    rng = random.Random(11)
    for step in range(40):
        cid, channel = rng.choice(ids), rng.choice(["*", "mail", "console"])
        purpose, granted = rng.choice(["marketing", "transactional"]), rng.random() < 0.5
        # A backdated decision still replaces the standing one: "latest" is recording order.
        crm.messages.set_consent(cid, granted, channel, purpose, source=f"s{step}",
                                 at=FIXED_NOW - timedelta(days=rng.randint(0, 30)))
    rows = history_rows(crm)
    assert len(rows) == 40
    assert current_rows(crm) == latest_per_key(rows)
    for cid in ids:  # the API reads the same, oldest first
        mine = [r for r in rows if r["customer_id"] == cid]
        assert [(d.source, d.granted) for d in crm.messages.consent_history(cid)] == [
            (r["source"], r["granted"]) for r in mine]


def test_append_many_is_one_insert_select(crm_factory):
    crm = open_crm(crm_factory)
    crm.customers.add_many([{"name": f"C{n}"} for n in range(300)])
    ids = [c.id for c in crm.customers.list({}, limit=None)][:250]
    statements: list[str] = []
    with crm.unit() as uow:
        def listen(conn, cursor, statement, *rest) -> None:
            statements.append(statement)

        event.listen(uow.conn, "before_cursor_execute", listen)
        consent_history.append_many(uow.conn, [*ids, 99999], "*", "marketing", True, "import", uow.now, "li")
        event.remove(uow.conn, "before_cursor_execute", listen)
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("INSERT INTO CONSENT_HISTORY")
    rows = history_rows(crm)
    assert [r["customer_id"] for r in rows] == sorted(ids)  # 99999 is no customer: nothing appended
    assert {(r["channel"], r["purpose"], r["granted"], r["source"], r["recorded_at"], r["actor"])
            for r in rows} == {("*", "marketing", True, "import", FIXED_NOW, "li")}


def test_cli_consent_history_lists_every_decision_oldest_first(crm_factory, crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the crm.toml a demo may have left in the working directory
    crm = open_crm(crm_factory)
    ada = crm.customers.add(name="Ada", email="ada@example.com")
    for day, granted in ((1, True), (2, False), (3, True)):
        crm.messages.set_consent(ada.id, granted, source=f"form {day}", at=f"2026-06-0{day}T09:00:00+00:00")
    runner = CliRunner()
    out = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", "--json", "customer", "consent",
                              "ada@example.com", "--history"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [
        {"customer_id": ada.id, "channel": "*", "purpose": "marketing", "granted": g, "source": f"form {d}",
         "recorded_at": f"2026-06-0{d}T09:00:00+00:00", "actor": "system"} for d, g in ((1, True), (2, False),
                                                                                        (3, True))]
    out = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", "--json", "customer", "consent",
                              str(ada.id)])
    assert [r["source"] for r in json.loads(out.output)] == ["form 3"]  # without --history: the standing one
    out = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", "customer", "consent", str(ada.id),
                              "--history"])
    lines = out.output.splitlines()
    assert out.exit_code == 0 and lines[0].split("\t") == ["channel", "purpose", "granted", "source",
                                                           "recorded_at", "actor"]
    assert [line.split("\t")[3] for line in lines[1:]] == ["form 1", "form 2", "form 3"]
    out = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", "customer", "consent", "4242",
                              "--history"])
    assert out.exit_code != 0 and "4242" in out.output and "Traceback" not in out.output
    with pytest.raises(NotFound):
        crm.messages.consent_history(4242)


def test_a_customer_with_consent_history_cannot_be_purged(crm_factory):
    crm = open_crm(crm_factory)
    ada = crm.customers.add(name="Ada")
    crm.messages.set_consent(ada.id, True, source="form")
    crm.messages.set_consent(ada.id, False, source="call")
    with pytest.raises(HasHistory, match="2 consent decisions"):  # every decision, not the one standing
        crm.customers.delete(ada.id, purge=True)
    with pytest.raises(IntegrityError), crm.unit() as uow:  # the database refuses too: nothing cascades
        uow.conn.execute(delete(tables.customer_consents))
        uow.conn.execute(delete(tables.customers).where(tables.customers.c.id == ada.id))
    assert len(history_rows(crm)) == 2


@pytest.mark.empty_database  # it migrates to an older revision itself
def test_migration_backfills_one_history_row_per_stored_decision(crm_db_url):
    """A database at the previous head, with decisions, upgrades with each one in the history."""
    from alembic import command

    engine = make_engine(crm_db_url)
    command.upgrade(migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version"),
                    PREVIOUS_HEAD)
    stamp = {"created_at": FIXED_NOW, "updated_at": FIXED_NOW}
    person = {"kind": "person", "stage": "lead", "consent_email": True, "consent_sms": True,
              "consent_marketing": False, "tags": [], "attributes": {}, **stamp}
    decisions = [  # recorded_at out of key order: the backfill appends them oldest first
        {"customer_id": 1, "channel": "*", "purpose": "marketing", "granted": False, "source": "link",
         "recorded_at": FIXED_NOW - timedelta(days=1), "actor": None},
        {"customer_id": 1, "channel": "mail", "purpose": "marketing", "granted": True, "source": "web form",
         "recorded_at": FIXED_NOW - timedelta(days=9), "actor": "system"},
        {"customer_id": 2, "channel": "*", "purpose": "transactional", "granted": True, "source": "导入",
         "recorded_at": FIXED_NOW - timedelta(days=5), "actor": "li.wei"},
    ]
    try:
        with engine.begin() as conn:
            conn.execute(insert(tables.customers), [{"id": n, "name": f"C{n}", **person} for n in (1, 2, 3)])
            conn.execute(insert(tables.customer_consents), decisions)
        migrations.upgrade(engine, {})
        with engine.connect() as conn:
            h = tables.consent_history
            backfilled = [dict(r._mapping) for r in conn.execute(select(h).order_by(h.c.id))]
            current = [dict(r._mapping) for r in conn.execute(select(tables.customer_consents))]
        expected = sorted(decisions, key=lambda d: d["recorded_at"])
        assert [{f: r[f] for f in FIELDS} for r in backfilled] == expected
        assert sorted(current, key=lambda d: d["recorded_at"]) == expected  # the current state is kept
        with pytest.raises(IntegrityError), engine.begin() as conn:  # the history refers to customers
            conn.execute(insert(tables.consent_history).values({**decisions[0], "customer_id": 99}))
    finally:
        engine.dispose()


def test_flag_paths_append_one_row_each(crm_factory, crm_db_url, tmp_path, monkeypatch):
    """The consent_marketing flag is the "*" marketing decision (crmcore.application.consents):
    setting it on add / update (CLI), add_many and an import (insert and update) appends it."""
    from crmcore.io import import_file

    crm = open_crm(crm_factory)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def cli_run(*args: str) -> None:
        out = runner.invoke(cli, ["--db", crm_db_url, "--plugins", "notify", *args])
        assert out.exit_code == 0, out.output

    def new_rows(run) -> list[tuple]:
        before = history_rows(crm)
        run()
        after = history_rows(crm)
        assert after[:len(before)] == before and current_rows(crm) == latest_per_key(after)
        return [(r["customer_id"], r["channel"], r["purpose"], r["granted"], r["source"], r["actor"])
                for r in after[len(before):]]

    assert new_rows(lambda: cli_run("customer", "add", "--name", "Ada", "--email", "ada@example.com",
                                    "--consent-marketing")) == [(1, "*", "marketing", True, "cli", "system")]
    assert new_rows(lambda: cli_run("customer", "update", "1", "--no-consent-marketing")) == [
        (1, "*", "marketing", False, "cli", "system")]
    assert new_rows(lambda: cli_run("customer", "update", "1", "--city", "Hangzhou")) == []  # flag untouched
    assert new_rows(lambda: crm.customers.add_many([{"name": f"B{n}", "consent_marketing": n % 2 == 0}
                                                    for n in range(6)])) == [
        (cid, "*", "marketing", True, "api", "system") for cid in (2, 4, 6)]  # the bulk path
    (tmp_path / "people.csv").write_text("external_id,name,consent_marketing\nc1,Cy,true\nd1,Di,false\n",
                                         encoding="utf-8")
    assert new_rows(lambda: import_file(crm, "customers", tmp_path / "people.csv")) == [
        (crm.customers.find(external_id="c1").id, "*", "marketing", True, "import", "system")]
    (tmp_path / "update.csv").write_text("external_id,consent_marketing\nc1,false\nd1,true\n", encoding="utf-8")
    cy, di = crm.customers.find(external_id="c1").id, crm.customers.find(external_id="d1").id
    assert sorted(new_rows(lambda: import_file(crm, "customers", tmp_path / "update.csv"))) == sorted([
        (cy, "*", "marketing", False, "import", "system"), (di, "*", "marketing", True, "import", "system")])
