"""``crm loyalty``: list and run what plugins registered in the loyalty family."""

from __future__ import annotations


from typing import Any

import attrs
import click

from ..domain.errors import CRMError
from ..loyalty import LedgerEntry
from .params import INT64_MAX, SIGNED
from .job_cmds import BACKGROUND, submit_background
from .context import Session, pass_session, read_only
from .entities import resolve_customer
from .family_common import component_rows

AS_OF = click.option("--as-of", "as_of", metavar="DATE", help="Treat this date/time as now (default: global --as-of).")
SCHEME = click.option("--scheme", help="Loyalty scheme (default: the only one, else 'points').")


@click.group("loyalty")
def loyalty() -> None:
    """Loyalty: schemes, balances, history, redemption, adjustments and jobs."""


def _scheme(session: Session, scheme: str | None) -> str:
    names = session.crm.loyalty.registry.names()
    if scheme:
        session.crm.loyalty.registry.get(scheme)
        return scheme
    if len(names) == 1:
        return names[0]
    if "points" in names:  # the first-party wallet, when several schemes run side by side
        return "points"
    raise CRMError(f"choose a scheme with --scheme (available: {', '.join(names) or 'none'})")


def _as_of(session: Session, as_of: str | None) -> str | None:
    return as_of or session.as_of_text


def _entry_row(entry: LedgerEntry) -> dict[str, Any]:
    return attrs.asdict(entry)


def _without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


ENTRY_COLUMNS = ["id", "scheme", "kind", "points", "occurred_at", "expires_at", "reason", "actor"]


@read_only
@loyalty.command("schemes")
@pass_session
def schemes(session: Session) -> None:
    """List loyalty schemes."""
    session.emit(component_rows(session.crm.loyalty.schemes()))


@read_only
@loyalty.command("balance")
@click.argument("customer")
@SCHEME
@AS_OF
@pass_session
def balance(session: Session, customer: str, scheme: str | None, as_of: str | None) -> None:
    """CUSTOMER's points per scheme: balance, available, expiring by date, tier, progress to the next tier."""
    cid = resolve_customer(session, customer)
    rows = session.crm.loyalty.status(cid, as_of=_as_of(session, as_of))
    if scheme:
        session.crm.loyalty.registry.get(scheme)
        rows = [r for r in rows if r["scheme"] == scheme]
    if session.as_json:  # one customer: one object, its schemes by name
        session.emit_object({"customer_id": cid, "schemes": {r["scheme"]: _without(r, "scheme") for r in rows}})
        return
    session.emit([{"customer_id": cid, **r} for r in rows])


@read_only
@loyalty.command("history")
@click.argument("customer")
@SCHEME
@pass_session
def history(session: Session, customer: str, scheme: str | None) -> None:
    """Ledger entries of CUSTOMER, oldest first."""
    entries = session.crm.loyalty.history(resolve_customer(session, customer), scheme)
    session.emit([_entry_row(e) for e in entries], columns=None if session.as_json else ENTRY_COLUMNS)


@loyalty.command("redeem")
@click.argument("customer")
@click.argument("what", metavar="POINTS|REWARD")
@SCHEME
@click.option("--reason")
@AS_OF
@pass_session
def redeem(session: Session, customer: str, what: str, scheme: str | None, reason: str | None,
           as_of: str | None) -> None:
    """Spend POINTS of CUSTOMER, or exchange points for catalogue REWARD (issues a code).

    Refused, with nothing written, if the balance is short or the reward is
    unknown or out of stock.
    """
    digits = what.lstrip("-")
    points = digits.isascii() and digits.isdigit()
    # Length first: int() refuses more than 4,300 digits with a ValueError (a traceback here).
    if points and (len(digits.lstrip("0")) > len(str(INT64_MAX)) or abs(int(what)) > INT64_MAX):
        raise click.BadParameter(f"{what} is beyond {INT64_MAX:,} points", param_hint="'POINTS|REWARD'")
    cid = resolve_customer(session, customer)
    if points:
        entry = session.crm.loyalty.redeem(cid, int(what), _scheme(session, scheme), reason)
        session.emit_one(_entry_row(entry), ["id", "scheme", "kind", "points"])
        return
    issued = session.crm.loyalty.redeem_reward(cid, what, as_of=_as_of(session, as_of))
    session.emit_one({"customer_id": cid, **issued})


@read_only
@loyalty.command("rewards")
@AS_OF
@pass_session
def rewards(session: Session, as_of: str | None) -> None:
    """The reward catalogue: cost, stock left, validity."""
    session.emit(session.crm.loyalty.rewards(as_of=_as_of(session, as_of)),
                 columns=None if session.as_json else ["scheme", "name", "cost", "stock", "left", "valid_until",
                                                       "offered", "description"])


