"""The ``crm`` command line.

Plugins add commands through ``register_commands(cli)``.  Click must know every
command before it parses, so :func:`main` first loads the plugins selected by
argv (``--plugins``, ``--no-plugins``, ``--plugins-dir``, ``--config``) and the
environment, and lets them add commands; :func:`load_plugin_commands` does the
same for tests that drive :data:`cli` through click's runner.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from ..domain.errors import CRMError
from ..startup import building
from . import duplicate_cmds  # noqa: F401 - adds duplicates, merge, unmerge, merges to customer
from . import notify_message_cmds  # noqa: F401 - adds its commands to notify and customer
from . import backup_cmds  # noqa: F401 - adds backup and restore to db
from .privacy_cmds import privacy  # also adds export-data and erase to customer
from .audit_cmds import audit
from .config_cmds import config_group, init
from ..application.consents import decisions_from
from .context import CRMGroup, Session
from .db import db
from .demo import demo
from .entities import contact, customer, deal, interaction
from .job_cmds import jobs_group, scheduler, worker
from .loyalty_cmds import loyalty
from .masking import mask_text
from .notify_cmds import notify
from .plugins import plugins_group
from .report_cmds import report
from .role_cmds import role
from .scaffold_cmds import plugin_group
from .segment_cmds import segment
from .task_cmds import task
from .serve_cmds import serve
from .token_cmds import token
from .transfer import export_command, import_command
from .user_cmds import team, user


@click.group(cls=CRMGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "database_url", metavar="URL", help="Database URL (default: sqlite:///crm.db).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="Configuration file (crm.toml).")
@click.option("--plugins", "plugins", metavar="A,B", help="Load only these plugins (comma-separated).")
@click.option("--no-plugins", is_flag=True, help="Load no plugins at all.")
@click.option("--plugins-dir", type=click.Path(file_okay=False), help="Also load single-file plugins from DIR.")
@click.option("--as", "as_user", metavar="LOGIN",
              help="Act as this user (default: $CRM_USER, then default_user in crm.toml).")
@click.option("--as-of", "as_of_text", metavar="DATE", help="Treat this date/time as now (YYYY-MM-DD or ISO).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("-v", "--verbose", count=True, help="More output; -v shows tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Less output.")
@click.version_option(package_name="crmcore", prog_name="crm")
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """crm: a plugin-based CRM on an embedded SQLite file or a database server."""
    ctx.obj = Session(**options)
    ctx.call_on_close(ctx.obj.close)
    ctx.with_resource(decisions_from("cli"))  # a consent flag set here records a decision from "cli"


cli.add_command(init)
cli.add_command(config_group)
cli.add_command(db)
cli.add_command(demo)
for _group in (customer, contact, interaction, deal, task, segment, loyalty, notify, report):
    cli.add_command(_group)
cli.add_command(plugins_group)
cli.add_command(serve)
cli.add_command(worker)
cli.add_command(scheduler)
cli.add_command(token)
cli.add_command(plugin_group)
cli.add_command(import_command)
cli.add_command(export_command)
for _group in (user, team, role, audit, privacy, jobs_group):
    cli.add_command(_group)

_loaded_for: list[tuple[str, ...]] = []


def load_plugin_commands(argv: Sequence[str] = ()) -> list[str]:
    """Let the plugins selected by ``argv`` and the environment add their commands.

    Returns warnings (plugins that failed to import).  Safe to call twice.
    """
    from ..application.plugins import PluginManager

    key = tuple(argv)
    if key in _loaded_for:
        return []
    _loaded_for.append(key)
    config = Session.from_argv(argv).config()
    manager = PluginManager()
    manager.load(config.plugins, config.plugins_block, config.plugins_dir)
    manager.call_each("register_commands", lambda plugin: {"cli": cli})
    return [f"warning: plugin {f.name!r} failed to load ({f.source}): {f.error}" for f in manager.failures]


# The group's options that take a value (the next argument is not a command).
_VALUE_OPTIONS = frozenset({"--db", "--config", "--plugins", "--plugins-dir", "--as-of", "--as"})


def asks_version(argv: Sequence[str]) -> bool:
    """Whether click will only print the version: ``--version`` among the group's
    options, before any command and before ``--help``."""
    args = iter(argv)
    for arg in args:
        if arg == "--version":
            return True
        if arg in ("-h", "--help", "--") or not arg.startswith("-"):
            return False
        if arg in _VALUE_OPTIONS:
            next(args, None)
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crm`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if asks_version(argv):  # no plugin adds to the version: do not spend start-up time importing them
        cli.main(args=argv, prog_name="crm")
        return
    try:
        with building():  # the plugins' modules and commands are the program too (crmcore.startup)
            warnings = load_plugin_commands(argv)
        for warning in warnings:
            click.echo(warning, err=True)
    except CRMError as exc:
        if Session.from_argv(argv).verbose:
            raise
        click.echo(f"Error: {mask_text(str(exc))}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="crm")
