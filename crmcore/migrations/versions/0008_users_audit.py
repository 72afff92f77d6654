"""users, teams, territories; owners refer to users; the hash-chained audit trail

Every distinct text owner of a customer or deal becomes a user (login and
display name = the text, active, source "migrated"), in one INSERT ... SELECT,
and ``customers.owner`` / ``deals.owner`` become foreign keys to
``users.login`` (ON DELETE RESTRICT: users are deactivated, never deleted).
No customer or deal row is touched: every owner value is kept as it was, now a
login.  The audit trail (``audit_log``) has no foreign keys at all, so no
cascade reaches it; ``audit_head`` is its one lock row (the chain's tip).

Revision ID: 0008_users_audit
Revises: 0007_history_restrict
Create Date: 2026-12-05
"""
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op

from crmcore.store.tables import TABLE_OPTIONS
from crmcore.store.types import UTCDateTime

revision = "0008_users_audit"
down_revision = "0007_history_restrict"
branch_labels = None
depends_on = None

#: The first record's ``prev_hash``.
GENESIS = "0" * 64


def _stamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False)]


def _create_tables() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("login", name=op.f("uq_users_login")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("manager_id", sa.Integer(), nullable=True),
        *_stamps(),
        sa.ForeignKeyConstraint(["manager_id"], ["users.id"], name=op.f("fk_teams_manager_id_users"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_team_members_team_id_teams"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_team_members_user_id_users"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("team_id", "user_id", name=op.f("pk_team_members")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_team_members_user_id"), "team_members", ["user_id"])
    op.create_table(
        "territories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)", name=op.f("ck_territories_one_holder")),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f("fk_territories_team_id_teams"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_territories_user_id_users"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_territories")),
        **TABLE_OPTIONS,
    )
    for column in ("region", "user_id", "team_id"):
        op.create_index(op.f(f"ix_territories_{column}"), "territories", [column])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("entity", sa.String(length=50), nullable=False),
        sa.Column("entity_id", sa.String(length=100), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("ids", sa.JSON(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
        **TABLE_OPTIONS,
    )
    for column in ("recorded_at", "actor", "customer_id"):
        op.create_index(op.f(f"ix_audit_log_{column}"), "audit_log", [column])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
        **TABLE_OPTIONS,
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def _migrate_owners() -> None:
    """Every distinct text owner of a customer or deal becomes a user, set-based."""
    owners = sa.union(
        sa.select(sa.column("owner")).select_from(sa.table("customers", sa.column("owner")))
        .where(sa.column("owner").is_not(None)),
        sa.select(sa.column("owner")).select_from(sa.table("deals", sa.column("owner")))
        .where(sa.column("owner").is_not(None)),
    ).subquery()
    now = datetime.now(timezone.utc)
    users = sa.table("users", *(sa.column(c) for c in ("login", "display_name", "active", "source")),
                     sa.column("created_at", UTCDateTime()), sa.column("updated_at", UTCDateTime()))
    op.get_bind().execute(users.insert().from_select(
        ["login", "display_name", "active", "source", "created_at", "updated_at"],
        sa.select(owners.c.owner, owners.c.owner, sa.true(), sa.literal("migrated"),
                  sa.literal(now, UTCDateTime()), sa.literal(now, UTCDateTime()))))


def upgrade() -> None:
    _create_tables()
    _migrate_owners()
    for table in ("customers", "deals"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_owner"), ["owner"])
            batch_op.create_foreign_key(f"fk_{table}_owner_users", "users", ["owner"], ["login"],
                                        ondelete="RESTRICT")


def downgrade() -> None:
    for table in ("customers", "deals"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_owner_users", type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_owner"))
    for table in ("audit_head", "audit_log", "territories", "team_members", "teams", "users"):
        op.drop_table(table)
