"""Stories: each post's story id and media identity, and each alert's story.

Every post already stored becomes a story of its own (its story id is its row id): near-duplicates
among them are not looked for after the fact, since their alerts went out long ago.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('story_id', sa.Integer(), nullable=True))
    op.add_column('messages', sa.Column('media_key', sa.String(length=80), nullable=True))
    op.add_column('alerts', sa.Column('story_id', sa.Integer(), nullable=True))
    op.execute('UPDATE messages SET story_id = id')
    op.execute(
        'UPDATE alerts SET story_id = (SELECT m.story_id FROM messages m WHERE m.id = alerts.message_id) '
        'WHERE message_id IS NOT NULL'
    )
    op.create_index('ix_messages_story_id', 'messages', ['story_id'])
    op.create_index('ix_alerts_story_id', 'alerts', ['story_id'])


def downgrade() -> None:
    op.drop_index('ix_alerts_story_id', table_name='alerts')
    op.drop_index('ix_messages_story_id', table_name='messages')
    # Plain DROP COLUMN (SQLite 3.35+): a batch copy of `messages` would lose the search triggers.
    for table, column in (('alerts', 'story_id'), ('messages', 'media_key'), ('messages', 'story_id')):
        op.execute(f'ALTER TABLE {table} DROP COLUMN {column}')
