"""The ``loyalty`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crmcore
from sqlalchemy import and_, or_, select, update

from .birthday import BirthdayScheme
from .points import PointsScheme
from .referral import ReferralScheme
from .reports import REPORTS
from .rewards import RewardsScheme
from .tables import TABLES, referrals, reward_codes, tier_changes, tier_status
from .tiers import TiersScheme


@crmcore.hookimpl
def register_loyalty_schemes(register: crmcore.Register[crmcore.LoyaltyScheme]) -> None:
    """Register points, tiers, birthday, referral and rewards."""
    for scheme in (PointsScheme(), TiersScheme(), BirthdayScheme(), ReferralScheme(), RewardsScheme()):
        register(scheme)


@crmcore.hookimpl
def register_migrations(register: crmcore.Register[crmcore.PluginSchema]) -> None:
    """Register the plugin's tables and Alembic branch ``loyalty``."""
    register(crmcore.PluginSchema(branch="loyalty", versions=Path(__file__).parent / "migrations",
                                  tables=TABLES, requires_core="0001_core"))


@crmcore.hookimpl
def register_reports(register: crmcore.Register[crmcore.Report]) -> None:
    """Register the loyalty reports (liability, tiers, earn/burn, top members)."""
    for report in REPORTS:
        register(report())


@crmcore.hookimpl
def on_deal_stage_changed(uow: crmcore.UnitOfWork, deal: crmcore.Deal, old: crmcore.Stage | None,
                          new: crmcore.Stage | None) -> None:
    """Re-evaluate the customer's tier when a deal enters or leaves won; pay referral bonuses on a win."""
    won = crmcore.StageOutcome.WON
    was_won, is_won = old is not None and old.outcome is won, new is not None and new.outcome is won
    if was_won == is_won:
        return
    engine = uow.crm.loyalty
    ctx = engine.context(uow)
    # The registry, not engine.schemes(): that one authorizes a user's listing of schemes, and
    # this reaction belongs to the move the user was already authorized for.
    for scheme in engine.registry:
        if isinstance(scheme, TiersScheme):
            scheme.evaluate_one(ctx, engine.options(scheme), deal.customer_id)
        elif isinstance(scheme, ReferralScheme) and is_won:
            scheme.pay_on_win(ctx, engine.options(scheme), deal.customer_id)


@crmcore.hookimpl
def export_personal_data(uow: crmcore.UnitOfWork, customer: crmcore.Customer) -> dict[str, list[dict[str, Any]]]:
    """The plugin's rows about the customer: tier status and changes, referrals (either side),
    reward codes."""
    found: dict[str, list[dict[str, Any]]] = {}
    for table in (tier_status, tier_changes, reward_codes):
        rows = uow.conn.execute(select(table).where(table.c.customer_id == customer.id)).mappings()
        found[table.name] = [dict(row) for row in rows]
    rows = uow.conn.execute(select(referrals).where(or_(referrals.c.referee_id == customer.id,
                                                        referrals.c.referrer_id == customer.id))).mappings()
    found[referrals.name] = [dict(row) for row in rows]
    return found


@crmcore.hookimpl
def erase_personal_data(uow: crmcore.UnitOfWork, customer: crmcore.Customer, values: tuple[str, ...]) -> int:
    """Nothing to anonymise: the plugin's rows hold ids, tiers, points and codes, no names or
    addresses, and the books need them (a redeemed reward's code stays valid)."""
    return 0


@crmcore.hookimpl
def merge_customer_rows(uow: crmcore.UnitOfWork, kept_id: int, merged_ids: list[int], moved: dict[str, Any]) -> None:
    """The merged customers' loyalty rows follow them into the kept one (recorded for an unmerge):
    their reward codes (the ledger entries that paid for them move with the core's ledger), their
    tier changes (the movements report counts the same changes), the referrals they made, the
    referral that brought one of them in when the kept customer has none (and it is not a referral
    among the merged customers themselves), and a tier grace period in a scheme where the kept
    customer has none (a customer has one per scheme; the kept one's stands)."""
    merges = uow.crm.merges
    moved[reward_codes.name] = merges.move_rows(uow, reward_codes, kept_id, merged_ids, key="code")
    moved[tier_changes.name] = merges.move_rows(uow, tier_changes, kept_id, merged_ids)
    everyone = [kept_id, *merged_ids]
    referee: dict[str, list[int]] = {}
    referred = uow.conn.execute(select(referrals.c.referee_id).where(referrals.c.referee_id == kept_id)).first()
    if referred is None:
        for cid in merged_ids:  # the first of them in the order given
            if uow.conn.execute(select(referrals.c.referee_id).where(
                    referrals.c.referee_id == cid, referrals.c.referrer_id.not_in(everyone))).first() is not None:
                uow.conn.execute(update(referrals).where(referrals.c.referee_id == cid).values(referee_id=kept_id))
                referee = {str(cid): [kept_id]}
                break
    moved["loyalty_referrals_referee"] = referee
    made: dict[str, list[int]] = {}  # not a referral of the kept customer itself (it cannot refer itself)
    for referee_id, referrer_id in uow.conn.execute(select(referrals.c.referee_id, referrals.c.referrer_id).where(
            referrals.c.referrer_id.in_(merged_ids), referrals.c.referee_id != kept_id)
            .order_by(referrals.c.referee_id)):
        made.setdefault(str(referrer_id), []).append(referee_id)
    for referees in made.values():
        uow.conn.execute(update(referrals).where(referrals.c.referee_id.in_(referees)).values(referrer_id=kept_id))
    moved[referrals.name] = made
    held = set(uow.conn.execute(select(tier_status.c.scheme).where(tier_status.c.customer_id == kept_id)).scalars())
    grace: dict[str, list[str]] = {}
    for owner, scheme in uow.conn.execute(select(tier_status.c.customer_id, tier_status.c.scheme).where(
            tier_status.c.customer_id.in_(merged_ids)).order_by(tier_status.c.scheme, tier_status.c.customer_id)):
        if scheme not in held:
            held.add(scheme)
            grace.setdefault(str(owner), []).append(scheme)
    for key, schemes in grace.items():
        uow.conn.execute(update(tier_status).where(tier_status.c.customer_id == int(key),
                                                   tier_status.c.scheme.in_(schemes)).values(customer_id=kept_id))
    moved[tier_status.name] = grace


@crmcore.hookimpl
def unmerge_customer_rows(uow: crmcore.UnitOfWork, kept_id: int, merged_ids: list[int], moved: dict[str, Any]) -> None:
    """Put back what :func:`merge_customer_rows` moved."""
    merges = uow.crm.merges
    merges.restore_rows(uow, reward_codes, moved.get(reward_codes.name, {}), key="code")
    merges.restore_rows(uow, tier_changes, moved.get(tier_changes.name, {}))
    merges.restore_rows(uow, referrals, moved.get(referrals.name, {}), column="referrer_id", key="referee_id")
    for cid in moved.get("loyalty_referrals_referee", {}):
        uow.conn.execute(update(referrals).where(referrals.c.referee_id == kept_id).values(referee_id=int(cid)))
    for cid, schemes in moved.get(tier_status.name, {}).items():
        uow.conn.execute(update(tier_status).where(and_(tier_status.c.customer_id == kept_id,
                                                        tier_status.c.scheme.in_(schemes))).values(customer_id=int(cid)))
