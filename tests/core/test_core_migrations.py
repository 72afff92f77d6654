"""Migrations: the core to head on open, the schema equal to the tables, and a
plugin's own branch (``tests/fixtures_plugins/tableplugin``)."""

from __future__ import annotations

import importlib
from datetime import datetime
from types import ModuleType, SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, func, insert, inspect, select, text

import crmcore
from crmcore import CRM, Config, PluginError, PluginSchema
from crmcore import migrations
from crmcore.store import tables
from crmcore.store.engine import make_engine

import schema_cache


@pytest.fixture(autouse=True)
def no_schema_cache():
    """These tests are about the revisions themselves: run them, never a replayed snapshot."""
    schema_cache.set_enabled(False)
    yield
    schema_cache.set_enabled(True)

CORE_TABLES = set(tables.metadata.tables)
CORE_HEAD = "0029_import_digest_trigger"


@pytest.fixture
def tableplugin(fixture_plugins_path) -> ModuleType:
    return importlib.import_module("tableplugin")


def open_crm(url: str, extra=(), **kwargs) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": []}), extra_plugins=extra, **kwargs)


def core_head() -> str:
    return migrations.heads(make_engine("sqlite://"), {})[migrations.CORE_BRANCH][0]


# -- the core ------------------------------------------------------------------------

def test_open_migrates_a_fresh_database_to_head(crm_db_url) -> None:
    with open_crm(crm_db_url) as crm:
        names = migrations.table_names(crm.engine)
        assert CORE_TABLES | {"alembic_version"} <= names
        assert migrations.current(crm.engine, {}) == migrations.heads(crm.engine, {})
        assert migrations.current(crm.engine, {})["crmcore"] == (CORE_HEAD,)
        assert not migrations.needs_upgrade(crm.engine, {})
    with open_crm(crm_db_url) as crm:  # re-open: nothing to do, data intact
        crm.customers.add(name="张伟")
    with open_crm(crm_db_url) as crm:
        assert crm.customers.count() == 1


def test_migrate_false_leaves_the_database_alone_until_upgrade(crm_db_url) -> None:
    with open_crm(crm_db_url, migrate=False) as crm:
        assert not (CORE_TABLES & migrations.table_names(crm.engine))
        assert migrations.current(crm.engine, {}) == {"crmcore": ()}
        assert migrations.needs_upgrade(crm.engine, {})
        crm.upgrade()
        assert CORE_TABLES <= migrations.table_names(crm.engine)
        assert not migrations.needs_upgrade(crm.engine, {})


def test_migrated_schema_matches_the_tables(crm_db_url) -> None:
    """Alembic's autogenerate finds nothing to change: revisions and tables agree."""
    with open_crm(crm_db_url) as crm, crm.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, tables.metadata)
        assert compare_metadata(context, MetaData())  # the comparison does see the tables
    assert diffs == []


def test_metadata_create_all_equals_migrations(crm_sqlite_url, tmp_path) -> None:
    """The tables and the revisions describe the same columns, indexes and constraints."""
    created = make_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
    tables.metadata.create_all(created)
    with open_crm(crm_sqlite_url) as crm:
        a, b = inspect(created), inspect(crm.engine)
        for name in CORE_TABLES:
            assert [(c["name"], str(c["type"]), c["nullable"]) for c in a.get_columns(name)] == \
                   [(c["name"], str(c["type"]), c["nullable"]) for c in b.get_columns(name)], name
            assert sorted(i["name"] for i in a.get_indexes(name)) == sorted(i["name"] for i in b.get_indexes(name))
            assert sorted(fk["name"] for fk in a.get_foreign_keys(name)) == \
                   sorted(fk["name"] for fk in b.get_foreign_keys(name))
            assert a.get_unique_constraints(name) == b.get_unique_constraints(name)
            assert sorted(c["name"] for c in a.get_check_constraints(name)) == \
                   sorted(c["name"] for c in b.get_check_constraints(name))
    created.dispose()


