"""action.claimed_by/via/at: who holds a dispatch's claim; delivery_event: what is known of a
delivery (provider events, recoveries, people's decisions)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import dunning.coltypes

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('action') as batch:
        batch.add_column(sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=64),
                                   nullable=True))
        batch.add_column(sa.Column('claimed_via', sqlmodel.sql.sqltypes.AutoString(length=16),
                                   nullable=True))
        batch.add_column(sa.Column('claimed_at', dunning.coltypes.UTCDateTime(), nullable=True))
    op.create_table(
        'delivery_event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action_id', sa.Integer(), nullable=True),
        sa.Column('event', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('provider_event_id', sqlmodel.sql.sqltypes.AutoString(length=100),
                  nullable=True),
        sa.Column('by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('occurred_at', dunning.coltypes.UTCDateTime(), nullable=True),
        sa.Column('at', dunning.coltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['action_id'], ['action.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('provider_event_id'),
    )
    op.create_index(op.f('ix_delivery_event_action_id'), 'delivery_event', ['action_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_delivery_event_action_id'), table_name='delivery_event')
    op.drop_table('delivery_event')
    with op.batch_alter_table('action') as batch:
        batch.drop_column('claimed_at')
        batch.drop_column('claimed_via')
        batch.drop_column('claimed_by')
