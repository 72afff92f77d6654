"""Loyalty: an append-only points ledger and the engine that runs schemes.

Plugins supply :class:`LoyaltyScheme` strategies (points, tiers, birthday,
referral, rewards); the core keeps the ledger (:mod:`.ledger`: earn, bonus,
redeem, expire, adjust, reverse, each with an idempotency key), derives
balances and tiers from it, reacts to won deals (:mod:`.engine`) and runs
the periodic jobs over every customer (:mod:`.jobs`: bulk earning, expiry,
the schemes' jobs, recomputation), all through ``crm.loyalty``.
"""

from .engine import LoyaltyEngine
from .ledger import KINDS, LedgerEntry, LoyaltyLedger
from .scheme import LoyaltyContext, LoyaltyScheme

__all__ = ["KINDS", "LedgerEntry", "LoyaltyContext", "LoyaltyEngine", "LoyaltyLedger", "LoyaltyScheme"]
