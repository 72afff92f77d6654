"""consent_history: every consent decision, append-only; customer_consents is its projection

Until now ``customer_consents`` kept only the latest decision per customer,
channel and purpose, updated in place, so earlier decisions were lost.  This
revision adds ``consent_history`` (one row per decision, never updated or
deleted; ON DELETE RESTRICT to customers, like the other histories) and
backfills it with one row per existing ``customer_consents`` row, oldest
first, in one INSERT ... SELECT.  ``customer_consents`` stays as the current
state (the latest history row per key) that campaigns and the dispatcher read.

Revision ID: 0009_consent_history
Revises: 0008_users_audit
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import TABLE_OPTIONS
from crmcore.store.types import UTCDateTime

revision = "0009_consent_history"
down_revision = "0008_users_audit"
branch_labels = None
depends_on = None

COLUMNS = ("customer_id", "channel", "purpose", "granted", "source", "recorded_at", "actor")


def upgrade() -> None:
    history = op.create_table(
        "consent_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_consent_history_customer_id_customers"), ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_consent_history_key", "consent_history", ["customer_id", "channel", "purpose", "id"])
    # The backfill: the decisions we still know, one each, in time order so ids ascend with time.
    current = sa.table("customer_consents", *(sa.column(c) for c in COLUMNS))
    op.get_bind().execute(history.insert().from_select(
        list(COLUMNS), sa.select(*(current.c[c] for c in COLUMNS)).order_by(
            current.c.recorded_at, current.c.customer_id, current.c.channel, current.c.purpose)))


def downgrade() -> None:
    op.drop_table("consent_history")  # its index goes with it (MariaDB's foreign key needs it until then)
