"""The live source: a Telethon user account that watches channels and never silently misses a post.

Telethon's update stream has holes (a channel gap over 100 posts is skipped, quiet channels are polled
every 15 minutes, reconnects lose updates), so live events are only a fast path. What makes the
source complete is the per-channel `confirmed` id: every post up to it has been handed to the sink,
in order. A live post that does not follow it directly triggers a catch-up through GetHistory first,
so the store's highest id (the sink's cursor) never runs ahead of a hole, even across a crash.

Health: the source is connected while its client is. A channel that cannot be watched (no such
username, private, not a channel) is a problem, reported once (health, metrics, ops) and not tried
again until a reload of the rules; a catch-up that fails for any other reason is retried at the next
sweep, and a long failure is an outage notice (`Health.outages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol, TypeVar

from telethon import TelegramClient, errors, events, functions, types, utils
from telethon.events.common import EventBuilder
from telethon.tl.custom.message import Message

from bot import metrics
from bot.backoff import Backoff
from bot.health import Health, Ops, tell
from bot.pacer import Pacer
from bot.parse import media
from bot.parse.model import Entity
from bot.settings import Settings
from bot.sources.model import ChannelRef, Forward, Incoming, IngestResult, Sink, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

SOURCE = "telegram"
# An album has at most 10 parts with (nearly) consecutive ids. The store keeps an album under its
# smallest id, so a sweep starts this far below the cursor to see whole albums and not mistake a
# stored album's later parts for a new one.
ALBUM_LOOKBACK = 20
FLUSH_EVERY = 100  # messages a sweep hands to the sink at a time, so a long gap is not held in memory
GET_CHANNELS_BATCH = 100
RECENT_ALBUMS = 256
LOGIN_HINT = "run `tgsentinel login` (or set TELEGRAM_SESSION to a string session) and start again"

# Errors that mean the session itself is gone: retrying cannot help.
SESSION_ERRORS: tuple[type[BaseException], ...] = (errors.UnauthorizedError, errors.AuthKeyError)


class SessionError(Exception):
    """The Telegram session is missing, revoked or expired: the process must stop and say how to log in."""

    exit_code = 1


class ChannelEntryLike(Protocol):
    name: str | None
    tg_id: int | None
    backfill: int


class ChannelProblem(Exception):
    """A channel that cannot be watched (unresolvable, private, not a channel): reported, not fatal.

    `kind` names it in health and metrics: not_found, private, not_a_channel, unknown_id."""

    def __init__(self, message: str, kind: str = "private") -> None:
        super().__init__(message)
        self.kind = kind


_ENTITY_TYPES: dict[type, str] = {
    types.MessageEntityMention: "mention",
    types.MessageEntityHashtag: "hashtag",
    types.MessageEntityCashtag: "cashtag",
    types.MessageEntityBotCommand: "bot_command",
    types.MessageEntityUrl: "url",
    types.MessageEntityEmail: "email",
    types.MessageEntityPhone: "phone_number",
    types.MessageEntityBold: "bold",
    types.MessageEntityItalic: "italic",
    types.MessageEntityUnderline: "underline",
    types.MessageEntityStrike: "strikethrough",
    types.MessageEntitySpoiler: "spoiler",
    types.MessageEntityCode: "code",
    types.MessageEntityPre: "pre",
    types.MessageEntityTextUrl: "text_url",
    types.MessageEntityMentionName: "text_mention",
    types.MessageEntityCustomEmoji: "custom_emoji",
    types.MessageEntityBankCard: "bank_card",
}


def entities_of(message: Message) -> list[Entity]:
    """Telethon's entities as Bot API ones. Offsets are UTF-16 units on both sides."""
    out: list[Entity] = []
    for e in message.entities or ():
        if isinstance(e, types.MessageEntityBlockquote):
            name = "expandable_blockquote" if e.collapsed else "blockquote"
        else:
            name = _ENTITY_TYPES.get(type(e))
        if name is None:
            continue
        out.append(Entity(type=name, offset=e.offset, length=e.length, url=getattr(e, "url", None)))
    return out


