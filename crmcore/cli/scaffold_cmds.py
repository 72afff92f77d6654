"""``crm plugin new``: start a plugin from a ready, tested package."""

from __future__ import annotations

import click

from ..scaffold import FAMILIES, new_plugin


@click.group("plugin")
def plugin_group() -> None:
    """Write new plugins (see ``crm plugins`` for the installed ones)."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--family", required=True, metavar="|".join(FAMILIES),
              help="The component to start with: " + ", ".join(FAMILIES) + ".")
@click.option("--tables", is_flag=True, help="Also a table of the plugin's own, with its Alembic branch.")
@click.option("--output", default=".", type=click.Path(file_okay=False), show_default=True,
              help="Directory to create the plugin's folder NAME in.")
def new(name: str, family: str, tables: bool, output: str) -> None:
    """A plugin package NAME: pyproject with the entry point, hooks, one component, tests, README."""
    target = new_plugin(name, family, output, tables)
    click.echo(f"wrote {target}: pip install -e {target} && python -m pytest {target / 'tests'}")
