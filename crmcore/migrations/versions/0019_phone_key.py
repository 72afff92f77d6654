"""customers.phone_key, for the import's duplicate check with sealed phone numbers

``customers.phone_key`` is a generated column like ``email_key``: the number as stored, or a
sealed number's blind index (its first 26 characters).  Indexed, so a batch of sealed numbers is
looked up with one ``IN`` of blind indexes instead of one range comparison per number and key.

Revision ID: 0019_phone_key
Revises: 0018_jobs
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import PHONE_KEY_SQL, PHONE_WIDTH

revision = "0019_phone_key"
down_revision = "0018_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # As 0015: a virtual generated column on SQLite (ADD COLUMN allows it), stored elsewhere.
    stored = None if op.get_bind().dialect.name == "sqlite" else True
    op.add_column("customers", sa.Column("phone_key", sa.String(length=PHONE_WIDTH),
                                         sa.Computed(PHONE_KEY_SQL, persisted=stored), nullable=True))
    op.create_index(op.f("ix_customers_phone_key"), "customers", ["phone_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_customers_phone_key"), table_name="customers")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("customers") as batch:
            batch.drop_column("phone_key")
    else:
        op.drop_column("customers", "phone_key")
