"""Telethon offline, through its real code paths: the one place that touches its private seams.

A real `TelegramClient` (Telethon pinned to 1.45.0 in pyproject) is built inside the running loop and
never connects. Its `_sender` is replaced by `FakeTelegram`, which answers requests with real TL
response objects from an in-memory set of channels, and updates are fed through
`_preprocess_updates` and `_dispatch_update` as the update loop would. `RecordingSink` is an
in-memory Sink that keeps what it was given, for assertions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from telethon import TelegramClient, errors, functions, types
from telethon.sessions import StringSession

from bot.sources.model import ChannelRef, Incoming, IngestResult

API_ID = 12345
API_HASH = "0123456789abcdef0123456789abcdef"
SELF_ID = 4242
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

_ids = itertools.count(1_000_000)


# --- TL builders -----------------------------------------------------------------------------------


def channel(tg_id: int, username: str | None, title: str = "", *, left: bool = False) -> types.Channel:
    return types.Channel(
        id=tg_id,
        title=title or (username or str(tg_id)).upper(),
        photo=types.ChatPhotoEmpty(),
        date=T0,
        broadcast=True,
        left=left,
        access_hash=tg_id * 7 + 1,
        username=username,
    )


def photo() -> types.MessageMediaPhoto:
    return types.MessageMediaPhoto(
        photo=types.Photo(id=next(_ids), access_hash=1, file_reference=b"", date=T0, sizes=[], dc_id=2)
    )


def video() -> types.MessageMediaDocument:
    return types.MessageMediaDocument(
        document=types.Document(
            id=next(_ids),
            access_hash=1,
            file_reference=b"",
            date=T0,
            mime_type="video/mp4",
            size=1000,
            dc_id=2,
            attributes=[types.DocumentAttributeVideo(duration=3, w=640, h=360)],
        )
    )


def message(
    channel_id: int,
    msg_id: int,
    text: str = "",
    *,
    entities: Sequence[Any] | None = None,
    media: Any = None,
    grouped_id: int | None = None,
    fwd_from: types.MessageFwdHeader | None = None,
    date: datetime | None = None,
    edit_date: datetime | None = None,
    views: int | None = None,
) -> types.Message:
    return types.Message(
        id=msg_id,
        peer_id=types.PeerChannel(channel_id),
        date=date or T0 + timedelta(seconds=msg_id),
        message=text,
        post=True,
        entities=list(entities) if entities else None,
        media=media,
        grouped_id=grouped_id,
        fwd_from=fwd_from,
        edit_date=edit_date,
        views=views,
    )


def service(channel_id: int, msg_id: int) -> types.MessageService:
    return types.MessageService(
        id=msg_id,
        peer_id=types.PeerChannel(channel_id),
        date=T0 + timedelta(seconds=msg_id),
        action=types.MessageActionPinMessage(),
        post=True,
    )


# --- the fake server -------------------------------------------------------------------------------


@dataclass
class FakeChannel:
    chat: types.Channel
    messages: dict[int, Any] = field(default_factory=dict)
    private: bool = False

    @property
    def id(self) -> int:
        return self.chat.id


class FakeTelegram:
    """Stands in for Telethon's MTProtoSender: `is_connected()` and `send(request)` returning a future."""

    def __init__(self) -> None:
        self.channels: dict[int, FakeChannel] = {}
        self.requests: list[Any] = []
        self.connected = True
        self.authorized = True
        self.pages: list[int] = []  # how many messages each GetHistory answer held
        self._failures: list[list[Any]] = []  # [type, exc, skip, times]
        self.disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- set up --
    def add_channel(
        self, tg_id: int, username: str | None, *, left: bool = False, title: str = ""
    ) -> FakeChannel:
        fc = FakeChannel(channel(tg_id, username, title, left=left))
        self.channels[tg_id] = fc
        return fc

    def post(self, tg_id: int, *messages: Any) -> list[Any]:
        for m in messages:
            self.channels[tg_id].messages[m.id] = m
        return list(messages)

    def fill(
        self, tg_id: int, ids: Iterable[int], text: str = "post {id}", date: datetime | None = None
    ) -> list[types.Message]:
        return self.post(tg_id, *(message(tg_id, i, text.format(id=i), date=date) for i in ids))

    def fail(
        self, request_type: type, exc: Callable[[Any], BaseException], times: int = 1, after: int = 0
    ) -> None:
        """Raise `exc(request)` for `times` requests of that type (-1: always), once `after` went through."""
        self._failures.append([request_type, exc, after, times])

    def flood(self, request_type: type, seconds: int, times: int = 1, after: int = 0) -> None:
        self.fail(request_type, lambda req: errors.FloodWaitError(request=req, capture=seconds), times, after)

    def restarted(self) -> FakeTelegram:
        """The same server as a new process sees it: same channels, fresh connection and request log."""
        fresh = FakeTelegram()
        fresh.channels = self.channels
        return fresh

    def sent(self, request_type: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, request_type)]

    # -- the sender interface Telethon uses --
    def is_connected(self) -> bool:
        return self.connected

    async def disconnect(self) -> None:
        self.connected = False
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def drop(self) -> None:
        """The network went away: the client's `disconnected` future completes."""
        self.connected = False
        if not self.disconnected.done():
            self.disconnected.set_exception(ConnectionError("connection reset"))
            self.disconnected.exception()  # retrieved: no "never retrieved" warning if nobody waits

    def reconnect(self) -> None:
        self.connected = True
        self.disconnected = asyncio.get_running_loop().create_future()

    def send(self, request: Any, ordered: bool = False) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.requests.append(request)
        try:
            if not self.connected:
                raise ConnectionError("not connected")
            fut.set_result(self._answer(request))
        except BaseException as e:
            fut.set_exception(e)
        return fut

    def _answer(self, req: Any) -> Any:
        for failure in self._failures:
            ty, exc, skip, times = failure
            if not isinstance(req, ty) or times == 0:
                continue
            if skip > 0:
                failure[2] -= 1
                continue
            if times > 0:
                failure[3] -= 1
            raise exc(req)
        if not self.authorized:
            raise errors.AuthKeyUnregisteredError(request=req)
        if isinstance(req, functions.updates.GetStateRequest):
            return types.updates.State(pts=1, qts=0, date=T0, seq=0, unread_count=0)
        if isinstance(req, functions.contacts.ResolveUsernameRequest):
            name = req.username.lower()
            fc = next((c for c in self.channels.values() if (c.chat.username or "").lower() == name), None)
            if fc is None:
                raise errors.UsernameNotOccupiedError(request=req)
            peer = types.PeerChannel(fc.id)
            return types.contacts.ResolvedPeer(peer=peer, chats=[self._chat(fc)], users=[])
        if isinstance(req, functions.channels.GetChannelsRequest):
            chats = []
            for ic in req.id:
                fc = self.channels.get(ic.channel_id)
                if fc is None or ic.access_hash != fc.chat.access_hash:
                    raise errors.ChannelInvalidError(request=req)
                chats.append(self._chat(fc))
            return types.messages.Chats(chats=chats)
        if isinstance(req, functions.channels.JoinChannelRequest):
            fc = self._channel(req, req.channel)
            fc.chat.left = False
            return types.Updates(updates=[], users=[], chats=[fc.chat], date=T0, seq=0)
        if isinstance(req, functions.messages.GetHistoryRequest):
            return self._history(req)
        raise NotImplementedError(f"FakeTelegram cannot answer {type(req).__name__}")

    def _chat(self, fc: FakeChannel) -> Any:
        if fc.private:
            return types.ChannelForbidden(id=fc.id, access_hash=fc.chat.access_hash, title=fc.chat.title)
        return fc.chat

    def _channel(self, req: Any, peer: Any) -> FakeChannel:
        fc = self.channels.get(peer.channel_id)
        if fc is None or peer.access_hash != fc.chat.access_hash:
            raise errors.ChannelInvalidError(request=req)
        if fc.private:
            raise errors.ChannelPrivateError(request=req)
        return fc

    def _history(self, req: functions.messages.GetHistoryRequest) -> types.messages.ChannelMessages:
        fc = self._channel(req, req.peer)
        newest_first = sorted(fc.messages.values(), key=lambda m: m.id, reverse=True)
        # The window starts at the first message older than offset_id (or the newest), moved by
        # add_offset (negative: towards newer messages), `limit` long and clipped to the history.
        if req.offset_id:
            pos = next((i for i, m in enumerate(newest_first) if m.id < req.offset_id), len(newest_first))
        else:
            pos = 0
        start = pos + req.add_offset
        end = start + min(req.limit, 100)
        page = newest_first[max(0, start) : max(0, end)]
        page = [m for m in page if m.id > req.min_id and (not req.max_id or m.id < req.max_id)]
        self.pages.append(len(page))
        return types.messages.ChannelMessages(
            pts=1, count=len(newest_first), messages=page, topics=[], chats=[fc.chat], users=[]
        )


