"""jobs.heartbeat_at: a running job's worker renews it, so a lease measures silence, not job length

A job's lease ran from ``started_at``: a job longer than ``[jobs] lease`` was taken over while its
worker was alive, and a lease long enough for the longest job kept a lost host's jobs waiting as
long.  The worker now renews ``heartbeat_at`` every third of the lease while the job runs, and
another worker takes the job over only when it has been silent for a whole lease.

Revision ID: 0022_scale_out
Revises: 0019_phone_key
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.types import UTCDateTime

revision = "0022_scale_out"
down_revision = "0019_phone_key"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("heartbeat_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("jobs") as batch:
            batch.drop_column("heartbeat_at")
    else:
        op.drop_column("jobs", "heartbeat_at")
