"""The index on each store, and keeping it in step with `messages`.

SQLite: `search_fts`, an FTS5 table without content of its own (only the inverted index: what a post
says stays in `messages.text`), rowid = messages.id, two columns: `body`, the stems of the post's text
(its title line included), and `tags`, its hashtags. Its tokenizer is `ascii`, which splits on ASCII
space and punctuation only: the stems, already folded and made of letters and digits, go in as they
are (`_` is kept, for tags like `#breaking_news`).

A contentless table forgets a row only when told the tokens it was indexed with, so the old text is
needed when a post is deleted or edited. Two triggers copy it into `search_stale` as the row changes,
whoever changes it (the ingest path, the retention prune, someone in the sqlite3 shell), and
`catch_up` takes those rows out of the index, in the same transaction: the ingest stage runs it on
each batch, and the prune after each of its batches (its `forget`: `bot.pipeline.compose.PRUNED`).

PostgreSQL: `search_docs`, one row per post (ON DELETE CASCADE from messages) with a `tsvector` of
the same tokens, written as a literal (the body's stems at their positions, the tags at weight A after
them), under a GIN index.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

from bot.search import tokens

FTS = "search_fts"
STALE = "search_stale"
DOCS = "search_docs"
BATCH = 2_000  # posts per statement when indexing what is already stored

_KEEP_OLD = (
    f"INSERT OR IGNORE INTO {STALE} (message_id, text, hashtags) VALUES (old.id, old.text, old.hashtags)"
)
SQLITE_DDL = (
    # detail=full keeps positions, for phrases. The per-row sizes (columnsize=1, the default) cost
    # about a dozen bytes a post; without them bm25 ranks a post that says a word once above one
    # that says it three times (measured: the sizes of a contentless table read as -1).
    f"CREATE VIRTUAL TABLE {FTS} USING fts5(body, tags, content='', detail=full, "
    "tokenize=\"ascii tokenchars '_'\")",
    f"CREATE TABLE {STALE} (message_id INTEGER PRIMARY KEY, text TEXT NOT NULL, hashtags TEXT NOT NULL)",
    # OR IGNORE: a row edited twice before its stale copy is taken out keeps the copy that was indexed.
    f"CREATE TRIGGER search_stale_deleted AFTER DELETE ON messages BEGIN {_KEEP_OLD}; END",
    "CREATE TRIGGER search_stale_edited AFTER UPDATE OF text, hashtags ON messages "
    f"WHEN old.text IS NOT new.text OR old.hashtags IS NOT new.hashtags BEGIN {_KEEP_OLD}; END",
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS search_stale_edited",
    "DROP TRIGGER IF EXISTS search_stale_deleted",
    f"DROP TABLE IF EXISTS {STALE}",
    f"DROP TABLE IF EXISTS {FTS}",
)
POSTGRES_DDL = (
    f"CREATE TABLE {DOCS} (message_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE, "
    "doc tsvector NOT NULL)",
)
POSTGRES_INDEX = f"CREATE INDEX ix_search_docs_doc ON {DOCS} USING gin (doc)"
POSTGRES_DROP = (f"DROP TABLE IF EXISTS {DOCS}",)

_MAX_POSITION = 16_383  # PostgreSQL's
# PostgreSQL refuses a whole tsvector with one lexeme longer ("word is too long"): one such post
# would fail its batch for good. Nobody searches for a 2 KB word; it is left out of the index.
MAX_LEXEME_BYTES = 2_047


def _hashtags(value: Any) -> list[str]:
    if isinstance(value, str):  # the JSON text, as a trigger copied it
        value = json.loads(value) if value else []
    return [str(v) for v in value or ()]


def tsvector(doc: tokens.Document) -> str:
    """A post's tsvector, as PostgreSQL reads a literal: 'stem':1,4 'tag':9A."""
    positions: dict[str, list[str]] = defaultdict(list)
    body, tags = doc
    stems = body.split()
    for i, stem in enumerate(stems, 1):
        positions[stem].append(str(min(i, _MAX_POSITION)))
    for i, tag in enumerate(tags.split(), len(stems) + 1):
        positions[tag].append(f"{min(i, _MAX_POSITION)}A")
    for lexeme in [x for x in positions if len(x) * 4 > MAX_LEXEME_BYTES]:
        if len(lexeme.encode()) > MAX_LEXEME_BYTES:
            del positions[lexeme]
    return " ".join(f"'{_quote(lexeme)}':{','.join(dict.fromkeys(p))}" for lexeme, p in positions.items())


