"""A third-party plugin written only from the docs, proven end to end.

``acme-crm-plugin`` (in ``tests/thirdparty/acme-crm-plugin``) is installed into
the environment like any plugin (``pip install -e tests/thirdparty/acme-crm-plugin``)
and loaded through its ``crmcore`` entry point ``acme``: every CRM here is opened
with ``crm_factory(plugins=["acme"])``, never with ``extra_plugins=[acme_crm]``.
Throw-away helper plugins (to provoke a failure) are passed as ``extra_plugins``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import timedelta
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, func, select

from crmcore import CRM, HookError, PluginError, PluginSchema, ValidationError, hookimpl
from crmcore import migrations
from crmcore.testing import FIXED_NOW, ChannelContract, ReportContract, SegmenterContract

if not any(ep.name == "acme" for ep in entry_points(group="crmcore")):
    pytest.skip("acme-crm-plugin is not installed: pip install -e tests/thirdparty/acme-crm-plugin",
                allow_module_level=True)

from acme_crm.channels import LogChannel  # noqa: E402
from acme_crm.reports import WonByOwner  # noqa: E402
from acme_crm.segments import StageSegmenter, TagSegmenter  # noqa: E402
from acme_crm.tables import acme_welcomes  # noqa: E402

PEOPLE = [
    # name, email, tags, lifecycle stage
    ("Ada Lovelace", "ada@example.com", ["vip", "gold"], "customer"),
    ("张伟", "zhang.wei@example.com", ["vip"], "lead"),
    ("Bob Smith", None, [], "prospect"),
    ("Carla Gómez", "carla@example.com", ["gold"], "customer"),
    ("Dmitri", "dmitri@example.com", ["vipish"], "former"),
]


def log_config(path: Path) -> dict:
    return {"channels": {"acme-log": {"path": str(path)}}}


def seed(crm: CRM) -> list:
    return [crm.customers.add(name=n, email=e, tags=t, stage=s) for n, e, t, s in PEOPLE]


@pytest.fixture
def acme(crm_factory, tmp_path):
    """A CRM with acme loaded through its entry point, logging to tmp_path/messages.log."""
    return crm_factory(plugins=["acme"], config=log_config(tmp_path / "messages.log"))


# -- loading and listing -------------------------------------------------------------

def test_loaded_through_the_entry_point_and_listed(acme):
    (info,) = acme.plugin_info()
    assert info.name == "acme"
    assert info.version == "0.1.0"
    assert info.distribution == "acme-crm-plugin"
    assert info.source == "entry point"
    assert set(info.hooks) == {
        "register_segmenters", "register_channels", "register_reports", "register_renderers",
        "register_custom_fields", "register_migrations", "register_commands", "register_settings", "register_routes",
        "on_customer_created", "merge_customer_rows", "unmerge_customer_rows",
    }
    assert info.components == {
        "segmenters": ["acme-stage", "acme-tags"],
        "channels": ["acme-log"],
        "reports": ["acme-won-by-owner"],
        "renderers": ["acme-md"],
        "custom_fields": ["customer.acme_account"],
        "tables": ["acme_welcomes"],
    }
    assert acme.segments.registry.owner("acme-tags") == "acme"
    assert acme.notify.registry.owner("acme-log") == "acme"


def test_not_loaded_unless_selected(crm_factory):
    crm = crm_factory(plugins=[])
    assert crm.plugin_info() == []
    assert "acme-tags" not in crm.segments.registry


@pytest.mark.parametrize("env, loaded", [
    ({"CRM_PLUGINS": "acme"}, ["acme"]),
    ({"CRM_PLUGINS": ""}, []),
    ({"CRM_PLUGINS": "acme", "CRM_PLUGINS_BLOCK": "acme"}, []),
])
def test_selected_by_environment(monkeypatch, tmp_path, env, loaded):
    monkeypatch.chdir(tmp_path)  # no stray crm.toml
    for var in ("CRM_PLUGINS", "CRM_PLUGINS_BLOCK", "CRM_PLUGINS_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with CRM.open(f"sqlite:///{tmp_path / 'env.db'}") as crm:
        assert [p.name for p in crm.plugin_info()] == loaded


# -- the segmenters ------------------------------------------------------------------------

def test_tag_segmenter_python_path(acme):
    customers = seed(acme)
    run = acme.segments.run("acme-tags", as_of=FIXED_NOW)
    members = {m["customer_id"]: m["segment"] for m in acme.segments.members("acme-tags")}
    # independent computation: exact tag membership, so "vipish" is not "vip"
    expected = {c.id: "vip" if "vip" in c.tags else "other" for c in customers}
    assert members == expected
    assert run.members == len(PEOPLE)
    assert run.counts == dict(Counter(expected.values()))
    assert run.options == {"tag": "vip"}


def test_tag_segmenter_options_from_config_and_call(crm_factory, tmp_path):
    config = log_config(tmp_path / "log") | {"segments": {"acme-tags": {"tag": "gold"}}}
    crm = crm_factory(plugins=["acme"], config=config)
    customers = seed(crm)
    crm.segments.run("acme-tags")
    gold = {m["customer_id"] for m in crm.segments.members("acme-tags", segment="gold")}
    assert gold == {c.id for c in customers if "gold" in c.tags}
    run = crm.segments.run("acme-tags", options={"tag": "vip"})
    assert run.options == {"tag": "vip"}
    assert run.counts == {"vip": 2, "other": 3}


def test_tag_segmenter_batches_past_the_batch_size(acme):
    from acme_crm import segments

    n = segments.BATCH + 7
    acme.customers.add_many([{"name": f"c{i}", "tags": ["vip"] if i % 3 == 0 else []} for i in range(n)])
    run = acme.segments.run("acme-tags")
    assert run.members == n
    assert run.counts == {"vip": len(range(0, n, 3)), "other": n - len(range(0, n, 3))}


def test_stage_segmenter_sql_path(acme):
    customers = seed(acme)
    run = acme.segments.run("acme-stage")
    members = {m["customer_id"]: m["segment"] for m in acme.segments.members("acme-stage")}
    expected = {c.id: "paying" if c.stage.value == "customer" else "pipeline"
                for c in customers if c.stage.value != "former"}
    assert members == expected
    assert run.counts == dict(Counter(expected.values()))


def test_segment_runs_fire_membership_changes(crm_factory, tmp_path):
    seen = []

    class Listener:
        @hookimpl
        def on_segment_membership_changed(self, uow, run, changes):
            seen.append((run.strategy, sorted((c.customer_id, c.old, c.new, c.change) for c in changes)))

    crm = crm_factory(plugins=["acme"], extra_plugins=[Listener()], config=log_config(tmp_path / "log"))
    ada, zhang, bob, *_ = seed(crm)
    crm.segments.run("acme-tags")
    crm.customers.update(bob.id, tags=["vip"])
    crm.customers.update(zhang.id, tags=[])
    crm.segments.run("acme-tags")
    assert seen[1] == ("acme-tags", sorted([(bob.id, "other", "vip", "moved"), (zhang.id, "vip", "other", "moved")]))


# -- the channel ---------------------------------------------------------------------------

def test_channel_delivers_to_the_log_file(acme, tmp_path):
    ada, zhang, bob, *_ = seed(acme)
    log = tmp_path / "messages.log"
    first = acme.notify.enqueue("acme-log", customer_id=ada.id, subject="Hello Ada", key="hello-ada")
    again = acme.notify.enqueue("acme-log", customer_id=ada.id, subject="Hello Ada", key="hello-ada")
    assert first == again  # idempotency key
    acme.notify.enqueue("acme-log", customer_id=zhang.id, subject="你好", key="hello-zhang")
    acme.notify.enqueue("acme-log", customer_id=bob.id, subject="no address", key="hello-bob")
    acme.notify.enqueue("acme-log", customer_id=ada.id, subject="promo", purpose="marketing", key="promo-ada")
    assert not log.exists()  # nothing goes before dispatch

    result = acme.notify.dispatch()
    assert (result.sent, result.dead, result.suppressed) == (2, 0, 0)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines == ["hello-ada\tada@example.com\tHello Ada", "hello-zhang\tzhang.wei@example.com\t你好"]
    status = {row["idempotency_key"]: row["status"] for row in acme.notify.outbox()}
    assert status == {"hello-ada": "sent", "hello-zhang": "sent", "hello-bob": "dead", "promo-ada": "suppressed"}
    assert acme.notify.dispatch().sent == 0  # sent once only
    assert len(log.read_text(encoding="utf-8").splitlines()) == 2


def test_channel_failure_is_transient_and_retried(crm_factory, tmp_path):
    blocked = tmp_path / "missing-dir" / "messages.log"
    clock = [FIXED_NOW]
    crm = crm_factory(plugins=["acme"], config=log_config(blocked), clock=lambda: clock[0])
    ada = crm.customers.add(name="Ada", email="ada@example.com")
    crm.notify.enqueue("acme-log", customer_id=ada.id, subject="Hi", key="k1")
    assert crm.notify.dispatch().retried == 1
    (row,) = crm.notify.outbox()
    assert row["status"] == "pending" and row["attempts"] == 1
    assert row["last_error"].startswith("TransientError")
    blocked.parent.mkdir()
    clock[0] = FIXED_NOW + timedelta(hours=1)
    assert crm.notify.dispatch().sent == 1
    assert blocked.read_text(encoding="utf-8") == "k1\tada@example.com\tHi\n"


def test_channel_without_recipient_is_a_permanent_error(tmp_path):
    from crmcore import Message, PermanentError

    message = Message(1, "acme-log", None, "s", "b", {}, "transactional", None, "k", 1)
    with pytest.raises(PermanentError):
        LogChannel().send(message, LogChannel.options_type(path=str(tmp_path / "x.log")))


def test_channel_options_are_validated_at_start_up(crm_factory):
    from crmcore import ConfigError

    with pytest.raises(ConfigError, match=r"\[channels\.acme-log\] paht: unknown field"):
        crm_factory(plugins=["acme"], config={"channels": {"acme-log": {"paht": "typo.log"}}})
    # options of a plugin that is not loaded are left alone
    assert crm_factory(plugins=[], config={"channels": {"acme-log": {"paht": "typo.log"}}})


# -- the event handler -----------------------------------------------------------------------

def test_new_customer_gets_a_welcome_note_and_row(acme):
    ada = acme.customers.add(name="Ada", email="ada@example.com")
    (note,) = acme.interactions.list({"customer_id": ada.id})
    assert (note.kind.value, note.direction.value, note.subject, note.owner) == ("note", "internal", "welcome", "acme")
    assert note.occurred_at == FIXED_NOW
    with acme.unit(readonly=True) as uow:
        rows = uow.conn.execute(select(acme_welcomes.c.customer_id, acme_welcomes.c.welcomed_at)).all()
    assert rows == [(ada.id, FIXED_NOW)]


def test_handler_failure_rolls_everything_back(crm_factory, tmp_path):
    class NoNotes:
        """Refuses notes, so acme's handler fails inside the customer's unit of work."""

        @hookimpl
        def validate_interaction(self, uow, interaction, previous):
            if interaction.kind.value == "note":
                return [("kind", "notes are switched off")]
            return None

    crm = crm_factory(plugins=["acme"], extra_plugins=[NoNotes()], config=log_config(tmp_path / "log"))
    with pytest.raises(HookError) as caught:
        crm.customers.add(name="Ada")
    assert (caught.value.plugin, caught.value.hook) == ("acme", "on_customer_created")
    assert "plugin 'acme' failed in hook 'on_customer_created'" in str(caught.value)
    assert isinstance(caught.value.error, ValidationError)
    assert "notes are switched off" in str(caught.value)
    assert crm.customers.count() == 0
    assert crm.interactions.count() == 0
    with crm.unit(readonly=True) as uow:
        assert uow.conn.execute(select(func.count()).select_from(acme_welcomes)).scalar_one() == 0


def test_bulk_path_fires_the_batch_event_not_the_per_row_one(crm_factory, tmp_path):
    batches = []

    class Importer:
        @hookimpl
        def on_customers_imported(self, uow, customers):
            batches.append([(c.id, c.name) for c in customers])

    crm = crm_factory(plugins=["acme"], extra_plugins=[Importer()], config=log_config(tmp_path / "log"))
    assert crm.customers.add_many([{"name": "a"}, {"name": "b"}]) == 2
    stored = {c.name: c.id for c in crm.customers.list()}
    assert batches == [[(stored["a"], "a"), (stored["b"], "b")]]
    assert crm.interactions.count() == 0  # acme implements only the per-entity event


# -- tables and migrations ------------------------------------------------------------------

def test_own_branch_and_version_table(acme):
    state = migrations.current(acme.engine, acme.schemas)
    assert state["acme"] == ("acme_0001",)
    assert state["crmcore"]
    tables = migrations.table_names(acme.engine)
    assert {"acme_welcomes", "alembic_version_acme", "alembic_version"} <= tables
    version = Table("alembic_version_acme", MetaData(), autoload_with=acme.engine)
    with acme.engine.connect() as conn:
        assert conn.execute(select(version.c.version_num)).scalars().all() == ["acme_0001"]


def test_database_still_opens_without_the_plugin(crm_factory, tmp_path):
    with_acme = crm_factory(plugins=["acme"], config=log_config(tmp_path / "log"))
    with_acme.customers.add(name="Ada")
    without = crm_factory(plugins=[])
    assert without.customers.count() == 1
    bob = without.customers.add(name="Bob")
    assert without.interactions.count() == 1  # only Ada was welcomed
    assert bob.id is not None


def test_table_clash_names_both_plugins(crm_factory):
    class Squatter:
        @hookimpl
        def register_migrations(self, register):
            register(PluginSchema("squat", Path("/nonexistent"), tables=("acme_welcomes",)))

    with pytest.raises(PluginError, match=r"acme_welcomes.*'acme'.*'Squatter'|acme_welcomes.*'Squatter'.*'acme'"):
        crm_factory(plugins=["acme"], extra_plugins=[Squatter()])


# -- custom field, report, renderer ------------------------------------------------------------

def test_custom_field_is_declared_validated_and_filterable(acme):
    assert acme.custom_fields["customer"]["acme_account"].type == "str"
    ada = acme.customers.add(name="Ada", attributes={"acme_account": "A-1"})
    acme.customers.add(name="Bob", attributes={"acme_account": "B-2"})
    assert [c.id for c in acme.customers.list({"attributes.acme_account": "A-1"})] == [ada.id]
    with pytest.raises(ValidationError, match="acme_account"):
        acme.customers.add(name="Carla", attributes={"acme_account": 42})


def test_custom_field_clash_names_both_plugins(crm_factory, tmp_path):
    from crmcore import CustomField

    class Copycat:
        @hookimpl
        def register_custom_fields(self, register):
            register(CustomField("customer", "acme_account", "int"))

    with pytest.raises(PluginError, match=r"customer\.acme_account.*'acme'.*'Copycat'|"
                                          r"customer\.acme_account.*'Copycat'.*'acme'"):
        crm_factory(plugins=["acme"], extra_plugins=[Copycat()], config=log_config(tmp_path / "log"))


def test_report_matches_an_independent_sum_and_renders(acme):
    ada, zhang, bob, *_ = seed(acme)
    deals = [
        (ada.id, "alice", "1200.50", "USD", "won"),
        (ada.id, "alice", "99.49", "USD", "won"),
        (zhang.id, "alice", "30000", "CNY", "won"),
        (bob.id, "bruno", "500", "USD", "won"),
        (bob.id, "bruno", "700", "USD", "lost"),
        (zhang.id, None, "10", "USD", "proposal"),
    ]
    for customer_id, owner, amount, currency, stage in deals:
        acme.deals.add(customer_id=customer_id, title="d", amount=amount, currency=currency,
                       stage=stage, owner=owner)
    expected: dict = defaultdict(lambda: [0, Decimal(0)])
    for _, owner, amount, currency, stage in deals:
        if stage == "won":
            expected[(owner, currency)][0] += 1
            expected[(owner, currency)][1] += Decimal(amount)
    result = acme.reports.run("acme-won-by-owner", as_of=FIXED_NOW)
    assert {(r[0], r[1]): [r[2], r[3]] for r in result.rows} == dict(expected)
    assert all(isinstance(r[3], Decimal) for r in result.rows)

    markdown = acme.reports.render("acme-won-by-owner", format="acme-md", as_of=FIXED_NOW)
    assert markdown.splitlines()[:4] == ["## Won revenue by owner", "", "| owner | currency | deals | revenue |",
                                         "|---|---|---|---|"]
    assert "| alice | USD | 2 | 1299.99 |" in markdown
    document = json.loads(acme.reports.render("acme-won-by-owner", format="json", as_of=FIXED_NOW))
    assert document["charts"][0]["kind"] == "bar"


# -- the command ------------------------------------------------------------------------------

def test_command_is_added_to_crm(tmp_path, monkeypatch, capsys):
    cli = pytest.importorskip("crmcore.cli")
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    with CRM.open(db, plugins=["acme"]) as crm:
        ada = crm.customers.add(name="Ada", tags=["vip"])
        crm.customers.add(name="Bob")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:  # click's standalone mode exits, 0 on success
        cli.main(["--db", db, "--plugins", "acme", "--json", "acme-vips"])
    assert done.value.code in (0, None)
    assert json.loads(capsys.readouterr().out) == [{"id": ada.id, "name": "Ada"}]
    assert "acme-vips" in cli.cli.commands


# -- contract tests ---------------------------------------------------------------------------

@pytest.fixture
def seeded_crm(crm_factory, tmp_path):
    crm = crm_factory(plugins=["acme"], config=log_config(tmp_path / "log"))
    customers = seed(crm)
    crm.deals.add(customer_id=customers[0].id, title="d", amount="10", currency="USD", stage="won", owner="x")
    return crm


class TestTagSegmenterContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return TagSegmenter()


class TestStageSegmenterContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return StageSegmenter()


class TestLogChannelContract(ChannelContract):
    @pytest.fixture
    def component(self):
        return LogChannel()

    @pytest.fixture
    def channel_options(self, tmp_path):
        return {"path": str(tmp_path / "log")}

    @pytest.fixture
    def delivered(self, tmp_path):
        path = tmp_path / "log"
        return lambda: path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    @pytest.fixture
    def provoke_failure(self, tmp_path):
        def provoke(kind):
            if kind == "transient":  # the log cannot be opened (here: a directory); acme retries
                return {"options": {"path": str(tmp_path)}}
            return {"message": {"recipient": None}}  # nobody to write to: acme gives up
        return provoke


class TestWonByOwnerContract(ReportContract):
    @pytest.fixture
    def component(self):
        return WonByOwner()