@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_mariadb_tables_compare_text_exactly(scheme) -> None:
    """Core tables use a binary collation on MariaDB/MySQL, with either URL scheme."""
    from crmcore.testing import reset_database, server_url

    url = server_url("mariadb")
    url = scheme + url[url.index("://"):]
    reset_database(url)
    with open_crm(url) as crm, crm.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE()")).all()
    collations = {name: collation for name, collation in rows}
    assert {collations[name] for name in CORE_TABLES} == {"utf8mb4_bin"}


# -- a plugin with its own tables --------------------------------------------------------

def test_plugin_table_created_on_open_and_usable(crm_db_url, tableplugin) -> None:
    with open_crm(crm_db_url, extra=[tableplugin]) as crm:
        assert "tableplug_notes" in migrations.table_names(crm.engine)
        assert crm.schemas == {"tableplugin": tableplugin.SCHEMA}
        assert migrations.current(crm.engine, crm.schemas) == {"crmcore": (CORE_HEAD,), "tableplug": ("tp002",)}
        assert not migrations.needs_upgrade(crm.engine, crm.schemas)
        customer = crm.customers.add(name="张伟")
        notes = Table("tableplug_notes", MetaData(), autoload_with=crm.engine)
        with crm.unit() as uow:
            uow.conn.execute(insert(notes).values(customer_id=customer.id, body="记得回电 📞",
                                                  created_at=datetime(2026, 1, 1), pinned=True))
        with crm.unit(readonly=True) as uow:
            assert uow.conn.execute(select(notes.c.body)).scalar_one() == "记得回电 📞"
        crm.customers.delete(customer.id, purge=True)  # the plugin's foreign key cascades
        with crm.unit(readonly=True) as uow:
            assert uow.conn.execute(select(func.count()).select_from(notes)).scalar_one() == 0
        assert {"tableplugin": ["tableplug_notes"]} == {
            p.name: p.components.get("tables") for p in crm.plugin_info() if p.name == "tableplugin"}


def test_plugin_enabled_later_gets_its_table_on_reopen_and_can_be_disabled(crm_db_url, tableplugin) -> None:
    with open_crm(crm_db_url) as crm:
        assert "tableplug_notes" not in migrations.table_names(crm.engine)
        crm.customers.add(name="before")
    with open_crm(crm_db_url, extra=[tableplugin]) as crm:
        assert "tableplug_notes" in migrations.table_names(crm.engine)
        assert migrations.current(crm.engine, crm.schemas)["tableplug"] == ("tp002",)
        assert crm.customers.count() == 1
    with open_crm(crm_db_url, extra=[tableplugin]) as crm:  # re-open: nothing pending
        assert not migrations.needs_upgrade(crm.engine, crm.schemas)
    # Disabled again: the core still opens and upgrades; the plugin's table stays.
    with open_crm(crm_db_url) as crm:
        crm.upgrade()
        assert crm.schemas == {}
        assert migrations.current(crm.engine, {}) == {"crmcore": (CORE_HEAD,)}
        assert "tableplug_notes" in migrations.table_names(crm.engine)
        crm.customers.add(name="after")
        assert crm.customers.count() == 2
    with open_crm(crm_db_url, extra=[tableplugin]) as crm:  # and enabled once more
        assert migrations.current(crm.engine, crm.schemas)["tableplug"] == ("tp002",)


