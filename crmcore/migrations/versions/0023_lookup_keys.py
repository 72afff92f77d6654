"""Drop ix_customers_email and ix_customers_phone: equality look-ups go through email_key / phone_key

Every exact look-up of a customer by email or phone (``find(email=...)``, the ``email=`` /
``phone=`` filters, ``crm customer show EMAIL``, leads, imports with ``--key email``, the door
check) now compares the indexed generated columns ``email_key`` / ``phone_key`` (revisions
0015 and 0019: a sealed value's blind index, else the address lower-cased / the number), with the
column itself as a residual check when values are not sealed (see
:func:`crmcore.store.sealed.lookup_key`).  The indexes on ``email`` and ``phone`` served nothing
else, and each insert paid for them twice more; with sealed values, whose random-looking blind
index comes first, at random places.  No table is rebuilt (``customers`` keeps its generated
columns on SQLite).

Revision ID: 0023_lookup_keys
Revises: 0022_scale_out
Create Date: 2026-12-06
"""
from alembic import op

revision = "0023_lookup_keys"
down_revision = "0022_scale_out"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f("ix_customers_phone"), table_name="customers")
    op.drop_index(op.f("ix_customers_email"), table_name="customers")


def downgrade() -> None:
    op.create_index(op.f("ix_customers_email"), "customers", ["email"], unique=False)
    op.create_index(op.f("ix_customers_phone"), "customers", ["phone"], unique=False)
