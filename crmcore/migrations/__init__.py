"""Schema migrations: the core's Alembic revisions and plugins' own branches.

Each source of revisions (the core, each plugin that owns tables) keeps its own
Alembic version table (``alembic_version`` for the core,
``alembic_version_<branch>`` for a plugin).  The core is always brought to head
first, then each enabled plugin.  Why separate tables: with one shared table, a
database migrated with a plugin enabled could not be upgraded once that plugin
is disabled (Alembic cannot locate the plugin's recorded revision).  A plugin
states the core revision it needs (``requires_core``); it is checked before its
revisions run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from sqlalchemy import Engine, inspect

from ..domain.errors import PluginError
from ..store.tables import metadata as core_metadata

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# Alembic is imported in the functions that use it: ``crm --help`` and
# ``crm --version`` never migrate, and importing it costs about a tenth of start-up.

HERE = Path(__file__).parent
CORE_BRANCH = "crmcore"


@attrs.frozen
class PluginSchema:
    """Tables a plugin owns and where its Alembic revisions live.

    :ivar branch: the plugin's branch label, also its version table suffix.
    :ivar versions: directory holding the plugin's revision files.
    :ivar tables: names of the tables the plugin creates (for clash checks).
    :ivar requires_core: the core revision the plugin's first revision needs.
    """

    branch: str
    versions: str | Path
    tables: tuple[str, ...] = ()
    requires_core: str | None = None


def check_clashes(schemas: dict[str, PluginSchema]) -> None:
    """Refuse two owners for one table name (core or plugin), naming both."""
    owners = {name: "crmcore" for name in core_metadata.tables}
    branches: dict[str, str] = {CORE_BRANCH: "crmcore"}
    for plugin, schema in schemas.items():
        if schema.branch in branches:
            raise PluginError(f"migration branch {schema.branch!r} is used by both "
                              f"{branches[schema.branch]!r} and plugin {plugin!r}")
        branches[schema.branch] = plugin
        for table in schema.tables:
            if table in owners:
                raise PluginError(f"table {table!r} is claimed by both {owners[table]!r} and plugin {plugin!r}")
            owners[table] = plugin


def alembic_config(engine: Engine, versions: str | Path, version_table: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["engine"] = engine
    cfg.attributes["version_table"] = version_table
    return cfg


def sources(schemas: dict[str, PluginSchema]) -> list[tuple[str, Path, str]]:
    """(branch, versions dir, version table) for the core, then each plugin."""
    result = [(CORE_BRANCH, HERE / "versions", "alembic_version")]
    for schema in schemas.values():
        result.append((schema.branch, Path(schema.versions), f"alembic_version_{schema.branch}"))
    return result


def upgrade(engine: Engine, schemas: dict[str, PluginSchema]) -> None:
    """Bring the core and every given plugin schema to head."""
    from alembic import command

    check_clashes(schemas)
    for branch, versions, table in sources(schemas):
        if branch != CORE_BRANCH:
            _check_requirement(engine, next(s for s in schemas.values() if s.branch == branch))
        command.upgrade(alembic_config(engine, versions, table), "heads")


def current(engine: Engine, schemas: dict[str, PluginSchema]) -> dict[str, tuple[str, ...]]:
    """The applied revision(s) of each source, by branch."""
    from alembic.runtime.migration import MigrationContext

    result = {}
    with engine.connect() as conn:
        for branch, _, table in sources(schemas):
            context = MigrationContext.configure(conn, opts={"version_table": table})
            result[branch] = context.get_current_heads()
    return result


def heads(engine: Engine, schemas: dict[str, PluginSchema]) -> dict[str, tuple[str, ...]]:
    """The head revision(s) available for each source, by branch."""
    from alembic.script import ScriptDirectory

    return {branch: tuple(ScriptDirectory.from_config(alembic_config(engine, versions, table)).get_heads())
            for branch, versions, table in sources(schemas)}


def history(engine: Engine, schemas: dict[str, PluginSchema]) -> list[tuple[str, str, str | None, str]]:
    """(branch, revision, down revision, message) for every known revision."""
    from alembic.script import ScriptDirectory

    rows = []
    for branch, versions, table in sources(schemas):
        script = ScriptDirectory.from_config(alembic_config(engine, versions, table))
        for rev in script.walk_revisions():
            down = rev.down_revision if isinstance(rev.down_revision, str) or rev.down_revision is None \
                else ",".join(rev.down_revision)
            rows.append((branch, rev.revision, down, rev.doc or ""))
    return rows


def needs_upgrade(engine: Engine, schemas: dict[str, PluginSchema]) -> bool:
    """Whether any source is behind its head (cheap enough to run at every open)."""
    applied, available = current(engine, schemas), heads(engine, schemas)
    return any(set(applied.get(branch, ())) != set(revs) for branch, revs in available.items())


def _check_requirement(engine: Engine, schema: PluginSchema) -> None:
    from alembic.script import ScriptDirectory

    if not schema.requires_core:
        return
    script = ScriptDirectory.from_config(alembic_config(engine, HERE / "versions", "alembic_version"))
    applied = current(engine, {}).get(CORE_BRANCH, ())
    reachable = {r.revision for head in applied for r in script.iterate_revisions(head, "base")}
    if schema.requires_core not in reachable:
        raise PluginError(f"migration branch {schema.branch!r} needs core revision "
                          f"{schema.requires_core!r}, which is not applied")


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


__all__ = ["PluginSchema", "check_clashes", "current", "heads", "history", "upgrade", "needs_upgrade",
           "table_names", "CORE_BRANCH"]
