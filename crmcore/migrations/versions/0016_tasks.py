"""tasks: follow-up tasks (回访) and complaint handling

A new customer-scoped table (``customer_id``, the distribution key): a task on a customer,
optionally from a deal or an interaction, assigned to a user, due at a time, open, done or
cancelled.  No existing row changes.

Revision ID: 0016_tasks
Revises: 0015_duplicate_keys
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import TABLE_OPTIONS
from crmcore.store.types import UTCDateTime

revision = "0016_tasks"
down_revision = "0015_duplicate_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("deal_id", sa.Integer(), nullable=True),
        sa.Column("interaction_id", sa.Integer(), nullable=True),
        sa.Column("assignee", sa.String(length=100), nullable=True),
        sa.Column("due", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_tasks_customer_id_customers"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deal_id"], ["deals.id"], name=op.f("fk_tasks_deal_id_deals"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"],
                                name=op.f("fk_tasks_interaction_id_interactions"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("external_id", name=op.f("uq_tasks_external_id")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_tasks_customer_id"), "tasks", ["customer_id"])
    op.create_index(op.f("ix_tasks_interaction_id"), "tasks", ["interaction_id"])
    # Deleting a deal sets its tasks' deal_id to NULL: without an index, a scan of tasks per deal.
    op.create_index(op.f("ix_tasks_deal_id"), "tasks", ["deal_id"])
    op.create_index(op.f("ix_tasks_assignee"), "tasks", ["assignee"])
    op.create_index(op.f("ix_tasks_due"), "tasks", ["due"])
    op.create_index("ix_tasks_status_due", "tasks", ["status", "due"])


def downgrade() -> None:
    op.drop_table("tasks")
