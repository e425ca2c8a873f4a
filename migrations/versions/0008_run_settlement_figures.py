"""run.settled_invoices, settled_customers, settled_amount, mass_settlement (the guard's
history)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dunning.coltypes

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for the runs before: the guard treats the ledger as young until runs record them.
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settled_invoices', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('settled_customers', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('settled_amount',
                                      dunning.coltypes.Money(precision=18, scale=4),
                                      nullable=True))
        batch_op.add_column(sa.Column('mass_settlement', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_column('mass_settlement')
        batch_op.drop_column('settled_amount')
        batch_op.drop_column('settled_customers')
        batch_op.drop_column('settled_invoices')
