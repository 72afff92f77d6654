"""The ``loyalty`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path

import crmcore

from .birthday import BirthdayScheme
from .points import PointsScheme
from .referral import ReferralScheme
from .reports import REPORTS
from .rewards import RewardsScheme
from .tables import TABLES
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
    for scheme in engine.schemes():
        if isinstance(scheme, TiersScheme):
            scheme.evaluate(ctx, engine.options(scheme), [deal.customer_id])
        elif isinstance(scheme, ReferralScheme) and is_won:
            scheme.run(ctx, engine.options(scheme), referee_ids=[deal.customer_id])
