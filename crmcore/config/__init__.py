"""Configuration: ``crm.toml``, then the environment, then explicit arguments.

Later sources win.  Every value remembers where it came from so ``crm config
show`` can say so.  Component options live in tables named for their family:
``[segments.rfm]``, ``[loyalty.points]``, ``[channels.file]``,
``[reports.pipeline]``.  Plugin-wide settings live in ``[plugins.NAME]``
(overridden by ``CRM_PLUGIN_<NAME>_<KEY>`` variables; see
:mod:`crmcore.application.plugin_settings`).  A key no table knows is an error naming the
table and the key.
"""

from __future__ import annotations

import codecs
import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ..domain.customfields import CustomField
from ..domain.entities import Pipeline, Stage, StageOutcome
from ..domain.errors import ConfigError, unknown_keys
from .api import ApiSettings, parse_api
from .duplicates import DuplicateSettings, parse_duplicates
from .jobs import JobSettings, parse_jobs
from .notify import NotifySettings, parse_notify
from .privacy import PrivacySettings, check_custom_fields, parse_privacy
from .tasks import TaskSettings, parse_tasks

FAMILIES = ("segments", "loyalty", "channels", "reports")

DEFAULT_STAGES = (
    Stage("lead", 1, 10),
    Stage("qualified", 2, 25),
    Stage("proposal", 3, 50),
    Stage("negotiation", 4, 75),
    Stage("won", 5, 100, StageOutcome.WON),
    Stage("lost", 6, 0, StageOutcome.LOST),
)
DEFAULT_PIPELINES = {"default": Pipeline("default", DEFAULT_STAGES)}

# environment variable -> config key
ENVIRONMENT = {
    "CRM_DATABASE_URL": "database_url",
    "CRM_DATABASE_READ_URL": "database_read_url",
    "CRM_PLUGINS": "plugins",
    "CRM_PLUGINS_BLOCK": "plugins_block",
    "CRM_PLUGINS_DIR": "plugins_dir",
    "CRM_DEFAULT_CURRENCY": "default_currency",
    "CRM_PHONE_REGION": "phone_region",
    "CRM_USER": "default_user",
}
LIST_KEYS = {"plugins", "plugins_block"}
# Environment variables CRM_PLUGIN_<NAME>_<KEY> override [plugins.NAME] settings.
# (CRM_PLUGINS, CRM_PLUGINS_BLOCK and CRM_PLUGINS_DIR do not start with this.)
PLUGIN_ENV_PREFIX = "CRM_PLUGIN_"
# The one non-table key of a [plugins] table: the allowlist, since TOML cannot
# hold both ``plugins = [...]`` and ``[plugins.NAME]`` tables.
PLUGINS_ENABLED = "enabled"
STAGE_KEYS = ("name", "probability", "outcome", "order")
PIPELINE_KEYS = ("stages",)


