"""The one ingest path every source calls: normalise, store, match, queue alerts — one transaction.

It is idempotent by channel and message id: feeding the same post twice changes nothing, and an edit
updates the text while keeping the earlier version in `message_edits`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select, tuple_, update
from sqlalchemy.orm import Session

from bot import metrics
from bot.parse import normalise
from bot.parse.model import Content
from bot.rules.model import RuleMatch
from bot.sources.model import ChannelRef, Incoming, IngestResult
from bot.store import channels as channel_rows
from bot.store.channels import now
from bot.store.db import run_sync
from bot.store.models import Channel, Match, Message, MessageEdit

log = logging.getLogger(__name__)

_CHUNK = 500  # keeps IN (...) lists under every database's parameter limit


class Matcher(Protocol):
    """The rule stage as ingest sees it (bot.rules.engine.Engine fits)."""

    def match(self, post: Any) -> list[RuleMatch]: ...


@dataclass(slots=True)
class Changed:
    """A post that is new or whose text changed: what the match and alert stages look at."""

    item: Incoming
    content: Content
    message_id: int
    channel: Channel
    is_edit: bool
    matches: list[tuple[RuleMatch, Match]] = field(default_factory=list)


class AlertStage(Protocol):
    def enqueue(self, session: Session, changed: Sequence[Changed]) -> list[int]:
        """Write alerts and their deliveries for new matches; return the new delivery ids."""
        ...


class Ingest:
    """Implements bot.sources.model.Sink over the store."""

    def __init__(
        self,
        engine: Engine,
        *,
        matcher: Callable[[], Matcher | None] = lambda: None,
        alerts: AlertStage | None = None,
        on_commit: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.matcher = matcher  # a callable, so a hot reload swaps the rule set between batches
        self.alerts = alerts
        self.on_commit = on_commit  # wakes the delivery worker as soon as the rows are visible

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_sync(self.engine, fn, *args)

    # -- Sink -------------------------------------------------------------------------------------

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        if not items:
            return IngestResult()
        result, delivery_ids = await self._run(self.ingest_sync, items)
        if delivery_ids and self.on_commit is not None:
            self.on_commit(delivery_ids)
        return result

    async def delete(self, channel: ChannelRef, message_ids: Sequence[int]) -> int:
        return await self._run(self._delete_sync, channel, list(message_ids))

    async def cursor(self, channel: ChannelRef) -> int | None:
        return await self._run(self._cursor_sync, channel)

    async def resolved(self, username: str) -> ChannelRef | None:
        return await self._run(self._resolved_sync, username)

    async def remember(self, channel: ChannelRef) -> None:
        await self._run(self._remember_sync, channel)

    # -- the work, in the database thread ----------------------------------------------------------

    def ingest_sync(self, items: Sequence[Incoming]) -> tuple[IngestResult, list[int]]:
        prepared = [(item, item.content or normalise(item.text, item.entities, item.media)) for item in items]
        counts = dict.fromkeys(("read", "new", "updated", "unchanged", "duplicates", "matches"), 0)
        counts["read"] = len(prepared)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            rows = {ref: channel_rows.upsert(session, ref) for ref in {item.channel for item, _ in prepared}}
            existing = _existing(session, [(rows[i.channel].id, i.message_id) for i, _ in prepared])
            known = _known_fingerprints(session, {c.fingerprint for _, c in prepared if c.fingerprint})
            changed: list[Changed] = []
            inserts: dict[tuple[int, int], dict[str, Any]] = {}
            stamp = now()
            for item, content in prepared:
                channel = rows[item.channel]
                key = (channel.id, item.message_id)
                row = existing.get(key)
                if key in inserts:
                    continue  # the same post twice in one batch: the first copy wins
                if row is None:
                    inserts[key] = _columns(channel.id, item, content, stamp)
                    counts["new"] += 1
                    if content.fingerprint is not None:
                        counts["duplicates"] += content.fingerprint in known
                        known.add(content.fingerprint)
                    changed.append(Changed(item, content, 0, channel, is_edit=False))
                    metrics.POSTS_INGESTED.labels(item.channel.key).inc()
                elif _edited(row, item, content):
                    session.add(
                        MessageEdit(
                            message_id=row.id,
                            edit_date=row.edit_date,
                            raw_text=row.raw_text,
                            text=row.text,
                            recorded_at=stamp,
                        )
                    )
                    for name, value in _columns(channel.id, item, content, stamp).items():
                        if name not in ("created_at", "deleted") and not (name == "date" and value is None):
                            setattr(row, name, value)
                    counts["updated"] += 1
                    changed.append(Changed(item, content, row.id, channel, is_edit=True))
                else:
                    if item.views is not None and row.views != item.views:
                        row.views = item.views
                    counts["unchanged"] += 1
                if channel.last_seen_id is None or item.message_id > channel.last_seen_id:
                    channel.last_seen_id = item.message_id
            session.flush()
            if inserts:
                # A plain executemany, then the new ids in one query per chunk: the ORM's unit of work,
                # and RETURNING across insertmanyvalues batches, are the slow part of a replay.
                session.connection().execute(insert(Message), list(inserts.values()))
                ids = _ids(session, list(inserts))
                for c in changed:
                    if not c.is_edit:
                        c.message_id = ids[(c.channel.id, c.item.message_id)]
            matcher = self.matcher()
            if matcher is not None and changed:
                counts["matches"] = _match(session, matcher, changed, stamp)
            delivery_ids = self.alerts.enqueue(session, changed) if self.alerts and counts["matches"] else []
        new_matches = tuple((c.item.message_id, rm.rule_id, rm.terms) for c in changed for rm, _ in c.matches)
        return IngestResult(**counts, new_matches=new_matches), delivery_ids

    def _delete_sync(self, ref: ChannelRef, ids: list[int]) -> int:
        with Session(self.engine) as session, session.begin():
            channel = channel_rows.find(session, ref)
            if channel is None or not ids:
                return 0
            marked = 0
            for start in range(0, len(ids), _CHUNK):
                res = session.execute(
                    update(Message)
                    .where(Message.channel_id == channel.id, Message.msg_id.in_(ids[start : start + _CHUNK]))
                    .where(Message.deleted.is_(False))
                    .values(deleted=True, deleted_at=now())
                )
                marked += res.rowcount or 0
            return marked

    def _cursor_sync(self, ref: ChannelRef) -> int | None:
        with Session(self.engine) as session:
            channel = channel_rows.find(session, ref)
            return channel.last_seen_id if channel is not None else None

    def _resolved_sync(self, username: str) -> ChannelRef | None:
        with Session(self.engine) as session:
            row = session.scalar(select(Channel).where(Channel.username == username.lower().lstrip("@")))
            if row is None or row.tg_id is None:
                return None
            return channel_rows.to_ref(row)

    def _remember_sync(self, ref: ChannelRef) -> None:
        with Session(self.engine) as session, session.begin():
            row = channel_rows.upsert(session, ref)
            row.resolved_at = now()


def _existing(session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], Message]:
    found: dict[tuple[int, int], Message] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        for row in session.scalars(
            select(Message).where(tuple_(Message.channel_id, Message.msg_id).in_(chunk))
        ):
            found[(row.channel_id, row.msg_id)] = row
    return found


def _known_fingerprints(session: Session, fingerprints: set[str]) -> set[str]:
    known: set[str] = set()
    listed = list(fingerprints)
    for start in range(0, len(listed), _CHUNK):
        known.update(
            session.scalars(
                select(Message.fingerprint).where(Message.fingerprint.in_(listed[start : start + _CHUNK]))
            )
        )
    return known


def _ids(session: Session, keys: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    found: dict[tuple[int, int], int] = {}
    for start in range(0, len(keys), _CHUNK):
        rows = session.execute(
            select(Message.id, Message.channel_id, Message.msg_id).where(
                tuple_(Message.channel_id, Message.msg_id).in_(keys[start : start + _CHUNK])
            )
        )
        found.update({(channel_id, msg_id): pk for pk, channel_id, msg_id in rows})
    return found


def _entities(item: Incoming) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(e).items() if v is not None} for e in item.entities]


def _columns(channel_id: int, item: Incoming, content: Content, stamp: datetime) -> dict[str, Any]:
    fwd = item.forward
    columns = {
        "channel_id": channel_id,
        "msg_id": item.message_id,
        "date": item.date,
        "edit_date": item.edit_date,
        "raw_text": item.text,
        "entities": _entities(item),
        "text": content.text,
        "title": content.title,
        "hashtags": list(content.hashtags),
        "mentions": list(content.mentions),
        "urls": list(content.urls),
        "media": list(content.media),
        "fingerprint": content.fingerprint,
        "forwarded_from": (fwd.name or fwd.username) if fwd else None,
        "fwd_tg_id": fwd.tg_id if fwd else None,
        "fwd_post_id": fwd.post_id if fwd else None,
        "grouped_id": item.grouped_id,
        "views": item.views,
        "link_preview": item.link_preview,
        "deleted": False,
        "created_at": stamp,
        "updated_at": stamp,
    }
    for name, value in columns.items():
        if isinstance(value, str):
            columns[name] = _storable(value)
    return columns


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL; a post must not be lost for one stray control character.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _edited(row: Message, item: Incoming, content: Content) -> bool:
    return row.raw_text != _storable(item.text) or list(row.media) != list(content.media)


def _match(session: Session, matcher: Matcher, changed: list[Changed], stamp: datetime) -> int:
    """Record matches, unique per rule and message: an edit records only rules that match anew."""
    from bot.rules.engine import MatchInput  # the engine module is heavy only when rules exist

    edited_ids = [c.message_id for c in changed if c.is_edit]
    already: set[tuple[str, int]] = set()
    for start in range(0, len(edited_ids), _CHUNK):
        already.update(
            session.execute(
                select(Match.rule_id, Match.message_id).where(
                    Match.message_id.in_(edited_ids[start : start + _CHUNK])
                )
            ).all()
        )
    recorded = 0
    for c in changed:
        names = channel_rows.names(c.channel)
        post = MatchInput(
            text=c.content.text,
            hashtags=c.content.hashtags,
            channel_names=names,
            is_forward=c.item.forward is not None,
            is_edit=c.is_edit,
        )
        for rm in matcher.match(post):
            if (rm.rule_id, c.message_id) in already:
                continue
            row = Match(
                rule_id=rm.rule_id,
                message_id=c.message_id,
                channel_id=c.channel.id,
                terms=list(rm.terms),
                hits=[[h.term, h.start, h.end] for h in rm.hits],
                created_at=stamp,
            )
            session.add(row)
            c.matches.append((rm, row))
            metrics.MATCHES.labels(rm.rule_id).inc()
            recorded += 1
    if recorded:
        session.flush()
    return recorded


def batched(items: Iterable[Incoming], size: int = 500) -> Iterable[list[Incoming]]:
    batch: list[Incoming] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
