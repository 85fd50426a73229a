"""A file as a source, whichever of the three it is: a text dump, a saved t.me/s page, or a Telegram
Desktop export. `parse`, `replay`, `rules test` and `import` all read files through here, so every
command understands every format, and each post comes out as the same `Incoming` and record.

The format is told from the file's first bytes (`bot.parse.detect`); an export is streamed, the
other two are read whole (a dump or a page is small).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from bot.errors import InputError
from bot.parse import decode_dump, normalise
from bot.parse.detect import SNIFF, Format, detect, open_input
from bot.parse.export import ExportChat, ExportMessage, ExportStats, read_export
from bot.parse.model import Content
from bot.sources.dump import dump_items
from bot.sources.model import ChannelRef, Forward, Incoming
from bot.sources.webpage import NotAChannelPage, parse_page


@dataclass(slots=True)
class FilePost:
    index: int  # 0-based position in the file
    item: Incoming
    content: Content
    positional: bool = False  # a dump's post: its id is only its position, it has no channel or date


class InputFile:
    """An opened input: its format, its size and how far it has been read (for a progress bar)."""

    def __init__(self, path: str) -> None:
        self.name = "<stdin>" if path == "-" else path
        self.stream: BinaryIO
        if path == "-":
            self.stream = io.BytesIO(sys.stdin.buffer.read())
        else:
            self.stream = open_input(path)  # closed by close()
        try:
            self.size = self.stream.seek(0, io.SEEK_END)
            self.stream.seek(0)
            self.format: Format = detect(self.stream.read(SNIFF), self.name)
            self.stream.seek(0)
        except BaseException:
            self.close()
            raise
        self.stats = ExportStats()

    def position(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def posts(self, *, dump: str | None = None, channels_only: bool = False) -> Iterator[FilePost]:
        """The file's posts in order. `dump` keys them all to channel dump:NAME (replay), with a
        dump's 1-based positions as ids; otherwise a page's and an export's posts keep their channel.
        `channels_only` skips an export's chats that are not channels (personal chats, groups)."""
        if self.format == "export":
            yield from self._export(dump, channels_only)
            return
        data = self.stream.read()
        if self.format == "dump":
            text = decode_dump(data, self.name)
            for item in dump_items(text, dump or "dump"):
                assert item.content is not None
                yield FilePost(item.message_id - 1, item, item.content, positional=True)
            return
        try:
            page = parse_page(decode_dump(data, self.name))
        except NotAChannelPage:
            raise InputError(f"{self.name}: HTML, but not a t.me/s channel page") from None
        for index, item in enumerate(page.posts):
            if dump:
                item.channel = ChannelRef(dump=dump, title=f"dump:{dump}")
            yield FilePost(index, item, normalise(item.text, item.entities, item.media))

    def _export(self, dump: str | None, channels_only: bool) -> Iterator[FilePost]:
        refs: dict[int, ChannelRef | None] = {}  # by the chat object: one per chat of the export

        def ref_of(chat: ExportChat) -> ChannelRef | None:
            key = id(chat)  # the reader hands out one ExportChat per chat, kept in self.stats
            if key not in refs:
                k = len(refs)
                if dump:
                    # Message ids count per chat: a second chat under one dump name would collide.
                    name = dump if k == 0 else f"{dump}-{chat.id if chat.id is not None else k}"
                    refs[key] = ChannelRef(dump=name, title=f"dump:{name}")
                elif chat.is_channel:
                    refs[key] = ChannelRef(tg_id=chat.id, title=chat.name)
                else:
                    refs[key] = None
            return refs[key]

        index = 0
        for msg in read_export(self.stream, self.name, self.stats):
            ref = ref_of(msg.chat)
            if ref is None:
                if channels_only:
                    continue
                ref = ChannelRef(title=msg.chat.name)
            item = export_item(msg, ref)
            yield FilePost(index, item, normalise(item.text, item.entities, item.media))
            index += 1


def export_item(msg: ExportMessage, ref: ChannelRef) -> Incoming:
    """An exported message as every source hands a post to the ingest path."""
    return Incoming(
        channel=ref,
        message_id=msg.id,
        text=msg.text,
        entities=list(msg.entities),
        media=list(msg.media),
        date=msg.date,
        edit_date=msg.edited,
        signature=msg.author,
        forward=Forward(name=msg.forwarded_from) if msg.forwarded_from else None,
    )


def record(post: FilePost) -> dict[str, Any]:
    """A post as `tgsentinel parse` prints it: one shape for a dump, a page and an export.

    A dump's posts have no channel, id or date (null); `index` is the 0-based position in the file.
    """
    item, content = post.item, post.content
    ref = item.channel
    known = (ref.dump is not None and not post.positional) or bool(ref.tg_id or ref.username)
    return {
        "index": post.index,
        "channel": ref.key if known else None,
        "message_id": None if post.positional else item.message_id,
        "date": item.date.isoformat() if item.date else None,
        # When, if the source says; a page says only that it was ("edited" without a time): true.
        "edited": item.edit_date.isoformat() if item.edit_date else (True if item.edited else None),
        "forwarded_from": (item.forward.name or item.forward.username) if item.forward else None,
        "signature": item.signature,
        "title": content.title,
        "text": content.text,
        "hashtags": list(content.hashtags),
        "mentions": list(content.mentions),
        "urls": list(content.urls),
        "media": list(content.media),
        "fingerprint": content.fingerprint,
    }
