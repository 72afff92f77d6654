"""customer_merges, for duplicates

``customer_merges`` records each merge of duplicate customers with the
before-state ``crm customer unmerge`` puts back.  A new table: no existing row changes.

Revision ID: 0012_duplicates
Revises: 0011_api_tokens
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import TABLE_OPTIONS
from crmcore.store.types import UTCDateTime

revision = "0012_duplicates"
down_revision = "0011_api_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_merges",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kept_id", sa.Integer(), sa.ForeignKey("customers.id", ondelete="RESTRICT",
                                                         name=op.f("fk_customer_merges_kept_id_customers")),
                  nullable=False),
        sa.Column("merged_ids", sa.JSON(), nullable=False),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("moved", sa.JSON(), nullable=False),
        sa.Column("merged_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("undone_at", UTCDateTime(), nullable=True),
        sa.Column("undone_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_merges")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_customer_merges_kept_id"), "customer_merges", ["kept_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_customer_merges_kept_id"), table_name="customer_merges")
    op.drop_table("customer_merges")
