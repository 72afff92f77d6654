"""index contacts by email (imports and look-ups match contacts by address)

Revision ID: 0002_contacts_email
Revises: 0001_core
Create Date: 2026-11-22
"""
from alembic import op

revision = "0002_contacts_email"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_email"), ["email"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_email"))
