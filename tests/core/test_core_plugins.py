"""Plugin loading: entry points with an allowlist and a blocklist, CRM_PLUGINS="",
single-file plugins from a directory, import failures, misspelled hooks, name
clashes and ``plugin_info()``.

Entry-point plugins are real installed distributions: each test writes a
``*.dist-info`` directory and its modules into ``tmp_path`` and puts that on
``sys.path``, so ``importlib.metadata`` finds them exactly as it finds pip-installed
ones, without touching the virtualenv other tests share.
"""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest

import crmcore
from crmcore import CRM, Config, CustomField, PluginError
from crmcore.application.plugins import ENTRY_POINT_GROUP, PluginManager

ALPHA = '''
import crmcore

EVENTS = []


class AlphaSegmenter:
    name = "alpha-seg"
    description = "everyone in one segment"
    options_type = None


@crmcore.hookimpl
def register_segmenters(register):
    register(AlphaSegmenter())


@crmcore.hookimpl
def on_customer_created(customer):
    EVENTS.append(customer.name)
'''

BETA = '''
import crmcore


@crmcore.hookimpl
def register_custom_fields(register):
    register(crmcore.CustomField("customer", "beta_score", "int"))
'''

BROKEN = '''
raise ImportError("beta dependency 'nonexistent_lib' is missing")
'''

FIXTURE_DIST = {
    "name": "crmcore-fixtureplug",
    "version": "1.2.3",
    "entry_points": {"core_fixture_alpha": "core_fixture_alpha_mod", "core_fixture_beta": "core_fixture_beta_mod",
                     "core_fixture_broken": "core_fixture_broken_mod"},
    "modules": {"core_fixture_alpha_mod": ALPHA, "core_fixture_beta_mod": BETA, "core_fixture_broken_mod": BROKEN},
}
MINE = set(FIXTURE_DIST["entry_points"])


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Install the fixture distribution (on sys.path only); returns every installed plugin name."""
    root = tmp_path / "site"
    info = root / "crmcore_fixtureplug-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {FIXTURE_DIST['name']}\nVersion: {FIXTURE_DIST['version']}\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in FIXTURE_DIST["entry_points"].items()))
    for module, source in FIXTURE_DIST["modules"].items():
        (root / f"{module}.py").write_text(source)
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(root))
    names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    assert MINE <= set(names)
    yield names
    for module in FIXTURE_DIST["modules"]:
        sys.modules.pop(module, None)


def others(installed: list[str]) -> list[str]:
    """Installed plugins that are not this test's (first-party ones, in development alongside)."""
    return [n for n in installed if n not in MINE]


def open_crm(url: str, **values) -> CRM:
    extra = values.pop("extra_plugins", ())
    return CRM.open(config=Config.from_mapping({"database_url": url} | values), extra_plugins=extra)


# -- entry points: allowlist, blocklist, CRM_PLUGINS ---------------------------------------

def test_allowlist_loads_only_the_named_plugins(installed, crm_sqlite_url) -> None:
    with open_crm(crm_sqlite_url, plugins=["core_fixture_alpha"]) as crm:
        assert crm.plugins.names() == ["core_fixture_alpha"]
        assert crm.plugins.failures == []
        assert crm.segments.registry.names() == ["alpha-seg"]
        crm.customers.add(name="张伟")
        assert sys.modules["core_fixture_alpha_mod"].EVENTS == ["张伟"]
        assert "core_fixture_beta_mod" not in sys.modules  # not even imported


def test_empty_allowlist_means_no_plugins(installed, crm_sqlite_url) -> None:
    with open_crm(crm_sqlite_url, plugins=[]) as crm:
        assert crm.plugins.names() == [] and crm.plugin_info() == []
        assert len(crm.segments.registry) == 0