# --- the client ------------------------------------------------------------------------------------


def make_client(fake: FakeTelegram) -> TelegramClient:
    """A real client that believes it is connected (through `fake`) and knows who it is."""
    client = TelegramClient(StringSession(), API_ID, API_HASH)
    client._sender = fake
    # Without a self user, dispatch calls get_me() first.
    client._mb_entity_cache.set_self_user(SELF_ID, False, 99)

    async def connect() -> None:
        fake.reconnect()

    client.connect = connect  # type: ignore[method-assign]
    return client


async def push(client: TelegramClient, *updates: Any, chats: Sequence[Any] = ()) -> None:
    """Deliver updates as one `Updates` container, through the client's real dispatch."""
    container = types.Updates(updates=list(updates), users=[], chats=list(chats), date=T0, seq=0)
    for u in await client._preprocess_updates(container.updates, container.users, container.chats):
        await client._dispatch_update(u)


def new_post(msg: types.Message) -> types.UpdateNewChannelMessage:
    return types.UpdateNewChannelMessage(message=msg, pts=msg.id, pts_count=1)


def edited(msg: types.Message) -> types.UpdateEditChannelMessage:
    return types.UpdateEditChannelMessage(message=msg, pts=msg.id, pts_count=1)


def deleted(channel_id: int, ids: Sequence[int]) -> types.UpdateDeleteChannelMessages:
    return types.UpdateDeleteChannelMessages(
        channel_id=channel_id, messages=list(ids), pts=1, pts_count=len(ids)
    )


