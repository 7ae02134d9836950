"""SMS factors maintained by the directory sync (sms_from_directory)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 11:35:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sms_factors', schema=None) as batch_op:
        # Existing phones were enrolled by their users: NULL, not managed.
        batch_op.add_column(sa.Column('managed_by', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_sms_factors_managed_by'), ['managed_by'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sms_factors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sms_factors_managed_by'))
        batch_op.drop_column('managed_by')
