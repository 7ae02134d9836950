"""second factors

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-29 16:21:15.103581
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import idp.db


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('recovery_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_recovery_codes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_codes'))
    )
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_codes_user_id'), ['user_id'], unique=False)

    op.create_table('sms_factors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sms_factors_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_factors'))
    )
    with op.batch_alter_table('sms_factors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_factors_user_id'), ['user_id'], unique=False)

    op.create_table('totp_factors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('secret_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('handle', sa.String(length=32), nullable=False),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_totp_factors_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_totp_factors')),
    sa.UniqueConstraint('handle', name=op.f('uq_totp_factors_handle'))
    )
    with op.batch_alter_table('totp_factors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_totp_factors_user_id'), ['user_id'], unique=False)

    op.create_table('trusted_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_trusted_devices_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trusted_devices')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_trusted_devices_token_hash'))
    )
    with op.batch_alter_table('trusted_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_trusted_devices_user_id'), ['user_id'], unique=False)

    op.create_table('webauthn_challenges',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('purpose', sa.String(length=96), nullable=False),
    sa.Column('challenge', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('consumed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webauthn_challenges_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_challenges'))
    )
    with op.batch_alter_table('webauthn_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webauthn_challenges_expires_at'), ['expires_at'], unique=False)

    op.create_table('webauthn_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('credential_id', sa.LargeBinary(), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.Integer(), nullable=False),
    sa.Column('aaguid', sa.String(length=36), nullable=True),
    sa.Column('transports', sa.JSON(), nullable=False),
    sa.Column('discoverable', sa.Boolean(), nullable=False),
    sa.Column('backup_eligible', sa.Boolean(), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('flagged_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webauthn_credentials_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_credentials')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_webauthn_credentials_credential_id'))
    )
    with op.batch_alter_table('webauthn_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webauthn_credentials_user_id'), ['user_id'], unique=False)

    op.create_table('sms_challenges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('factor_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('purpose', sa.String(length=96), nullable=False),
    sa.Column('code_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('consumed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['factor_id'], ['sms_factors.id'], name=op.f('fk_sms_challenges_factor_id_sms_factors'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sms_challenges_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_challenges'))
    )
    with op.batch_alter_table('sms_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sms_challenges_factor_id'), ['factor_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_challenges_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sms_challenges_phone'), ['phone'], unique=False)

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.add_column(sa.Column('require_mfa', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('mfa_methods', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('allow_trusted_device', sa.Boolean(), nullable=True))

    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('methods', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('factor_at', idp.db.UTCDateTime(timezone=True), nullable=True))

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webauthn_handle', sa.LargeBinary(length=64), nullable=True))
        batch_op.add_column(sa.Column('mfa_reset_at', idp.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_users_webauthn_handle'), ['webauthn_handle'])

    with op.batch_alter_table('login_transactions', schema=None) as batch_op:
        batch_op.alter_column('client_id', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('login_transactions', schema=None) as batch_op:
        batch_op.alter_column('client_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_users_webauthn_handle'), type_='unique')
        batch_op.drop_column('mfa_reset_at')
        batch_op.drop_column('webauthn_handle')

    with op.batch_alter_table('sso_sessions', schema=None) as batch_op:
        batch_op.drop_column('factor_at')
        batch_op.drop_column('methods')

    with op.batch_alter_table('clients', schema=None) as batch_op:
        batch_op.drop_column('allow_trusted_device')
        batch_op.drop_column('mfa_methods')
        batch_op.drop_column('require_mfa')

    with op.batch_alter_table('sms_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_challenges_phone'))
        batch_op.drop_index(batch_op.f('ix_sms_challenges_user_id'))
        batch_op.drop_index(batch_op.f('ix_sms_challenges_factor_id'))

    op.drop_table('sms_challenges')
    with op.batch_alter_table('webauthn_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webauthn_credentials_user_id'))

    op.drop_table('webauthn_credentials')
    with op.batch_alter_table('webauthn_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webauthn_challenges_expires_at'))

    op.drop_table('webauthn_challenges')
    with op.batch_alter_table('trusted_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_trusted_devices_user_id'))

    op.drop_table('trusted_devices')
    with op.batch_alter_table('totp_factors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_totp_factors_user_id'))

    op.drop_table('totp_factors')
    with op.batch_alter_table('sms_factors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_factors_user_id'))

    op.drop_table('sms_factors')
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recovery_codes_user_id'))

    op.drop_table('recovery_codes')
