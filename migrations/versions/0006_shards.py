"""shards: customer.shard_key and run.shard

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
import sqlmodel
from alembic import op

import dunning.coltypes


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shard', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))

    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shard_key', sa.BigInteger(), nullable=True))
    # crc32 of the customer id, as dunning.shards.shard_key computes it (copied here: a
    # migration must not change when the code does).
    connection = op.get_bind()
    customer = sa.table('customer', sa.column('id', sa.Integer), sa.column('external_id', sa.String),
                        sa.column('shard_key', sa.BigInteger))
    rows = connection.execute(sa.select(customer.c.id, customer.c.external_id)).all()
    if rows:
        connection.execute(
            customer.update().where(customer.c.id == sa.bindparam('b_id'))
            .values(shard_key=sa.bindparam('b_key')),
            [{'b_id': id_, 'b_key': zlib.crc32(external_id.encode('utf-8'))}
             for id_, external_id in rows])
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.alter_column('shard_key', existing_type=sa.BigInteger(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_column('shard_key')

    with op.batch_alter_table('run', schema=None) as batch_op:
        batch_op.drop_column('shard')
