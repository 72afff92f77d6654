"""The core schema: SQLAlchemy Core tables on one MetaData.

Alembic revisions in :mod:`crmcore.migrations` create exactly this; a test
compares the two.  Plugins that own tables use their own MetaData and prefix.
"""

from __future__ import annotations

from typing import Any, TypedDict

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from .sealed import Sealed, SealedAttributes, SealedDate
from .types import Money, UTCDateTime

# Sealed columns (revision 0013_privacy): wide enough for the sealed form of the longest value
# (crmcore.store.sealed); validation still allows what it allowed (the limit).
EMAIL_WIDTH, PHONE_WIDTH = 512, 128
EMAIL_KEY_SQL = "CASE WHEN substr(email, 1, 4) = '$e1$' THEN substr(email, 1, 26) ELSE lower(email) END"
"""``customers.email_key``, computed by the database: the address lower-cased, or a sealed
address's blind index (its first 26 characters, ``$e1$`` and 22 of base64url; see
:mod:`crmcore.store.sealed`)."""
PHONE_KEY_SQL = "CASE WHEN substr(phone, 1, 4) = '$e1$' THEN substr(phone, 1, 26) ELSE phone END"
"""``customers.phone_key``, computed by the database: the E.164 number, or a sealed number's blind
index (its first 26 characters), so the import's door check finds sealed numbers with one
indexed ``IN`` (revision 0019_phone_key)."""
BIRTHDAY_WIDTH = 128
"""Width of ``customers.birthday`` (text since revision 0014_privacy_fields): a sealed date with
its readable month-day."""

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint and index names, so Alembic revisions name them the same on every database."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The MetaData of the core tables (plugins that own tables use their own)."""

# MariaDB/MySQL: a binary collation, so text compares as on PostgreSQL and SQLite.
# The server default (utf8mb4_general_ci) folds case and accents and treats every
# emoji as equal, which breaks exact filters and unique external ids.  Plugins
# that own tables should pass these options too.  (Both prefixes: the dialect is
# named "mysql" or "mariadb" depending on the URL.)
class TableOptions(TypedDict):
    """The MariaDB/MySQL table options every crmcore table passes to ``Table(...)``."""

    mysql_charset: str
    mysql_collate: str
    mariadb_charset: str
    mariadb_collate: str


TABLE_OPTIONS: TableOptions = {
    "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin",
    "mariadb_charset": "utf8mb4", "mariadb_collate": "utf8mb4_bin",
}
"""Keyword arguments for ``Table(...)``: utf8mb4 with a binary collation on MariaDB/MySQL."""


def _stamps() -> list[Column[Any]]:
    return [
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


# Users, teams and territories (revision 0008_users_audit).  A user is deactivated, never
# deleted: records they own and audit entries they wrote keep naming them.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("login", String(100), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(320), unique=True),
    Column("active", Boolean, nullable=False),
    Column("locale", String(35)),
    Column("time_zone", String(64)),
    # "added" (crm user add), "owner" (an owner label registered in an unconfigured CRM),
    # "migrated" (a text owner turned into a user by revision 0008).
    Column("source", String(16), nullable=False),
    *_stamps(),
    # The user's role (revision 0010): a name some plugin registers (register_roles); NULL: the
    # policy's default role.
    Column("role", String(64)),
    # The argon2 hash of the user's password (revision 0017): the web console's sign-in; NULL:
    # no password (the user signs in with an API token, or not at all).
    Column("password_hash", String(200)),
    **TABLE_OPTIONS,
)
"""Users: who owns customers and deals and who acts (login, display name, email, active, locale,
time zone)."""

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("manager_id", Integer, ForeignKey("users.id", ondelete="RESTRICT")),
    *_stamps(),
    **TABLE_OPTIONS,
)
"""Teams: a name and a manager (a user)."""

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="RESTRICT"), primary_key=True, index=True),
    **TABLE_OPTIONS,
)
"""Which users are members of which teams."""

