"""A search: the query read once (bot.search.query), compiled for the store at hand, filtered, paged.

Orders:
- `newest`: by messages.id, descending: the order posts were stored in, which is their date order
  for everything a monitor watches live. Not by messages.date: the date has no index, and sorting
  every match of a common word by it costs time in proportion to the matches (all of a million
  posts' worth), where walking the index backwards by row id stops after one page. An import of
  old history after live posts lists that history first.
- `relevance`: bm25 on SQLite (the tags column weighs more than the text), ts_rank on PostgreSQL (tags
  at weight A); ties newest first. Ranking costs a score per match, so only the newest RANKED
  (10,000; 2,000 on PostgreSQL) matches are ranked: for a word found in a large part of the archive,
  the best of the recent ones.

Pages are keyset-paged: the cursor is the last hit's sort key (score and row id), base64 JSON, so a
page never repeats or skips a hit because posts arrived meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    and_,
    cast,
    column,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy import Text as SqlText
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.orm import Session

from bot import channel as channels
from bot.parse.media import VOCABULARY
from bot.search import index
from bot.search.model import Filters, Hit, Order, QueryError, Results
from bot.search.query import Query, Term, parse, pieces, spans
from bot.store.models import MAX_ROW_ID, Channel, Match, Message

SNIPPET = 240  # characters of text around the first hit
_BEFORE = 60  # of them, before it
_FTS = table(index.FTS, column("rowid"))
_DOCS = table(index.DOCS, column("message_id"), column("doc"))
_SPACE = re.compile(r"\s")


# --- the two compilers ---------------------------------------------------------------------------


def _fts_phrase(stems: tuple[str, ...], prefix: bool) -> str:
    return '"' + " ".join(stems) + '"' + ("*" if prefix else "")


def _fts_term(term: Term) -> str:
    if term.tag:
        return f'(tags : "{term.stems[0]}")'
    return "(" + " OR ".join(_fts_phrase(s, p) for s, p in term.alternatives()) + ")"


def fts_query(query: Query) -> str:
    """The FTS5 MATCH expression of a query: its terms ANDed, then each exclusion NOTed."""
    out = "(" + " AND ".join(_fts_term(t) for t in query.positive) + ")"
    for term in query.negative:
        out += " NOT " + _fts_term(term)
    return out


def _ts_lexeme(stem: str, suffix: str = "") -> str:
    if len(stem.encode()) > index.MAX_LEXEME_BYTES:
        raise QueryError(f"a word of over {index.MAX_LEXEME_BYTES:,} bytes cannot be searched")
    return "'" + stem.replace("\\", "\\\\").replace("'", "''") + "'" + suffix


def _ts_term(term: Term) -> str:
    if term.tag:
        return "(" + _ts_lexeme(term.stems[0], ":A") + ")"
    alternatives = []
    for stems, prefix in term.alternatives():
        lexemes = [_ts_lexeme(s) for s in stems]
        if prefix:
            lexemes[-1] += ":*"
        alternatives.append("(" + " <-> ".join(lexemes) + ")")
    return "(" + " | ".join(alternatives) + ")"


def tsquery(query: Query) -> str:
    """The tsquery of a query, as PostgreSQL reads a literal."""
    parts = [_ts_term(t) for t in query.positive] + ["!" + _ts_term(t) for t in query.negative]
    return " & ".join(parts)


# --- filters -------------------------------------------------------------------------------------


def _channel(ref: str) -> ColumnElement[bool]:
    try:
        key = channels.scope_key(ref)
    except ValueError as exc:
        raise QueryError(f"channel: {exc}") from None
    if key == "dump":
        return Channel.dump.is_not(None)
    if key.startswith(channels.DUMP_PREFIX):
        return func.lower(Channel.dump) == key
    if key.startswith("-100"):
        return Channel.tg_id == int(key[4:])
    return Channel.username == key


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filters(session: Session, filters: Filters) -> list[ColumnElement[bool]] | None:
    """The WHERE clauses on messages; None when nothing can match (an unknown channel)."""
    out: list[ColumnElement[bool]] = []
    if filters.channel:
        # Resolved to row ids first: the messages' own column then narrows them, with no join.
        ids = list(session.scalars(select(Channel.id).where(_channel(filters.channel))))
        if not ids:
            return None
        out.append(Message.channel_id.in_(ids))
    if filters.since is not None:
        out.append(Message.date >= filters.since)
    if filters.until is not None:
        out.append(Message.date < filters.until)
    if filters.rule:
        out.append(exists().where(Match.message_id == Message.id, Match.rule_id == filters.rule))
    if filters.media == "any":
        out.append(func.json_array_length(Message.media) > 0)
    elif filters.media:
        if filters.media not in VOCABULARY:
            raise QueryError(f"media: {filters.media!r} is not 'any' nor one of {', '.join(VOCABULARY)}")
        # The flags are plain words, stored as a JSON list: '"photo"' is in its text only as a flag.
        out.append(cast(Message.media, SqlText).like(f'%"{filters.media}"%'))
    if filters.forwarded_from:
        out.append(Message.forwarded_from.ilike(_like(filters.forwarded_from), escape="\\"))
    if filters.edited is not None:
        out.append(Message.edit_date.is_not(None) if filters.edited else Message.edit_date.is_(None))
    if filters.deleted is not None:
        out.append(Message.deleted.is_(True) if filters.deleted else Message.deleted.is_(False))
    return out


# --- cursors -------------------------------------------------------------------------------------


_BAD_CURSOR = "the cursor is not one this search gave: start the search again"


def _cursor(order: str, score: float | None, row_id: int, floor: int | None) -> str:
    raw = json.dumps([order, score, row_id, floor], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_MAX_CURSOR = 200  # bytes: a cursor this code wrote is a quarter of that


def _row_id(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_ROW_ID


def _read_cursor(cursor: str, order: str) -> tuple[float | None, int, int | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(raw) > _MAX_CURSOR:
            raise ValueError
        kind, score, row_id, floor = json.loads(raw)
        if (
            kind != order
            or not _row_id(row_id)
            or not (floor is None or _row_id(floor))
            or not (score is None or (type(score) in (int, float) and math.isfinite(score)))
        ):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise QueryError(_BAD_CURSOR) from None
    return (None if score is None else float(score)), row_id, floor


# --- the search ----------------------------------------------------------------------------------


def search(
    session: Session,
    query: str,
    filters: Filters = Filters(),
    *,
    order: Order = "newest",
    cursor: str | None = None,
    limit: int = 20,
) -> Results:
    """One page of the posts that match `query` and `filters` (see the module's docstring)."""
    parsed = parse(query)
    if order not in ("newest", "relevance"):
        raise QueryError(f"order: {order!r} is not newest or relevance")
    after = _read_cursor(cursor, order) if cursor else None
    ranked = order == "relevance" and bool(parsed)
    postgres = session.get_bind().dialect.name == "postgresql"
    wheres = _filters(session, filters)
    if wheres is None:
        return Results((), None)  # a channel the store does not hold

    # First the page's keys alone, the index joined to messages only for the filters, then the rows:
    # a sort over every match carries a row id and a score, never whole posts.
    score: ColumnElement[Any] | None = None
    matching: Any = None  # PostgreSQL: the posts the words alone find, for the planner's estimate
    if not parsed:
        row_id: ColumnElement[Any] = Message.id
        stmt = select(Message.id)
    elif postgres:
        row_id = _DOCS.c.message_id
        q = cast(literal(tsquery(parsed)), TSQUERY)
        stmt = select(row_id).where(_DOCS.c.doc.op("@@")(q))
        matching = stmt
        if wheres:
            stmt = stmt.join(Message, Message.id == row_id)
        if ranked:
            # Tags at weight A (1.0), the text at D (0.1): PostgreSQL's default weights.
            score = cast(func.ts_rank(_DOCS.c.doc, q), Float)
    else:
        row_id = _FTS.c.rowid
        stmt = select(row_id).where(literal_column(index.FTS).op("MATCH")(fts_query(parsed)))
        if wheres:
            stmt = stmt.join(Message, Message.id == row_id)
        if ranked:
            # bm25 is lower for a better match: negated, so that higher is better on both stores.
            score = -literal_column(f"bm25({index.FTS}, 1.0, 4.0)")
    for where in wheres:
        stmt = stmt.where(where)

    floor = None
    if score is not None:
        # Only the newest RANKED matches are ranked: a word in half the archive would otherwise
        # cost a score for each of half a million posts. The window is fixed by the first page and
        # carried in the cursor, so that posts arriving meanwhile do not shift it under the pages.
        window = RANKED_POSTGRES if postgres else RANKED
        floor = after[2] if after is not None else _floor(session, stmt, row_id, window)
        if floor is not None:
            stmt = stmt.where(row_id >= floor)
        stmt = stmt.add_columns(score)
        if after is not None:
            last_score, last_id, _ = after
            if last_score is None:
                raise QueryError(_BAD_CURSOR)
            stmt = stmt.where(or_(score < last_score, and_(score == last_score, row_id < last_id)))
        stmt = stmt.order_by(score.desc(), row_id.desc())
    else:
        if after is not None:
            stmt = stmt.where(row_id < after[1])
        if matching is not None and _rare(session, matching):
            # Sorted rather than walked: `+ 0` keeps the planner off the primary key's order.
            stmt = stmt.order_by((row_id + 0).desc())
        else:
            stmt = stmt.order_by(row_id.desc())
    keys = session.execute(stmt.limit(limit + 1)).all()

    page = keys[:limit]
    found = {
        m.id: (m, c)
        for m, c in session.execute(
            select(Message, Channel)
            .join(Channel, Channel.id == Message.channel_id)
            .where(Message.id.in_([k[0] for k in page]))
        )
    }
    hits = tuple(
        _hit(*found[k[0]], parsed, k[1] if score is not None else None) for k in page if k[0] in found
    )
    more = len(keys) > limit and bool(hits)
    next_cursor = _cursor(order, hits[-1].score, hits[-1].row_id, floor) if more else None
    return Results(hits, next_cursor)


RANKED = 10_000  # matches ranked by relevance: the newest this many
# ts_rank reads each post's whole tsvector (10,000 of them: 290 ms measured), bm25 only the index.
RANKED_POSTGRES = 2_000
RARE = 0.01  # of the archive: fewer matches than this are sorted, on PostgreSQL


def _rare(session: Session, stmt: Any) -> bool:
    """Whether PostgreSQL expects few posts to match (its own estimate, from the GIN statistics).

    For `ORDER BY message_id DESC LIMIT n` it walks the primary key backwards, testing each post,
    even for a word it expects in 25 posts of 50,000 (measured: 315 ms for a word in none, 0.6 ms
    sorted from the GIN index). For a word in many posts that walk is what is fast.
    """
    compiled = stmt.compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    # Run as the driver's text, without parameters: a tsquery's `:A` is not a bind parameter.
    plan = session.connection().exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}").scalar_one()
    expected = float(plan[0]["Plan"]["Plan Rows"])
    total = session.execute(
        text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"), {"t": index.DOCS}
    ).scalar_one_or_none()
    return total is not None and total > 0 and expected < RARE * float(total)