# --- a recording sink ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What a channel list entry gives a source."""

    name: str | None = None
    tg_id: int | None = None
    backfill: int = 0


class RecordingSink:
    """An in-memory Sink, idempotent by (channel, message id), that keeps every call for assertions.

    It counts an edit as the real ingest does, by `Revision`: the one definition of an edit."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.posts: dict[tuple[int | str, int], Incoming] = {}
        self.batches: list[list[Incoming]] = []
        self.deleted: dict[tuple[int | str, int], bool] = {}
        self.refs: dict[str, ChannelRef] = {}
        self.cursors: dict[int | str, int] = {}
        self.fail_next: BaseException | None = None
        self.ingested = 0
        self._changed = asyncio.Condition()

    @staticmethod
    def _ch(ref: ChannelRef) -> int | str:
        return ref.tg_id if ref.tg_id is not None else ref.key

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e
        new = updated = unchanged = 0
        for it in items:
            ch = self._ch(it.channel)
            key = (ch, it.message_id)
            if not self.keep:
                # Counting only (benchmarks): ids at or below the cursor count as seen.
                is_new = it.message_id > self.cursors.get(ch, 0)
                new, unchanged = new + is_new, unchanged + (not is_new)
            elif (old := self.posts.get(key)) is None:
                new += 1
                self.posts[key] = it
            else:
                if old.revision.edited(it.revision):
                    updated += 1
                else:
                    unchanged += 1
                self.posts[key] = replace_alert(it, old.alert)
            self.cursors[ch] = max(self.cursors.get(ch, 0), it.message_id)
        self.ingested += len(items)
        if self.keep:
            self.batches.append(list(items))
        async with self._changed:
            self._changed.notify_all()
        return IngestResult(read=len(items), new=new, updated=updated, unchanged=unchanged)

    async def delete(self, channel: ChannelRef, message_ids: Sequence[int]) -> int:
        n = 0
        for i in message_ids:
            key = (self._ch(channel), i)
            if key in self.posts:
                self.deleted[key] = True
                n += 1
        async with self._changed:
            self._changed.notify_all()
        return n

    async def cursor(self, channel: ChannelRef) -> int | None:
        return self.cursors.get(self._ch(channel))

    async def resolved(self, username: str) -> ChannelRef | None:
        return self.refs.get(username.lower())

    async def remember(self, channel: ChannelRef) -> None:
        if channel.username:
            self.refs[channel.username.lower()] = channel

    # -- for assertions --
    def items(self, tg_id: int) -> list[Incoming]:
        return [it for (ch, _), it in sorted(self.posts.items(), key=lambda kv: kv[0][1]) if ch == tg_id]

    def all_ingested(self) -> list[Incoming]:
        return [it for batch in self.batches for it in batch]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


def replace_alert(it: Incoming, alert: bool) -> Incoming:
    # The first ingest decides whether a post alerts; a later edit does not turn a baseline into an alert.
    return replace(it, alert=alert)


class ObservedSink:
    """Wraps a real Sink so a test can await what reached it (Telethon's album merge runs on a timer)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ingested: list[tuple[int | None, int]] = []  # (tg_id, message id), in order
        self._changed = asyncio.Condition()

    async def ingest(self, items: Sequence[Incoming]) -> IngestResult:
        result = await self.inner.ingest(items)
        self.ingested.extend((it.channel.tg_id, it.message_id) for it in items)
        async with self._changed:
            self._changed.notify_all()
        return result

    async def delete(self, channel: ChannelRef, message_ids: Sequence[int]) -> int:
        return await self.inner.delete(channel, message_ids)

    async def cursor(self, channel: ChannelRef) -> int | None:
        return await self.inner.cursor(channel)

    async def resolved(self, username: str) -> ChannelRef | None:
        return await self.inner.resolved(username)

    async def remember(self, channel: ChannelRef) -> None:
        await self.inner.remember(channel)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


def album_merges(client: TelegramClient) -> int:
    """How many album merges Telethon is holding (it never drops them by itself in 1.45)."""
    return len(client._albums)
