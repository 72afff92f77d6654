"""``crm segment``: list and run what plugins registered in the segments family."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import attrs
import click

from ..convert import json_default
from .context import Session, pass_session
from .family_common import component_rows, parse_options


@click.group("segment")
def segment() -> None:
    """Segmentation: strategies, runs and members."""


@segment.command("strategies")
@pass_session
def strategies(session: Session) -> None:
    """List segmentation strategies."""
    session.emit(component_rows(session.crm.segments.strategies()))


@segment.command("run")
@click.argument("name")
@click.option("--option", "-o", "pairs", multiple=True, metavar="KEY=VALUE", help="Strategy option (repeatable).")
@pass_session
def run_segment(session: Session, name: str, pairs: tuple[str, ...]) -> None:
    """Run strategy NAME (as of --as-of) and store its memberships."""
    run = session.crm.segments.run(name, as_of=session.as_of, options=parse_options(pairs))
    if session.as_json:
        session.emit([attrs.asdict(run)])
        return
    session.echo(f"run {run.id} of {name}: {run.members} customers; entered {run.entered}, left {run.left}, "
                 f"moved {run.moved} ({run.duration_s:.2f}s)")
    session.emit([{"segment": k, "customers": v} for k, v in sorted((run.counts or {}).items())])


@segment.command("runs")
@click.option("--strategy", help="Only runs of this strategy.")
@click.option("--limit", type=int, default=20, show_default=True)
@pass_session
def runs(session: Session, strategy: str | None, limit: int) -> None:
    """List recorded runs."""
    rows = [attrs.asdict(r) for r in session.crm.segments.runs(strategy, limit)]
    session.emit(rows, columns=None if session.as_json else
                 ["id", "strategy", "as_of", "members", "entered", "left", "moved", "duration_s"])


def _members(session: Session, name: str, strategy: str | None, run_id: int | None) -> list[dict[str, Any]]:
    crm = session.crm
    if strategy is None and name in crm.segments.registry:
        return crm.segments.members(name, run_id=run_id)
    strategies = [strategy] if strategy else crm.segments.registry.names()
    found = [m | {"strategy": s} for s in strategies for m in crm.segments.members(s, name, run_id)]
    return found


@segment.command("members")
@click.argument("name")
@click.option("--strategy", help="The strategy NAME belongs to (when NAME is a segment).")
@click.option("--run", "run_id", type=int, help="A specific run (default: the latest).")
@pass_session
def members(session: Session, name: str, strategy: str | None, run_id: int | None) -> None:
    """Members of strategy NAME's latest run, or of segment NAME."""
    session.emit(_members(session, name, strategy, run_id),
                 columns=None if session.as_json else ["customer_id", "segment", "score"])


@segment.command("export")
@click.argument("name")
@click.option("--strategy", help="The strategy NAME belongs to (when NAME is a segment).")
@click.option("--run", "run_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@pass_session
def export_segment(session: Session, name: str, strategy: str | None, run_id: int | None, fmt: str,
                   output: str | None) -> None:
    """Export the members of NAME as CSV or JSON Lines."""
    rows = _members(session, name, strategy, run_id)
    stream = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "csv":
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(["customer_id", "segment", "score", "details"])
            for row in rows:
                writer.writerow([row["customer_id"], row["segment"], row["score"],
                                 json.dumps(row["details"], ensure_ascii=False) if row["details"] else ""])
        else:
            for row in rows:
                stream.write(json.dumps(row, ensure_ascii=False, default=json_default) + "\n")
    finally:
        if output:
            stream.close()
    if output:
        click.echo(f"{len(rows)} members written to {output}", err=True)
