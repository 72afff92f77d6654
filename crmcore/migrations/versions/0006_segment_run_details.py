"""what a segmentation strategy recorded about a run (segment_runs.details)

Revision ID: 0006_segment_run_details
Revises: 0005_consent
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_segment_run_details"
down_revision = "0005_consent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("segment_runs", sa.Column("details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segment_runs", schema=None) as batch_op:
        batch_op.drop_column("details")
