"""loyalty: FIFO allocations of debits to earn batches; the batch an expiry expires

Revision ID: 0003_loyalty_fifo
Revises: 0002_contacts_email
Create Date: 2026-11-22

Debits written before this revision have no allocations; ``crm loyalty
recompute`` reports them as drift (their batches look unspent).
"""
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

if TYPE_CHECKING:
    from crmcore.store.tables import TableOptions

revision = "0003_loyalty_fifo"
down_revision = "0002_contacts_email"
branch_labels = None
depends_on = None

TABLE_OPTIONS: "TableOptions" = {  # checked by mypy only (imported under TYPE_CHECKING)
    "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
    "mariadb_charset": "utf8mb4", "mariadb_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    with op.batch_alter_table("loyalty_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
    op.create_table(
        "loyalty_allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("debit_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_loyalty_allocations_points_positive")),
        sa.ForeignKeyConstraint(["debit_id"], ["loyalty_ledger.id"],
                                name=op.f("fk_loyalty_allocations_debit_id_loyalty_ledger"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["batch_id"], ["loyalty_ledger.id"],
                                name=op.f("fk_loyalty_allocations_batch_id_loyalty_ledger"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_loyalty_allocations")),
        **TABLE_OPTIONS,
    )
    with op.batch_alter_table("loyalty_allocations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loyalty_allocations_debit_id"), ["debit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_loyalty_allocations_batch_id"), ["batch_id"], unique=False)


def downgrade() -> None:
    op.drop_table("loyalty_allocations")
    with op.batch_alter_table("loyalty_ledger", schema=None) as batch_op:
        batch_op.drop_column("batch_id")
