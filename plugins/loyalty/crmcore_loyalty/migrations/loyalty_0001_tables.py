"""loyalty: tier status and changes, referrals, reward stock and codes

Revision ID: loyalty_0001
Revises:
"""
from typing import Any

import sqlalchemy as sa
from alembic import op

from crmcore.store import UTCDateTime

revision = "loyalty_0001"
down_revision = None
branch_labels = ("loyalty",)
depends_on = None

# Dialect keyword arguments of create_table (free-form **kw in its signature).
OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
           "mariadb_charset": "utf8mb4", "mariadb_collate": "utf8mb4_bin"}


def _customer(column: str, table: str, **kw: Any) -> sa.Column[int]:
    """An integer column referencing ``customers.id`` (deleted with the customer)."""
    return sa.Column(column, sa.Integer, sa.ForeignKey("customers.id", name=f"fk_{table}_{column}_customers",
                                                       ondelete="CASCADE"), **kw)


def upgrade() -> None:
    op.create_table(
        "loyalty_tier_status",
        _customer("customer_id", "loyalty_tier_status", primary_key=True),
        sa.Column("scheme", sa.String(100), primary_key=True),
        sa.Column("below_since", UTCDateTime, nullable=False),
        **OPTIONS,
    )
    op.create_table(
        "loyalty_tier_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        _customer("customer_id", "loyalty_tier_changes", nullable=False),
        sa.Column("scheme", sa.String(100), nullable=False),
        sa.Column("old", sa.String(50)),
        sa.Column("new", sa.String(50)),
        sa.Column("changed_at", UTCDateTime, nullable=False),
        sa.Index("ix_loyalty_tier_changes_scheme_changed_at", "scheme", "changed_at"),
        **OPTIONS,
    )
    op.create_table(
        "loyalty_referrals",
        _customer("referee_id", "loyalty_referrals", primary_key=True),
        _customer("referrer_id", "loyalty_referrals", nullable=False, index=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(100)),
        **OPTIONS,
    )
    op.create_table(
        "loyalty_reward_stock",
        sa.Column("reward", sa.String(100), primary_key=True),
        sa.Column("issued", sa.BigInteger, nullable=False),
        **OPTIONS,
    )
    op.create_table(
        "loyalty_reward_codes",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("reward", sa.String(100), nullable=False),
        _customer("customer_id", "loyalty_reward_codes", nullable=False, index=True),
        sa.Column("entry_id", sa.Integer, nullable=False),
        sa.Column("points", sa.BigInteger, nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("valid_until", UTCDateTime),
        **OPTIONS,
    )


def downgrade() -> None:
    for table in ("loyalty_reward_codes", "loyalty_reward_stock", "loyalty_referrals", "loyalty_tier_changes",
                  "loyalty_tier_status"):
        op.drop_table(table)