def media_of(message: Message) -> list[str]:
    """Media flags in the shared vocabulary (`bot.parse.media`); a link preview is not media (see
    `link_preview_of`)."""
    flag = media.telethon_flag(message.media)
    return [flag] if flag is not None else []


def media_key_of(message: Message) -> str | None:
    """The identity of the message's photo or file (see `bot.parse.media.media_key`)."""
    if message.photo is not None:
        return media.media_key(f"photo:{message.photo.id}")
    if message.document is not None:
        return media.media_key(f"document:{message.document.id}")
    return None


def poll_of(message: Message) -> str:
    """A poll's question and options as words, the way every route writes them; "" for no poll."""
    m = message.media
    if not isinstance(m, types.MessageMediaPoll):
        return ""
    poll = m.poll
    return media.poll_text(_plain(poll.question), (_plain(a.text) for a in poll.answers or ()))


def _plain(value: Any) -> str:
    # Layer 178 made poll questions and answers TextWithEntities; older layers had plain strings.
    return value if isinstance(value, str) else str(getattr(value, "text", "") or "")


def link_preview_of(message: Message) -> dict[str, Any] | None:
    m = message.media
    if isinstance(m, types.MessageMediaWebPage) and isinstance(m.webpage, types.WebPage):
        page = m.webpage
        return {
            "url": page.url,
            "site_name": page.site_name,
            "title": page.title,
            "description": page.description,
        }
    return None


def forward_of(message: Message) -> Forward | None:
    fwd = message.fwd_from
    if fwd is None:
        return None
    tg_id = username = None
    name = fwd.from_name
    if isinstance(fwd.from_id, types.PeerChannel):
        tg_id = fwd.from_id.channel_id
    # Telethon resolves the source only when its Channel came with the update or the history page.
    chat = message.forward.chat if message.forward is not None else None
    if chat is not None:
        name = getattr(chat, "title", None) or name
        username = getattr(chat, "username", None)
    return Forward(name=name, tg_id=tg_id, username=username, post_id=fwd.channel_post)


def to_incoming(channel: ChannelRef, parts: Sequence[Message], *, alert: bool = True) -> Incoming:
    """One post from a message, or from every part of an album (caption from the part that has text)."""
    parts = sorted(parts, key=lambda m: m.id)
    first = parts[0]
    captioned = next((m for m in parts if m.raw_text), first)
    edits = [m.edit_date for m in parts if m.edit_date is not None]
    views = [m.views for m in parts if m.views is not None]
    return Incoming(
        channel=channel,
        message_id=first.id,
        text=media.with_poll(captioned.raw_text or "", next((p for p in map(poll_of, parts) if p), "")),
        entities=entities_of(captioned),
        media=[flag for m in parts for flag in media_of(m)],
        date=first.date,
        edit_date=max(edits) if edits else None,
        signature=next((m.post_author for m in parts if m.post_author), None),
        forward=next((f for f in map(forward_of, parts) if f is not None), None),
        grouped_id=first.grouped_id,
        views=max(views) if views else None,
        link_preview=next((p for p in map(link_preview_of, parts) if p is not None), None),
        media_key=next((k for k in map(media_key_of, parts) if k is not None), None),
        alert=alert,
    )


def group_posts(messages: Iterable[Message]) -> list[list[Message]]:
    """Posts in id order: a single message, or every part of an album together."""
    posts: list[list[Message]] = []
    albums: dict[int, list[Message]] = {}
    for m in sorted(messages, key=lambda m: m.id):
        if m.grouped_id is None:
            posts.append([m])
        elif m.grouped_id in albums:
            albums[m.grouped_id].append(m)
        else:
            albums[m.grouped_id] = [m]
            posts.append(albums[m.grouped_id])
    return posts


@dataclass(slots=True)
class _Watched:
    entry: Any
    ref: ChannelRef
    peer: types.InputPeerChannel
    confirmed: int = 0  # every message up to this id has been handed to the sink
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> str:
        return self.ref.key


def _entry_key(entry: ChannelEntryLike) -> str:
    return ChannelRef(tg_id=entry.tg_id, username=entry.name).key


