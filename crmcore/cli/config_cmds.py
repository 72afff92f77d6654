"""``crm init`` and ``crm config show``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click

from ..store.engine import mask_url
from .context import Session, pass_session, read_only
from .masking import mask

STARTER = '''\
# crm.toml: configuration of this CRM.  Precedence: this file < environment
# (CRM_DATABASE_URL, CRM_PLUGINS, ...) < command-line flags.

# Where the data lives.  SQLite by default; also postgresql://user@host/db
# and mysql://user@host/db (MariaDB).
database_url = "sqlite:///crm.db"

# Currency of amounts given without one (ISO 4217) and region for phone
# numbers given without +country code (ISO 3166).
default_currency = "CNY"
phone_region = "CN"
timezone = "UTC"

# A lead or prospect becomes a customer (lifecycle stage) when one of their
# deals enters a won stage; false leaves the stage to you.
# customer_on_won_deal = true

# CSV exports and reject files start with a UTF-8 byte order mark, so Excel
# shows Chinese text correctly (the default of --excel).
# excel_csv = false

# Who acts when a command names nobody (--as LOGIN and CRM_USER win).  Needed
# once a user has been added with `crm user add`; until then `system` acts.
# default_user = "li.wei"

# Plugins to load (entry-point names).  Leave out to load every installed one;
# an empty list loads none.
# plugins = ["segments", "loyalty", "notify", "reports"]
# plugins_block = []

# Sales pipelines: stages in order, default win probability (percent) and
# outcome (open, won, lost).  Every pipeline needs a won stage.
[pipelines.default]
stages = [
  { name = "lead", probability = 10 },
  { name = "qualified", probability = 25 },
  { name = "proposal", probability = 50 },
  { name = "negotiation", probability = 75 },
  { name = "won", probability = 100, outcome = "won" },
  { name = "lost", probability = 0, outcome = "lost" },
]

# Custom fields: entity (customer, contact, interaction, deal), name, type
# (str, int, decimal, bool, date, choice), required, choices.
# [[custom_fields]]
# entity = "customer"
# name = "membership_level"
# type = "choice"
# choices = ["standard", "gold"]

# Duplicates: the keys that make two customers one (email whatever its case,
# phone however written, ...), what `customer add` and imports do with a new
# customer that has another's key, how merges settle fields (docs/duplicates.md).
# [duplicates]
# exact = ["email", "phone", "external_id"]
# on_add = "refuse"          # or "add"
# on_import = "skip"         # skip, update, merge, add
# merge_rule = "non-empty"   # non-empty, newest, kept

# Options of plugin components: [segments.NAME], [loyalty.NAME],
# [channels.NAME], [reports.NAME].  Plugin-wide settings: [plugins.NAME]
# (overridden by CRM_PLUGIN_<NAME>_<KEY> environment variables).  With
# [plugins.NAME] tables, write the allowlist as [plugins] enabled = [...].
# [loyalty.points]
# points_per_unit = "1"
# expiry_days = 365
#
# [channels.file]
# path = "outbox.jsonl"

# Personal data (docs/privacy.md): retention for `crm privacy apply-retention`,
# and encryption at rest of emails and phone numbers (keys never in this file).
# [privacy.retention]
# interactions_years = 5
# leads_months = 18
# outbox_body_days = 90
#
# [privacy.encryption]
# fields = ["email", "phone"]
# key_env = "CRM_ENCRYPTION_KEY"      # or key_file = "/run/secrets/crm_key"
'''


@click.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing crm.toml.")
@click.option("--path", type=click.Path(dir_okay=False), default="crm.toml", show_default=True)
@pass_session
def init(session: Session, force: bool, path: str) -> None:
    """Write a commented starter crm.toml (unless one exists) and create and migrate the database."""
    target = Path(path)
    if target.exists() and not force:
        written = f"kept {target} (--force overwrites it)"
    else:
        target.write_text(STARTER, encoding="utf-8")
        written = f"wrote {target}"
    session.config_file = str(target)
    crm = session.crm  # opening creates and migrates the database
    url = mask_url(crm.config.database_url)
    session.emit_object({"config_file": str(target), "written": not written.startswith("kept"), "database_url": url},
                        f"{written}; database {url} is ready")


@click.group("config")
def config_group() -> None:
    """Configuration."""


@read_only
@config_group.command("show")
@pass_session
def show(session: Session) -> None:
    """The effective configuration and where each value came from."""
    _authorize_show(session)
    config = session.config()
    rows = []
    for field in attrs.fields(type(config)):
        if field.name in ("sources", "plugin_tables", "plugin_environ"):
            continue
        rows.append({"key": field.name, "value": _plain(getattr(config, field.name)),
                     "source": config.sources.get(field.name, "default")})
    for family, table in config.options.items():
        for name, options in table.items():
            rows.append({"key": f"{family}.{name}", "value": dict(options),
                         "source": config.sources.get(family, "configuration")})
    rows = [r for r in rows if r["key"] != "options"]
    rows.extend(_plugin_settings_rows(config))
    rows = [{**row, "value": mask(row["value"], row["key"].rsplit(".", 1)[-1])} for row in rows]
    if session.as_json:  # one configuration: one object, each key with its value and where it came from
        session.emit_object({row["key"]: {"value": row["value"], "source": row["source"]} for row in rows})
        return
    session.emit(rows, columns=["key", "value", "source"])


def _authorize_show(session: Session) -> None:
    """Ask ``authorize("config.show")`` (CLI-only, so asked here).

    When the CRM cannot be opened at all (an unreachable or misspelt database), there
    is no policy to ask and no CRM data to protect, and showing the configuration is
    how one finds out why: it is shown.  A refusal is never swallowed.
    """
    from ..domain.errors import ConfigError

    try:
        crm = session.crm
    except ConfigError:
        return
    crm.authorize("config.show", None)


def _plugin_settings_rows(config: Any) -> list[dict[str, Any]]:
    """One row per setting of each loaded plugin (``plugins.acme.greeting``), validated
    as at CRM open, plus the raw ``[plugins.NAME]`` tables of plugins not loaded.

    Loads the plugins but opens no database: showing the configuration must
    not create or migrate one.
    """
    from ..application.plugin_settings import collect_settings_classes, resolve_settings
    from ..application.plugins import PluginManager

    manager = PluginManager()
    manager.load(config.plugins, config.plugins_block, config.plugins_dir)
    resolved = resolve_settings(config, collect_settings_classes(manager), manager.names())
    rows = []
    for name, found in sorted(resolved.items()):
        for key, value in attrs.asdict(found.value, recurse=False).items():
            rows.append({"key": f"plugins.{name}.{key}", "value": _plain(value), "source": found.sources[key]})
    for name, table in sorted(config.plugin_tables.items()):
        if name not in manager.names():
            rows.append({"key": f"plugins.{name}", "value": dict(table),
                         "source": f"{config.sources.get(f'plugins.{name}', 'configuration')} (plugin not loaded)"})
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if attrs.has(type(value)):
        if hasattr(value, "stages"):
            return [f"{s.name} ({s.probability}%, {s.outcome.value})" for s in value.stages]
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    return value