territories = Table(
    "territories",
    metadata,
    Column("id", Integer, primary_key=True),
    # The customer's region is the key (customers.region).
    Column("region", String(100), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="RESTRICT"), index=True),
    Column("team_id", Integer, ForeignKey("teams.id", ondelete="CASCADE"), index=True),
    CheckConstraint("(user_id IS NULL) <> (team_id IS NULL)", name="one_holder"),
    **TABLE_OPTIONS,
)
"""Territories: a region (matched against ``customers.region``) that a user or a team covers."""

customers = Table(
    "customers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    # No index of their own (revision 0023_lookup_keys): every equality look-up goes through the
    # indexed email_key / phone_key below (crmcore.store.sealed.Sealed ``lookup``), and an index
    # on a sealed column takes each insert at a random place.
    Column("email", Sealed("email", 320, EMAIL_WIDTH, lookup="email_key", fold=True)),
    Column("phone", Sealed("phone", 32, PHONE_WIDTH, lookup="phone_key")),
    Column("country", String(2)),
    Column("region", String(100)),
    Column("city", String(100)),
    Column("industry", String(100)),
    Column("source", String(100)),
    # The owning user's login (revision 0008): a login, not an id, so reports and filters that
    # group by owner show and take what a person types; RESTRICT: users are deactivated, never deleted.
    Column("owner", String(100), ForeignKey("users.login", ondelete="RESTRICT"), index=True),
    Column("stage", String(16), nullable=False),
    # A date as YYYY-MM-DD text (revision 0014_privacy_fields), so it can be sealed.
    Column("birthday", SealedDate(BIRTHDAY_WIDTH)),
    Column("consent_email", Boolean, nullable=False),
    Column("consent_sms", Boolean, nullable=False),
    Column("consent_marketing", Boolean, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("attributes", SealedAttributes, nullable=False),
    Column("external_id", String(100), unique=True),
    *_stamps(),
    # Set when the customer is deleted without --purge (revision 0010): hidden from lists,
    # kept for reports, the ledger and the audit trail.
    Column("archived_at", UTCDateTime, index=True),
    # The door check's email key (revision 0015), kept by the database on every write: the address
    # lower-cased, or when it is sealed its blind index (``$e1$`` and 22 characters), so equal
    # addresses share a key either way and the look-up is an index seek (no ``lower()`` scan).
    # Stored (PostgreSQL before 18 has no virtual columns); revision 0015 adds it virtual on SQLite.
    Column("email_key", String(EMAIL_WIDTH), Computed(EMAIL_KEY_SQL, persisted=True), index=True),
    Column("phone_key", String(PHONE_WIDTH), Computed(PHONE_KEY_SQL, persisted=True), index=True),
    # The fingerprint of the import row this customer was last found equal to (revision
    # 0028_import_digest, crmcore.io.fingerprint): 32 hex characters, written by imports only,
    # forgotten by a trigger when the row is updated otherwise (0029_import_digest_trigger; a
    # revision that rebuilds the table on SQLite must create it again); no entity field, never
    # exported.  Last, so it is the last of an import's bound values.
    Column("import_digest", String(32)),
    **TABLE_OPTIONS,
)
"""Customers: people and organisations, with consent flags, tags, JSON ``attributes`` (custom
fields) and a unique ``external_id``."""

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("title", String(100)),
    Column("email", Sealed("email", 320, EMAIL_WIDTH), index=True),
    Column("phone", Sealed("phone", 32, PHONE_WIDTH)),
    Column("is_primary", Boolean, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("external_id", String(100), unique=True),
    *_stamps(),
    **TABLE_OPTIONS,
)
"""Contacts: the people at a customer (name, title, email, phone, whether primary)."""

interactions = Table(
    "interactions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("kind", String(16), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("channel", String(50)),
    Column("occurred_at", UTCDateTime, nullable=False, index=True),
    Column("subject", String(300)),
    Column("body", Text),
    Column("outcome", String(100)),
    Column("satisfaction", SmallInteger),
    Column("follow_up_due", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    Column("owner", String(100)),
    Column("attributes", JSON, nullable=False),
    Column("external_id", String(100), unique=True),
    *_stamps(),
    CheckConstraint("satisfaction IS NULL OR satisfaction BETWEEN 1 AND 5", name="satisfaction_range"),
    **TABLE_OPTIONS,
)
"""Interactions with a customer (calls, emails, meetings, visits, messages, notes, complaints,
feedback): direction, time, outcome, satisfaction."""

deals = Table(
    "deals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("title", String(200), nullable=False),
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("pipeline", String(50), nullable=False),
    Column("stage", String(50), nullable=False),
    Column("probability", SmallInteger, nullable=False),
    Column("expected_close", Date),
    Column("closed_at", UTCDateTime),
    Column("owner", String(100), ForeignKey("users.login", ondelete="RESTRICT"), index=True),
    Column("lost_reason", String(200)),
    Column("attributes", JSON, nullable=False),
    Column("external_id", String(100), unique=True),
    *_stamps(),
    # Set when the deal is deleted without --purge (revision 0010), as for customers.
    Column("archived_at", UTCDateTime, index=True),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    # Covers the segmenters' scan of won deals (revision 0027): in customer order for one won
    # stage, so the per-customer fold reads neither the rows nor a sorter.  It replaced
    # ix_deals_stage, its prefix, so a deal write maintains as many indexes as before.
    Index("ix_deals_purchases", "stage", "pipeline", "customer_id", "closed_at", "amount"),
    **TABLE_OPTIONS,
)
"""Deals: an amount (:class:`~crmcore.store.Money`) and currency in a stage of a pipeline, owned by
a customer."""

deal_stage_history = Table(
    "deal_stage_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deal_id", Integer, ForeignKey("deals.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("from_stage", String(50)),
    Column("to_stage", String(50), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("actor", String(100)),
    **TABLE_OPTIONS,
)
"""Every stage change of a deal (``from_stage`` -> ``to_stage``), when and by whom."""

segment_runs = Table(
    "segment_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("strategy", String(100), nullable=False, index=True),
    Column("options", JSON, nullable=False),
    Column("as_of", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_s", Float),
    Column("members", Integer),
    Column("entered", Integer),
    Column("left", Integer),
    Column("moved", Integer),
    Column("counts", JSON),
    Column("actor", String(100)),
    Column("details", JSON),
    **TABLE_OPTIONS,
)
"""One row per segmentation run: strategy, options, ``as_of``, timing, the counts of members,
entered, left and moved, and what the strategy recorded about the run (``details``, e.g. a model's
fitted parameters)."""

segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("run_id", Integer, ForeignKey("segment_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("segment", String(100), nullable=False),
    Column("score", Float),
    Column("details", JSON),
    Index("ix_segment_memberships_run_segment", "run_id", "segment"),
    **TABLE_OPTIONS,
)
"""The customers' segments per run, with an optional score and JSON details (one row per customer
and run)."""

loyalty_ledger = Table(
    "loyalty_ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False),
    Column("scheme", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("deal_id", Integer, ForeignKey("deals.id", ondelete="RESTRICT"), index=True),
    Column("expires_at", UTCDateTime),
    Column("reason", String(300)),
    Column("actor", String(100)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("details", JSON),
    # The earn batch an expiry entry expires (revision 0003); NULL on every other kind.
    Column("batch_id", Integer),
    Index("ix_loyalty_ledger_customer_scheme", "customer_id", "scheme"),
    **TABLE_OPTIONS,
)
"""The append-only points ledger: earn, redeem, expire, adjust and reverse entries, each with a
unique idempotency key."""

# Which earn batches (credit entries) each debit consumed, oldest first (FIFO).
# Append-only like the ledger: a batch's remaining points are its points less
# its allocations, so expiry and liability are set-based SQL (revision 0003).
loyalty_allocations = Table(
    "loyalty_allocations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("debit_id", Integer, ForeignKey("loyalty_ledger.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("batch_id", Integer, ForeignKey("loyalty_ledger.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("points", BigInteger, nullable=False),
    CheckConstraint("points > 0", name="points_positive"),
    **TABLE_OPTIONS,
)
"""Which earn batches (credit entries) each debit consumed, oldest first (FIFO)."""

loyalty_accounts = Table(
    "loyalty_accounts",
    metadata,
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("scheme", String(100), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("tier", String(50)),
    Column("updated_at", UTCDateTime, nullable=False),
    # The last line of defence: whatever the code does, a balance never goes negative.
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    **TABLE_OPTIONS,
)
"""Each customer's balance and tier per scheme, kept in step with the ledger; a balance never goes
negative."""

notify_outbox = Table(
    "notify_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("channel", String(100), nullable=False),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="RESTRICT"), index=True),
    Column("recipient", Sealed("recipient", 320, EMAIL_WIDTH)),
    Column("purpose", String(16), nullable=False),
    Column("subject", String(300)),
    Column("body", Text),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime),
    Column("last_error", Text),
    Column("provider_id", String(200)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    # Delivery state (revision 0003): who holds the claim, when the last
    # attempt started, and what the channel reported (SMS segments, replies).
    Column("claimed_by", String(100)),
    Column("last_attempt_at", UTCDateTime),
    Column("delivery", JSON),
    Index("ix_notify_outbox_due", "status", "next_attempt_at"),
    **TABLE_OPTIONS,
)
"""The notification outbox: one row per message, with its status, attempts, next attempt and
delivery details."""

# History is never removed or rewritten by a delete (revision 0007_history_restrict):
# the ledger, its allocations, the outbox and the consent decisions refer to customers,
# deals and ledger entries with ON DELETE RESTRICT, never CASCADE or SET NULL, so a
# delete that would remove or blank them fails (the services refuse it first with
# HasHistory).  RESTRICT rather than no foreign key: ids of deleted rows can be reused
# (SQLite), and a new customer must never inherit another's unsubscribe or points.
# loyalty_accounts keeps CASCADE: balances and tiers are derived from the ledger.
# Consent decisions per customer, channel ("*" = every channel) and purpose, the
# latest one per key with its source and time (crmcore.notify.consent reads them).
customer_consents = Table(
    "customer_consents",
    metadata,
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="RESTRICT"), primary_key=True),
    Column("channel", String(100), primary_key=True),
    Column("purpose", String(16), primary_key=True),
    Column("granted", Boolean, nullable=False),
    Column("source", String(100), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String(100)),
    **TABLE_OPTIONS,
)
"""The latest consent decision per customer, channel (``*`` = every channel) and purpose: the
current state campaigns and the dispatcher read, a projection of ``consent_history``."""

# Every consent decision ever recorded (revision 0009_consent_history): append-only, oldest
# first by ``id``.  Each decision appends a row here and replaces the key's row in
# customer_consents in the same transaction, so the current state is always the latest
# history row per key.  RESTRICT, like the other histories: nothing cascades into it.
consent_history = Table(
    "consent_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("granted", Boolean, nullable=False),
    Column("source", String(100), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("actor", String(100)),
    Index("ix_consent_history_key", "customer_id", "channel", "purpose", "id"),
    **TABLE_OPTIONS,
)
"""Every consent decision, append-only: when, granted or withdrawn, from which source, by whom."""

# The audit trail (revision 0008_users_audit): append-only and hash-chained.  No foreign
# keys at all: no cascade can reach it, and it outlives whatever it names.  ``seq`` is the
# position in the chain (no gaps: an autoincrement id skips on rollback); ``audit_head`` is
# the lock row and the chain's tip, so concurrent writers append one after another.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("recorded_at", UTCDateTime, nullable=False, index=True),
    Column("actor", String(100), nullable=False, index=True),
    Column("action", String(50), nullable=False),
    Column("entity", String(50), nullable=False),
    Column("entity_id", String(100)),
    Column("customer_id", Integer, index=True),
    Column("ids", JSON),
    Column("changes", JSON),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    **TABLE_OPTIONS,
)
"""The audit trail: one record per write (or per batch of a bulk write), hash-chained."""

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    **TABLE_OPTIONS,
)
"""The tip of the audit chain (one row): the last record's ``seq`` and ``hash``; locked while
a transaction appends."""

# API tokens (revision 0011_api_tokens): a user's bearer tokens for the HTTP API.  Only the
# SHA-256 of a token is kept (tokens are 256 random bits, so a fast hash is enough: there is
# nothing to brute-force); revoked and expired tokens stay, so the audit trail's references hold.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    # The first characters of the token, shown by ``crm token list`` to tell tokens apart.
    Column("prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    **TABLE_OPTIONS,
)
"""API tokens: per user, stored hashed, revocable, optionally expiring."""

# Idempotency keys of the HTTP API (revision 0011_api_tokens): the first response of a create
# that carried an ``Idempotency-Key`` header, written in the create's own transaction, so a
# retried request gets that response back instead of making a second record.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("actor", String(100), primary_key=True),
    Column("key", String(200), primary_key=True),
    # What the key was used for (``POST /customers``) and a hash of the request body: the same
    # key sent with another request is refused instead of answered with the wrong response.
    Column("scope", String(200), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
    **TABLE_OPTIONS,
)
"""The stored first response per (user, idempotency key)."""

# Merges of duplicate customers (revision 0012_duplicates): one row per merge, with the
# before-state an unmerge puts back (the customers' fields and the ids of every row moved,
# per table).  RESTRICT on the kept customer: a merge record outlives nothing it names.
customer_merges = Table(
    "customer_merges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kept_id", Integer, ForeignKey("customers.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("merged_ids", JSON, nullable=False),
    Column("before", JSON, nullable=False),
    Column("moved", JSON, nullable=False),
    Column("merged_at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("undone_at", UTCDateTime),
    Column("undone_by", String(100)),
    **TABLE_OPTIONS,
)
"""Customer merges: the kept customer, the merged ones, their before-state and the rows moved;
``undone_at`` once ``crm customer unmerge`` put it back."""

# Follow-up tasks (revision 0016_tasks): customer-scoped (``customer_id``, the distribution key);
# a task outlives the deal or interaction it came from (SET NULL), not its customer (CASCADE).
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer_id", Integer, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("title", String(300), nullable=False),
    Column("deal_id", Integer, ForeignKey("deals.id", ondelete="SET NULL"), index=True),
    Column("interaction_id", Integer, ForeignKey("interactions.id", ondelete="SET NULL"), index=True),
    Column("assignee", String(100), index=True),
    Column("due", UTCDateTime, index=True),
    Column("status", String(16), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("notes", Text),
    Column("completed_at", UTCDateTime),
    Column("attributes", JSON, nullable=False),
    Column("external_id", String(100), unique=True),
    *_stamps(),
    Index("ix_tasks_status_due", "status", "due"),
    **TABLE_OPTIONS,
)
"""Follow-up tasks: revisits and complaint handling, assigned to a user, due at a time."""

ENTITY_TABLES = {
    "customer": customers,
    "contact": contacts,
    "interaction": interactions,
    "deal": deals,
    "task": tasks,
}
"""The table of each core entity, by entity name."""

# Personal data protection (revision 0013_privacy).  ``privacy_erasures``: one row per erased
# customer (``crm customer erase``), which makes erasure idempotent; no foreign key, like the
# audit trail, so nothing cascades into it.  ``privacy_files``: files the CRM wrote that may hold
# personal data (import reject files), so an erasure can find and scrub them.
privacy_erasures = Table(
    "privacy_erasures",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("erased_at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("reason", String(300), nullable=False),
    **TABLE_OPTIONS,
)
"""Erased customers: when, by whom, why (never what was erased)."""

privacy_files = Table(
    "privacy_files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", String(1000), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("written_at", UTCDateTime, nullable=False),
    **TABLE_OPTIONS,
)
"""Files the CRM wrote that may hold personal data (import reject files), for erasure to scrub."""

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("args", JSON, nullable=False),
    Column("queue", String(100), nullable=False),
    # queued -> running -> done | failed; a running job whose worker died is taken over (crmcore.jobs).
    Column("status", String(16), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("worker", String(100)),
    Column("result", JSON),
    Column("error", Text),
    # Set by the scheduler ("schedule:NAME:PERIOD"): a second scheduler's insert of the same key fails.
    Column("run_key", String(200), unique=True),
    # (0022) Renewed by the worker while the job runs: silent for a whole lease = taken over (crmcore.jobs).
    Column("heartbeat_at", UTCDateTime),
    Index("ix_jobs_status", "status", "id"),
    **TABLE_OPTIONS,
)
"""Background jobs (crmcore.jobs): kind, arguments (ids, never state), status, attempts, times, the
worker, a result summary or the error; ``run_key`` makes a scheduled job's run once per period."""