def _quote(lexeme: str) -> str:
    return lexeme.replace("\\", "\\\\").replace("'", "''")


def add(conn: Connection, rows: Sequence[tuple[int, str, Any]]) -> None:
    """Index posts (id, text, hashtags) that the index does not hold yet (PostgreSQL: or replace them)."""
    add_documents(conn, [(row_id, tokens.document(body, _hashtags(tags))) for row_id, body, tags in rows])


def add_documents(conn: Connection, docs: Sequence[tuple[int, tokens.Document]]) -> None:
    """`add`, for posts whose documents are worked out already (`tokens.document`)."""
    if not docs:
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            f"INSERT INTO {FTS} (rowid, body, tags) VALUES (?, ?, ?)",
            [(row_id, *doc) for row_id, doc in docs],
        )
        return
    conn.execute(
        text(
            f"INSERT INTO {DOCS} (message_id, doc) VALUES (:id, CAST(:doc AS tsvector)) "
            "ON CONFLICT (message_id) DO UPDATE SET doc = excluded.doc"
        ),
        [{"id": row_id, "doc": tsvector(doc)} for row_id, doc in docs],
    )


def catch_up(
    conn: Connection, new: frozenset[int] = frozenset(), edited: Mapping[int, tokens.Document] | None = None
) -> int:
    """SQLite: take deleted and edited posts' old tokens out of the index, and index edited posts'
    new ones (not those in `new`, which the caller indexes: a deleted row's id can come back); how
    many stale rows there were. An edited post's document comes from `edited` when the caller has
    it made, else from its stored text. A no-op on PostgreSQL (its rows follow by cascade, and the
    ingest stage replaces an edited post's)."""
    if conn.dialect.name != "sqlite":
        return 0
    stale = conn.exec_driver_sql(f"SELECT message_id, text, hashtags FROM {STALE}").all()
    if not stale:
        return 0
    conn.exec_driver_sql(
        f"INSERT INTO {FTS} ({FTS}, rowid, body, tags) VALUES ('delete', ?, ?, ?)",
        [(row_id, *tokens.document(body, _hashtags(tags))) for row_id, body, tags in stale],
    )
    conn.exec_driver_sql(f"DELETE FROM {STALE}")
    edited = edited or {}
    ids = [row_id for row_id, _, _ in stale if row_id not in new and row_id not in edited]
    add_documents(conn, [(row_id, edited[row_id]) for row_id, _, _ in stale if row_id in edited])
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        edited = conn.exec_driver_sql(
            f"SELECT id, text, hashtags FROM messages WHERE id IN ({marks})", tuple(chunk)
        ).all()
        add(conn, [tuple(row) for row in edited])
    return len(stale)


def fill(conn: Connection, batch: int = BATCH) -> int:
    """Index every stored post, in batches by id (the migration that creates the index); the count."""
    done, last = 0, 0
    while True:
        rows = conn.execute(
            text("SELECT id, text, hashtags FROM messages WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": batch},
        ).all()
        if not rows:
            return done
        add(conn, [tuple(row) for row in rows])
        done += len(rows)
        last = rows[-1][0]


def create(conn: Connection) -> int:
    """Create the index on this store and index what it holds; the number of posts indexed."""
    if conn.dialect.name == "sqlite":
        for statement in SQLITE_DDL:
            conn.exec_driver_sql(statement)
        return fill(conn)
    for statement in POSTGRES_DDL:
        conn.exec_driver_sql(statement)
    done = fill(conn)
    conn.exec_driver_sql(POSTGRES_INDEX)  # after the rows: one build, not a million updates
    conn.exec_driver_sql(f"ANALYZE {DOCS}")
    return done


def drop(conn: Connection) -> None:
    for statement in SQLITE_DROP if conn.dialect.name == "sqlite" else POSTGRES_DROP:
        conn.exec_driver_sql(statement)
