"""acme: welcomes

Revision ID: acme_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store import UTCDateTime

revision = "acme_0001"
down_revision = None
branch_labels = ("acme",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acme_welcomes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer,
                  sa.ForeignKey("customers.id", name="fk_acme_welcomes_customer_id_customers",
                                ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("welcomed_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("acme_welcomes")
