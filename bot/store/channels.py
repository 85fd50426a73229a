"""Channel rows: found by Telegram id, then username; a dump is a channel of its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot import channel
from bot.sources.model import ChannelRef, storable
from bot.store.db import chunks
from bot.store.models import Channel, Message


def now() -> datetime:
    return datetime.now(UTC)


def find(session: Session, ref: ChannelRef) -> Channel | None:
    if ref.dump:
        return session.scalar(select(Channel).where(Channel.dump == ref.key))
    row = None
    if ref.tg_id is not None:
        row = session.scalar(select(Channel).where(Channel.tg_id == ref.tg_id))
    if row is None and ref.username:
        row = session.scalar(select(Channel).where(Channel.username == ref.username.lower()))
        if row is not None and row.tg_id is not None and ref.tg_id is not None and row.tg_id != ref.tg_id:
            # The username moved to another channel: the old row gives it up.
            row.username = None
            row = None
    return row


def upsert(session: Session, ref: ChannelRef) -> Channel:
    """The channel's row, created or brought up to date with what the source knows now."""
    row = find(session, ref)
    if row is None:
        row = Channel(
            tg_id=ref.tg_id,
            username=ref.username.lower() if ref.username and not ref.dump else None,
            dump=ref.key if ref.dump else None,
            title=_text(ref.title or (ref.dump if ref.dump else ref.username)),
            access_hash=ref.access_hash,
            created_at=now(),
        )
        session.add(row)
        session.flush()
        return row
    if ref.dump:
        return row
    if ref.tg_id is not None and row.tg_id is None:
        row.tg_id = ref.tg_id
    if ref.username and row.username != ref.username.lower():
        taken = session.scalar(select(Channel).where(Channel.username == ref.username.lower()))
        if taken is not None and taken is not row:
            taken.username = None
            session.flush()
        row.username = ref.username.lower()
    if ref.title and row.title != _text(ref.title):
        row.title = _text(ref.title)
    if ref.access_hash is not None and row.access_hash != ref.access_hash:
        row.access_hash = ref.access_hash
        row.resolved_at = now()
    return row


def _text(value: str | None) -> str | None:
    return storable(value) if value else value


def to_ref(row: Channel) -> ChannelRef:
    if row.dump:
        return ChannelRef(dump=row.dump.removeprefix("dump:"), title=row.title)
    return ChannelRef(tg_id=row.tg_id, username=row.username, title=row.title, access_hash=row.access_hash)


def names(row: Channel) -> frozenset[str]:
    """Every name a rule's channel scope may use for this channel, lower case."""
    return channel.names(username=row.username, tg_id=row.tg_id, dump=row.dump)


def label(row: Channel) -> str:
    return channel.label(username=row.username, title=row.title, tg_id=row.tg_id, dump=row.dump)


def cursor(session: Session, ref: ChannelRef) -> int | None:
    """The highest message id stored for the channel; None for a channel never seen."""
    row = find(session, ref)
    return row.last_seen_id if row is not None else None


def resolved(session: Session, username: str) -> ChannelRef | None:
    """A username resolved earlier, so a restart need not resolve it again."""
    row = session.scalar(select(Channel).where(Channel.username == username.lower().lstrip("@")))
    if row is None or row.tg_id is None:
        return None
    return to_ref(row)


def remember(session: Session, ref: ChannelRef) -> None:
    upsert(session, ref).resolved_at = now()


def mark_deleted(session: Session, ref: ChannelRef, ids: Sequence[int]) -> int:
    """Mark posts deleted (their text is kept); returns how many were marked."""
    row = find(session, ref)
    if row is None or not ids:
        return 0
    marked = 0
    for chunk in chunks(list(ids)):
        res = session.execute(
            update(Message)
            .where(Message.channel_id == row.id, Message.msg_id.in_(chunk), Message.deleted.is_(False))
            .values(deleted=True, deleted_at=now())
        )
        marked += res.rowcount or 0
    return marked
