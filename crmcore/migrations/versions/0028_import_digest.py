"""customers.import_digest: the fingerprint of the import row a customer was last found equal to

A re-import of an unchanged file used to validate every row again (email, phone, binding: about
30 us of CPU a row) only to find it equal to the stored row.  ``import_digest`` holds
``H(context, the row's cells, the stored row as read)`` (:mod:`crmcore.io.fingerprint`): a row
whose digest, recomputed from the stored row as the database returns it, matches needs no
validation.  Nullable (rows imported before this revision, or written by other paths, have
none: their next import finds them the slow way and writes it), 32 hex characters, no index
(it is only read with the row, found by its key).

Revision ID: 0028_import_digest
Revises: 0027_rfm
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0028_import_digest"
down_revision = "0027_rfm"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("import_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # A plain column (no index, no constraint): SQLite (3.35 on) drops it in place, no table copy.
    op.drop_column("customers", "import_digest")