def test_crm_plugins_empty_environment_variable_means_none(installed, crm_sqlite_url, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no crm.toml here
    config = Config.load(environ={"CRM_PLUGINS": "", "CRM_DATABASE_URL": crm_sqlite_url})
    assert config.plugins == ()
    assert config.sources["plugins"] == "environment CRM_PLUGINS"
    with CRM.open(config=config) as crm:
        assert crm.plugins.names() == []
    unset = Config.load(environ={})
    assert unset.plugins is None  # unset means every installed plugin


def test_crm_plugins_environment_list(installed, crm_sqlite_url, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.load(environ={"CRM_PLUGINS": " core_fixture_alpha , core_fixture_beta ",
                                  "CRM_DATABASE_URL": crm_sqlite_url})
    assert config.plugins == ("core_fixture_alpha", "core_fixture_beta")
    with CRM.open(config=config) as crm:
        assert crm.plugins.names() == ["core_fixture_alpha", "core_fixture_beta"]
        assert set(crm.custom_fields["customer"]) == {"beta_score"}


def test_unknown_plugin_in_allowlist_lists_installed_ones(installed, crm_sqlite_url) -> None:
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=["core_fixture_alpha", "core_fixture_gamma"])
    message = str(err.value)
    assert "'core_fixture_gamma'" in message
    for name in installed:
        assert name in message


def test_blocklist(installed, crm_sqlite_url) -> None:
    # Every installed plugin but the blocked ones (others' plugins blocked to keep this test about ours).
    block = others(installed) + ["core_fixture_broken"]
    with open_crm(crm_sqlite_url, plugins_block=block) as crm:
        assert crm.plugins.names() == ["core_fixture_alpha", "core_fixture_beta"]
        assert crm.plugins.failures == []
    with open_crm(crm_sqlite_url, plugins_block=block + ["core_fixture_alpha"]) as crm:
        assert crm.plugins.names() == ["core_fixture_beta"]
    # Allowed and blocked: blocked wins, and it is not an "unknown plugin".
    with open_crm(crm_sqlite_url, plugins=["core_fixture_alpha", "core_fixture_beta"],
                  plugins_block=["core_fixture_alpha"]) as crm:
        assert crm.plugins.names() == ["core_fixture_beta"]


def test_blocklist_from_environment(installed, crm_sqlite_url, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.load(environ={"CRM_PLUGINS": "core_fixture_alpha,core_fixture_beta",
                                  "CRM_PLUGINS_BLOCK": "core_fixture_beta", "CRM_DATABASE_URL": crm_sqlite_url})
    with CRM.open(config=config) as crm:
        assert crm.plugins.names() == ["core_fixture_alpha"]


def test_entry_point_that_fails_to_import_is_recorded_and_others_load(installed, crm_sqlite_url) -> None:
    with open_crm(crm_sqlite_url, plugins=sorted(MINE)) as crm:
        assert crm.plugins.names() == ["core_fixture_alpha", "core_fixture_beta"]
        failure, = crm.plugins.failures
        assert failure.name == "core_fixture_broken"
        assert "nonexistent_lib" in failure.error and "ImportError" in failure.error
        assert "core_fixture_broken_mod" in failure.source
        crm.customers.add(name="still works")


def test_plugin_info(installed, crm_sqlite_url) -> None:
    with open_crm(crm_sqlite_url, plugins=["core_fixture_alpha", "core_fixture_beta"]) as crm:
        info = {p.name: p for p in crm.plugin_info()}
    alpha, beta = info["core_fixture_alpha"], info["core_fixture_beta"]
    assert (alpha.version, alpha.distribution, alpha.source) == ("1.2.3", "crmcore-fixtureplug", "entry point")
    assert alpha.hooks == ("on_customer_created", "register_segmenters")
    assert alpha.components == {"segmenters": ["alpha-seg"]}
    assert beta.hooks == ("register_custom_fields",)
    assert beta.components == {"custom_fields": ["customer.beta_score"]}


# -- plugins from a directory -----------------------------------------------------------------

def write(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


HELLO = '''
    import crmcore

    SEEN = []


    @crmcore.hookimpl
    def on_customer_created(uow, customer):
        SEEN.append(customer.name)
'''


def test_single_file_plugins_from_a_directory(tmp_path, crm_sqlite_url) -> None:
    plugins = tmp_path / "plugins"
    hello = write(plugins, "hello.py", HELLO)
    write(plugins, "_helper.py", "raise RuntimeError('files starting with _ are not plugins')\n")
    write(plugins, "broken.py", "import crmcore\nraise RuntimeError('cannot import this one')\n")
    write(plugins, "syntax.py", "def (:\n")
    write(plugins, "notes.txt", "not a plugin")
    write(plugins, "audit.py", '''
        import crmcore

        @crmcore.hookimpl
        def register_custom_fields(register):
            register(crmcore.CustomField("deal", "audited", "bool"))
    ''')
    with open_crm(crm_sqlite_url, plugins=[], plugins_dir=str(plugins)) as crm:
        assert crm.plugins.names() == ["audit", "hello"]
        failures = {f.name: f for f in crm.plugins.failures}
        assert set(failures) == {"broken", "syntax"}
        assert "cannot import this one" in failures["broken"].error
        assert failures["broken"].source == str(plugins / "broken.py")
        assert "SyntaxError" in failures["syntax"].error
        crm.customers.add(name="张伟")
        assert crm.plugins.pm.get_plugin("hello").SEEN == ["张伟"]
        info = {p.name: p for p in crm.plugin_info()}
        assert info["hello"].source == f"file {hello}"
        assert info["hello"].hooks == ("on_customer_created",)
        assert (info["hello"].version, info["hello"].distribution) == (None, None)
        assert info["audit"].components == {"custom_fields": ["deal.audited"]}
    with open_crm(crm_sqlite_url, plugins=[], plugins_dir=str(plugins), plugins_block=["hello", "broken"]) as crm:
        assert crm.plugins.names() == ["audit"]
        assert [f.name for f in crm.plugins.failures] == ["syntax"]


def test_missing_plugins_directory_is_an_error(tmp_path, crm_sqlite_url) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        open_crm(crm_sqlite_url, plugins=[], plugins_dir=str(tmp_path / "nope"))


# -- misspelled hooks, bad signatures, clashes ---------------------------------------------------

def test_misspelled_hook_in_a_directory_plugin(tmp_path, crm_sqlite_url) -> None:
    plugins = tmp_path / "plugins"
    write(plugins, "typo.py", '''
        import crmcore

        @crmcore.hookimpl
        def on_customer_creatd(uow, customer):
            pass
    ''')
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=[], plugins_dir=str(plugins))
    message = str(err.value)
    assert "'typo'" in message and "on_customer_creatd" in message and "on_customer_created" in message


def test_misspelled_hook_in_a_plugin_object() -> None:
    class Welcome:
        __name__ = "welcome"

        @crmcore.hookimpl
        def on_deal_stage_change(self, deal):
            pass

    manager = PluginManager()
    with pytest.raises(PluginError) as err:
        manager.load(allow=[], extra=[Welcome()])
    assert "'welcome'" in str(err.value) and "'on_deal_stage_change'" in str(err.value)
    assert "did you mean 'on_deal_stage_changed'" in str(err.value)


def test_hook_with_an_argument_the_spec_lacks(crm_sqlite_url) -> None:
    @crmcore.hookimpl
    def on_customer_created(uow, client):
        pass

    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=[],
                 extra_plugins=[SimpleNamespace(__name__="argy", on_customer_created=on_customer_created)])
    assert "'argy'" in str(err.value) and "client" in str(err.value)


def segmenter_plugin(plugin_name: str, segmenter_name: str) -> SimpleNamespace:
    segmenter = SimpleNamespace(name=segmenter_name, description="d", options_type=None)

    @crmcore.hookimpl
    def register_segmenters(register):
        register(segmenter)

    return SimpleNamespace(__name__=plugin_name, register_segmenters=register_segmenters)


def test_two_plugins_registering_one_component_name(crm_sqlite_url) -> None:
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=[], extra_plugins=[segmenter_plugin("first", "rfm"),
                                                             segmenter_plugin("second", "rfm")])
    message = str(err.value)
    assert "'rfm'" in message and "'first'" in message and "'second'" in message
    with open_crm(crm_sqlite_url, plugins=[], extra_plugins=[segmenter_plugin("first", "rfm"),
                                                             segmenter_plugin("second", "abc")]) as crm:
        assert crm.segments.registry.names() == ["abc", "rfm"]
        assert crm.segments.registry.owner("rfm") == "first"


