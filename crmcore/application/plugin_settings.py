"""Plugin-wide settings: a ``[plugins.NAME]`` table validated into the attrs
class the plugin declares with ``register_settings``.

```toml
[plugins.acme]
greeting = "Welcome"
max_welcomes = 3
```

Precedence, later wins: the class's defaults < ``[plugins.NAME]`` in
``crm.toml`` < environment variables ``CRM_PLUGIN_<NAME>_<KEY>`` (upper case,
``-`` and other non-alphanumerics in NAME as ``_``; the text is converted by
the field's type like any crm.toml value).  The table and the variables are
structured with the core's cattrs converter when the CRM opens: an unknown
key, a wrong type or an attrs validator failure stops start-up with a
:class:`~crmcore.domain.errors.ConfigError` naming ``[plugins.NAME]``, the key and
where the value came from.  Settings of a plugin that is not loaded are left
alone (it may be disabled in this plugin set).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..config import Config
from ..domain.convert import structure
from ..domain.errors import ConfigError, PluginError, ValidationError, unknown_keys
from .plugins import PluginManager


@attrs.frozen
class PluginSettings:
    """The validated settings of one plugin.

    :ivar plugin: the plugin's registered name.
    :ivar value: an instance of the class the plugin registered.
    :ivar sources: field name -> where its value came from (``crm.toml``,
        ``environment CRM_PLUGIN_ACME_GREETING`` or ``default``).
    """

    plugin: str
    value: Any
    sources: Mapping[str, str]


def env_prefix(plugin: str) -> str:
    """The prefix of a plugin's environment overrides: ``acme-crm`` -> ``CRM_PLUGIN_ACME_CRM_``."""
    return "CRM_PLUGIN_" + re.sub(r"[^A-Z0-9]", "_", plugin.upper()) + "_"


def collect_settings_classes(manager: PluginManager) -> dict[str, type]:
    """Call ``register_settings``: plugin name -> the attrs class it declared."""
    declared: dict[str, type] = {}
    owners: dict[type, str] = {}

    def make_kwargs(plugin: str) -> dict[str, Any]:
        def register(cls: Any) -> None:
            if not (isinstance(cls, type) and attrs.has(cls)):
                raise PluginError(f"plugin {plugin!r} registered settings {cls!r}, not an attrs class")
            if plugin in declared:
                raise PluginError(f"plugin {plugin!r} registered two settings classes "
                                  f"({declared[plugin].__name__}, {cls.__name__}); declare one")
            if cls in owners:  # settings_for(cls) finds a plugin's settings by its class
                raise PluginError(f"settings class {cls.__name__} is registered by both plugin "
                                  f"{owners[cls]!r} and plugin {plugin!r}")
            declared[plugin], owners[cls] = cls, plugin
        return {"register": register}

    manager.call_each("register_settings", make_kwargs)
    return declared


def resolve_settings(config: Config, declared: Mapping[str, type], loaded: Iterable[str]) -> dict[str, PluginSettings]:
    """Validate the settings of every loaded plugin that declared a class.

    A ``[plugins.NAME]`` table or ``CRM_PLUGIN_NAME_*`` variable for a loaded
    plugin that declared no class is an error; for a plugin not loaded, both
    are ignored.
    """
    loaded = sorted(loaded)
    environ = _environ_by_plugin(config.plugin_environ, declared, loaded)
    for name in loaded:
        if name not in declared and (name in config.plugin_tables or environ.get(name)):
            source = (config.sources.get(f"plugins.{name}", "configuration") if name in config.plugin_tables
                      else f"environment {next(iter(environ[name].values()))[1]}")
            raise ConfigError(f"{source}: [plugins.{name}]: plugin {name!r} declares no settings "
                              f"(it implements no register_settings hook)")
    return {name: _build(name, declared[name], config, environ.get(name, {}))
            for name in loaded if name in declared}


def _build(name: str, cls: type, config: Config, environ: Mapping[str, tuple[str, str]]) -> PluginSettings:
    table_source = config.sources.get(f"plugins.{name}", "configuration")
    raw: dict[str, Any] = dict(config.plugin_tables.get(name, {}))
    sources = {key: table_source for key in raw}
    for key, (value, var) in environ.items():
        raw[key], sources[key] = value, f"environment {var}"
    fields = [f.name for f in attrs.fields(cls)]
    unknown = set(raw) - set(fields)
    if unknown:
        raise unknown_keys(f"{table_source}: [plugins.{name}]", unknown, fields)
    try:
        value = structure(raw, cls, f"plugin {name} settings")
    except ValidationError as exc:
        issues = [_attribute(key, message, fields) for key, message in exc.issues]
        raise ConfigError("; ".join(f"{sources.get(k, table_source)}: [plugins.{name}] {k}: {m}"
                                    for k, m in issues)) from None
    except (TypeError, ValueError) as exc:  # a validator of the class that cattrs did not attribute
        raise ConfigError(f"{table_source}: [plugins.{name}]: {exc}") from None
    return PluginSettings(name, value, {f: sources.get(f, "default") for f in fields})


def _environ_by_plugin(environ: Mapping[str, str], declared: Mapping[str, type],
                       loaded: list[str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Assign each ``CRM_PLUGIN_*`` variable to a loaded plugin: name -> key -> (value, variable).

    A prefix can match two plugins (``acme`` and ``acme-x`` for
    ``CRM_PLUGIN_ACME_X_KEY``); the plugin that has the key wins.  A variable
    that matches a loaded plugin but none of its keys is an error.
    """
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var in sorted(environ):
        candidates = [(name, var[len(env_prefix(name)):].lower()) for name in loaded
                      if var.startswith(env_prefix(name))]
        if not candidates:
            continue  # a plugin that is not loaded
        claims = [(name, key) for name, key in candidates if name in declared and key in _fields(declared[name])]
        if len(claims) > 1:
            raise ConfigError(f"environment {var}: ambiguous between plugins "
                              f"{' and '.join(repr(n) for n, _ in claims)}")
        if not claims:
            name, key = max(candidates, key=lambda c: len(c[0]))  # the longest name is the likeliest
            if name not in declared:
                found.setdefault(name, {})[key] = (environ[var], var)  # reported by resolve_settings
                continue
            close = difflib.get_close_matches(key, _fields(declared[name]), n=1)
            hint = f" (did you mean {env_prefix(name) + close[0].upper()}?)" if close else ""
            raise ConfigError(f"environment {var}: [plugins.{name}] has no key {key!r}{hint}; "
                              f"known: {', '.join(_fields(declared[name]))}")
        name, key = claims[0]
        found.setdefault(name, {})[key] = (environ[var], var)
    return found


def _attribute(key: str, message: str, fields: list[str]) -> tuple[str, str]:
    """Name the field of an issue cattrs could not attribute: attrs' comparison
    validators (``gt``, ``min_len``...) say ``'limit' must be > 0: 0``."""
    quoted = re.match(r"'(\w+)' ", message)
    if key == "*" and quoted and quoted.group(1) in fields:
        return quoted.group(1), message
    return key, message


def _fields(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls)]