def test_history_and_heads_report_each_branch(crm_sqlite_url, tableplugin) -> None:
    with open_crm(crm_sqlite_url, extra=[tableplugin], migrate=False) as crm:
        assert migrations.heads(crm.engine, crm.schemas) == {"crmcore": (CORE_HEAD,), "tableplug": ("tp002",)}
        assert migrations.current(crm.engine, crm.schemas) == {"crmcore": (), "tableplug": ()}
        history = migrations.history(crm.engine, crm.schemas)
        assert [(b, r, d) for b, r, d, _ in history] == [
            ("crmcore", CORE_HEAD, "0028_import_digest"),
            ("crmcore", "0028_import_digest", "0027_rfm"),
            ("crmcore", "0027_rfm", "0023_lookup_keys"),
            ("crmcore", "0023_lookup_keys", "0022_scale_out"),
            ("crmcore", "0022_scale_out", "0019_phone_key"),
            ("crmcore", "0019_phone_key", "0018_jobs"),
            ("crmcore", "0018_jobs", "0017_user_passwords"),
            ("crmcore", "0017_user_passwords", "0016_tasks"),
            ("crmcore", "0016_tasks", "0015_duplicate_keys"),
            ("crmcore", "0015_duplicate_keys", "0014_privacy_fields"),
            ("crmcore", "0014_privacy_fields", "0013_privacy"),
            ("crmcore", "0013_privacy", "0012_duplicates"),
            ("crmcore", "0012_duplicates", "0011_api_tokens"),
            ("crmcore", "0011_api_tokens", "0010_roles_archive"),
            ("crmcore", "0010_roles_archive", "0009_consent_history"),
            ("crmcore", "0009_consent_history", "0008_users_audit"),
            ("crmcore", "0008_users_audit", "0007_history_restrict"),
            ("crmcore", "0007_history_restrict", "0006_segment_run_details"),
            ("crmcore", "0006_segment_run_details", "0005_consent"),
            ("crmcore", "0005_consent", "0004_notify_delivery"),
            ("crmcore", "0004_notify_delivery", "0003_loyalty_fifo"),
            ("crmcore", "0003_loyalty_fifo", "0002_contacts_email"),
            ("crmcore", "0002_contacts_email", "0001_core"), ("crmcore", "0001_core", None),
            ("tableplug", "tp002", "tp001"), ("tableplug", "tp001", None)]
        assert [m for *_, m in history][-3:] == ["core schema", "tableplug: pinned flag", "tableplug: notes table"]
        crm.upgrade()
        assert migrations.current(crm.engine, crm.schemas) == migrations.heads(crm.engine, crm.schemas)
        assert {"alembic_version", "alembic_version_tableplug"} <= migrations.table_names(crm.engine)


def schema_plugin(name: str, **schema) -> SimpleNamespace:
    values = {"branch": name, "versions": "/nonexistent", "tables": ()} | schema

    @crmcore.hookimpl
    def register_migrations(register):
        register(PluginSchema(**values))

    return SimpleNamespace(__name__=name, register_migrations=register_migrations)


def test_two_plugins_claiming_one_table(crm_sqlite_url, tableplugin) -> None:
    twin = schema_plugin("twinplug", tables=("twinplug_x", "tableplug_notes"))
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, extra=[tableplugin, twin])
    message = str(err.value)
    assert "tableplug_notes" in message and "'tableplugin'" in message and "'twinplug'" in message


def test_plugin_claiming_a_core_table(crm_sqlite_url) -> None:
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, extra=[schema_plugin("sneaky", tables=("customers",))])
    assert "'customers'" in str(err.value) and "crmcore" in str(err.value) and "'sneaky'" in str(err.value)


def test_two_plugins_on_one_branch(crm_sqlite_url, tableplugin) -> None:
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, extra=[tableplugin, schema_plugin("copycat", branch="tableplug")])
    assert "tableplug" in str(err.value) and "'copycat'" in str(err.value) and "'tableplugin'" in str(err.value)


def test_plugin_branch_cannot_reuse_the_core_branch(crm_sqlite_url) -> None:
    with pytest.raises(PluginError, match="crmcore"):
        open_crm(crm_sqlite_url, extra=[schema_plugin("core-wannabe", branch="crmcore")])


def test_plugin_needing_an_unknown_core_revision(crm_sqlite_url, tableplugin) -> None:
    plugin = schema_plugin("future", versions=tableplugin.VERSIONS, requires_core="0099_future")
    # Same revisions, another branch label: only the requirement is under test.
    plugin.register_migrations = _with_branch(tableplugin.VERSIONS, "future", "0099_future")
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, extra=[plugin])
    assert "0099_future" in str(err.value) and "future" in str(err.value)


