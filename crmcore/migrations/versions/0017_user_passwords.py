"""users.password_hash, for the web console's sign-in

A nullable column on ``users``: the argon2 hash ``crm user set-password`` stores.
No existing row changes (every user starts without a password).

Revision ID: 0017_user_passwords
Revises: 0016_tasks
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_user_passwords"
down_revision = "0016_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
