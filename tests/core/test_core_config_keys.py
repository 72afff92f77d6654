"""Every table of crm.toml refuses keys it does not know, naming the file, the
table and the key (with a "did you mean" when one is close); and the
``[plugins]`` table holds the allowlist next to ``[plugins.NAME]`` settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmcore import Config, ConfigError

STAGES = 'stages = [{ name = "lead" }, { name = "won", outcome = "won" }]\n'


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_error(directory: Path, text: str) -> str:
    (directory / "crm.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        Config.load(environ={})
    message = str(err.value)
    assert "\n" not in message  # one line for the command line
    return message


# One case per table the loader reads: (crm.toml text, the table as named, the key, the suggestion or None).
CASES = {
    "top level": ('colour = "blue"\ndefault_curency = "CNY"\n', "crm.toml:", "default_curency",
                  "default_currency"),
    "[pipelines.NAME]": (f'[pipelines.default]\nstage = []\n{STAGES}', "[pipelines.default]", "stage", "stages"),
    "a pipeline stage": ('[pipelines.p]\nstages = [{ name = "won", outcome = "won", probabilty = 5 }]\n',
                         "pipelines.p.stages[1]", "probabilty", "probability"),
    "[[custom_fields]]": ('[[custom_fields]]\nentity = "customer"\nname = "x"\nrequierd = true\n',
                          "custom_fields[1]", "requierd", "required"),
    "[notify]": ('[notify]\ndefault_locle = "en"\n', "[notify]", "default_locle", "default_locale"),
    "[notify.triggers]": ('[notify.triggers.deal_wn]\ntemplate = "thank-you"\n', "[notify.triggers]",
                          "deal_wn", "deal_won"),
    "[notify.triggers.EVENT]": ('[notify.triggers.complaint]\ntemplate = "sorry"\nresponse_hour = 4\n',
                                "[notify.triggers.complaint]", "response_hour", "response_hours"),
    "[plugins]": ('[plugins]\nenable = ["acme"]\n', "[plugins]", "enable", "enabled"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unknown_key_names_table_and_key(workdir: Path, case: str) -> None:
    text, table, key, suggestion = CASES[case]
    message = load_error(workdir, text)
    assert message.startswith("crm.toml"), message
    assert table in message and key in message, message
    assert f"did you mean {suggestion!r}" in message, message


def test_pipelines_default_with_a_typo_no_longer_passes(workdir: Path) -> None:
    """The issue's example: a misspelled key inside [pipelines.default] used to be ignored."""
    message = load_error(workdir, f"[pipelines.default]\n{STAGES}probability_default = 5\n")
    assert "[pipelines.default] unknown key(s): probability_default" in message


def test_pipeline_that_is_not_a_table(workdir: Path) -> None:
    assert "[pipelines.default] must be a table" in load_error(workdir, '[pipelines]\ndefault = "x"\n')


def test_no_suggestion_when_nothing_is_close(workdir: Path) -> None:
    message = load_error(workdir, '[notify]\nzzz = 1\n')
    assert "did you mean" not in message and "known: channel" in message


def test_component_tables_are_checked_at_open_not_at_load(workdir: Path) -> None:
    """[segments.NAME] and friends belong to components that may not be loaded; the
    keys are checked against options_type when the CRM opens (tests/core/test_core_plugins.py)."""
    (workdir / "crm.toml").write_text('[segments.rfm]\nbinz = 5\n', encoding="utf-8")
    assert Config.load(environ={}).component_options("segments", "rfm") == {"binz": 5}


# -- [plugins]: the allowlist and the settings tables -------------------------------

def test_plugins_table_holds_allowlist_and_settings(workdir: Path) -> None:
    (workdir / "crm.toml").write_text('[plugins]\nenabled = ["acme"]\n\n[plugins.acme]\nmax_vips = 3\n\n'
                                      '[plugins.other]\nx = "y"\n', encoding="utf-8")
    config = Config.load(environ={})
    assert config.plugins == ("acme",)
    assert config.plugin_tables == {"acme": {"max_vips": 3}, "other": {"x": "y"}}
    assert config.sources["plugins.acme"] == "crm.toml" == config.sources["plugins"]


def test_settings_tables_without_allowlist_load_every_plugin(workdir: Path) -> None:
    (workdir / "crm.toml").write_text('[plugins.acme]\nmax_vips = 3\n', encoding="utf-8")
    config = Config.load(environ={})
    assert config.plugins is None and config.plugin_tables == {"acme": {"max_vips": 3}}


def test_environment_and_argument_allowlists_keep_the_settings_tables(workdir: Path) -> None:
    (workdir / "crm.toml").write_text('[plugins]\nenabled = ["acme"]\n[plugins.acme]\nmax_vips = 3\n',
                                      encoding="utf-8")
    from_env = Config.load(environ={"CRM_PLUGINS": "segments"})
    assert from_env.plugins == ("segments",) and from_env.plugin_tables == {"acme": {"max_vips": 3}}
    assert from_env.sources["plugins"] == "environment CRM_PLUGINS"
    from_arg = Config.load(environ={"CRM_PLUGINS": "segments"}, plugins=[])
    assert from_arg.plugins == () and from_arg.plugin_tables == {"acme": {"max_vips": 3}}


def test_plugin_environment_variables_are_collected(workdir: Path) -> None:
    config = Config.load(environ={"CRM_PLUGIN_ACME_MAX_VIPS": "5", "CRM_PLUGINS": "", "CRM_PLUGINS_DIR": "p",
                                  "HOME": "/root"})
    assert config.plugin_environ == {"CRM_PLUGIN_ACME_MAX_VIPS": "5"}


@pytest.mark.parametrize("text,fragment", [
    ('[plugins]\nenabled = "acme"\nblock = ["x"]\n', "[plugins] block"),
    ('[plugins]\nenabled = [1]\n', "enabled"),
])
def test_bad_plugins_table(workdir: Path, text: str, fragment: str) -> None:
    assert fragment in load_error(workdir, text)


def test_from_mapping_accepts_the_plugins_table() -> None:
    config = Config.from_mapping({"plugins": {"enabled": [], "acme": {"max_vips": 2}}})
    assert config.plugins == () and config.plugin_tables == {"acme": {"max_vips": 2}}
