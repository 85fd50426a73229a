"""A post's text is stored once: `raw_text` is '' where it equals the normalised `text`.

For most posts the two were the same, so every post's text was stored twice (5.6 KB a post on
SQLite for 2.3 KB of text). The space this frees is reused by new posts; `tgsentinel db vacuum`
gives it back to the file system.

Revision ID: 0004
Revises: 0003
"""

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('messages', 'message_edits'):
        op.execute(f"UPDATE {table} SET raw_text = '' WHERE raw_text = text AND raw_text <> ''")


def downgrade() -> None:
    for table in ('messages', 'message_edits'):
        op.execute(f"UPDATE {table} SET raw_text = text WHERE raw_text = ''")
