"""customers.import_digest is forgotten by the database when its row changes

Until this revision the digest (:mod:`crmcore.io.fingerprint`) covered the stored row's compared
columns, so an import had to read and hash them to notice a later change.  From here on the
digest covers the import's context and the row's cells only, and a trigger forgets it
(``import_digest = NULL``) whenever an UPDATE of the row does not write a new digest itself:
every path that changes a customer (the services, a merge, an archive, plain SQL) makes the
next import take the full path.  A digest is only ever written where the stored row equals what
the import binds from those cells (an insert, or a row the importer compared equal).

SQLite: an AFTER UPDATE row trigger (triggers on SQLite cannot change NEW); PostgreSQL: a BEFORE
UPDATE row trigger.  MariaDB binds no import rows, so it has no digests and no trigger.  Every
digest written before is forgotten here (it was computed by the older formula).

A later revision that rebuilds ``customers`` on SQLite (``batch_alter_table`` copies the table)
drops the trigger and must create it again (:func:`create_trigger`); the importer trusts no
digest of a database without it (``crmcore.io.importer._Import._forgets``).

Revision ID: 0029_import_digest_trigger
Revises: 0028_import_digest
Create Date: 2026-12-07
"""
from alembic import op

revision = "0029_import_digest_trigger"
down_revision = "0028_import_digest"
branch_labels = None
depends_on = None

#: The trigger's name (and on PostgreSQL its function's); crmcore.io.importer looks for it.
TRIGGER = "customers_forget_import_digest"


def create_trigger(dialect: str) -> None:
    """The trigger on ``customers`` (nothing on a database without digests), after forgetting every
    digest: one kept while no trigger watched the table may belong to a row changed since."""
    op.execute("UPDATE customers SET import_digest = NULL WHERE import_digest IS NOT NULL")
    if dialect == "sqlite":
        # Recursive triggers are off by default, and the inner UPDATE writes a new value anyway.
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE ON customers FOR EACH ROW "
            "WHEN OLD.import_digest IS NOT NULL AND NEW.import_digest IS OLD.import_digest "
            "BEGIN UPDATE customers SET import_digest = NULL WHERE id = NEW.id; END")
    elif dialect == "postgresql":
        # OR REPLACE: a function outlives its table (``crm demo --force`` drops only tables).
        op.execute(
            f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.import_digest := NULL; RETURN NEW; END $$")
        op.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON customers FOR EACH ROW "
            "WHEN (OLD.import_digest IS NOT NULL AND NEW.import_digest IS NOT DISTINCT FROM OLD.import_digest) "
            f"EXECUTE FUNCTION {TRIGGER}()")


def upgrade() -> None:
    # Every digest of 0028's formula is forgotten first (create_trigger).
    create_trigger(op.get_bind().dialect.name)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    elif dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON customers")
        op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    # 0028's formula covers the stored row and no trigger keeps these: forgotten, not misread.
    op.execute("UPDATE customers SET import_digest = NULL WHERE import_digest IS NOT NULL")
