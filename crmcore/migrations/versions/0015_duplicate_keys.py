"""customers.email_key, for the duplicates door check

After 0014_privacy_fields: that revision rebuilds ``customers`` on SQLite (a batch), and
Alembic's batch copy would try to INSERT into a generated column.

``customers.email_key`` is a generated column (the database computes it on every write, whatever
the path: add, bulk import, update, merge, erasure): the address lower-cased, or a sealed
address's blind index.  Indexed, so the door check of ``customers.add`` is an index seek
instead of reading ``lower(email)`` of every customer.  Existing rows get their key as the column
is added (PostgreSQL and MariaDB store it, rewriting the table once; SQLite computes a virtual
column and stores only the index).

Revision ID: 0015_duplicate_keys
Revises: 0014_privacy_fields
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import EMAIL_KEY_SQL, EMAIL_WIDTH

revision = "0015_duplicate_keys"
down_revision = "0014_privacy_fields"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not a batch on SQLite: ADD COLUMN of a virtual generated column is allowed there as it is
    # (a stored one is not); PostgreSQL (before 18) and MariaDB store it.
    stored = None if op.get_bind().dialect.name == "sqlite" else True
    op.add_column("customers", sa.Column("email_key", sa.String(length=EMAIL_WIDTH),
                                         sa.Computed(EMAIL_KEY_SQL, persisted=stored), nullable=True))
    op.create_index(op.f("ix_customers_email_key"), "customers", ["email_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_customers_email_key"), table_name="customers")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("customers") as batch:
            batch.drop_column("email_key")
    else:
        op.drop_column("customers", "email_key")
