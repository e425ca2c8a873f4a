"""agency cases, the documents actions produce, amounts collected by the agency

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import dunning.coltypes


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agency_case',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('action_id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sa.Integer(), nullable=False),
        sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('agency_case_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('opened_on', sa.Date(), nullable=False),
        sa.Column('closed_on', sa.Date(), nullable=True),
        sa.Column('collected', dunning.coltypes.Money(precision=18, scale=4), nullable=False),
        sa.Column('agency_status', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('synced_at', dunning.coltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['action_id'], ['action.id'], ),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('action_id'),
    )
    with op.batch_alter_table('agency_case', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agency_case_customer_id'), ['customer_id'],
                              unique=False)
    with op.batch_alter_table('action', schema=None) as batch_op:
        batch_op.add_column(sa.Column('document', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.add_column(sa.Column('agency_collected', dunning.coltypes.Money(precision=18, scale=4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_column('agency_collected')
    with op.batch_alter_table('action', schema=None) as batch_op:
        batch_op.drop_column('document')
    with op.batch_alter_table('agency_case', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agency_case_customer_id'))
    op.drop_table('agency_case')
