"""client governance (owners, requests, secret rotation, lifetimes) and RFC 7591 registration

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 08:20:02.901508
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('client_owners',
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_client_owners_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_client_owners_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id', 'user_id', name=op.f('pk_client_owners'))
    )
    with op.batch_alter_table('client_owners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_client_owners_user_id'), ['user_id'], unique=False)

    op.create_table('initial_access_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=255), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('uses_left', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_initial_access_tokens_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_initial_access_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_initial_access_tokens_token_hash'))
    )
    with op.batch_alter_table('initial_access_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_initial_access_tokens_owner_id'), ['owner_id'], unique=False)

    op.create_table('owner_redirect_domains',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_owner_redirect_domains_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_owner_redirect_domains')),
    sa.UniqueConstraint('user_id', 'domain', name=op.f('uq_owner_redirect_domains_user_id'))
    )
    with op.batch_alter_table('owner_redirect_domains', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_owner_redirect_domains_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled_by', sa.String(length=32), nullable=True))
        # Existing clients were made by administrators: they are active.
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='active'))
        batch_op.add_column(sa.Column('review_comment', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('reviewed_by', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('reviewed_at', idp.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('logo_uri', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_hash', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('previous_secret_expires_at', idp.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('registration_token_hash', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('access_token_lifetime', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('refresh_token_lifetime', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_clients_registration_token_hash'), ['registration_token_hash'])


def downgrade() -> None:
    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_clients_registration_token_hash'), type_='unique')
        batch_op.drop_column('refresh_token_lifetime')
        batch_op.drop_column('access_token_lifetime')
        batch_op.drop_column('registration_token_hash')
        batch_op.drop_column('previous_secret_expires_at')
        batch_op.drop_column('previous_secret_hash')
        batch_op.drop_column('logo_uri')
        batch_op.drop_column('created_by')
        batch_op.drop_column('reviewed_at')
        batch_op.drop_column('reviewed_by')
        batch_op.drop_column('review_comment')
        batch_op.drop_column('status')
        batch_op.drop_column('disabled_by')

    with op.batch_alter_table('owner_redirect_domains', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_owner_redirect_domains_user_id'))

    op.drop_table('owner_redirect_domains')
    with op.batch_alter_table('initial_access_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_initial_access_tokens_owner_id'))

    op.drop_table('initial_access_tokens')
    with op.batch_alter_table('client_owners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_owners_user_id'))

    op.drop_table('client_owners')
