"""Stage: keep the search index in step with what the store stage just wrote.

New posts are indexed from their content, as stored. Edited posts: on SQLite the store's trigger
kept the text the index knew, and `catch_up` swaps it for the new one (deleted posts' go the same
way); on PostgreSQL the post's row is replaced.

Tokenizing is the stage's CPU work, and it needs no store: `prepare` does it in the match thread,
ahead of the transaction, and `run` finds each post's document made.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot.parse.model import Content
from bot.pipeline.batch import Batch
from bot.search import index, tokens
from bot.sources.model import storable


class IndexPosts:
    def prepare(self, content: Content) -> tokens.Document:
        return tokens.document(storable(content.text), content.hashtags)

    def run(self, session: Session, batch: Batch) -> None:
        conn = session.connection()
        made = {
            p.message_id: (p.is_edit, batch.made(self, p.content) or self.prepare(p.content))
            for p in batch.posts
        }
        if conn.dialect.name != "sqlite":
            index.add_documents(conn, [(row_id, doc) for row_id, (_, doc) in made.items()])
            return
        # An edit's old words come out first (its stale copy), and then its new ones go in.
        new = {row_id: doc for row_id, (is_edit, doc) in made.items() if not is_edit}
        edited = {row_id: doc for row_id, (is_edit, doc) in made.items() if is_edit}
        index.catch_up(conn, frozenset(new), edited)
        index.add_documents(conn, list(new.items()))
