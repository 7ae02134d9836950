"""directory sync

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp.db


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('directory_accounts',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('dn', sa.Text(), nullable=False),
    sa.Column('marker', sa.String(length=64), nullable=True),
    sa.Column('phone', sa.String(length=64), nullable=True),
    sa.Column('disabled_reason', sa.String(length=32), nullable=True),
    sa.Column('synced_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_directory_accounts_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_directory_accounts')),
    sa.UniqueConstraint('source', 'external_id', name=op.f('uq_directory_accounts_source'))
    )
    with op.batch_alter_table('directory_accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directory_accounts_source'), ['source'], unique=False)

    op.create_table('directory_groups',
    sa.Column('group_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('dn', sa.Text(), nullable=False),
    sa.Column('marker', sa.String(length=64), nullable=True),
    sa.Column('member_dns', sa.JSON(), nullable=False),
    sa.Column('member_uids', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_directory_groups_group_id_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', name=op.f('pk_directory_groups')),
    sa.UniqueConstraint('source', 'external_id', name=op.f('uq_directory_groups_source'))
    )
    with op.batch_alter_table('directory_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directory_groups_source'), ['source'], unique=False)

    op.create_table('directory_sync_state',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('high_water_mark', sa.String(length=64), nullable=True),
    sa.Column('high_water_server', sa.Text(), nullable=True),
    sa.Column('config_fingerprint', sa.String(length=64), nullable=True),
    sa.Column('skipped', sa.JSON(), nullable=False),
    sa.Column('last_run_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_full_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_until', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_directory_sync_state'))
    )
    op.create_table('directory_sync_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('forced', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('server', sa.Text(), nullable=True),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('disabled', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Integer(), nullable=False),
    sa.Column('deleted', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('errors', sa.Integer(), nullable=False),
    sa.Column('groups_changed', sa.Integer(), nullable=False),
    sa.Column('memberships_changed', sa.Integer(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_directory_sync_runs'))
    )
    with op.batch_alter_table('directory_sync_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_directory_sync_runs_source'), ['source'], unique=False)
        batch_op.create_index(batch_op.f('ix_directory_sync_runs_started_at'), ['started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('directory_sync_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directory_sync_runs_started_at'))
        batch_op.drop_index(batch_op.f('ix_directory_sync_runs_source'))

    op.drop_table('directory_sync_runs')
    op.drop_table('directory_sync_state')
    with op.batch_alter_table('directory_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directory_groups_source'))

    op.drop_table('directory_groups')
    with op.batch_alter_table('directory_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_directory_accounts_source'))

    op.drop_table('directory_accounts')
