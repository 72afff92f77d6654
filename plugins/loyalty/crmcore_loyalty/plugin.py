"""The ``loyalty`` plugin's hook implementations (the entry point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crmcore

from .birthday import BirthdayScheme
from .points import PointsScheme
from .referral import ReferralScheme
from .reports import REPORTS
from .rewards import RewardsScheme
from .tables import TABLES
from .tiers import TiersScheme


@crmcore.hookimpl
def register_loyalty_schemes(register: Any) -> None:
    for scheme in (PointsScheme(), TiersScheme(), BirthdayScheme(), ReferralScheme(), RewardsScheme()):
        register(scheme)


@crmcore.hookimpl
def register_migrations(register: Any) -> None:
    register(crmcore.PluginSchema(branch="loyalty", versions=Path(__file__).parent / "migrations",
                                  tables=TABLES, requires_core="0001_core"))


@crmcore.hookimpl
def register_reports(register: Any) -> None:
    for report in REPORTS:
        register(report())


@crmcore.hookimpl
def on_deal_stage_changed(uow: Any, deal: Any, old: Any, new: Any) -> None:
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
