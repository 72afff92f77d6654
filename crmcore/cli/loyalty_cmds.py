"""``crm loyalty``: list and run what plugins registered in the loyalty family."""

from __future__ import annotations

import attrs
import click

from ..errors import CRMError
from .context import Session, pass_session
from .entities import resolve_customer
from .family_common import component_rows


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
    session.emit(component_rows(session.crm.loyalty.schemes()))


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
