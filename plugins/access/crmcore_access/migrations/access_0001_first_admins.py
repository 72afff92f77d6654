"""access: the users a CRM had before the policy keep what they could do (role admin)

Enabling the access policy on a CRM that already has users (upgraded from
before roles, or running without the plugin until now) would otherwise give
every one of them ``default_role`` (read-only), and nobody could assign roles.
Before the policy each of them could do everything, so each user added with
``crm user add`` who has no role gets ``admin``, in one UPDATE; an admin then
gives everyone their real role (``crm user set-role``).  Users added after this
revision start with ``default_role``; owner labels registered in an
unconfigured CRM (source ``owner``/``migrated``) are not people who log in and
get nothing.

Revision ID: access_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "access_0001"
down_revision = None
branch_labels = ("access",)
depends_on = None


def upgrade() -> None:
    users = sa.table("users", sa.column("role"), sa.column("source"))
    op.execute(users.update().where(users.c.role.is_(None), users.c.source == "added").values(role="admin"))


def downgrade() -> None:
    pass  # roles given since cannot be told apart from these; nothing to undo safely
