"""letter_posting: the registered-mail number and posting date of each formal notice

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import dunning.coltypes

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'letter_posting',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action_id', sa.Integer(), nullable=False),
        sa.Column('tracking', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('posted_on', sa.Date(), nullable=False),
        sa.Column('by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('at', dunning.coltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['action_id'], ['action.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('action_id'),
        sa.UniqueConstraint('tracking'),
    )


def downgrade() -> None:
    op.drop_table('letter_posting')
