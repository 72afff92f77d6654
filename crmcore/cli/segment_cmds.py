"""``crm segment``: list and run what plugins registered in the segments family."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import click

from ..domain.convert import json_default
from ..domain.spreadsheet import escape_formula
from .context import Session, pass_session, read_only
from .params import COUNT, ID, one_more
from .family_common import component_rows, parse_options
from .job_cmds import BACKGROUND, submit_background


@click.group("segment")
def segment() -> None:
    """Segmentation: strategies, runs and members."""


@read_only
@segment.command("strategies")
@pass_session
def strategies(session: Session) -> None:
    """List segmentation strategies."""
    session.emit(component_rows(session.crm.segments.strategies()))


@segment.command("run")
@click.argument("name")
@click.option("--option", "-o", "pairs", multiple=True, metavar="KEY=VALUE", help="Strategy option (repeatable).")
@BACKGROUND
@pass_session
def run_segment(session: Session, name: str, pairs: tuple[str, ...], background: bool) -> None:
    """Run strategy NAME (as of --as-of) and store its memberships."""
    if background:
        submit_background(session, "segments.run", {"strategy": name, "as_of": session.as_of_text,
                                                    "options": parse_options(pairs)})
        return
    # One INSERT ... SELECT does the work, so there is nothing to count: a spinner and the time it has taken.
    with session.progress(f"segment run {name}"):
        run = session.crm.segments.run(name, as_of=session.as_of_text, options=parse_options(pairs))
    if session.as_json:
        session.emit_object(attrs.asdict(run))
        return
    session.echo(f"run {run.id} of {name}: {run.members} customers; entered {run.entered}, left {run.left}, "
                 f"moved {run.moved} ({run.duration_s:.2f}s)")
    session.emit([{"segment": k, "customers": v} for k, v in sorted((run.counts or {}).items())])


@read_only
@segment.command("runs")
@click.option("--strategy", help="Only runs of this strategy.")
@click.option("--limit", type=COUNT, default=20, show_default=True)
@pass_session
def runs(session: Session, strategy: str | None, limit: int) -> None:
    """List recorded runs."""
    rows = [attrs.asdict(r) for r in session.crm.segments.runs(strategy, one_more(limit))]
    session.emit(rows[:limit], columns=None if session.as_json else
                 ["id", "strategy", "as_of", "members", "entered", "left", "moved", "duration_s"])
    if len(rows) > limit:
        session.showing(limit, None, "--limit")


def _members(session: Session, name: str, strategy: str | None, run_id: int | None) -> Iterator[dict[str, Any]]:
    """Members of strategy NAME, or of segment NAME (in ``strategy`` or in any strategy)."""
    crm = session.crm
    if strategy is None and name in crm.segments.registry:
        yield from crm.segments.iter_members(name, run_id=run_id, customer_fields=True)
        return
    if run_id is not None:  # the run decides the strategy
        strategies = [crm.segments.run_info(run_id).strategy]
    else:
        strategies = [strategy] if strategy else crm.segments.registry.names()
    for s in strategies:
        for member in crm.segments.iter_members(s, name, run_id, customer_fields=True):
            yield member | {"strategy": s}


@read_only
@segment.command("members")
@click.argument("name")
@click.option("--strategy", help="The strategy NAME belongs to (when NAME is a segment).")
@click.option("--run", "run_id", type=ID, help="A specific run (default: the latest).")
@pass_session
def members(session: Session, name: str, strategy: str | None, run_id: int | None) -> None:
    """Members of strategy NAME's latest run, or of segment NAME."""
    session.emit(list(_members(session, name, strategy, run_id)),
                 columns=None if session.as_json else ["customer_id", "name", "email", "segment", "score"])


@read_only
@segment.command("export")
@click.argument("name")
@click.option("--strategy", help="The strategy NAME belongs to (when NAME is a segment).")
@click.option("--run", "run_id", type=ID)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@click.option("--raw-csv", is_flag=True, help="No quote before text starting with =, +, -, @ (for programs).")
@pass_session
def export_segment(session: Session, name: str, strategy: str | None, run_id: int | None, fmt: str,
                   output: str | None, raw_csv: bool = False) -> None:
    """Export the members of NAME as CSV or JSON Lines (streamed)."""
    # Asked before the output file is opened: a refusal leaves nothing on disk.
    session.crm.authorize("segment.export", name)
    rows = _members(session, name, strategy, run_id)
    stream = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    count = 0
    try:
        if fmt == "csv":
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)

            def text(value: Any) -> Any:
                return escape_formula(value) if isinstance(value, str) and not raw_csv else value
            for count, row in enumerate(rows, 1):
                writer.writerow([row["customer_id"], text(row["name"]), text(row["email"]), text(row["segment"]),
                                 row["score"], json.dumps(row["details"], ensure_ascii=False) if row["details"] else ""])
        else:
            for count, row in enumerate(rows, 1):
                stream.write(json.dumps(row, ensure_ascii=False, default=json_default) + "\n")
    finally:
        if output:
            stream.close()
    if output:
        click.echo(f"{count} members written to {output}", err=True)


EXPORT_COLUMNS = ["customer_id", "name", "email", "segment", "score", "details"]


@read_only
@segment.command("diff")
@click.argument("run_a", type=ID)
@click.argument("run_b", type=ID)
@pass_session
def diff(session: Session, run_a: int, run_b: int) -> None:
    """Customers who entered, left or moved between segments from RUN_A to RUN_B."""
    changes = session.crm.segments.diff(run_a, run_b)
    rows = [{"customer_id": c.customer_id, "change": c.change, "from": c.old, "to": c.new} for c in changes]
    if not session.as_json:
        kinds = [c.change for c in changes]
        session.echo(f"run {run_a} -> run {run_b}: entered {kinds.count('entered')}, left {kinds.count('left')}, "
                     f"moved {kinds.count('moved')}")
    session.emit(rows, columns=None if session.as_json else ["customer_id", "change", "from", "to"])


@read_only
@segment.command("explain")
@click.argument("name")
@click.argument("customer")
@click.option("--run", "run_id", type=ID, help="A specific run (default: the latest).")
@pass_session
def explain(session: Session, name: str, customer: str, run_id: int | None) -> None:
    """Why CUSTOMER (id, external id or email) is in their segment of strategy NAME."""
    from .entities import resolve_customer

    found = session.crm.segments.explain(name, resolve_customer(session, customer), run_id)
    if session.as_json:
        session.emit_object(found)
        return
    segment_text = found["segment"] if found["segment"] is not None else "(not a member)"
    session.echo(f"{name} run {found['run_id']} as of {found['as_of']:%Y-%m-%d %H:%M:%S %Z}: customer "
                 f"{found['customer_id']} is in {segment_text}")
    session.emit([{"item": k, "value": v} for k, v in found["explanation"].items()], columns=["item", "value"])
