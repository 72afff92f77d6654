"""deletes never rewrite history: RESTRICT instead of CASCADE / SET NULL into the ledger, outbox, consents

The loyalty ledger, its allocations, the notification outbox and the consent
decisions are history: a delete of a customer, deal or ledger entry they refer
to must neither remove them (CASCADE) nor blank their reference (SET NULL).
Each of their foreign keys becomes ON DELETE RESTRICT, so the database refuses
such a delete and every row is kept; the services refuse it first with a clear
error (``HasHistory``).  RESTRICT rather than dropping the foreign key: a
deleted customer's id can be reused (SQLite), and a new customer must never
inherit another's points or unsubscribe.  ``loyalty_accounts`` keeps CASCADE
(balances and tiers are derived from the ledger).  On SQLite the tables are
rebuilt in batch mode with foreign keys off (see ``env.py``), rows copied.

Revision ID: 0007_history_restrict
Revises: 0006_segment_run_details
Create Date: 2026-12-05
"""
from alembic import op

revision = "0007_history_restrict"
down_revision = "0006_segment_run_details"
branch_labels = None
depends_on = None

# (table, column, referred table, ondelete before this revision); every one becomes RESTRICT.
FOREIGN_KEYS = [
    ("loyalty_ledger", "customer_id", "customers", "CASCADE"),
    ("loyalty_ledger", "deal_id", "deals", "SET NULL"),
    ("loyalty_allocations", "debit_id", "loyalty_ledger", "CASCADE"),
    ("loyalty_allocations", "batch_id", "loyalty_ledger", "CASCADE"),
    ("notify_outbox", "customer_id", "customers", "SET NULL"),
    ("customer_consents", "customer_id", "customers", "CASCADE"),
]


def _set(to_restrict: bool) -> None:
    # Allocations first: on the server databases their keys must go before the ledger's
    # are rebuilt; the order is harmless on SQLite.
    for table in ("loyalty_allocations", "loyalty_ledger", "notify_outbox", "customer_consents"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, column, referred, before in FOREIGN_KEYS:
                if name != table:
                    continue
                constraint = f"fk_{table}_{column}_{referred}"
                batch_op.drop_constraint(constraint, type_="foreignkey")
                batch_op.create_foreign_key(constraint, referred, [column], ["id"],
                                            ondelete="RESTRICT" if to_restrict else before)


def upgrade() -> None:
    _set(True)


def downgrade() -> None:
    _set(False)