# ignore_unknown_options lets "-100" through as POINTS instead of an unknown option.
@loyalty.command("adjust", context_settings={"ignore_unknown_options": True})
@click.argument("customer")
@click.argument("points", type=SIGNED)
@click.option("--reason", required=True, help="Why (recorded with the acting user).")
@click.option("--by", "user", metavar="LOGIN", help="Deprecated alias of the global --as LOGIN.")
@SCHEME
@pass_session
def adjust(session: Session, customer: str, points: int, reason: str, user: str | None, scheme: str | None) -> None:
    """Correct CUSTOMER's balance by POINTS (negative to take points away), recorded with the acting user."""
    crm = session.crm
    cid = resolve_customer(session, customer)
    if user is None:  # the acting user (--as, CRM_USER, default_user) records and is authorized
        entry = crm.loyalty.adjust(cid, points, _scheme(session, scheme), reason)
    else:
        # --by once named any user unchecked; it is now --as: checked (known, active) and authorized.
        click.echo("note: `loyalty adjust --by` is deprecated; use the global `crm --as LOGIN`", err=True)
        with crm.acting(user):
            entry = crm.loyalty.adjust(cid, points, _scheme(session, scheme), reason)
    session.emit_one(_entry_row(entry), ["id", "scheme", "kind", "points", "actor"])


@loyalty.command("refer")
@click.argument("customer")
@click.option("--by", "referrer", required=True, help="The customer who referred CUSTOMER.")
@pass_session
def refer(session: Session, customer: str, referrer: str) -> None:
    """Record that --by referred CUSTOMER (both get a bonus when CUSTOMER's first deal is won)."""
    row = session.crm.loyalty.refer(resolve_customer(session, customer), resolve_customer(session, referrer))
    session.emit_one(row)


@loyalty.command("earn")
@SCHEME
@AS_OF
@BACKGROUND
@pass_session
def earn(session: Session, scheme: str | None, as_of: str | None, background: bool) -> None:
    """Batch job: earn for every won deal that has not earned yet (idempotent)."""
    if background:
        submit_background(session, "loyalty.earn", {"scheme": scheme, "as_of": _as_of(session, as_of)})
        return
    with session.progress("loyalty earn"):
        written = session.crm.loyalty.earn_won_deals(as_of=_as_of(session, as_of), scheme=scheme)
    session.emit([{"scheme": s, "entries": n} for s, n in written.items()])


@loyalty.command("expire")
@SCHEME
@AS_OF
@BACKGROUND
@pass_session
def expire(session: Session, scheme: str | None, as_of: str | None, background: bool) -> None:
    """Expire points past their expiry date (idempotent: a rerun writes nothing)."""
    if background:
        submit_background(session, "loyalty.expire", {"scheme": scheme, "as_of": _as_of(session, as_of)})
        return
    with session.progress("loyalty expire"):
        expired = session.crm.loyalty.expire(as_of=_as_of(session, as_of), scheme=scheme)
    session.emit_one({"expired_entries": expired})


@loyalty.command("run")
@SCHEME
@AS_OF
@BACKGROUND
@pass_session
def run(session: Session, scheme: str | None, as_of: str | None, background: bool) -> None:
    """Run each scheme's periodic job: tier evaluation, birthday and referral bonuses (idempotent)."""
    if background:
        submit_background(session, "loyalty.run", {"scheme": scheme, "as_of": _as_of(session, as_of)})
        return
    with session.progress("loyalty run") as progress:
        done = session.crm.loyalty.run(as_of=_as_of(session, as_of), scheme=scheme,
                                       progress=lambda n, total, name: progress(n, total, name))
    session.emit([{"scheme": s, "changes": n} for s, n in done.items()])


@read_only
@loyalty.command("recompute")
@click.option("--fix", is_flag=True, help="Rebuild stored balances from the ledger.")
@pass_session
def recompute(session: Session, fix: bool) -> None:
    """Check derived state (balances, FIFO allocations) against the ledger; report any drift."""
    drift = session.crm.loyalty.recompute(fix=fix)
    if not drift:
        if session.as_json:
            session.emit([])
        else:
            session.echo("no drift: every balance equals its ledger")
        return
    session.emit(drift, columns=None if session.as_json else
                 ["problem", "customer_id", "scheme", "stored", "ledger"])
    if not fix:
        raise CRMError(f"{len(drift)} drifted record(s); rerun with --fix to rebuild balances")


@read_only
@loyalty.command("tiers")
@SCHEME
@pass_session
def tiers(session: Session, scheme: str | None) -> None:
    """Members per tier."""
    rows = [r for r in session.crm.loyalty.tier_distribution(scheme) if r["tier"] is not None or scheme]
    session.emit(rows, columns=None if session.as_json else ["scheme", "tier", "members"])
