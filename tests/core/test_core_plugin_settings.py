"""Plugin-wide settings: ``[plugins.NAME]`` validated into the attrs class the
plugin registers with ``register_settings``, overridden by
``CRM_PLUGIN_<NAME>_<KEY>``, reachable from hooks with ``crm.settings_for``."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

from crmcore import CRM, Config, ConfigError, PluginError, PluginSettings, hookimpl


@attrs.frozen
class GreeterSettings:
    greeting: str = "hello"
    limit: int = attrs.field(default=10, validator=attrs.validators.gt(0))
    loud: bool = False
    budget: Decimal = Decimal("0")
    since: date | None = None
    tags: tuple[str, ...] = ()


@attrs.frozen
class KeyedSettings:
    api_key: str  # required: no default


class Greeter:
    """A test plugin that declares settings and reads them in an event hook."""

    def __init__(self, name: str = "greeter", settings: type = GreeterSettings) -> None:
        self.__name__ = name
        self.settings = settings
        self.seen: list[str] = []

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(self.settings)

    @hookimpl
    def on_customer_created(self, uow: Any, customer: Any) -> None:
        self.seen.append(uow.crm.settings_for(GreeterSettings).greeting + " " + customer.name)


class Silent:
    """A plugin that declares no settings."""

    __name__ = "silent"

    @hookimpl
    def on_customer_created(self, uow: Any, customer: Any) -> None:
        pass


def open_crm(tmp_path: Path, plugins: dict | None = None, environ: dict[str, str] | None = None,
             extra: tuple = ()) -> CRM:
    text = "plugins = []\n" if not plugins else "[plugins]\nenabled = []\n"
    for name, table in (plugins or {}).items():
        text += f"[plugins.{name}]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    path = tmp_path / "crm.toml"
    path.write_text(text, encoding="utf-8")
    config = Config.load(path, environ=environ or {}, database_url=f"sqlite:///{tmp_path / 'crm.db'}")
    return CRM.open(config=config, extra_plugins=extra)


def config_error(tmp_path: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as err:
        open_crm(tmp_path, **kwargs)
    return str(err.value)


def test_defaults_without_a_table(tmp_path: Path) -> None:
    with open_crm(tmp_path, extra=(Greeter(),)) as crm:
        settings = crm.settings_for(GreeterSettings)
        assert settings == GreeterSettings()
        assert crm.plugin_settings["greeter"].sources == {f: "default" for f in attrs.fields_dict(GreeterSettings)}


def test_table_is_structured_into_the_class_and_reaches_event_hooks(tmp_path: Path) -> None:
    greeter = Greeter()
    table = {"greeting": '"你好"', "limit": 3, "loud": "true", "budget": '"12.50"', "since": "2026-01-31",
             "tags": '["a", "b"]'}
    with open_crm(tmp_path, plugins={"greeter": table}, extra=(greeter,)) as crm:
        settings = crm.settings_for(GreeterSettings)
        assert settings == GreeterSettings("你好", 3, True, Decimal("12.50"), date(2026, 1, 31), ("a", "b"))
        assert crm.plugin_settings["greeter"].sources["limit"].endswith("crm.toml")
        assert crm.plugin_settings["greeter"].sources["tags"].endswith("crm.toml")
        crm.customers.add(name="张伟")
    assert greeter.seen == ["你好 张伟"]


def test_environment_wins_over_the_file_and_is_converted_by_type(tmp_path: Path) -> None:
    environ = {"CRM_PLUGIN_GREETER_LIMIT": "7", "CRM_PLUGIN_GREETER_LOUD": "yes",
               "CRM_PLUGIN_GREETER_TAGS": "x, y", "CRM_PLUGIN_GREETER_BUDGET": "99.95"}
    with open_crm(tmp_path, plugins={"greeter": {"limit": 3, "greeting": '"hi"'}}, environ=environ,
                  extra=(Greeter(),)) as crm:
        settings = crm.settings_for(GreeterSettings)
        assert (settings.greeting, settings.limit, settings.loud) == ("hi", 7, True)
        assert settings.tags == ("x", "y") and settings.budget == Decimal("99.95")
        sources = crm.plugin_settings["greeter"].sources
        assert sources["limit"] == "environment CRM_PLUGIN_GREETER_LIMIT"
        assert sources["greeting"].endswith("crm.toml") and sources["since"] == "default"


def test_plugin_names_with_dashes_use_underscores(tmp_path: Path) -> None:
    with open_crm(tmp_path, environ={"CRM_PLUGIN_ACME_GREETER_LIMIT": "2"},
                  extra=(Greeter("acme-greeter"),)) as crm:
        assert crm.settings_for(GreeterSettings).limit == 2


@pytest.mark.parametrize("table,environ,fragments", [
    ({"limit": '"lots"'}, {}, ["crm.toml: [plugins.greeter] limit:", "expected an integer, got 'lots'"]),
    ({"limt": 5}, {}, ["crm.toml: [plugins.greeter] unknown key(s): limt (did you mean 'limit'?)"]),
    ({"limit": 0}, {}, ["[plugins.greeter] limit:", "must be > 0"]),
    ({"since": 5}, {}, ["[plugins.greeter] since: not a date"]),
    ({"budget": 1.5}, {}, ["[plugins.greeter] budget:", "not float"]),
    ({}, {"CRM_PLUGIN_GREETER_LIMIT": "lots"},
     ["environment CRM_PLUGIN_GREETER_LIMIT: [plugins.greeter] limit: expected an integer, got 'lots'"]),
    ({}, {"CRM_PLUGIN_GREETER_LOUD": "maybe"}, ["environment CRM_PLUGIN_GREETER_LOUD", "loud"]),
    ({}, {"CRM_PLUGIN_GREETER_LIMT": "5"},
     ["environment CRM_PLUGIN_GREETER_LIMT: [plugins.greeter] has no key 'limt'",
      "did you mean CRM_PLUGIN_GREETER_LIMIT?"]),
])
def test_bad_settings_name_table_key_and_source(tmp_path: Path, table: dict, environ: dict,
                                                fragments: list[str]) -> None:
    message = config_error(tmp_path, plugins={"greeter": table} if table else None, environ=environ,
                           extra=(Greeter(),))
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_required_setting(tmp_path: Path) -> None:
    message = config_error(tmp_path, extra=(Greeter(settings=KeyedSettings),))
    assert "[plugins.greeter] api_key: is required" in message
    with open_crm(tmp_path, environ={"CRM_PLUGIN_GREETER_API_KEY": "s3cret"},
                  extra=(Greeter(settings=KeyedSettings),)) as crm:
        assert crm.settings_for(KeyedSettings).api_key == "s3cret"


def test_settings_of_a_plugin_not_loaded_are_left_alone(tmp_path: Path) -> None:
    with open_crm(tmp_path, plugins={"absent": {"anything": 1}}, environ={"CRM_PLUGIN_ABSENT_X": "1"},
                  extra=(Greeter(),)) as crm:
        assert list(crm.plugin_settings) == ["greeter"]


def test_settings_for_a_loaded_plugin_without_a_class_are_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, plugins={"silent": {"x": 1}}, extra=(Silent(),))
    assert "crm.toml: [plugins.silent]: plugin 'silent' declares no settings" in message
    message = config_error(tmp_path, environ={"CRM_PLUGIN_SILENT_X": "1"}, extra=(Silent(),))
    assert "environment CRM_PLUGIN_SILENT_X: [plugins.silent]" in message


def test_a_prefix_shared_by_two_plugins_goes_to_the_one_with_the_key(tmp_path: Path) -> None:
    @attrs.frozen
    class XSettings:
        limit: int = 1

    plugins = (Greeter("acme"), Greeter("acme-x", XSettings))
    with open_crm(tmp_path, environ={"CRM_PLUGIN_ACME_X_LIMIT": "4", "CRM_PLUGIN_ACME_LIMIT": "6"},
                  extra=plugins) as crm:
        assert crm.settings_for(XSettings).limit == 4
        assert crm.settings_for(GreeterSettings).limit == 6


def test_settings_for_an_unregistered_class(tmp_path: Path) -> None:
    with open_crm(tmp_path, extra=(Greeter(),)) as crm:
        with pytest.raises(PluginError, match="KeyedSettings"):
            crm.settings_for(KeyedSettings)
        assert isinstance(crm.plugin_settings["greeter"], PluginSettings)


@pytest.mark.parametrize("plugins,fragment", [
    ((Greeter(settings=dict),), "not an attrs class"),
    ((Greeter("one"), Greeter("two")), "registered by both plugin"),
])
def test_bad_registrations(tmp_path: Path, plugins: tuple, fragment: str) -> None:
    with pytest.raises(PluginError, match=fragment):
        open_crm(tmp_path, extra=plugins)


def test_two_classes_from_one_plugin(tmp_path: Path) -> None:
    class Twice:
        __name__ = "twice"

        @hookimpl
        def register_settings(self, register: Any) -> None:
            register(GreeterSettings)
            register(KeyedSettings)

    with pytest.raises(PluginError, match="two settings classes"):
        open_crm(tmp_path, extra=(Twice(),))


def test_crm_factory_passes_settings_tables(crm_factory: Any) -> None:
    crm = crm_factory(extra_plugins=(Greeter(),), config={"plugins": {"greeter": {"limit": 4}}})
    assert crm.settings_for(GreeterSettings).limit == 4


@attrs.frozen
class GateSettings:
    read_only: bool = False


class Gate:
    """Settings reached from a decision hook: authorize gets the CRM asking."""

    __name__ = "gate"

    @hookimpl
    def register_settings(self, register: Any) -> None:
        register(GateSettings)

    @hookimpl
    def authorize(self, actor: Any, action: str, resource: Any, crm: Any) -> bool | None:
        if crm.settings_for(GateSettings).read_only and not action.endswith((".read", ".list")):
            return False
        return None


def test_authorize_reads_settings_through_its_crm_argument(tmp_path: Path) -> None:
    from crmcore import NotAuthorized

    with open_crm(tmp_path, extra=(Gate(),)) as crm:
        crm.customers.add(name="open")
    with open_crm(tmp_path, environ={"CRM_PLUGIN_GATE_READ_ONLY": "true"}, extra=(Gate(),)) as crm:
        with pytest.raises(NotAuthorized):
            crm.customers.add(name="shut")
        assert [c.name for c in crm.customers.list()] == ["open"]
