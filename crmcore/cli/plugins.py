"""``crm plugins``: what is installed and what each plugin provides."""

from __future__ import annotations

from importlib.metadata import entry_points

import attrs
import click

from ..application.plugins import ENTRY_POINT_GROUP
from .context import Session, pass_session, read_only


@click.group("plugins")
def plugins_group() -> None:
    """Installed plugins."""


@read_only
@plugins_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also list installed plugins that are not enabled.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@pass_session
def list_plugins(session: Session, show_all: bool, as_json: bool) -> None:
    """Name, version, distribution, hooks and components of each plugin."""
    session.as_json = session.as_json or as_json
    crm = session.crm
    crm.authorize("plugins.list", None)  # CLI-only: no use case behind it to ask
    rows = [attrs.asdict(info) | {"enabled": True} for info in crm.plugin_info()]
    for failure in crm.plugins.failures:
        rows.append({"name": failure.name, "version": None, "distribution": None, "source": failure.source,
                     "hooks": [], "components": {}, "enabled": False, "error": failure.error})
    if show_all:
        loaded = {row["name"] for row in rows}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in loaded:
                rows.append({"name": ep.name, "version": ep.dist.version if ep.dist else None,
                             "distribution": ep.dist.name if ep.dist else None, "source": "entry point",
                             "hooks": [], "components": {}, "enabled": False})
    if session.as_json:
        session.emit(rows)
        return
    session.emit([{**row, "hooks": ", ".join(row["hooks"]),
                   "components": "; ".join(f"{k}: {', '.join(v)}" for k, v in row["components"].items())}
                  for row in rows],
                 columns=["name", "version", "distribution", "enabled", "hooks", "components"])
