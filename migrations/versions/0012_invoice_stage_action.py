"""invoice.stage_action_id: the message or task that carried the invoice's current stage;
letter_posting.tracking optional (a reminder letter goes by ordinary mail)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoice') as batch:
        batch.add_column(sa.Column('stage_action_id', sa.Integer(), nullable=True))
    # The action of the latest transition that moved each invoice to its current stage.
    op.execute("""
        UPDATE invoice SET stage_action_id = (
            SELECT t.action_id FROM transition t
            WHERE t.invoice_id = invoice.id AND t.event = 'stage'
              AND t.to_stage = invoice.stage AND t.action_id IS NOT NULL
            ORDER BY t.id DESC LIMIT 1)
        WHERE stage IS NOT NULL
    """)
    with op.batch_alter_table('letter_posting') as batch:
        batch.alter_column('tracking', existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('letter_posting') as batch:
        batch.alter_column('tracking', existing_type=sa.String(length=64), nullable=False)
    with op.batch_alter_table('invoice') as batch:
        batch.drop_column('stage_action_id')