def _with_branch(versions, branch, requires):
    @crmcore.hookimpl
    def register_migrations(register):
        register(PluginSchema(branch=branch, versions=versions, tables=(), requires_core=requires))

    return register_migrations


def test_a_plugin_registering_two_schemas_is_refused(crm_sqlite_url) -> None:
    @crmcore.hookimpl
    def register_migrations(register):
        register(PluginSchema(branch="a", versions="/x"))
        register(PluginSchema(branch="b", versions="/y"))

    with pytest.raises(PluginError, match="'greedy'"):
        open_crm(crm_sqlite_url, extra=[SimpleNamespace(__name__="greedy", register_migrations=register_migrations)])


def test_every_timestamp_column_is_utc() -> None:
    """Every timestamp column of the core is a UTCDateTime (never a naive DateTime)."""
    from sqlalchemy import DateTime

    from crmcore.store.types import UTCDateTime

    for table in tables.metadata.tables.values():
        for column in table.columns:
            assert not isinstance(column.type, DateTime), f"{table.name}.{column.name} is a naive DateTime"
            if column.name.endswith("_at") or column.name in ("as_of", "follow_up_due"):
                assert isinstance(column.type, UTCDateTime), f"{table.name}.{column.name}"


def test_existing_database_upgrades_from_the_first_revision(crm_db_url) -> None:
    """A database left at 0001 keeps its data and gains the later revisions on open."""
    from alembic import command

    engine = make_engine(crm_db_url)
    try:
        command.upgrade(migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version"),
                        "0001_core")
        assert "ix_contacts_email" not in {i["name"] for i in inspect(engine).get_indexes("contacts")}
    finally:
        engine.dispose()
    with open_crm(crm_db_url, migrate=False) as crm:
        assert migrations.needs_upgrade(crm.engine, {})
        crm.upgrade()
        assert migrations.current(crm.engine, {}) == {"crmcore": (CORE_HEAD,)}
        assert "ix_contacts_email" in {i["name"] for i in inspect(crm.engine).get_indexes("contacts")}
        customer = crm.customers.add(name="升级")
        crm.contacts.add(customer_id=customer.id, name="a", email="a@example.com")
        assert crm.contacts.find(email="a@example.com").name == "a"


