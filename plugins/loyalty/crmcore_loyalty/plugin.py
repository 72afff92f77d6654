"""The ``loyalty`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crmcore
from sqlalchemy import or_, select

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
