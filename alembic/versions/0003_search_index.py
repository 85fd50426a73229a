"""The archive's full-text index, and every post already stored indexed into it.

SQLite: an FTS5 table without content of its own (search_fts), and the triggers that keep the text a
post was indexed with when it is edited or deleted (search_stale), so it can be taken out again.
PostgreSQL: a tsvector per post (search_docs) under a GIN index, ANALYZEd. Both hold the stems
bot.search.tokens makes; see bot/search/index.py.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from bot.search import index


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    index.create(op.get_bind())


def downgrade() -> None:
    index.drop(op.get_bind())
