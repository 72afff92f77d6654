"""privacy_erasures and privacy_files, for personal data protection

``privacy_erasures`` remembers each erased customer (``crm customer erase`` is
idempotent); ``privacy_files`` lists the files the CRM wrote that may hold
personal data (import reject files), so an erasure can scrub them.  Both are
new tables: no existing row changes.

Revision ID: 0013_privacy
Revises: 0012_duplicates
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import TABLE_OPTIONS
from crmcore.store.types import UTCDateTime

revision = "0013_privacy"
down_revision = "0012_duplicates"
branch_labels = None
depends_on = None


# Sealed (encrypted) values are longer than the values themselves (crmcore.store.sealed).
WIDENED = (("customers", "email", 320, 512), ("customers", "phone", 32, 128),
           ("contacts", "email", 320, 512), ("contacts", "phone", 32, 128), ("notify_outbox", "recipient", 320, 512))


def upgrade() -> None:
    for table, column, old, new in WIDENED:  # SQLite: a batch (the table copied), as for every change there
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(length=new), existing_type=sa.String(length=old),
                               existing_nullable=True)
    op.create_table(
        "privacy_erasures",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_privacy_erasures")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "privacy_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("written_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_files")),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table, column, old, new in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(length=old), existing_type=sa.String(length=new),
                               existing_nullable=True)
    op.drop_table("privacy_files")
    op.drop_table("privacy_erasures")
