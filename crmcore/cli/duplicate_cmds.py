"""``crm customer duplicates|merge|unmerge|merges``: find duplicate customers and merge them.

The work happens in :mod:`crmcore.application.duplicates` and :mod:`crmcore.application.merges`
(``crm.duplicates``, ``crm.merges``); these commands parse options and print.
"""

from __future__ import annotations

from typing import Any

import click

from ..domain.errors import ValidationError
from .context import Session, pass_session, read_only
from .entities import customer, resolve_customer
from .params import ID, POSITIVE

SCORE = click.FloatRange(0, 1)


@read_only
@customer.command("duplicates")
@click.option("--min-score", type=SCORE, default=None, metavar="S",
              help="Only pairs scoring at least S, 0..1 (default: [duplicates] min_score).")
@click.option("--limit", type=POSITIVE, default=100, show_default=True, help="Clusters shown at most.")
@pass_session
def duplicates(session: Session, min_score: float | None, limit: int) -> None:
    """Candidate duplicates: clusters of customers with a score and the fields that matched."""
    found = session.crm.duplicates.find(min_score)
    if session.as_json:
        session.emit([c.as_dict() for c in found[:limit]])
        return
    rows = [{"cluster": n, "a": p.a, "b": p.b, "score": round(p.score, 3),
             "matched": ", ".join(f"{k}={v}" if v != "same" else k for k, v in p.fields.items())}
            for n, c in enumerate(found[:limit], 1) for p in c.pairs]
    session.emit(rows, columns=["cluster", "a", "b", "score", "matched"])
    if len(found) > limit:
        session.showing(limit, len(found), "--limit")


def _prefer(session: Session, items: tuple[str, ...]) -> dict[str, int]:
    prefer: dict[str, int] = {}
    for item in items:
        field, eq, who = item.partition("=")
        if not eq or not field.strip() or not who.strip():
            raise ValidationError.single("--prefer", f"{item!r} is not FIELD=CUSTOMER")
        prefer[field.strip()] = resolve_customer(session, who.strip())
    return prefer


@customer.command("merge")
@click.argument("keep", required=False)
@click.argument("others", nargs=-1)
@click.option("--prefer", multiple=True, metavar="FIELD=CUSTOMER",
              help="Take FIELD (or attributes.NAME) from CUSTOMER (repeatable); others follow [duplicates] merge_rule.")
@click.option("--rule", type=click.Choice(["non-empty", "newest", "kept"]), default=None,
              help="How conflicting fields are settled (default: [duplicates] merge_rule).")
@click.option("--all-above", "all_above", type=SCORE, default=None, metavar="S",
              help="Merge every cluster scoring at least S into its oldest customer (instead of KEEP OTHER...).")
@click.option("--dry-run", is_flag=True, help="With --all-above: list what would be merged, merge nothing.")
@pass_session
def merge(session: Session, keep: str | None, others: tuple[str, ...], prefer: tuple[str, ...], rule: str | None,
          all_above: float | None, dry_run: bool) -> None:
    """Merge OTHER customers into KEEP: their contacts, interactions, deals, messages, points,
    consent and segment memberships move, the others are archived (`unmerge` undoes it)."""
    crm = session.crm
    if all_above is not None:
        if keep is not None:
            raise ValidationError.single("--all-above", "give KEEP OTHER... or --all-above, not both")
        plan, done, refused = crm.merges.merge_all(all_above, dry_run=dry_run)
        if session.as_json:
            session.emit_object({"dry_run": dry_run, "clusters": [c.as_dict() for c in plan],
                                 "merges": [m.as_dict() for m in done],
                                 "refused": [{"ids": list(c.ids), "error": why} for c, why in refused]})
            return
        for cluster, why in refused:
            click.echo(f"not merged {' '.join(map(str, cluster.ids))}: {why}", err=True)
        rows = [{"keep": c.ids[0], "merge": " ".join(map(str, c.ids[1:])), "score": round(c.score, 3)} for c in plan]
        session.emit(rows, columns=["keep", "merge", "score"])
        verb = "would merge" if dry_run else "merged"
        merged = [c for c in plan if all(c is not r for r, _ in refused)]
        session.echo(f"{verb} {sum(len(c.ids) - 1 for c in merged)} customers into {len(merged)} "
                     f"({'dry run, nothing written' if dry_run else 'crm customer unmerge MERGE_ID undoes one'})")
        return
    if keep is None or not others:
        raise ValidationError.single("KEEP", "name the customer to keep and at least one to merge into it "
                                     "(or --all-above S)")
    if dry_run:
        raise ValidationError.single("--dry-run", "goes with --all-above")
    kept = resolve_customer(session, keep)
    result = crm.merges.merge(kept, [resolve_customer(session, o) for o in others], _prefer(session, prefer), rule)
    moved = ", ".join(f"{n} {table}" for table, n in result.moved.items() if n) or "no rows"
    session.emit_object(result.as_dict(), f"merged {', '.join(map(str, result.merged_ids))} into customer "
                        f"{kept} (merge {result.merge_id}; moved {moved}); "
                        f"crm customer unmerge {result.merge_id} undoes it")


@customer.command("unmerge")
@click.argument("merge_id", type=ID)
@pass_session
def unmerge(session: Session, merge_id: int) -> None:
    """Undo merge MERGE_ID (see `crm customer merges`): rows move back, the merged customers are live again."""
    kept = session.crm.merges.unmerge(merge_id)
    session.emit_object({"merge_id": merge_id, "kept_id": kept.id}, f"merge {merge_id} undone")


@read_only
@customer.command("merges")
@click.option("--customer", "ref", metavar="REF", help="Only merges into this customer.")
@pass_session
def merges(session: Session, ref: str | None) -> None:
    """The merges done, newest first (with the ids `unmerge` takes)."""
    customer_id = resolve_customer(session, ref) if ref else None
    rows: list[dict[str, Any]] = session.crm.merges.list(customer_id)
    session.emit(rows, columns=None if session.as_json else ["id", "kept_id", "merged_ids", "merged_at", "actor",
                                                             "undone_at"])