def field_plugin(plugin_name: str, field: CustomField) -> SimpleNamespace:
    @crmcore.hookimpl
    def register_custom_fields(register):
        register(field)

    return SimpleNamespace(__name__=plugin_name, register_custom_fields=register_custom_fields)


def test_two_plugins_declaring_one_custom_field(crm_sqlite_url) -> None:
    field = CustomField("customer", "score", "int")
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=[], extra_plugins=[field_plugin("one", field), field_plugin("two", field)])
    assert "customer.score" in str(err.value) and "'one'" in str(err.value) and "'two'" in str(err.value)
    with pytest.raises(PluginError) as err:
        open_crm(crm_sqlite_url, plugins=[], custom_fields=[{"entity": "customer", "name": "score"}],
                 extra_plugins=[field_plugin("two", field)])
    assert "configuration" in str(err.value) and "'two'" in str(err.value)
    with pytest.raises(PluginError, match="'odd'.*CustomField"):
        open_crm(crm_sqlite_url, plugins=[], extra_plugins=[field_plugin("odd", {"entity": "customer"})])


def test_component_without_a_name(crm_sqlite_url) -> None:
    with pytest.raises(PluginError, match="'nameless'"):
        open_crm(crm_sqlite_url, plugins=[], extra_plugins=[segmenter_plugin("nameless", "")])


