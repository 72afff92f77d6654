"""Tables the loyalty plugin owns (branch ``loyalty``; revisions in ``migrations/``).

The points themselves live in the core ledger; these hold what the tier,
referral and reward schemes need besides: state that derives from the ledger
and deals is marked as such and can be rebuilt.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from crmcore.store import UTCDateTime

metadata = MetaData()

# A member below its tier's threshold since ``below_since``: the grace period runs.
tier_status = Table(
    "loyalty_tier_status", metadata,
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("scheme", String(100), primary_key=True),
    Column("below_since", UTCDateTime, nullable=False),
)

# Every tier change, for the movements report (the current tier is in loyalty_accounts).
tier_changes = Table(
    "loyalty_tier_changes", metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False),
    Column("scheme", String(100), nullable=False),
    Column("old", String(50)),
    Column("new", String(50)),
    Column("changed_at", UTCDateTime, nullable=False),
    Index("ix_loyalty_tier_changes_scheme_changed_at", "scheme", "changed_at"),
)

referrals = Table(
    "loyalty_referrals", metadata,
    Column("referee_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("referrer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String(100)),
)

# Codes issued per reward: the conditional UPDATE on ``issued`` is the stock check.
reward_stock = Table(
    "loyalty_reward_stock", metadata,
    Column("reward", String(100), primary_key=True),
    Column("issued", BigInteger, nullable=False),
)

reward_codes = Table(
    "loyalty_reward_codes", metadata,
    Column("code", String(32), primary_key=True),
    Column("reward", String(100), nullable=False),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("entry_id", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("valid_until", UTCDateTime),
)

TABLES = tuple(metadata.tables)