@attrs.frozen
class Config:
    """The effective configuration of one CRM instance."""

    database_url: str = "sqlite:///crm.db"
    # A read replica of database_url (a PostgreSQL streaming standby): reports and segment listings
    # read there, every write goes to database_url (crmcore.store.replica).  None: all on database_url.
    database_read_url: str | None = None
    default_currency: str = "USD"
    phone_region: str | None = None
    timezone: str = "UTC"
    # Who acts when the command line names nobody (--as wins; CRM_USER overrides the file).
    default_user: str | None = None
    pipelines: Mapping[str, Pipeline] = attrs.field(factory=lambda: dict(DEFAULT_PIPELINES))
    custom_fields: tuple[CustomField, ...] = ()
    # A lead or prospect becomes a customer when one of their deals is won (crmcore.application.services).
    customer_on_won_deal: bool = True
    # CSV files written for people (crm export, reject files) start with a UTF-8 byte order mark,
    # so that Excel reads Chinese text: the default of --excel (crmcore.io.writers).
    excel_csv: bool = False
    # None means "every installed plugin"; an empty tuple means none.
    plugins: tuple[str, ...] | None = None
    plugins_block: tuple[str, ...] = ()
    plugins_dir: str | None = None
    options: Mapping[str, Mapping[str, Mapping[str, Any]]] = attrs.field(factory=dict)
    # [plugins.NAME] tables as written, checked against each plugin's settings class at CRM open.
    plugin_tables: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    # The CRM_PLUGIN_* environment variables, applied over plugin_tables at CRM open.
    plugin_environ: Mapping[str, str] = attrs.field(factory=dict)
    # [notify]: templates, consent policy, unsubscribe links, triggers (crmcore.config.notify).
    notify: NotifySettings = attrs.field(factory=NotifySettings)
    # [api]: public lead-capture forms and signed inbound webhooks (crmcore.config.api).
    api: ApiSettings = attrs.field(factory=ApiSettings)
    # [duplicates]: match keys, thresholds, what the door does (crmcore.config.duplicates).
    duplicates: DuplicateSettings = attrs.field(factory=DuplicateSettings)
    # [privacy]: retention policies (crmcore.config.privacy).
    privacy: PrivacySettings = attrs.field(factory=PrivacySettings)
    # [tasks]: automatic follow-up and complaint tasks, the complaint SLA, reminders (crmcore.config.tasks).
    tasks: TaskSettings = attrs.field(factory=TaskSettings)
    # [jobs]: the task queue's broker; none means jobs run inline (crmcore.config.jobs).
    jobs: JobSettings = attrs.field(factory=JobSettings)
    sources: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> "Config":
        """Build the configuration from a TOML file, the environment and overrides.

        ``path`` defaults to ``crm.toml`` in the working directory when it exists.
        """
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        file = Path(path) if path else Path("crm.toml")
        if path and not file.exists():
            raise ConfigError(f"configuration file {file} does not exist")
        if file.exists():
            for key, value in _read_toml(file).items():
                values[key], sources[key] = value, str(file)
            if isinstance(values.get("plugins"), Mapping):
                for name in values["plugins"]:
                    sources[f"plugins.{name}"] = str(file)
        env = os.environ if environ is None else environ
        for var, key in ENVIRONMENT.items():
            if var in env:
                _override(values, key, env[var])
                sources[key] = f"environment {var}"
        if "CRM_JOBS_BROKER" in env:  # a key of a table: [jobs] broker
            jobs = values["jobs"] = dict(values["jobs"]) if isinstance(values.get("jobs"), Mapping) else {}
            jobs["broker"] = env["CRM_JOBS_BROKER"]
            sources["jobs"] = "environment CRM_JOBS_BROKER"
        for key, value in overrides.items():
            if value is not None:
                _override(values, key, value)
                sources[key] = "argument"
        values["plugin_environ"] = {var: value for var, value in env.items() if var.startswith(PLUGIN_ENV_PREFIX)}
        return cls.from_mapping(values, sources)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> "Config":
        """Validate a plain mapping (as read from TOML) into a :class:`Config`."""
        values = dict(values)
        sources = dict(sources or {})

        def where(key: str) -> str:
            return sources.get(key, "configuration")
        kwargs: dict[str, Any] = {"sources": sources}
        for key in ("database_url", "database_read_url", "default_currency", "phone_region", "timezone", "plugins_dir", "default_user"):
            if key in values:
                kwargs[key] = _text(values.pop(key), key, where(key))
        for key, check in (("default_currency", _currency), ("phone_region", _phone_region),
                           ("timezone", _timezone)):
            if key in kwargs:
                kwargs[key] = check(kwargs[key], where(key))
        for key in LIST_KEYS:
            if key in values and not isinstance(values[key], Mapping):
                kwargs[key] = _names(values.pop(key), key, where(key))
        for key in ("customer_on_won_deal", "excel_csv"):
            if key in values:
                flag = values.pop(key)
                if not isinstance(flag, bool):
                    raise ConfigError(f"{where(key)}: {key} must be true or false, got {flag!r}")
                kwargs[key] = flag
        if "pipelines" in values:
            kwargs["pipelines"] = _pipelines(values.pop("pipelines"), where("pipelines"))
        if "custom_fields" in values:
            kwargs["custom_fields"] = _custom_fields(values.pop("custom_fields"), where("custom_fields"))
        if "notify" in values:
            kwargs["notify"] = parse_notify(values.pop("notify"), where("notify"))
        if "api" in values:
            kwargs["api"] = parse_api(values.pop("api"), where("api"))
        if "duplicates" in values:
            kwargs["duplicates"] = parse_duplicates(values.pop("duplicates"), where("duplicates"))
        if "privacy" in values:
            kwargs["privacy"] = parse_privacy(values.pop("privacy"), where("privacy"))
            check_custom_fields(kwargs["privacy"].encryption, kwargs.get("custom_fields", ()), where("privacy"))
        if "tasks" in values:
            kwargs["tasks"] = parse_tasks(values.pop("tasks"), where("tasks"))
        if "jobs" in values:
            kwargs["jobs"] = parse_jobs(values.pop("jobs"), where("jobs"))
        if isinstance(values.get("plugins"), Mapping):
            enabled, kwargs["plugin_tables"] = _plugins_table(values.pop("plugins"), sources, where("plugins"))
            if enabled is not None:
                kwargs["plugins"] = _names(enabled, "[plugins] enabled", where("plugins"))
        if "plugin_environ" in values:
            kwargs["plugin_environ"] = dict(values.pop("plugin_environ"))
        options = {family: values.pop(family) for family in FAMILIES if family in values}
        for family, table in options.items():
            if not isinstance(table, Mapping) or not all(isinstance(v, Mapping) for v in table.values()):
                raise ConfigError(f"{where(family)}: [{family}.NAME] tables expected, got {table!r}")
        kwargs["options"] = options
        if values:
            known = {f.name for f in attrs.fields(cls)} - {"options", "sources", "plugin_tables", "plugin_environ"}
            raise unknown_keys(f"{where(next(iter(values)))}:", values, known | set(FAMILIES),
                               "configuration key(s)")
        return cls(**kwargs)

    def component_options(self, family: str, name: str) -> Mapping[str, Any]:
        """The raw options configured for one component (``[family.name]``)."""
        return self.options.get(family, {}).get(name, {})

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline called ``name`` (a ConfigError naming the known ones if there is none)."""
        try:
            return self.pipelines[name]
        except KeyError:
            raise ConfigError(f"unknown pipeline {name!r} (known: {', '.join(self.pipelines)})") from None


def _read_toml(file: Path) -> dict[str, Any]:
    """The TOML table of ``file``; every problem is a one-line :class:`ConfigError` naming the file.

    A UTF-8 byte order mark at the start (as some Windows editors write) is
    skipped; bytes that are not UTF-8, a directory, an unreadable file and
    nesting deeper than Python's parser can follow are errors.
    """
    try:
        data = file.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{file}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 "
                          f"(a TOML file is UTF-8 text)") from None
    import tomllib  # here, like the libraries below: only a command that reads a file needs it

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file}: arrays or tables are nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int() limit)
        raise ConfigError(f"{file}: {exc}".split(";")[0]) from None


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be text, got {value!r}")
    return value


def _currency(value: str, where: str) -> str:
    import pycountry

    if pycountry.currencies.get(alpha_3=value.upper()) is None:
        raise ConfigError(f"{where}: default_currency {value!r} is not an ISO 4217 currency code (e.g. CNY, USD)")
    return value.upper()


def _phone_region(value: str, where: str) -> str:
    import phonenumbers

    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"{where}: phone_region {value!r} is not a region code phone numbers know (e.g. CN, US)")
    return value.upper()


def _timezone(value: str, where: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: timezone {value!r} is not an IANA time zone (e.g. UTC, Asia/Shanghai)") from None
    return value


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, list) and all(isinstance(n, str) for n in value):
        return tuple(value)
    raise ConfigError(f"{where}: {key} must be a list of plugin names, got {value!r}")


def _pipelines(value: Any, where: str) -> dict[str, Pipeline]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: pipelines must be a table of [pipelines.NAME]")
    pipelines = {}
    for name, table in value.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [pipelines.{name}] must be a table with stages = [...], got {table!r}")
        if set(table) - set(PIPELINE_KEYS):
            raise unknown_keys(f"{where}: [pipelines.{name}]", set(table) - set(PIPELINE_KEYS), PIPELINE_KEYS)
        stages = table.get("stages")
        if not isinstance(stages, list) or not stages:
            raise ConfigError(f"{where}: pipelines.{name}.stages must be a non-empty list")
        pipelines[name] = Pipeline(name, tuple(_stage(s, i, f"{where}: pipelines.{name}.stages[{i}]")
                                               for i, s in enumerate(stages, 1)))
        names = [s.name for s in pipelines[name].stages]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"{where}: pipelines.{name} has stage(s) {', '.join(map(repr, repeated))} more than once")
        if not pipelines[name].stages_with(StageOutcome.WON):
            raise ConfigError(f"{where}: pipeline {name!r} has no stage with outcome = \"won\"")
    return pipelines


def _stage(value: Any, order: int, where: str) -> Stage:
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{where}: a stage needs a name")
    unknown = set(value) - set(STAGE_KEYS)
    if unknown:
        raise unknown_keys(f"{where}:", unknown, STAGE_KEYS)
    probability = value.get("probability", 0)
    if not isinstance(probability, int) or not 0 <= probability <= 100:
        raise ConfigError(f"{where}: probability must be an integer percent 0-100")
    try:
        outcome = StageOutcome(value.get("outcome", "open"))
    except ValueError:
        raise ConfigError(f"{where}: outcome must be open, won or lost") from None
    return Stage(value["name"], int(value.get("order", order)), probability, outcome)


def _custom_fields(value: Any, where: str) -> tuple[CustomField, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: custom_fields must be a list of [[custom_fields]] tables")
    fields = []
    allowed = [f.name for f in attrs.fields(CustomField)]
    for i, table in enumerate(value, 1):
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: custom_fields[{i}] must be a table, got {table!r}")
        if set(table) - set(allowed):
            raise unknown_keys(f"{where}: custom_fields[{i}]", set(table) - set(allowed), allowed)
        try:
            table = dict(table)
            table["choices"] = tuple(table.get("choices", ()))
            fields.append(CustomField(**table))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: custom_fields[{i}]: {exc}") from None
    return tuple(fields)


def _override(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` from the environment or an argument.

    An allowlist given there replaces ``[plugins] enabled`` but keeps the
    ``[plugins.NAME]`` settings tables that share the ``plugins`` key.
    """
    if key == "plugins" and isinstance(values.get("plugins"), Mapping):
        values["plugins"] = {**values["plugins"], PLUGINS_ENABLED: value}
    else:
        values[key] = value


def _plugins_table(value: Mapping[str, Any], sources: Mapping[str, str],
                   where: str) -> tuple[Any, dict[str, Mapping[str, Any]]]:
    """Split a ``[plugins]`` table into its allowlist (``enabled``, or None) and
    its ``[plugins.NAME]`` settings tables (validated later, against each
    plugin's declared settings class, when the CRM opens)."""
    enabled = None
    tables: dict[str, Mapping[str, Any]] = {}
    for name, table in value.items():
        if name == PLUGINS_ENABLED and not isinstance(table, Mapping):
            enabled = table
        elif isinstance(table, Mapping):
            tables[name] = table
        else:
            raise ConfigError(f"{sources.get(f'plugins.{name}', where)}: [plugins] {name}: expected "
                              f"a [plugins.{name}] table of plugin settings or {PLUGINS_ENABLED} = [plugin names]"
                              + (f" (did you mean {PLUGINS_ENABLED!r}?)"
                                 if difflib.get_close_matches(name, [PLUGINS_ENABLED], n=1) else ""))
    return enabled, tables
