"""customers.birthday as text, so a birthday can be sealed (issue 19, point 4)

``[privacy.encryption] fields`` may name ``birthday``: its sealed form is text
(crmcore.store.sealed.SealedDate), so the column becomes ``VARCHAR(128)`` holding
``YYYY-MM-DD`` (what a date already was on SQLite; PostgreSQL and MariaDB convert each
date to that text).  Sealed custom fields live in ``customers.attributes`` (JSON): no
schema change.

Revision ID: 0014_privacy_fields
Revises: 0013_privacy
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_privacy_fields"
down_revision = "0013_privacy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("customers") as batch:
        batch.alter_column("birthday", type_=sa.String(length=128), existing_type=sa.Date(), existing_nullable=True,
                           postgresql_using="to_char(birthday, 'YYYY-MM-DD')" if postgresql else None)


def downgrade() -> None:
    # Only plain dates convert back (a sealed birthday is no date to PostgreSQL or MariaDB).
    postgresql = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("customers") as batch:
        batch.alter_column("birthday", type_=sa.Date(), existing_type=sa.String(length=128), existing_nullable=True,
                           postgresql_using="CAST(birthday AS date)" if postgresql else None)
