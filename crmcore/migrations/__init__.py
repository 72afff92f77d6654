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

import ast
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from sqlalchemy import Engine, inspect
from sqlalchemy.exc import DBAPIError

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
    """Whether any source is behind its head (cheap enough to run at every open).

    A database at its heads (every open but the first after an upgrade of the
    code) is told so without importing Alembic (:func:`at_heads`); anything
    else is Alembic's to judge, as before.
    """
    if at_heads(engine, schemas):
        return False
    applied, available = current(engine, schemas), heads(engine, schemas)
    return any(set(applied.get(branch, ())) != set(revs) for branch, revs in available.items())


def at_heads(engine: Engine, schemas: dict[str, PluginSchema]) -> bool:
    """True when every source's version table holds exactly its heads, found
    without Alembic; False when that cannot be shown this way (a source behind,
    a version table missing, a revision file this reading does not follow).

    Why: importing Alembic (and the Mako and Pygments it pulls in) was about a
    tenth of every command's start-up, only to learn that nothing is pending.
    """
    available = {}
    for branch, versions, _ in sources(schemas):
        found = file_heads(versions)
        if found is None:
            return False
        available[branch] = found
    try:
        with engine.connect() as conn:
            for branch, _, table in sources(schemas):
                quoted = engine.dialect.identifier_preparer.quote(table)
                applied = conn.exec_driver_sql(f"SELECT version_num FROM {quoted}").scalars().all()
                if set(applied) != available[branch]:
                    return False
    except DBAPIError:  # no version table yet (a fresh database): Alembic decides
        return False
    return True


# A revision file as Alembic's ScriptDirectory selects it (``_only_source_rev_file``, no
# ``sourceless``): a name ending in ``.py`` that starts with neither ``.#`` nor ``__init__``.
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


def file_heads(versions: str | Path) -> frozenset[str] | None:
    """The head revisions of one versions directory, read from its files' source
    the way Alembic reads them, or None if a file is not plain enough to read
    so (then only Alembic, which runs the files, can tell).

    Alembic runs every revision file in the directory (not its subdirectories)
    and takes the module's ``revision`` and ``down_revision``; a head is a
    revision no other revision names as its ``down_revision``
    (``depends_on`` makes no head).  Here each file's module level must assign
    both names once, to literals (a string; ``down_revision`` also None or a
    tuple or list of strings), and no revision id may repeat.
    """
    directory = Path(versions)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:  # Alembic skips a version location that does not exist
        return frozenset()
    revisions: set[str] = set()
    named_down: set[str] = set()
    for name in names:
        path = directory / name
        if not _REVISION_FILE.match(name) or path.is_dir():
            continue
        if not path.is_file():
            return None  # a broken link: Alembic would fail on it
        found = _revision_of(path)
        if found is None or found[0] in revisions:
            return None
        revisions.add(found[0])
        named_down.update(found[1])
    return frozenset(revisions - named_down)


def _revision_of(path: Path) -> tuple[str, tuple[str, ...]] | None:
    """(revision, down revisions) assigned as literals at a file's module level, or None."""
    values: dict[str, list[object]] = {"revision": [], "down_revision": []}
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError, OSError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            if _binds(node, values):
                return None  # bound some other way (an import, a loop, a function): run the file to know
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                if _binds(target, values):
                    return None
                continue
            if target.id in values:
                try:
                    values[target.id].append(ast.literal_eval(value))
                except ValueError:
                    return None
    if len(values["revision"]) != 1 or len(values["down_revision"]) != 1:
        return None
    revision, down = values["revision"][0], values["down_revision"][0]
    if isinstance(down, str):
        down = (down,)
    elif down is None:
        down = ()
    if not isinstance(revision, str) or not isinstance(down, (tuple, list)) \
            or not all(isinstance(d, str) for d in down):
        return None
    return revision, tuple(down)


def _binds(node: ast.AST, names: dict[str, list[object]]) -> bool:
    """Whether the module-level statement ``node`` could bind one of ``names``
    other than by a plain assignment (or unbind it)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        # Its body binds its own locals; only its name and a ``global`` statement reach the module.
        return node.name in names or any(isinstance(sub, ast.Global) and set(sub.names) & set(names)
                                         for sub in ast.walk(node))
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id in names and isinstance(sub.ctx, (ast.Store, ast.Del)):
            return True
        if isinstance(sub, ast.alias) and (sub.name == "*" or (sub.asname or sub.name.split(".")[0]) in names):
            return True
    return False


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
           "at_heads", "file_heads", "table_names", "CORE_BRANCH"]
