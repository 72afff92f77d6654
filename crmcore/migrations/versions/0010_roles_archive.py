"""users.role; customers.archived_at and deals.archived_at

``users.role`` names the user's role (a role some plugin registers with
``register_roles``; the first-party ``access`` plugin registers admin, manager,
sales-rep, service-agent, read-only and the custom roles of ``crm.toml``).
NULL means the policy's default role.

``archived_at`` marks a customer or deal that was deleted without ``--purge``:
hidden from lists, searches, counts and exports, kept for reports, the ledger
and the audit trail.  Both columns are NULL for every existing row, so no row
changes meaning.

Revision ID: 0010_roles_archive
Revises: 0009_consent_history
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.types import UTCDateTime

revision = "0010_roles_archive"
down_revision = "0009_consent_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("role", sa.String(length=64), nullable=True))
    for table in ("customers", "deals"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("archived_at", UTCDateTime(), nullable=True))
        op.create_index(op.f(f"ix_{table}_archived_at"), table, ["archived_at"])


def downgrade() -> None:
    for table in ("deals", "customers"):
        op.drop_index(op.f(f"ix_{table}_archived_at"), table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("archived_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("role")
