"""core schema

Revision ID: 0001_core
Revises: 
Create Date: 2026-11-22 10:22:15.114883
"""
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

import crmcore.store.types

if TYPE_CHECKING:
    from crmcore.store.tables import TableOptions

revision = '0001_core'
down_revision = None
branch_labels = ('crmcore',)
depends_on = None

# MariaDB/MySQL: binary collation so text compares exactly (as on PostgreSQL and SQLite).
TABLE_OPTIONS: "TableOptions" = {  # checked by mypy only (imported under TYPE_CHECKING)
    'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin',
    'mariadb_charset': 'utf8mb4', 'mariadb_collate': 'utf8mb4_bin',
}


def upgrade() -> None:
    op.create_table('customers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('region', sa.String(length=100), nullable=True),
    sa.Column('city', sa.String(length=100), nullable=True),
    sa.Column('industry', sa.String(length=100), nullable=True),
    sa.Column('source', sa.String(length=100), nullable=True),
    sa.Column('owner', sa.String(length=100), nullable=True),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('birthday', sa.Date(), nullable=True),
    sa.Column('consent_email', sa.Boolean(), nullable=False),
    sa.Column('consent_sms', sa.Boolean(), nullable=False),
    sa.Column('consent_marketing', sa.Boolean(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers')),
    sa.UniqueConstraint('external_id', name=op.f('uq_customers_external_id')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customers_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_customers_phone'), ['phone'], unique=False)

    op.create_table('segment_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('strategy', sa.String(length=100), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('as_of', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('started_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('members', sa.Integer(), nullable=True),
    sa.Column('entered', sa.Integer(), nullable=True),
    sa.Column('left', sa.Integer(), nullable=True),
    sa.Column('moved', sa.Integer(), nullable=True),
    sa.Column('counts', sa.JSON(), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_runs')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('segment_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segment_runs_strategy'), ['strategy'], unique=False)

    op.create_table('contacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('title', sa.String(length=100), nullable=True),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_contacts_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('external_id', name=op.f('uq_contacts_external_id')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_customer_id'), ['customer_id'], unique=False)

    op.create_table('deals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('amount', crmcore.store.types.Money(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('pipeline', sa.String(length=50), nullable=False),
    sa.Column('stage', sa.String(length=50), nullable=False),
    sa.Column('probability', sa.SmallInteger(), nullable=False),
    sa.Column('expected_close', sa.Date(), nullable=True),
    sa.Column('closed_at', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.Column('owner', sa.String(length=100), nullable=True),
    sa.Column('lost_reason', sa.String(length=200), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount >= 0', name=op.f('ck_deals_amount_not_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_deals_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deals')),
    sa.UniqueConstraint('external_id', name=op.f('uq_deals_external_id')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deals_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deals_stage'), ['stage'], unique=False)

    op.create_table('loyalty_accounts',
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('scheme', sa.String(length=100), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('tier', sa.String(length=50), nullable=True),
    sa.Column('updated_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.CheckConstraint('balance >= 0', name=op.f('ck_loyalty_accounts_balance_not_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_loyalty_accounts_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('customer_id', 'scheme', name=op.f('pk_loyalty_accounts')),
    **TABLE_OPTIONS
    )
    op.create_table('notify_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('channel', sa.String(length=100), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('recipient', sa.String(length=320), nullable=True),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('claimed_at', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('provider_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('sent_at', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_notify_outbox_customer_id_customers'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notify_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_notify_outbox_idempotency_key')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('notify_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notify_outbox_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_notify_outbox_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('segment_memberships',
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('segment', sa.String(length=100), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_segment_memberships_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['segment_runs.id'], name=op.f('fk_segment_memberships_run_id_segment_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'customer_id', name=op.f('pk_segment_memberships')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('segment_memberships', schema=None) as batch_op:
        batch_op.create_index('ix_segment_memberships_run_segment', ['run_id', 'segment'], unique=False)

    op.create_table('deal_stage_history',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('deal_id', sa.Integer(), nullable=False),
    sa.Column('from_stage', sa.String(length=50), nullable=True),
    sa.Column('to_stage', sa.String(length=50), nullable=False),
    sa.Column('changed_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.ForeignKeyConstraint(['deal_id'], ['deals.id'], name=op.f('fk_deal_stage_history_deal_id_deals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deal_stage_history')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('deal_stage_history', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deal_stage_history_deal_id'), ['deal_id'], unique=False)

    op.create_table('interactions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=50), nullable=True),
    sa.Column('occurred_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('outcome', sa.String(length=100), nullable=True),
    sa.Column('satisfaction', sa.SmallInteger(), nullable=True),
    sa.Column('follow_up_due', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.Column('resolved_at', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.Column('owner', sa.String(length=100), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('external_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.CheckConstraint('satisfaction IS NULL OR satisfaction BETWEEN 1 AND 5', name=op.f('ck_interactions_satisfaction_range')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_interactions_contact_id_contacts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_interactions_customer_id_customers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interactions')),
    sa.UniqueConstraint('external_id', name=op.f('uq_interactions_external_id')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_interactions_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_interactions_occurred_at'), ['occurred_at'], unique=False)

    op.create_table('loyalty_ledger',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('scheme', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('deal_id', sa.Integer(), nullable=True),
    sa.Column('expires_at', crmcore.store.types.UTCDateTime(), nullable=True),
    sa.Column('reason', sa.String(length=300), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.Column('occurred_at', crmcore.store.types.UTCDateTime(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_loyalty_ledger_customer_id_customers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['deal_id'], ['deals.id'], name=op.f('fk_loyalty_ledger_deal_id_deals'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_loyalty_ledger')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_loyalty_ledger_idempotency_key')),
    **TABLE_OPTIONS
    )
    with op.batch_alter_table('loyalty_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_loyalty_ledger_customer_scheme', ['customer_id', 'scheme'], unique=False)
        batch_op.create_index(batch_op.f('ix_loyalty_ledger_deal_id'), ['deal_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('loyalty_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loyalty_ledger_deal_id'))
        batch_op.drop_index('ix_loyalty_ledger_customer_scheme')

    op.drop_table('loyalty_ledger')
    with op.batch_alter_table('interactions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_interactions_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_interactions_customer_id'))

    op.drop_table('interactions')
    with op.batch_alter_table('deal_stage_history', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deal_stage_history_deal_id'))

    op.drop_table('deal_stage_history')
    with op.batch_alter_table('segment_memberships', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_memberships_run_segment')

    op.drop_table('segment_memberships')
    with op.batch_alter_table('notify_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_notify_outbox_due')
        batch_op.drop_index(batch_op.f('ix_notify_outbox_customer_id'))

    op.drop_table('notify_outbox')
    op.drop_table('loyalty_accounts')
    with op.batch_alter_table('deals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deals_stage'))
        batch_op.drop_index(batch_op.f('ix_deals_customer_id'))

    op.drop_table('deals')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_customer_id'))

    op.drop_table('contacts')
    with op.batch_alter_table('segment_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_segment_runs_strategy'))

    op.drop_table('segment_runs')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customers_phone'))
        batch_op.drop_index(batch_op.f('ix_customers_email'))

    op.drop_table('customers')
