"""``crm segment|loyalty|notify|report``: list and run what plugins registered."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import click

from ..errors import CRMError, ValidationError
from ..convert import json_default
from .context import Session, pass_session
from .entities import resolve_customer


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValidationError.single("--option", f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def _component_rows(components: list[Any]) -> list[dict[str, Any]]:
    return [{"name": c.name, "description": c.description,
             "options": ", ".join(f.name for f in attrs.fields(c.options_type)) if c.options_type else ""}
            for c in components]


# -- segments -------------------------------------------------------------------

@click.group("segment")
def segment() -> None:
    """Segmentation: strategies, runs and members."""


@segment.command("strategies")
@pass_session
def strategies(session: Session) -> None:
    """List segmentation strategies."""
    session.emit(_component_rows(session.crm.segments.strategies()))


@segment.command("run")
@click.argument("name")
@click.option("--option", "-o", "pairs", multiple=True, metavar="KEY=VALUE", help="Strategy option (repeatable).")
@pass_session
def run_segment(session: Session, name: str, pairs: tuple[str, ...]) -> None:
    """Run strategy NAME (as of --as-of) and store its memberships."""
    run = session.crm.segments.run(name, as_of=session.as_of, options=_options(pairs))
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


# -- loyalty --------------------------------------------------------------------

@click.group("loyalty")
def loyalty() -> None:
    """Loyalty: schemes, balances, history, redemption, adjustments."""


def _scheme(session: Session, scheme: str | None) -> str:
    names = session.crm.loyalty.registry.names()
    if scheme:
        session.crm.loyalty.registry.get(scheme)
        return scheme
    if len(names) == 1:
        return names[0]
    raise CRMError(f"choose a scheme with --scheme (available: {', '.join(names) or 'none'})")


@loyalty.command("schemes")
@pass_session
def schemes(session: Session) -> None:
    """List loyalty schemes."""
    session.emit(_component_rows(session.crm.loyalty.schemes()))


@loyalty.command("balance")
@click.argument("customer")
@click.option("--scheme")
@pass_session
def balance(session: Session, customer: str, scheme: str | None) -> None:
    """Points CUSTOMER (id, external id or email) has now."""
    cid, name = resolve_customer(session, customer), _scheme(session, scheme)
    session.emit([{"customer_id": cid, "scheme": name, "balance": session.crm.loyalty.balance(cid, name)}])


@loyalty.command("history")
@click.argument("customer")
@click.option("--scheme")
@pass_session
def history(session: Session, customer: str, scheme: str | None) -> None:
    """Ledger entries of CUSTOMER."""
    entries = session.crm.loyalty.history(resolve_customer(session, customer), scheme)
    session.emit([attrs.asdict(e) for e in entries], columns=None if session.as_json else
                 ["id", "scheme", "kind", "points", "occurred_at", "expires_at", "reason", "actor"])


@loyalty.command("redeem")
@click.argument("customer")
@click.argument("points", type=int)
@click.option("--scheme")
@click.option("--reason")
@pass_session
def redeem(session: Session, customer: str, points: int, scheme: str | None, reason: str | None) -> None:
    """Spend POINTS of CUSTOMER (refused if the balance is short)."""
    entry = session.crm.loyalty.redeem(resolve_customer(session, customer), points, _scheme(session, scheme), reason)
    session.emit([attrs.asdict(entry)], columns=None if session.as_json else ["id", "scheme", "kind", "points"])


# ignore_unknown_options lets "-100" through as POINTS instead of an unknown option.
@loyalty.command("adjust", context_settings={"ignore_unknown_options": True})
@click.argument("customer")
@click.argument("points", type=int)
@click.option("--reason", required=True, help="Why (recorded with the acting user).")
@click.option("--scheme")
@pass_session
def adjust(session: Session, customer: str, points: int, reason: str, scheme: str | None) -> None:
    """Correct CUSTOMER's balance by POINTS (negative to take points away)."""
    entry = session.crm.loyalty.adjust(resolve_customer(session, customer), points, _scheme(session, scheme), reason)
    session.emit([attrs.asdict(entry)], columns=None if session.as_json else ["id", "scheme", "kind", "points"])


# -- notifications --------------------------------------------------------------

@click.group("notify")
def notify() -> None:
    """Notifications: channels, outbox, dispatch, retry."""


@notify.command("channels")
@pass_session
def channels(session: Session) -> None:
    """List notification channels."""
    session.emit(_component_rows(session.crm.notify.channels()))


@notify.command("send")
@click.option("--channel", required=True)
@click.option("--customer", help="Customer id, external id or email (the recipient defaults to their address).")
@click.option("--to", "recipient", help="Recipient address, overriding the customer's.")
@click.option("--subject")
@click.option("--body")
@click.option("--purpose", type=click.Choice(["transactional", "marketing"]), default="transactional")
@click.option("--key", help="Idempotency key (a repeat is ignored).")
@pass_session
def send(session: Session, channel: str, customer: str | None, recipient: str | None, subject: str | None,
         body: str | None, purpose: str, key: str | None) -> None:
    """Queue one message (delivered by `crm notify dispatch`)."""
    cid = resolve_customer(session, customer) if customer else None
    mid = session.crm.notify.enqueue(channel, customer_id=cid, recipient=recipient, subject=subject, body=body,
                                     purpose=purpose, key=key)
    message = session.crm.notify.outbox(limit=1, message_id=mid)[0]
    session.emit([message], columns=None if session.as_json else ["id", "channel", "recipient", "status", "last_error"])


@notify.command("outbox")
@click.option("--status", type=click.Choice(["pending", "sending", "sent", "dead", "suppressed"]))
@click.option("--customer")
@click.option("--limit", type=int, default=50, show_default=True)
@pass_session
def show_outbox(session: Session, status: str | None, customer: str | None, limit: int) -> None:
    """Messages in the outbox, newest first."""
    cid = resolve_customer(session, customer) if customer else None
    rows = session.crm.notify.outbox(status=status, customer_id=cid, limit=limit)
    session.emit(rows, columns=None if session.as_json else
                 ["id", "channel", "recipient", "purpose", "status", "attempts", "subject", "last_error"])


@notify.command("dispatch")
@click.option("--limit", type=int, help="At most this many messages.")
@click.option("--channel", help="Only this channel.")
@pass_session
def dispatch(session: Session, limit: int | None, channel: str | None) -> None:
    """Deliver due messages now."""
    result = session.crm.notify.dispatch(limit=limit, channel=channel)
    session.emit([attrs.asdict(result)])


@notify.command("retry")
@click.argument("ids", type=int, nargs=-1)
@pass_session
def retry(session: Session, ids: tuple[int, ...]) -> None:
    """Requeue dead messages (all, or the given IDS)."""
    count = session.crm.notify.retry(list(ids) or None)
    session.emit([{"requeued": count}])


# -- reports --------------------------------------------------------------------

@click.group("report")
def report() -> None:
    """Reports: list and run."""


@report.command("list")
@pass_session
def list_reports(session: Session) -> None:
    """List reports and output formats."""
    rows = _component_rows(session.crm.reports.list())
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
    rendered = session.crm.reports.render(name, format=fmt, as_of=session.as_of, options=_options(pairs))
    if output:
        data = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
        Path(output).write_bytes(data)
        click.echo(f"{name} written to {output}", err=True)
    elif isinstance(rendered, bytes):
        raise CRMError(f"format {fmt!r} is binary: use --output FILE")
    else:
        click.echo(rendered, nl=not rendered.endswith("\n"))