def test_a_replayed_schema_equals_the_migrated_one(crm_db_url) -> None:
    """tests/schema_cache.py: the snapshot replayed on an empty database is what migrating makes."""
    plugins = ["segments", "loyalty", "notify", "reports", "access"]

    def migrated_state() -> tuple[dict, dict, list]:  # columns, keys and indexes, versions
        crm = crmcore.CRM.open(config=Config.from_mapping({"database_url": crm_db_url, "plugins": plugins}))
        try:
            inspector = inspect(crm.engine)
            columns = {t: sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t))
                       for t in inspector.get_table_names()}
            keys = {t: sorted(repr((fk["constrained_columns"], fk["referred_table"], fk.get("options")))
                              for fk in inspector.get_foreign_keys(t))
                    + sorted(repr((ix["name"], ix["column_names"], ix["unique"])) for ix in inspector.get_indexes(t))
                    + sorted(repr((uq["name"], uq["column_names"])) for uq in inspector.get_unique_constraints(t))
                    for t in columns}
            with crm.engine.connect() as conn:
                versions = sorted(tuple(row) for t in columns if t.startswith("alembic_version")
                                  for row in conn.execute(text(f"SELECT * FROM {t}")))
            return columns, keys, versions
        finally:
            crm.close()

    migrated = migrated_state()
    reset(crm_db_url)
    schema_cache.set_enabled(True)
    migrated_state()           # captured (or already captured by an earlier test in this process)
    drop(crm_db_url)
    replayed = migrated_state()
    assert schema_cache.captured(make_engine(crm_db_url).dialect.name)
    assert replayed == migrated
    reset(crm_db_url)          # servers: emptied back to the replay (tests/schema_reuse.py)
    assert migrated_state() == migrated


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_an_emptied_server_database_is_a_fresh_one(kind: str) -> None:
    """tests/schema_reuse.py: a reset that empties tables leaves what dropping and replaying leaves:
    no rows, ids counting from the start again; a schema a test changed is dropped instead.
    (SQLite tests get a new file each: nothing is emptied there.)"""
    crm_db_url = crmcore.testing.server_url(kind)
    schema_cache.set_enabled(True)
    plugins = ["loyalty", "notify"]

    def open_crm() -> crmcore.CRM:
        return crmcore.CRM.open(config=Config.from_mapping({"database_url": crm_db_url, "plugins": plugins}))

    def first_ids() -> tuple[int, int]:
        crm = open_crm()
        try:
            assert crm.customers.list() == []
            customer = crm.customers.add(name="Erste")
            deal = crm.deals.add(customer_id=customer.id, title="d", amount="10", currency="EUR", stage="won")
            return customer.id, deal.id
        finally:
            crm.close()

    drop(crm_db_url)
    after_drop = first_ids()
    crmcore.testing.reset_database(crm_db_url)
    assert first_ids() == after_drop  # rows gone, counters back where the replay left them
    engine = make_engine(crm_db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE stray (x INTEGER)")
        crmcore.testing.reset_database(crm_db_url)
        assert "stray" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert first_ids() == after_drop


def drop(url: str) -> None:
    """Start from no tables at all, whatever the schema cache does."""
    if url.startswith("sqlite:///"):
        import os
        os.remove(url.removeprefix("sqlite:///"))
    else:
        schema_cache.drop_everything(url)


def reset(url: str) -> None:
    if url.startswith("sqlite:///"):
        import os
        os.remove(url.removeprefix("sqlite:///"))
    else:
        crmcore.testing.reset_database(url)


# -- the check on open without Alembic (issue 21: start-up) --------------------------

def test_file_heads_agree_with_alembic_for_the_core_and_every_installed_plugin(crm_sqlite_url, tableplugin) -> None:
    """Every revision directory this environment ships, read from source, gives Alembic's heads."""
    with CRM.open(crm_sqlite_url, extra_plugins=[tableplugin], migrate=False) as crm:
        assert len(crm.schemas) >= 2  # the installed plugins' branches and the fixture's
        for branch, versions, _ in migrations.sources(crm.schemas):
            assert migrations.file_heads(versions) == set(migrations.heads(crm.engine, crm.schemas)[branch]), branch


def _write_revision(directory, name: str, revision: str, down, style: int, depends=None) -> None:
    down_text = repr(down if style % 3 else (list(down) if isinstance(down, tuple) else down))
    assign = (f"revision: str = {revision!r}\ndown_revision: Union[str, Sequence[str], None] = {down_text}\n"
              if style % 2 else f"revision = {revision!r}\ndown_revision = {down_text}\n")
    (directory / name).write_text(
        f'"""rev {revision}"""\nfrom typing import Sequence, Union\n\nimport sqlalchemy as sa\n{assign}'
        f"branch_labels = None\ndepends_on = {depends!r}\n\n\ndef upgrade() -> None:\n    revision = 'local'\n"
        f"    pass\n\n\ndef downgrade() -> None:\n    pass\n")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), count=st.integers(min_value=1, max_value=7))
