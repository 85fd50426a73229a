"""Stage: store every post, idempotently by channel and message id.

A new post is inserted; a post whose revision (text, media) changed is an edit: the row is updated
and its earlier version kept in `message_edits`; anything else changes nothing but the view count.
The channel's cursor (its highest message id) moves with what is stored.

A batch is one executemany. Should it fail on one post (an id the column cannot hold, a value the
driver refuses), the ingest path stores the batch again post by post and rejects the one that fails:
the cost of isolating a bad post is paid only when there is one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, select
from sqlalchemy.orm import Session

from bot.parse.model import Content
from bot.pipeline.batch import Batch, Post
from bot.sources.model import Incoming, Revision, storable
from bot.store import channels as channel_rows
from bot.store.db import chunks
from bot.store.models import Message, MessageEdit, stored_raw_text

# Columns an edit leaves as they were: when the post was first stored, and whether it was deleted.
_KEPT_ON_EDIT = ("created_at", "deleted")


class StorePosts:
    def run(self, session: Session, batch: Batch) -> None:
        refs = {item.channel for item, _ in batch.prepared}
        rows = {ref: channel_rows.upsert(session, ref) for ref in refs}
        existing = _existing(session, [(rows[i.channel].id, i.message_id) for i, _ in batch.prepared])
        known = _known_fingerprints(session, {c.fingerprint for _, c in batch.prepared if c.fingerprint})
        inserts: dict[tuple[int, int], dict[str, Any]] = {}
        new: list[Post] = []
        counts = batch.counts
        for item, content in batch.prepared:
            channel = rows[item.channel]
            key = (channel.id, item.message_id)
            if key in inserts:
                batch.dropped["duplicate"] += 1  # the same post twice in one batch: the first copy wins
                continue
            row = existing.get(key)
            if row is None:
                inserts[key] = _columns(channel.id, item, content, batch.stamp)
                counts["new"] += 1
                if content.fingerprint is not None:
                    counts["duplicates"] += content.fingerprint in known
                    known.add(content.fingerprint)
                post = Post(item, content, channel, 0, is_edit=False)
                new.append(post)
                batch.posts.append(post)
                batch.ingested[item.channel.key] += 1
            elif Revision.of(row.source_text, row.media).edited(Revision.of(item.text, content.media)):
                session.add(
                    MessageEdit(
                        message_id=row.id,
                        edit_date=row.edit_date,
                        raw_text=row.raw_text,
                        text=row.text,
                        recorded_at=batch.stamp,
                    )
                )
                for name, value in _columns(channel.id, item, content, batch.stamp).items():
                    if name not in _KEPT_ON_EDIT and not (name == "date" and value is None):
                        setattr(row, name, value)
                counts["updated"] += 1
                batch.posts.append(Post(item, content, channel, row.id, is_edit=True, story_id=row.story_id))
            else:
                if item.views is not None and row.views != item.views:
                    row.views = item.views
                # What one route knows and another does not (the edit marker, the signature) is
                # kept once known, and never costs an edit.
                if row.edit_date is None and (item.edit_date or item.edited):
                    row.edit_date = item.edit_date or batch.stamp
                if row.signature is None and item.signature:
                    row.signature = storable(item.signature)
                counts["unchanged"] += 1
            if channel.last_seen_id is None or item.message_id > channel.last_seen_id:
                channel.last_seen_id = item.message_id
        session.flush()
        if inserts:
            # A plain executemany, then the new ids in one query per chunk: the ORM's unit of work,
            # and RETURNING across insertmanyvalues batches, are the slow part of a replay.
            session.connection().execute(insert(Message), list(inserts.values()))
            ids = _ids(session, list(inserts))
            for post in new:
                post.message_id = ids[(post.channel.id, post.item.message_id)]


def _existing(session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], Message]:
    found: dict[tuple[int, int], Message] = {}
    for where in keyed(keys):
        for row in session.scalars(select(Message).where(where)):
            found[(row.channel_id, row.msg_id)] = row
    return found


def _known_fingerprints(session: Session, fingerprints: set[str]) -> set[str]:
    known: set[str] = set()
    for chunk in chunks(list(fingerprints)):
        known.update(session.scalars(select(Message.fingerprint).where(Message.fingerprint.in_(chunk))))
    return known


def _ids(session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    found: dict[tuple[int, int], int] = {}
    for where in keyed(keys):
        rows = session.execute(select(Message.id, Message.channel_id, Message.msg_id).where(where))
        found.update({(channel_id, msg_id): pk for pk, channel_id, msg_id in rows})
    return found


def keyed(keys: list[tuple[int, int]]) -> Iterator[ColumnElement[bool]]:
    """WHERE clauses that find messages by (channel, message id) through the unique index.

    One `channel_id = ? AND msg_id IN (...)` per channel, not a row-value `IN`: SQLite plans
    `(channel_id, msg_id) IN (VALUES ...)` as a scan of every stored message, so each batch would
    cost as much as the whole archive.
    """
    by_channel: dict[int, list[int]] = defaultdict(list)
    for channel_id, msg_id in dict.fromkeys(keys):
        by_channel[channel_id].append(msg_id)
    for channel_id, msg_ids in by_channel.items():
        for chunk in chunks(msg_ids):
            yield and_(Message.channel_id == channel_id, Message.msg_id.in_(chunk))


def _columns(channel_id: int, item: Incoming, content: Content, stamp: datetime) -> dict[str, Any]:
    fwd = item.forward
    columns = {
        "channel_id": channel_id,
        "msg_id": item.message_id,
        "date": item.date,
        # A page that only says "edited" gives no time: when it was seen so is the time known.
        "edit_date": item.edit_date or (stamp if item.edited else None),
        "raw_text": stored_raw_text(item.text, content.text),
        "entities": [{k: v for k, v in asdict(e).items() if v is not None} for e in item.entities],
        "text": content.text,
        "title": content.title,
        "hashtags": list(content.hashtags),
        "mentions": list(content.mentions),
        "urls": list(content.urls),
        "media": list(content.media),
        "fingerprint": content.fingerprint,
        "media_key": item.media_key,
        "forwarded_from": (fwd.name or fwd.username) if fwd else None,
        "fwd_tg_id": fwd.tg_id if fwd else None,
        "fwd_post_id": fwd.post_id if fwd else None,
        "grouped_id": item.grouped_id,
        "views": item.views,
        "link_preview": item.link_preview,
        "signature": item.signature,
        "deleted": False,
        "created_at": stamp,
        "updated_at": stamp,
    }
    return {name: storable(value) if isinstance(value, str) else value for name, value in columns.items()}
