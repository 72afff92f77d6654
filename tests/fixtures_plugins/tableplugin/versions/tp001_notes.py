"""tableplug: notes table

Revision ID: tp001
Revises:
"""
from alembic import op
import sqlalchemy as sa

import crmcore.store.types

revision = "tp001"
down_revision = None
branch_labels = ("tableplug",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tableplug_notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(),
                  sa.ForeignKey("customers.id", ondelete="CASCADE", name="fk_tableplug_notes_customer_id_customers"),
                  nullable=False, index=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", crmcore.store.types.UTCDateTime(), nullable=False),
        mysql_charset="utf8mb4", mysql_collate="utf8mb4_bin",
        mariadb_charset="utf8mb4", mariadb_collate="utf8mb4_bin",
    )


def downgrade() -> None:
    op.drop_table("tableplug_notes")