def test_two_plugins_with_one_name(crm_sqlite_url) -> None:
    with pytest.raises(PluginError, match="two plugins are named 'twin'"):
        open_crm(crm_sqlite_url, plugins=[], extra_plugins=[SimpleNamespace(__name__="twin"),
                                                             SimpleNamespace(__name__="twin")])


def test_register_hook_that_raises_names_the_plugin(crm_sqlite_url) -> None:
    @crmcore.hookimpl
    def register_reports(register):
        raise RuntimeError("report setup failed")

    with pytest.raises(crmcore.HookError) as err:
        open_crm(crm_sqlite_url, plugins=[],
                 extra_plugins=[SimpleNamespace(__name__="flaky", register_reports=register_reports)])
    assert (err.value.plugin, err.value.hook) == ("flaky", "register_reports")


def test_hook_implementations_may_take_fewer_arguments(crm_sqlite_url) -> None:
    seen = []

    @crmcore.hookimpl
    def on_deal_stage_changed(new):
        seen.append(new.name)

    with open_crm(crm_sqlite_url, plugins=[],
                  extra_plugins=[SimpleNamespace(__name__="terse", on_deal_stage_changed=on_deal_stage_changed)]) as crm:
        customer = crm.customers.add(name="x")
        crm.deals.add(customer_id=customer.id, title="t", amount="1", currency="CNY", stage="lead")
    assert seen == ["lead"]


def test_plugin_manager_has_impls() -> None:
    manager = PluginManager()

    @crmcore.hookimpl
    def on_customer_created():
        pass

    manager.load(allow=[], extra=[SimpleNamespace(__name__="p", on_customer_created=on_customer_created)])
    assert manager.has_impls("on_customer_created")
    assert not manager.has_impls("on_customer_deleted")
    assert manager.names() == ["p"]
