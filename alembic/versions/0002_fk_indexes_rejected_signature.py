"""Indexes on every foreign key a delete or join follows; rejected posts; post signatures.

Retention deletes messages and alerts: without an index on alerts.message_id, alerts.match_id,
alerts.channel_id and matches.channel_id, every deleted row costs a scan of the referring table.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_message_id', ['message_id'], unique=False)
        batch_op.create_index('ix_alerts_match_id', ['match_id'], unique=False)
        batch_op.create_index('ix_alerts_channel_id', ['channel_id'], unique=False)
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.create_index('ix_matches_channel_id', ['channel_id'], unique=False)
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signature', sa.Text(), nullable=True))
    op.create_table('rejected_posts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=200), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rejected_posts', schema=None) as batch_op:
        batch_op.create_index('ix_rejected_posts_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_table('rejected_posts')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('signature')
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.drop_index('ix_matches_channel_id')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_channel_id')
        batch_op.drop_index('ix_alerts_match_id')
        batch_op.drop_index('ix_alerts_message_id')
