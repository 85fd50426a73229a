"""Telegram Desktop's JSON export (`result.json`), streamed: one message at a time, in constant memory.

Two shapes: one chat (`{name, type, id, messages[]}`) or the whole account
(`{..., chats: {list: [chat...]}, left_chats: {list: [chat...]}}`). A chat's `name`, `type` and `id`
come before its `messages` in every export Desktop writes, so each message is handed out with its
chat as soon as its closing brace is read; nothing else is kept.

A message's text is rebuilt from `text_entities` (or `text` when an old export has no entities): the
parts' texts joined, each styled part an `Entity` with UTF-16 offsets, as Telegram counts. A poll's
question and answers are appended to the text, so rules see them. Media become the shared vocabulary:
photo, video, gif, round_video, voice, audio, document, sticker, poll, location, contact.
Service messages ("channel created", "pinned") are not posts: they are counted, not returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import ijson

from bot.errors import InputError
from bot.parse import media
from bot.parse.model import Entity

# Desktop's part types -> the Bot API entity names the normaliser reads; "plain" carries no entity.
_ENTITY_TYPES = {
    "bold": "bold",
    "italic": "italic",
    "underline": "underline",
    "strikethrough": "strikethrough",
    "spoiler": "spoiler",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "link": "url",
    "text_link": "text_url",
    "mention": "mention",
    "mention_name": "text_mention",
    "hashtag": "hashtag",
    "cashtag": "cashtag",
    "bot_command": "bot_command",
    "email": "email",
    "phone": "phone_number",
    "bank_card": "bank_card",
    "custom_emoji": "custom_emoji",
}
# Chats whose id is a channel id (Telethon's PeerChannel, t.me/s's data-view): broadcast channels and
# supergroups. Personal chats, bots and basic groups number their ids in other spaces.
CHANNEL_TYPES = frozenset({"public_channel", "private_channel", "public_supergroup", "private_supergroup"})


@dataclass(frozen=True, slots=True)
class ExportChat:
    id: int | None
    name: str | None
    type: str | None

    @property
    def is_channel(self) -> bool:
        return self.type in CHANNEL_TYPES and self.id is not None


@dataclass(frozen=True, slots=True)
class ExportMessage:
    chat: ExportChat
    id: int
    date: datetime | None
    edited: datetime | None
    text: str
    entities: tuple[Entity, ...] = ()
    media: tuple[str, ...] = ()
    forwarded_from: str | None = None
    author: str | None = None
    reply_to: int | None = None


@dataclass(slots=True)
class ExportStats:
    messages: int = 0
    service: int = 0  # "channel created", "pinned ...": skipped
    unsupported: int = 0  # type "unsupported", or no id: skipped
    chats: list[ExportChat] = field(default_factory=list)


def _utf16_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-16-le")) // 2


def _parts_text(value: Any) -> str:
    """`text` (or a poll's question or answer), a string or a list of strings and parts, as one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in value if p is not None)
    return ""


def _text_and_entities(msg: dict[str, Any]) -> tuple[str, list[Entity]]:
    # `text_entities` is the flat list of parts; `text` says the same, nested. Should the two ever
    # disagree, `text` is what the reader saw.
    parts: Any = msg.get("text_entities")
    text = msg.get("text")
    if not isinstance(parts, list) or (text is not None and _parts_text(parts) != _parts_text(text)):
        parts = text
    if isinstance(parts, str):
        return parts, []
    if not isinstance(parts, list):
        return "", []
    pieces: list[str] = []
    entities: list[Entity] = []
    offset = 0
    for part in parts:
        if isinstance(part, str):
            piece, kind, href = part, None, None
        elif isinstance(part, dict):
            piece = str(part.get("text", ""))
            kind = _ENTITY_TYPES.get(str(part.get("type", "")))
            href = part.get("href")
        else:
            continue
        length = _utf16_len(piece)
        if kind is not None and length:
            entities.append(Entity(kind, offset, length, href if isinstance(href, str) else None))
        pieces.append(piece)
        offset += length
    return "".join(pieces), entities


def _poll_text(poll: Any) -> str:
    if not isinstance(poll, dict):
        return ""
    answers = poll.get("answers") or ()
    options = (_parts_text(a.get("text")) for a in answers if isinstance(a, dict))
    return media.poll_text(_parts_text(poll.get("question")), options)


def _media(msg: dict[str, Any]) -> list[str]:
    flags = []
    if "photo" in msg:
        flags.append(media.PHOTO)
    if "file" in msg or "media_type" in msg:
        flags.append(media.EXPORT_MEDIA_TYPES.get(str(msg.get("media_type")), media.DOCUMENT))
    if "poll" in msg:
        flags.append(media.POLL)
    if "location_information" in msg:
        flags.append(media.LOCATION)
    if "contact_information" in msg:
        flags.append(media.CONTACT)
    return flags


def _when(msg: dict[str, Any], key: str) -> datetime | None:
    """`date_unixtime` when there (it is UTC); else the local wall-clock `date`, read as local time."""
    stamp = msg.get(f"{key}_unixtime")
    try:
        if stamp is not None:
            return datetime.fromtimestamp(int(stamp), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    raw = msg.get(key)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo else value.astimezone(UTC)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def message_of(chat: ExportChat, msg: dict[str, Any]) -> ExportMessage | None:
    """One exported message; None for what is not a post (no id)."""
    msg_id = _int(msg.get("id"))
    if msg_id is None:
        return None
    text, entities = _text_and_entities(msg)
    text = media.with_poll(text, _poll_text(msg.get("poll")))
    fwd = msg.get("forwarded_from")
    author = msg.get("author")
    return ExportMessage(
        chat=chat,
        id=msg_id,
        date=_when(msg, "date"),
        edited=_when(msg, "edited"),
        text=text,
        entities=tuple(entities),
        media=tuple(_media(msg)),
        forwarded_from=fwd if isinstance(fwd, str) and fwd else None,
        author=author if isinstance(author, str) and author else None,
        reply_to=_int(msg.get("reply_to_message_id")),
    )


NOT_AN_EXPORT = 'JSON, but not a Telegram Desktop export (no "messages" list, nor "chats" with a "list")'
# Where messages sit: the one chat's, or each chat's in the account's lists.
_CHAT_PREFIXES = ("", "chats.list.item", "left_chats.list.item")
# What sits where in an export: the name an error gives it, and the events it may start with
# (ijson's; a map's keys and ends are reported at the map's own prefix). The lists make it an export.
_ARRAY = ("a list", frozenset({"start_array", "end_array"}))
_MAP = ("an object", frozenset({"start_map", "map_key", "end_map"}))
_LISTS = {
    "messages": ("messages", *_ARRAY),
    "chats.list": ("chats.list", *_ARRAY),
    "left_chats.list": ("left_chats.list", *_ARRAY),
    "chats.list.item.messages": ("chats.list[].messages", *_ARRAY),
    "left_chats.list.item.messages": ("left_chats.list[].messages", *_ARRAY),
}
_SHAPES = {**_LISTS, "chats": ("chats", *_MAP), "left_chats": ("left_chats", *_MAP)}


def read_export(stream: BinaryIO, source: str, stats: ExportStats | None = None) -> Iterator[ExportMessage]:
    """The messages of an export, in file order, one at a time; `stats` counts what is skipped.

    Bad JSON, or JSON without `messages` or `chats` at the top, is an InputError naming `source`.
    """
    stats = stats if stats is not None else ExportStats()
    messages_at = {f"{p}.messages.item" if p else "messages.item": p for p in _CHAT_PREFIXES}
    chat_fields = {f"{p}.{k}" if p else k: (p, k) for p in _CHAT_PREFIXES for k in ("id", "name", "type")}
    current: dict[str, dict[str, Any]] = {p: {} for p in _CHAT_PREFIXES}
    chats: dict[str, ExportChat | None] = dict.fromkeys(_CHAT_PREFIXES)
    shaped = False
    builder: ijson.ObjectBuilder | None = None
    depth = 0
    building_at = ""
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if builder is not None:
                builder.event(event, value)
                if event in ("start_map", "start_array"):
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                    if depth == 0:
                        msg, builder = builder.value, None
                        yield from _one(chats, current, building_at, msg, stats)
                continue
            if prefix in messages_at and event == "start_map":
                building_at = messages_at[prefix]
                builder, depth = ijson.ObjectBuilder(), 1
                builder.event(event, value)
            elif prefix in chat_fields:
                chat_prefix, key = chat_fields[prefix]
                current[chat_prefix][key] = value
            elif prefix in _SHAPES:
                # A chat's messages and the account's chats must be what Desktop writes; anything
                # else is a file that only looks like an export, refused rather than read as empty.
                name, kind, events = _SHAPES[prefix]
                if event not in events:
                    raise InputError(f"{source}: not a Telegram Desktop export: \"{name}\" is not {kind}")
                shaped = shaped or prefix in _LISTS
            elif event == "start_map" and prefix in ("chats.list.item", "left_chats.list.item"):
                current[prefix], chats[prefix] = {}, None
    except ijson.JSONError as exc:
        raise InputError(f"{source}: not valid JSON: {str(exc).splitlines()[0][:120]}") from None
    if not shaped:
        raise InputError(f"{source}: {NOT_AN_EXPORT}")


def _one(
    chats: dict[str, ExportChat | None],
    current: dict[str, dict[str, Any]],
    at: str,
    msg: Any,
    stats: ExportStats,
) -> Iterator[ExportMessage]:
    chat = chats[at]
    if chat is None:
        fields = current[at]
        name = fields.get("name")
        chat = chats[at] = ExportChat(
            id=_int(fields.get("id")),
            name=name if isinstance(name, str) else None,
            type=fields.get("type") if isinstance(fields.get("type"), str) else None,
        )
        stats.chats.append(chat)
    if not isinstance(msg, dict):
        return
    kind = msg.get("type", "message")
    if kind == "service":
        stats.service += 1
        return
    message = message_of(chat, msg) if kind == "message" else None
    if message is None:
        stats.unsupported += 1
        return
    stats.messages += 1
    yield message