class TelegramSource:
    def __init__(
        self,
        client: TelegramClient,
        sink: Sink,
        health: Health,
        settings: Settings,
        ops: Ops | None = None,
        channels: Iterable[ChannelEntryLike] = (),
        *,
        pace: float | None = None,
        backoff: tuple[float, float] = (1.0, 60.0),
        account: str = "default",
    ) -> None:
        self.client = client
        self.account = account
        # Its own health line per account; the only account keeps the plain name.
        self.source = SOURCE if account == "default" else f"{SOURCE}:{account}"
        self.sink = sink
        self.health = health
        self.settings = settings
        self._ops = ops
        self._entries: dict[str, ChannelEntryLike] = {_entry_key(e): e for e in channels}
        # Resolving and joining are rate limited hard by Telegram (ResolveUsername bursts cost hours).
        self._pacer = Pacer(pace if pace is not None else settings.resolve_interval)
        self._reconnect = Backoff(*backoff, jitter=(0.5, 1.5))
        self._watched: dict[str, _Watched] = {}  # by entry key
        self._by_id: dict[int, _Watched] = {}
        # Channels that cannot be watched (no such name, private): not tried again until a reload
        # lists them again, since resolving a missing name again and again earns long FloodWaits.
        self._parked: set[str] = set()
        health.source(self.source)
        self._handlers: list[tuple[Callable[[Any], Awaitable[None]], EventBuilder]] = []
        self._fatal: SessionError | None = None
        # Albums already handed over (grouped_id), so parts arriving late are not a second post.
        self._recent_albums: OrderedDict[int, None] = OrderedDict()
        self._started = False
        self.flood_until = 0.0  # monotonic: the end of the account's latest FloodWait
        self.tell_session_loss = True  # off when `Accounts` tells ops, with where the channels went
        # Every FloodWait comes to us, so it is counted, shown and slept through with the work kept.
        client.flood_sleep_threshold = 0

    # --- public ----------------------------------------------------------------------------------

    @property
    def channels(self) -> list[ChannelRef]:
        return [w.ref for w in self._watched.values()]

    async def start(self) -> None:
        """Check the session, subscribe to every channel, register the handlers and catch up."""
        await self._check_session()
        self.health.set_connected(self.source, True)
        if not self._started:
            self._started = True
            await self._subscribe(list(self._entries.values()))
            self._register()
        await self.sweep_all()

    async def run(self) -> None:
        """Stay connected forever: reconnect with backoff and catch up after each reconnect.

        Only a lost session ends it (SessionError); network errors never do.
        """
        failures = 0
        if self.client.is_connected():
            self.health.set_connected(self.source, True)
        while True:
            try:
                if not self.client.is_connected():
                    await self.client.connect()
                await self.start()
                failures = 0
                await self.client.disconnected
            except SessionError:
                self.health.set_connected(self.source, False, "session lost")
                raise
            except Exception as e:
                # Network trouble of any kind: never fatal, the loop reconnects and catches up.
                reason = _describe(e)
                log.warning("telegram connection lost: %s", reason)
                self.health.set_connected(self.source, False, reason)
            if self._fatal is not None:
                self.health.set_connected(self.source, False, "session lost")
                raise self._fatal
            if self.health.sources[self.source].connected is not False:
                self.health.set_connected(self.source, False, "disconnected")
            failures += 1
            wait = self._reconnect.delay(failures)
            log.info("reconnecting to telegram in %.1fs", wait)
            await asyncio.sleep(wait)

    async def stop(self) -> None:
        self._unregister()
        await self.client.disconnect()
        self.health.set_connected(self.source, False, "stopped")

    async def update(self, channels: Iterable[ChannelEntryLike]) -> None:
        """Hot reload: subscribe new channels, drop removed ones; try parked ones still listed once more."""
        wanted = {_entry_key(e): e for e in channels}
        for key in [k for k in self._watched if k not in wanted]:
            w = self._watched.pop(key)
            self._by_id.pop(w.ref.tg_id or 0, None)
            self.health.forget(w.key, self.source)
        for key in [k for k in self._entries if k not in wanted]:
            self.health.forget(key, self.source)
        added = [e for k, e in wanted.items() if k not in self._watched]
        for key in wanted.keys() - self._watched.keys():
            self.health.watch(key, self.source)  # shown from the start, even before the client connects
        self._parked &= set(wanted)
        self._entries = wanted
        if not self._started:
            return
        await self._subscribe(added)
        self._register()  # also drops the removed channels from the handlers' filters
        for e in added:
            w = self._watched.get(_entry_key(e))
            if w is not None:
                await self._sweep_guarded(w)

    async def sweep_all(self) -> int:
        """Catch every watched channel up; returns how many posts were new. Subscribes the channels a
        network error kept from being subscribed (not the parked ones: they wait for a reload)."""
        missing = [e for k, e in self._entries.items() if k not in self._watched and k not in self._parked]
        if missing and self._started:
            await self._subscribe(missing)
            self._register()
        prune_albums(self.client)
        total = 0
        for w in list(self._watched.values()):
            total += await self._sweep_guarded(w)
        return total

    async def sweep(self, channel: ChannelRef | str) -> int:
        """Fetch everything newer than the channel's last seen id; returns how many posts were new.

        Raises what the fetch raised (health and ops are told first); FloodWaits are slept through.
        """
        w = self._find(channel)
        async with w.lock:
            return await self._sweep_locked(w)

    # --- session ---------------------------------------------------------------------------------

    async def _check_session(self) -> None:
        try:
            # GetState also tells Telegram this connection wants updates again.
            await self._call(lambda: self.client(functions.updates.GetStateRequest()), None)
        except SESSION_ERRORS as e:
            await self._session_lost(e)

    async def _session_lost(self, e: BaseException) -> NoReturn:
        if self.account == "default":
            msg = f"the Telegram session is not valid ({type(e).__name__}): {LOGIN_HINT}"
        else:
            msg = (
                f"the Telegram session of account {self.account} is not valid ({type(e).__name__}): run "
                f"`tgsentinel login --name {self.account}` (or set TELEGRAM_SESSION_{self.account.upper()})"
            )
        self._fatal = SessionError(msg)
        self.health.set_connected(self.source, False, "session lost")
        if self.tell_session_loss:
            await self._notice("session", "telegram", msg)
        raise self._fatal from None

    async def _stop_for_session(self, e: BaseException) -> None:
        # In an event handler nobody awaits our exception: disconnect, and `run` raises the SessionError.
        if not isinstance(e, SessionError):
            with contextlib.suppress(SessionError):
                await self._session_lost(e)
        await self.client.disconnect()

    # --- subscriptions ---------------------------------------------------------------------------

    async def _subscribe(self, entries: Sequence[ChannelEntryLike]) -> None:
        cached: list[tuple[ChannelEntryLike, ChannelRef]] = []
        fresh: list[tuple[ChannelEntryLike, Any]] = []
        for entry in entries:
            key = _entry_key(entry)
            self.health.watch(key, self.source)
            ref = await self.sink.resolved(entry.name) if entry.name else None
            if ref is not None and ref.tg_id is not None and ref.access_hash is not None:
                cached.append((entry, ref))
                continue
            try:
                fresh.append((entry, await self._resolve(entry)))
            except ChannelProblem as e:
                await self._cannot_watch(key, e)
        # One GetChannels for every cached channel tells who is still reachable and joined.
        for i in range(0, len(cached), GET_CHANNELS_BATCH):
            batch = cached[i : i + GET_CHANNELS_BATCH]
            chats = await self._get_channels([r for _, r in batch])
            for (entry, _), chat in zip(batch, chats, strict=True):
                if chat is None:
                    # The stored access hash no longer works: resolve the name again.
                    try:
                        chat = await self._resolve(entry)
                    except ChannelProblem as e:
                        await self._cannot_watch(_entry_key(entry), e)
                        continue
                fresh.append((entry, chat))
        for entry, chat in fresh:
            key = _entry_key(entry)
            try:
                await self._watch(entry, chat)
            except ChannelProblem as e:
                await self._cannot_watch(key, e)
            except SESSION_ERRORS as e:
                await self._session_lost(e)

    async def _resolve(self, entry: ChannelEntryLike) -> Any:
        """The Channel for an entry, from Telegram (paced). Raises ChannelProblem."""
        if entry.name is None:
            peer = types.PeerChannel(entry.tg_id or 0)
            try:
                input_peer = await self._call(lambda: self.client.get_input_entity(peer), None)
            except (ValueError, errors.RPCError) as e:
                raise ChannelProblem(
                    f"channel id {entry.tg_id} is unknown to this account; list it by username",
                    "unknown_id",
                ) from e
            ref = ChannelRef(tg_id=entry.tg_id, access_hash=input_peer.access_hash)
            got = await self._get_channels([ref])
            if got[0] is None:
                raise ChannelProblem(f"channel id {entry.tg_id} cannot be reached", "unknown_id")
            return got[0]
        name = entry.name
        await self._paced()
        try:
            request = functions.contacts.ResolveUsernameRequest(name)
            result = await self._call(lambda: self.client(request), None)
        except (errors.UsernameNotOccupiedError, errors.UsernameInvalidError) as e:
            raise ChannelProblem(f"@{name} does not exist (renamed or deleted?)", "not_found") from e
        except (errors.ChannelPrivateError, errors.ChannelInvalidError) as e:
            raise ChannelProblem(f"@{name} is private or unavailable") from e
        peer = result.peer
        if not isinstance(peer, types.PeerChannel):
            raise ChannelProblem(f"@{name} is not a channel", "not_a_channel")
        chat = next((c for c in result.chats if c.id == peer.channel_id), None)
        if not isinstance(chat, types.Channel):
            raise ChannelProblem(f"@{name} is private or unavailable")
        return chat

    async def _get_channels(self, refs: Sequence[ChannelRef]) -> list[Any]:
        """The Channel for each ref, or None where its access hash is rejected. Private ones raise later."""
        inputs = [types.InputChannel(r.tg_id or 0, r.access_hash or 0) for r in refs]
        try:
            res = await self._call(lambda: self.client(functions.channels.GetChannelsRequest(inputs)), None)
        except (errors.ChannelInvalidError, errors.ChannelPrivateError, errors.PeerIdInvalidError):
            if len(refs) == 1:
                return [None]
            # One bad hash fails the whole batch: ask one by one to find it.
            return [(await self._get_channels([r]))[0] for r in refs]
        by_id = {c.id: c for c in res.chats}
        return [by_id.get(r.tg_id or 0) for r in refs]

    async def _watch(self, entry: ChannelEntryLike, chat: Any) -> None:
        key = _entry_key(entry)
        if isinstance(chat, types.ChannelForbidden):
            raise ChannelProblem(f"{key} is private or this account was banned from it")
        if not isinstance(chat, types.Channel):
            raise ChannelProblem(f"{key} is not a channel", "not_a_channel")
        if entry.name and chat.username and chat.username.lower() != entry.name.lower():
            notice = f"channel {key} is now @{chat.username}; update the channels list"
            await self._notice("renamed", key, notice)
        ref = ChannelRef(
            tg_id=chat.id,
            username=entry.name or chat.username,
            title=chat.title,
            access_hash=chat.access_hash,
        )
        await self.sink.remember(ref)
        if chat.left:
            await self._join(ref)
        w = _Watched(entry=entry, ref=ref, peer=types.InputPeerChannel(chat.id, chat.access_hash or 0))
        if w.key != key:
            self.health.forget(key, self.source)
            self.health.watch(w.key, self.source)
        async with w.lock:
            cursor = await self.sink.cursor(ref)
            if cursor is None:
                stored = await self._baseline(w, entry.backfill)
                start = f"{stored} post{'' if stored == 1 else 's'} stored as the starting point, not alerted"
            else:
                w.confirmed = cursor
                start = f"resuming after message {cursor}"
        self._watched[key] = w
        self._by_id[chat.id] = w
        self._parked.discard(key)
        every = f"{self.settings.sweep_interval:g}s"
        log.info("%s: telegram, live updates and a catch-up sweep every %s; %s", w.key, every, start)

    async def _join(self, ref: ChannelRef) -> None:
        await self._paced()
        channel = types.InputChannel(ref.tg_id or 0, ref.access_hash or 0)
        try:
            await self._call(lambda: self.client(functions.channels.JoinChannelRequest(channel)), ref.key)
        except errors.UserAlreadyParticipantError:
            pass
        except errors.ChannelsTooMuchError:
            # Not fatal: the channel is still swept, only without live updates.
            await self._notice(
                "join", ref.key, f"cannot join {ref.key}: this account is in too many channels; polling only"
            )
        except (errors.ChannelPrivateError, errors.ChannelInvalidError, errors.InviteRequestSentError) as e:
            raise ChannelProblem(f"cannot join {ref.key}: {type(e).__name__}") from e

    async def _baseline(self, w: _Watched, backfill: int) -> int:
        """A new channel starts at its newest post: stored and matched (and `backfill` more), not alerted.

        Returns how many posts were stored."""
        want = max(1, backfill)
        # A few extra messages so the oldest album taken is whole.
        got = await self._call(
            lambda: self.client.get_messages(w.peer, limit=want + ALBUM_LOOKBACK // 2), w.key
        )
        msgs = [m for m in got if isinstance(m, types.Message)]
        posts = group_posts(msgs)[-want:]
        result = IngestResult()
        if posts:
            result = await self.sink.ingest([to_incoming(w.ref, p, alert=False) for p in posts])
        w.confirmed = max((m.id for m in got), default=0)
        return result.new

    async def _cannot_watch(self, key: str, e: ChannelProblem) -> None:
        """Parked until a reload lists it again; told to health, metrics and ops once."""
        self._parked.add(key)
        await self.health.report(self._ops, key, e.kind, str(e))

    async def _paced(self) -> None:
        await self._pacer.acquire()

    # --- handlers --------------------------------------------------------------------------------

    def _register(self) -> None:
        self._unregister()
        chats = [utils.get_peer_id(types.PeerChannel(i)) for i in self._by_id]
        if not chats:
            return
        self._handlers = [
            (self._on_new, events.NewMessage(chats=chats)),
            (self._on_album, events.Album(chats=chats)),
            (self._on_edit, events.MessageEdited(chats=chats)),
            (self._on_delete, events.MessageDeleted(chats=chats)),
        ]
        for callback, builder in self._handlers:
            self.client.add_event_handler(callback, builder)

    def _unregister(self) -> None:
        for callback, builder in self._handlers:
            self.client.remove_event_handler(callback, type(builder))
        self._handlers = []

    def _watched_for(self, chat_id: int | None) -> _Watched | None:
        if chat_id is None:
            return None
        return self._by_id.get(utils.resolve_id(chat_id)[0])

    async def _on_new(self, event: events.NewMessage.Event) -> None:
        if event.message.grouped_id is not None:
            return  # album parts arrive as one Album event
        w = self._watched_for(event.chat_id)
        if w is not None:
            await self._live(w, [event.message])

    async def _on_album(self, event: events.Album.Event) -> None:
        gid = event.grouped_id
        _forget_album(self.client, gid)
        w = self._watched_for(event.chat_id)
        if w is None:
            return
        if gid in self._recent_albums:
            # Parts that came after Telethon delivered the album: the post exists already.
            hi = max(m.id for m in event.messages)
            async with w.lock:
                if min(m.id for m in event.messages) == w.confirmed + 1:
                    w.confirmed = hi
            return
        await self._live(w, list(event.messages))
        self._recent_albums[gid] = None
        while len(self._recent_albums) > RECENT_ALBUMS:
            self._recent_albums.popitem(last=False)

    async def _on_edit(self, event: events.MessageEdited.Event) -> None:
        w = self._watched_for(event.chat_id)
        if w is None:
            return
        msg = event.message
        try:
            async with w.lock:
                if msg.id > w.confirmed:
                    # An edit of a post not yet seen: the catch-up fetches its current version.
                    await self._sweep_locked(w)
                    return
                parts = [msg]
                if msg.grouped_id is not None:
                    parts = await self._album_around(w, msg)
                await self.sink.ingest([to_incoming(w.ref, parts)])
        except (*SESSION_ERRORS, SessionError) as e:
            await self._stop_for_session(e)
        except StoreUnavailable as e:
            log.warning("%s: edit of message %d not stored (%s); sweeps do not see edits", w.key, msg.id, e)
        except Exception:
            log.exception("%s: edit of message %d not stored (sweeps do not see edits)", w.key, msg.id)

    async def _on_delete(self, event: events.MessageDeleted.Event) -> None:
        w = self._watched_for(event.chat_id)
        if w is None:
            return
        try:
            await self.sink.delete(w.ref, list(event.deleted_ids))
        except StoreUnavailable as e:
            log.warning("%s: deletion of %s not recorded (%s)", w.key, event.deleted_ids, e)
        except Exception:
            log.exception("%s: deletion of %s not recorded", w.key, event.deleted_ids)

    async def _live(self, w: _Watched, parts: list[Message]) -> None:
        lo, hi = min(m.id for m in parts), max(m.id for m in parts)
        try:
            async with w.lock:
                if hi <= w.confirmed:
                    return  # a catch-up already handed it over
                if lo == w.confirmed + 1:
                    await self.sink.ingest([to_incoming(w.ref, parts)])
                    w.confirmed = hi
                    self.health.posted(w.key, parts[0].date)
                else:
                    # Something between the last seen post and this one did not arrive (or was a
                    # service message, or was deleted): fetch the range, this post included, in order.
                    await self._sweep_locked(w)
                    if lo == w.confirmed + 1:
                        # The history did not show it yet; the update itself is as good.
                        await self.sink.ingest([to_incoming(w.ref, parts)])
                        w.confirmed = hi
        except (*SESSION_ERRORS, SessionError) as e:
            await self._stop_for_session(e)
        except StoreUnavailable:
            pass  # not lost: `confirmed` did not move, so the next sweep fetches it again
        except Exception as e:
            # Not lost: `confirmed` did not move, so the next sweep fetches it again.
            log.warning("%s: live post %d not stored yet (%s); the next sweep retries", w.key, lo, e)

    async def _album_around(self, w: _Watched, msg: Message) -> list[Message]:
        lo = max(0, msg.id - ALBUM_LOOKBACK // 2)
        got = await self._call(
            lambda: self.client.get_messages(
                w.peer, min_id=lo, max_id=msg.id + ALBUM_LOOKBACK // 2, reverse=True, limit=ALBUM_LOOKBACK
            ),
            w.key,
        )
        parts = [m for m in got if isinstance(m, types.Message) and m.grouped_id == msg.grouped_id]
        return parts or [msg]

    # --- sweeps ----------------------------------------------------------------------------------

    def _find(self, channel: ChannelRef | str) -> _Watched:
        if isinstance(channel, ChannelRef):
            if channel.tg_id is not None and channel.tg_id in self._by_id:
                return self._by_id[channel.tg_id]
            channel = channel.key
        for k, w in self._watched.items():
            if channel in (k, w.key):
                return w
        raise KeyError(f"not a watched channel: {channel}")

    async def _sweep_guarded(self, w: _Watched) -> int:
        try:
            async with w.lock:
                return await self._sweep_locked(w)
        except SessionError:
            raise
        except Exception:
            return 0  # reported by _sweep_locked

    async def _sweep_locked(self, w: _Watched) -> int:
        try:
            new = await self._catch_up(w)
        except SESSION_ERRORS as e:
            self.health.swept(w.key, ok=False, error="session lost")
            await self._session_lost(e)
        except (errors.ChannelPrivateError, errors.ChannelInvalidError) as e:
            # It was watched and now cannot be read: a problem of the channel, reported once. Swept
            # again each time (one cheap request), so it comes back by itself if it becomes public.
            await self.health.report(
                self._ops, w.key, "private", f"cannot catch up on {w.key}: {_describe(e)}"
            )
            raise
        except StoreUnavailable:
            raise  # Telegram answered: not the channel's failure (the store's health says it)
        except Exception as e:
            # Transient: the next sweep tries again, and a long failure is an outage notice.
            error = _describe(e)
            self.health.swept(w.key, ok=False, error=error)
            log.warning("%s: catch-up failed (%s); the next sweep retries", w.key, error)
            raise
        if new:
            metrics.POSTS_RECOVERED.labels(channel=w.key).inc(new)
        self.health.swept(w.key)
        return new

    async def _catch_up(self, w: _Watched) -> int:
        """Fetch every message after `confirmed` (in 100-message pages), album parts grouped."""
        floor = w.confirmed  # groups whose first part is at or below this are already stored
        after = max(0, floor - ALBUM_LOOKBACK)
        pending: list[Message] = []
        new = 0
        seen_max = floor

        async def flush(final: bool) -> None:
            nonlocal pending, new
            keep: list[Message] = []
            if not final and pending and pending[-1].grouped_id is not None:
                # The album may go on in the next page: keep it together.
                gid = pending[-1].grouped_id
                keep = [m for m in pending if m.grouped_id == gid]
                pending = [m for m in pending if m.grouped_id != gid]
            posts = [p for p in group_posts(pending) if p[0].id > floor]
            if posts:
                result: IngestResult = await self.sink.ingest([to_incoming(w.ref, p) for p in posts])
                new += result.new
                self.health.posted(w.key, posts[-1][0].date)
            w.confirmed = max(w.confirmed, max((m.id for m in pending), default=0))
            pending = keep

        while True:
            try:
                # wait_time=0: Telethon would otherwise pause 1 s between pages of an unbounded
                # iteration; Telegram's own limit is a FloodWait, which is slept through below.
                pages = self.client.iter_messages(w.peer, min_id=after, reverse=True, wait_time=0)
                async for m in pages:
                    after = m.id
                    if isinstance(m, types.Message):
                        pending.append(m)
                    seen_max = max(seen_max, m.id)
                    if len(pending) >= FLUSH_EVERY:
                        await flush(final=False)
                break
            except errors.FloodWaitError as e:
                # Resume after the last message received: nothing is fetched twice or skipped.
                await self._flood(e, w.key)
        await flush(final=True)
        w.confirmed = max(w.confirmed, seen_max)
        return new

    # --- FloodWait, ops --------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], Awaitable[T]], key: str | None) -> T:
        """Run a request, sleeping through every FloodWait and trying again."""
        while True:
            try:
                return await fn()
            except errors.FloodWaitError as e:
                await self._flood(e, key)

    async def _flood(self, e: errors.FloodWaitError, key: str | None) -> None:
        seconds = float(e.seconds)
        what = type(e.request).__name__ if getattr(e, "request", None) is not None else "request"
        metrics.FLOOD_WAIT_SECONDS.inc(seconds)
        self.health.flood_wait(seconds, key)
        self.flood_until = max(self.flood_until, time.monotonic() + seconds)
        log.warning("FloodWait of %ds on %s (%s): sleeping through it", seconds, what, key or "-")
        if seconds > self.settings.flood_wait_alert:
            notice = f"Telegram FloodWait of {seconds:.0f}s on {what}"
            await self._notice("floodwait", key or "telegram", notice)
        await asyncio.sleep(seconds)

    async def _notice(self, kind: str, key: str, message: str) -> None:
        await tell(self._ops, f"{SOURCE}.{kind}", message)


def _describe(e: BaseException) -> str:
    if isinstance(e, errors.ChannelPrivateError | errors.ChannelInvalidError):
        return "the channel is private or unavailable"
    if isinstance(e, errors.RPCError):
        return f"Telegram error {type(e).__name__}"
    return f"{type(e).__name__}: {e}"[:200]


def _forget_album(client: TelegramClient, grouped_id: int | None) -> None:
    # Telethon 1.45 keeps every album it has merged in `client._albums` and never removes them: over
    # months that grows without bound. Drop ours once delivered; `prune_albums` sweeps the rest.
    albums = getattr(client, "_albums", None)
    if isinstance(albums, dict):
        albums.pop(grouped_id, None)


def prune_albums(client: TelegramClient, older_than: float = 5.0) -> int:
    """Drop Telethon's delivered album merges (from any chat). Returns how many were dropped."""
    albums = getattr(client, "_albums", None)
    if not isinstance(albums, dict):
        return 0
    now = client.loop.time()
    stale = [gid for gid, hack in albums.items() if getattr(hack, "_due", now) < now - older_than]
    for gid in stale:
        albums.pop(gid, None)
    return len(stale)
