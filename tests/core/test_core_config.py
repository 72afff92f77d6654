"""Configuration: crm.toml < environment < arguments, with sources; every bad
value is a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmcore import CRM, Config, ConfigError, CustomField, StageOutcome

TOML = '''
database_url = "sqlite:///from-file.db"
default_currency = "CNY"
phone_region = "CN"
plugins = ["segments", "loyalty"]
plugins_block = ["notify"]

[pipelines.retail]
stages = [
  { name = "询价", probability = 10 },
  { name = "报价", probability = 50 },
  { name = "成交", probability = 100, outcome = "won" },
  { name = "流失", outcome = "lost" },
]

[[custom_fields]]
entity = "customer"
name = "会员等级"
type = "choice"
choices = ["金", "银"]

[[custom_fields]]
entity = "deal"
name = "po"
type = "int"
required = true

[segments.rfm]
bins = 5

[channels.smtp]
host = "localhost"
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_toml(directory: Path, text: str, name: str = "crm.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_and_sources(workdir: Path) -> None:
    path = write_toml(workdir, TOML)
    config = Config.load(environ={})  # crm.toml in the working directory
    assert config.database_url == "sqlite:///from-file.db"
    assert (config.default_currency, config.phone_region) == ("CNY", "CN")
    assert config.plugins == ("segments", "loyalty") and config.plugins_block == ("notify",)
    retail = config.pipeline("retail")
    assert [s.name for s in retail.stages] == ["询价", "报价", "成交", "流失"]
    assert [s.order for s in retail.stages] == [1, 2, 3, 4]
    assert retail.stage("成交").outcome is StageOutcome.WON and retail.stage("流失").probability == 0
    assert list(config.pipelines) == ["retail"]  # configured pipelines replace the default
    assert config.custom_fields == (
        CustomField("customer", "会员等级", "choice", choices=("金", "银")),
        CustomField("deal", "po", "int", required=True),
    )
    assert config.component_options("segments", "rfm") == {"bins": 5}
    assert config.component_options("channels", "smtp") == {"host": "localhost"}
    assert config.component_options("reports", "nothing") == {}
    assert config.sources["database_url"] == str(Path("crm.toml")) == config.sources["pipelines"]
    assert Config.load(path, environ={}) == Config.load(str(path), environ={})


def test_precedence_file_then_environment_then_arguments(workdir: Path) -> None:
    path = write_toml(workdir, TOML, "custom.toml")
    environ = {"CRM_DATABASE_URL": "sqlite:///from-env.db", "CRM_DEFAULT_CURRENCY": "EUR",
               "CRM_PLUGINS": "reports", "CRM_PHONE_REGION": "DE"}
    config = Config.load(path, environ=environ, database_url="sqlite:///from-args.db", plugins=["notify"])
    assert config.database_url == "sqlite:///from-args.db"
    assert config.plugins == ("notify",)
    assert config.default_currency == "EUR" and config.phone_region == "DE"
    assert config.plugins_block == ("notify",)  # only in the file
    assert config.sources == {
        "database_url": "argument",
        "plugins": "argument",
        "default_currency": "environment CRM_DEFAULT_CURRENCY",
        "phone_region": "environment CRM_PHONE_REGION",
        "plugins_block": str(path),
        "pipelines": str(path),
        "custom_fields": str(path),
        "segments": str(path),
        "channels": str(path),
    }
    # None arguments do not override
    assert Config.load(path, environ={}, database_url=None).database_url == "sqlite:///from-file.db"


def test_defaults_without_file_or_environment(workdir: Path) -> None:
    config = Config.load(environ={})
    assert config.database_url == "sqlite:///crm.db"
    assert config.plugins is None and config.plugins_block == ()
    assert config.sources == {}
    assert [s.name for s in config.pipeline("default").stages] == ["lead", "qualified", "proposal", "negotiation",
                                                                     "won", "lost"]


def test_environment_read_from_os_environ_by_default(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PLUGINS", "")
    monkeypatch.setenv("CRM_DEFAULT_CURRENCY", "JPY")
    config = Config.load()
    assert config.plugins == () and config.default_currency == "JPY"


def test_crm_open_uses_the_same_precedence(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_toml(workdir, 'database_url = "sqlite:///file.db"\nplugins = []\ndefault_currency = "KWD"\n')
    monkeypatch.setenv("CRM_DATABASE_URL", f"sqlite:///{workdir / 'env.db'}")
    with CRM.open() as crm:
        assert crm.config.database_url.endswith("env.db")
        assert crm.config.default_currency == "KWD"
        assert crm.plugins.names() == []
    with CRM.open(f"sqlite:///{workdir / 'arg.db'}") as crm:
        assert crm.config.sources["database_url"] == "argument"
    assert {p.name for p in workdir.glob("*.db")} == {"env.db", "arg.db"}


@pytest.mark.parametrize("text,key", [
    ('database_url = "sqlite:///x.db"\ncolour = "blue"\n', "colour"),
    ('[pipeline.default]\nstages = []\n', "pipeline"),
    ('database_url = 5\n', "database_url"),
    ('plugins = "segments"\nplugins_block = [1]\n', "plugins_block"),
    ('phone_region = ["CN"]\n', "phone_region"),
    ('[segments]\nrfm = 5\n', "segments"),
])
def test_bad_keys_named(workdir: Path, text: str, key: str) -> None:
    path = write_toml(workdir, text)
    with pytest.raises(ConfigError) as err:
        Config.load(path, environ={})
    assert key in str(err.value)
    assert "crm.toml" in str(err.value)  # and where it came from


def test_bad_toml_names_the_file_and_line(workdir: Path) -> None:
    path = write_toml(workdir, 'database_url = "sqlite:///x.db"\nplugins = [1,,]\ndefault_currency = "CNY"\n')
    with pytest.raises(ConfigError) as err:
        Config.load(path, environ={})
    assert "crm.toml" in str(err.value) and "line" in str(err.value)


def test_missing_explicit_file(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        Config.load(workdir / "nope.toml", environ={})


@pytest.mark.parametrize("stages,fragment", [
    ('[{ name = "a", outcome = "maybe" }, { name = "w", outcome = "won" }]', "pipelines.p.stages[1]"),
    ('[{ name = "a", probability = 150 }, { name = "w", outcome = "won" }]', "pipelines.p.stages[1]"),
    ('[{ name = "a", probability = "high" }, { name = "w", outcome = "won" }]', "probability"),
    ('[{ name = "w", outcome = "won", colour = "red" }]', "colour"),
    ('[{ probability = 10 }, { name = "w", outcome = "won" }]', "pipelines.p.stages[1]"),
    ('[{ name = "a" }]', "won"),
    ('[]', "pipelines.p.stages"),
    ('[{ name = "a" }, { name = "a", outcome = "won" }]', "'a'"),
])
def test_bad_stage_named(workdir: Path, stages: str, fragment: str) -> None:
    path = write_toml(workdir, f"[pipelines.p]\nstages = {stages}\n")
    with pytest.raises(ConfigError) as err:
        Config.load(path, environ={})
    assert fragment in str(err.value)


@pytest.mark.parametrize("table,fragment", [
    ('entity = "customer"\nname = "x"\ntype = "float"\n', "type"),
    ('entity = "company"\nname = "x"\n', "entity"),
    ('entity = "customer"\nname = "x"\ncolour = "red"\n', "colour"),
    ('entity = "customer"\n', "name"),
])
def test_bad_custom_field_named(workdir: Path, table: str, fragment: str) -> None:
    path = write_toml(workdir, f"[[custom_fields]]\n{table}")
    with pytest.raises(ConfigError) as err:
        Config.load(path, environ={})
    assert "custom_fields[1]" in str(err.value) and fragment in str(err.value)


def test_custom_field_declared_twice_in_config(tmp_path: Path) -> None:
    field = {"entity": "customer", "name": "x"}
    config = Config.from_mapping({"database_url": f"sqlite:///{tmp_path / 'c.db'}", "plugins": [],
                                  "custom_fields": [field, field]})
    with pytest.raises(ConfigError, match="customer.x"):
        CRM.open(config=config)


def test_from_mapping_without_sources_says_configuration() -> None:
    with pytest.raises(ConfigError, match="configuration: unknown configuration key"):
        Config.from_mapping({"colour": "blue"})


def test_unknown_pipeline_lookup() -> None:
    with pytest.raises(ConfigError, match="default"):
        Config().pipeline("enterprise")


def test_bad_database_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no scheme"):
        CRM.open(config=Config.from_mapping({"database_url": "crm.db", "plugins": []}))
    with pytest.raises(ConfigError, match="nosuchdb"):
        CRM.open(config=Config.from_mapping({"database_url": "nosuchdb://x", "plugins": []}))


@pytest.mark.parametrize("key,value", [("default_currency", "RMB"), ("default_currency", "dollars"),
                                       ("phone_region", "China"), ("phone_region", "XX")])
def test_bad_currency_or_phone_region_named(workdir: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Config.load(environ={f"CRM_{key.upper()}": value})
    assert key in str(err.value) and repr(value) in str(err.value)
    assert f"environment CRM_{key.upper()}" in str(err.value)


def test_currency_and_phone_region_normalised() -> None:
    config = Config.from_mapping({"default_currency": "cny", "phone_region": "cn"})
    assert (config.default_currency, config.phone_region) == ("CNY", "CN")