def test_file_heads_equal_alembics_on_any_revision_graph(tmp_path_factory, data, count) -> None:
    """Branches, merges (tuple or list), dependencies, annotated assignments and files Alembic
    ignores: the heads read from source are Alembic's."""
    from alembic.script import ScriptDirectory

    directory = tmp_path_factory.mktemp("versions")
    for i in range(count):
        downs = data.draw(st.lists(st.integers(0, i - 1), max_size=min(i, 3), unique=True)) if i else []
        down = None if not downs else (f"r{downs[0]}" if len(downs) == 1 else tuple(f"r{d}" for d in downs))
        depends = f"r{data.draw(st.integers(0, i - 1))}" if i and data.draw(st.booleans()) else None
        _write_revision(directory, f"{i:03d}_r{i}.py", f"r{i}", down, data.draw(st.integers(0, 5)), depends)
    (directory / "__init__.py").write_text("revision = 'not a revision'\n")
    (directory / ".#000_r0.py").write_text("an editor's lock file\n")
    (directory / "README").write_text("revision = 'neither'\n")
    config = migrations.alembic_config(make_engine("sqlite://"), directory, "alembic_version")
    assert migrations.file_heads(directory) == set(ScriptDirectory.from_config(config).get_heads())


@pytest.mark.parametrize("source", [
    "revision = make()\ndown_revision = None\n",                       # not a literal
    "revision = 'a'\ndown_revision = None\nrevision = 'b'\n",          # assigned twice
    "if True:\n    revision = 'a'\ndown_revision = None\n",            # bound by a block
    "from elsewhere import revision\ndown_revision = None\n",          # bound by an import
    "from elsewhere import *\nrevision = 'a'\ndown_revision = None\n",  # maybe rebound
    "down_revision = None\n",                                          # the legacy file-name revision
    "revision = 'a'\ndown_revision = 3\n",                             # not a revision id
    "def f():\n    global revision\n    revision = 'b'\nrevision = 'a'\ndown_revision = None\nf()\n",
    "revision = 'a'\ndown_revision = None\n(",                         # not Python
])
def test_a_revision_file_not_read_plainly_leaves_the_answer_to_alembic(tmp_path, source) -> None:
    (tmp_path / "001_a.py").write_text(source)
    assert migrations.file_heads(tmp_path) is None


def test_at_heads_only_when_every_version_table_holds_its_heads(crm_db_url, tableplugin) -> None:
    """A database behind on a plugin branch or on the core, or without a version table, is not at
    its heads: Alembic then judges and upgrades exactly as before."""
    with open_crm(crm_db_url, extra=[tableplugin], migrate=False) as crm:
        assert not migrations.at_heads(crm.engine, crm.schemas)  # no version table yet
        assert migrations.needs_upgrade(crm.engine, crm.schemas)
        crm.upgrade()
        assert migrations.at_heads(crm.engine, crm.schemas)
        assert not migrations.needs_upgrade(crm.engine, crm.schemas)
        from alembic import command

        command.downgrade(migrations.alembic_config(crm.engine, tableplugin.VERSIONS, "alembic_version_tableplug"),
                          "tp001")
        assert not migrations.at_heads(crm.engine, crm.schemas)
        assert migrations.needs_upgrade(crm.engine, crm.schemas)
        assert migrations.at_heads(crm.engine, {})  # the core alone is at its head
    with open_crm(crm_db_url, extra=[tableplugin]) as crm:  # open upgrades the branch (tp002 re-added)
        assert migrations.current(crm.engine, crm.schemas) == {"crmcore": (CORE_HEAD,), "tableplug": ("tp002",)}
        assert migrations.at_heads(crm.engine, crm.schemas)
        with crm.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0023_lookup_keys'"))
        assert not migrations.at_heads(crm.engine, crm.schemas)
        assert migrations.needs_upgrade(crm.engine, crm.schemas)
        with crm.engine.begin() as conn:  # only the record was set back, not the schema
            conn.execute(text(f"UPDATE alembic_version SET version_num = '{CORE_HEAD}'"))


