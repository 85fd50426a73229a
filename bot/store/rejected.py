"""Rejected posts: what a source or the ingest path skipped, one row each, so a skipped post is seen.

A post a hostile or broken page keeps showing is skipped on every poll; it is recorded once (by
channel, ref and reason), so the table and the metric say how many posts were lost, not how often.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.sources.model import MAX_MESSAGE_ID, Rejected, storable
from bot.store import channels as channel_rows
from bot.store.models import RejectedPost

_DETAIL = 200  # characters: a reason, not a dump of the post


def record(session: Session, rejected: Rejected, stamp: datetime) -> bool:
    """Record one rejected post and move its channel's cursor past it; False if it was recorded before."""
    if rejected.message_id is not None and 0 < rejected.message_id <= MAX_MESSAGE_ID:
        row = channel_rows.upsert(session, rejected.channel)
        if row.last_seen_id is None or rejected.message_id > row.last_seen_id:
            row.last_seen_id = rejected.message_id
    key, ref, reason = rejected.channel.key, storable(rejected.ref[:64]), rejected.reason[:32]
    seen = session.scalar(
        select(RejectedPost.id)
        .where(RejectedPost.channel == key, RejectedPost.ref == ref, RejectedPost.reason == reason)
        .limit(1)
    )
    if seen is not None:
        return False
    detail = storable(rejected.detail[:_DETAIL])
    session.add(RejectedPost(channel=key, ref=ref, reason=reason, detail=detail, created_at=stamp))
    return True
