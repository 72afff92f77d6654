"""``crm report``: list and run what plugins registered in the reports family."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import CRMError
from .context import Session, pass_session
from .family_common import component_rows, parse_options


@click.group("report")
def report() -> None:
    """Reports: list and run."""


@report.command("list")
@pass_session
def list_reports(session: Session) -> None:
    """List reports and output formats."""
    rows = component_rows(session.crm.reports.list())
    session.emit(rows)
    if not session.as_json:
        session.echo("formats: " + ", ".join(session.crm.reports.renderers.names()))


@report.command("run")
@click.argument("name")
@click.option("--format", "fmt", default="table", show_default=True, help="table, csv, json or a plugin's format.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@click.option("--option", "pairs", multiple=True, metavar="KEY=VALUE", help="Report option (repeatable).")
@pass_session
def run_report(session: Session, name: str, fmt: str, output: str | None, pairs: tuple[str, ...]) -> None:
    """Run report NAME as of --as-of and render it."""
    fmt = "json" if session.as_json and fmt == "table" else fmt
    rendered = session.crm.reports.render(name, format=fmt, as_of=session.as_of, options=parse_options(pairs))
    if output:
        data = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
        Path(output).write_bytes(data)
        click.echo(f"{name} written to {output}", err=True)
    elif isinstance(rendered, bytes):
        raise CRMError(f"format {fmt!r} is binary: use --output FILE")
    else:
        click.echo(rendered, nl=not rendered.endswith("\n"))
