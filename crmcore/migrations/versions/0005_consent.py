"""consent decisions per customer, channel and purpose

Revision ID: 0005_consent
Revises: 0004_notify_delivery
Create Date: 2026-11-22
"""
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

import crmcore.store.types

if TYPE_CHECKING:
    from crmcore.store.tables import TableOptions

revision = "0005_consent"
down_revision = "0004_notify_delivery"
branch_labels = None
depends_on = None

TABLE_OPTIONS: "TableOptions" = {  # checked by mypy only (imported under TYPE_CHECKING)
    "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
    "mariadb_charset": "utf8mb4", "mariadb_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "customer_consents",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=100), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", crmcore.store.types.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name=op.f("fk_customer_consents_customer_id_customers"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "channel", "purpose", name=op.f("pk_customer_consents")),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("customer_consents")
