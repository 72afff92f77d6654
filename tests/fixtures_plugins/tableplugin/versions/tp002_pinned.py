"""tableplug: pinned flag

Revision ID: tp002
Revises: tp001
"""
from alembic import op
import sqlalchemy as sa

revision = "tp002"
down_revision = "tp001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tableplug_notes") as batch:
        batch.add_column(sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("tableplug_notes") as batch:
        batch.drop_column("pinned")