def test_opening_a_database_at_its_heads_does_not_import_alembic(crm_sqlite_url) -> None:
    """What the shortcut is for: a command on an up-to-date database never imports Alembic."""
    import subprocess
    import sys

    CRM.open(crm_sqlite_url).close()  # every installed plugin's branch migrated
    code = ("import sys; from crmcore import CRM; CRM.open(sys.argv[1]).close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))")
    out = subprocess.run([sys.executable, "-c", code, crm_sqlite_url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

def test_import_digest_revision_goes_down_and_up(crm_db_url) -> None:
    """0028_import_digest adds the nullable customers.import_digest (crmcore.io.fingerprint); going
    down drops it and keeps every row, going up again gives rows none (their next import writes it)."""
    from alembic import command

    with open_crm(crm_db_url) as crm:
        crm.customers.add(name="往返", external_id="R1")
        with crm.unit() as uow:
            uow.conn.execute(text("UPDATE customers SET import_digest = :d"), {"d": "0" * 32})
    engine = make_engine(crm_db_url)
    try:
        config = migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version")
        command.downgrade(config, "0027_rfm")
        assert "import_digest" not in {c["name"] for c in inspect(engine).get_columns("customers")}
        command.upgrade(config, "0028_import_digest")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name, import_digest FROM customers")).all() == [("往返", None)]
    finally:
        engine.dispose()
    with open_crm(crm_db_url) as crm:
        assert migrations.current(crm.engine, {}) == {"crmcore": (CORE_HEAD,)}
        assert [c.name for c in crm.customers.list()] == ["往返"]


def test_import_digest_trigger_revision_goes_down_and_up(crm_db_url) -> None:
    """0029_import_digest_trigger forgets every digest of the older formula and adds the trigger
    that forgets a changed row's digest (SQLite, PostgreSQL; MariaDB keeps none); going down drops
    the trigger and forgets the digests again; up again, the trigger is back."""
    from alembic import command

    def digest(conn) -> object:
        return conn.execute(text("SELECT import_digest FROM customers")).scalar_one()

    def forgets(engine) -> bool:
        with engine.begin() as conn:
            conn.execute(text("UPDATE customers SET import_digest = :d"), {"d": "0" * 32})
            conn.execute(text("UPDATE customers SET name = 'changed'"))
            return digest(conn) is None

    with open_crm(crm_db_url) as crm:
        crm.customers.add(name="往返", external_id="R1")
        dialect = crm.engine.dialect.name
    engine = make_engine(crm_db_url)
    try:
        assert forgets(engine) == (dialect in ("sqlite", "postgresql"))
        config = migrations.alembic_config(engine, migrations.HERE / "versions", "alembic_version")
        with engine.begin() as conn:
            conn.execute(text("UPDATE customers SET import_digest = :d"), {"d": "1" * 32})
        command.downgrade(config, "0028_import_digest")
        with engine.connect() as conn:
            assert digest(conn) is None
        assert not forgets(engine)  # no trigger at 0028
        command.upgrade(config, "0029_import_digest_trigger")
        with engine.connect() as conn:
            assert digest(conn) is None  # 0028's digest (the older formula) forgotten
        assert forgets(engine) == (dialect in ("sqlite", "postgresql"))
    finally:
        engine.dispose()
    with open_crm(crm_db_url) as crm:
        assert migrations.current(crm.engine, {}) == {"crmcore": (CORE_HEAD,)}
        assert [c.name for c in crm.customers.list()] == ["changed"]


def test_tables_dropped_and_migrated_again_keep_the_import_digest_trigger(crm_db_url) -> None:
    """``crm demo --force`` drops only the tables of a server database: PostgreSQL keeps the
    trigger's function, and migrating again must still work (and the trigger forget)."""
    from crmcore.store.maintenance import drop_all_tables

    open_crm(crm_db_url).close()
    drop_all_tables(crm_db_url)
    with open_crm(crm_db_url) as crm:
        crm.customers.add(name="again", external_id="A1")
        dialect = crm.engine.dialect.name
        with crm.engine.begin() as conn:
            conn.execute(text("UPDATE customers SET import_digest = :d"), {"d": "0" * 32})
            conn.execute(text("UPDATE customers SET name = 'changed'"))
            digest = conn.execute(text("SELECT import_digest FROM customers")).scalar_one()
    assert (digest is None) == (dialect in ("sqlite", "postgresql"))
