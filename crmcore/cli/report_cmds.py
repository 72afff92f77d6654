"""``crm report``: list and run what plugins registered in the reports family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click

from ..domain.errors import CRMError
from ..reports import render_table, write_output
from .context import Session, pass_session, read_only
from .family_common import component_rows, parse_options
from .job_cmds import BACKGROUND, submit_background
from .params import SEGMENT

# The typed filters every first-party report understands: flag -> option name.
# A report that does not take one says so (``report 'x' has no filter ...``).
FILTERS = (
    ("--from", "start", "First day included (YYYY-MM-DD, UTC)."),
    ("--to", "end", "Last day included (YYYY-MM-DD, UTC)."),
    ("--region", "region", "Only customers in this region."),
    ("--owner", "owner", "Only this owner (sales rep)."),
    ("--pipeline", "pipeline", "Pipeline (default: 'default')."),
    ("--segment", "segment", "Only members of this segment ([STRATEGY:]SEGMENT, or RUN_ID:SEGMENT for a past run)."),
    ("--currency", "currency", "Currency reported (default: the configured one)."),
)


def filter_options(command: Any) -> Any:
    """Add the typed filter flags to a command (stored under their option names)."""
    for flag, name, help_text in reversed(FILTERS):
        kind = SEGMENT if name == "segment" else None
        command = click.option(flag, name, default=None, type=kind, help=help_text)(command)
    return command


@click.group("report")
def report() -> None:
    """Reports: list, run, dashboard."""


@read_only
@report.command("list")
@pass_session
def list_reports(session: Session) -> None:
    """List reports and output formats."""
    rows = component_rows(session.crm.reports.list())
    session.emit(rows)
    if not session.as_json:
        session.echo("formats: " + ", ".join(session.crm.reports.renderers.names()))


@read_only
@report.command("run")
@click.argument("name")
@click.option("--format", "fmt", default="table", show_default=True,
              help="table, csv, json or a plugin's format (markdown, xlsx, html).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@click.option("--option", "pairs", multiple=True, metavar="KEY=VALUE", help="Report option (repeatable).")
@filter_options
@BACKGROUND
@pass_session
def run_report(session: Session, /, name: str, fmt: str, output: str | None, pairs: tuple[str, ...],
               background: bool, **filters: Any) -> None:
    """Run report NAME as of --as-of and render it (--background: a job writes --output)."""
    fmt = "json" if session.as_json and fmt == "table" else fmt
    options = {key: value for key, value in filters.items() if value is not None} | parse_options(pairs)
    if filters.get("segment") is not None:
        options["segment"] = _segment(session, filters["segment"])
    if background:
        if not output:
            raise click.UsageError("--background writes the report to a file: give --output FILE")
        submit_background(session, "reports.write", {"name": name, "output": str(Path(output).resolve()),
                                                     "format": fmt, "as_of": session.as_of_text,
                                                     "options": options})
        return
    console = session.terminal() if fmt == "table" and not output else None
    if console is not None:  # a table for this terminal: as wide as it is, numbers never cut
        result = session.crm.reports.run(name, as_of=session.as_of_text, options=options)
        click.echo(render_table(result, terminal=True, width=console.width), nl=False)  # drawn already: no markup
        return
    rendered = session.crm.reports.render(name, format=fmt, as_of=session.as_of_text, options=options)
    if output:
        write_output(Path(output), rendered)
        click.echo(f"{name} written to {output}", err=True)
    elif isinstance(rendered, bytes):
        raise CRMError(f"format {fmt!r} is binary: use --output FILE")
    else:
        click.echo(rendered, nl=not rendered.endswith("\n"))


def _segment(session: Session, ref: Any) -> str:
    """``--segment`` checked against the runs here, so an unknown one is an error about the flag;
    ``RUN_ID:SEGMENT`` (a past run) is left to the report."""
    head, colon, _name = str(ref).partition(":")
    if colon and head.strip().isascii() and head.strip().isdigit():
        return str(ref)
    return str(session.crm.segments.resolve(ref))


@read_only
@report.command("dashboard")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False),
              help="Directory for index.html and one page per report.")
@click.option("--format", "fmt", default="html", show_default=True, help="Format of each report's page.")
@pass_session
def dashboard(session: Session, output: str, fmt: str) -> None:
    """Write every report and an index page linking them into a directory."""
    with session.progress("report dashboard") as progress:
        entries = session.crm.reports.dashboard(output, as_of=session.as_of_text, format=fmt,
                                                progress=lambda n, total, name: progress(n, total, name))
    written = sum(1 for e in entries if e.file)
    if session.as_json:
        session.emit_object({"directory": output, "index": "index.html", "written": written,
                             "reports": [attrs.asdict(e) for e in entries]})
        return
    for entry in entries:
        if entry.error:
            click.echo(f"warning: report {entry.name!r} left out: {entry.error}", err=True)
    session.echo(f"{written} report(s) and index.html written to {output}")