def _floor(session: Session, stmt: Any, row_id: ColumnElement[Any], window: int) -> int | None:
    """The lowest row id among the newest `window` matches, or None when there are fewer."""
    newest = stmt.order_by(row_id.desc()).offset(window - 1).limit(1)
    return session.scalar(newest)


def _hit(m: Message, c: Channel, query: Query, score: float | None) -> Hit:
    return Hit(
        row_id=m.id,
        channel_id=c.id,
        channel=channels.label(username=c.username, title=c.title, tg_id=c.tg_id, dump=c.dump),
        msg_id=m.msg_id,
        date=m.date,
        url=f"https://t.me/{c.username}/{m.msg_id}" if c.username and not c.dump else None,
        title=m.title,
        snippet=tuple(snippet(m.text, query)),
        media=tuple(m.media or ()),
        forwarded_from=m.forwarded_from,
        edited=m.edit_date is not None,
        deleted=m.deleted,
        score=None if score is None else float(score),
        text=m.source_text,
    )


# --- highlighting --------------------------------------------------------------------------------


def highlight(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` in pieces, (piece, is_hit), covering it whole: the hits are where the query's words (in
    any form, as the search finds them), phrases, prefixes and hashtags are. QueryError for a query
    that cannot be searched."""
    return pieces(text, spans(text, parse(query)))


_STRETCH = 600  # characters of text read at a time for the first hit


def _first_hit(text: str, query: Query) -> int | None:
    """Where the query first hits `text`, reading it a stretch at a time: most posts show their hit
    early, and reading a whole long post costs about a millisecond (twenty on a page of hits)."""
    pos = 0
    while pos < len(text):
        space = _SPACE.search(text, min(pos + _STRETCH, len(text)))
        end = space.start() if space else len(text)
        marks = spans(text[pos:end], query)
        if marks:
            return pos + marks[0][0]
        pos = end
    marks = spans(text, query)  # a phrase across two stretches
    return marks[0][0] if marks else None


def snippet(text: str, query: Query) -> list[tuple[str, bool]]:
    """About SNIPPET characters of `text` around its first hit (or its start), in highlighted pieces;
    '…' marks where it was cut."""
    if len(text) <= SNIPPET:
        return pieces(text, spans(text, query) if query else [])
    first = (_first_hit(text, query) if query.positive else None) or 0
    start = max(0, min(first - _BEFORE, len(text) - SNIPPET))
    end = min(len(text), start + SNIPPET)
    # Cut at white space near the edges, so that no word is cut in two.
    if start > 0:
        space = _SPACE.search(text, start, min(first, start + 20))
        start = space.end() if space else start
    if end < len(text):
        space = max((m.start() for m in _SPACE.finditer(text, max(start, end - 20), end)), default=None)
        end = space if space is not None else end
    window = text[start:end]
    out = pieces(window, spans(window, query) if query else [])
    if start > 0:
        out.insert(0, ("…", False))
    if end < len(text):
        out.append(("…", False))
    return out
