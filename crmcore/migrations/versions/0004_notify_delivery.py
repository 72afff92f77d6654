"""notify outbox delivery state: claimed_by, last_attempt_at, delivery details

Revision ID: 0004_notify_delivery
Revises: 0003_loyalty_fifo
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.types import UTCDateTime

revision = "0004_notify_delivery"
down_revision = "0003_loyalty_fifo"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("last_attempt_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("delivery", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notify_outbox", schema=None) as batch_op:
        batch_op.drop_column("delivery")
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("claimed_by")
