"""One t.me/s web preview page -> the posts on it. Pure: HTML in, `Incoming` out, no I/O.

Only the post's own text (`.tgme_widget_message_text.js-message_text`) becomes text. Everything else
the bubble shows - the reply quote, the forwarded header, media placeholders ("Please open Telegram to
view this post", "Media is too big"), the link preview card - becomes a field or a media flag, which is
what keeps the noise of a flattened page out of the fingerprint.

Channel ids: a post's `data-view` is base64 JSON whose "c" is the channel id negated, without the Bot
API's -100 prefix (`{"c":-1005640892}` is the channel Telethon calls 1005640892). `ChannelRef.tg_id`
is the bare positive id, so "c" is negated; a -100-prefixed value, should the page ever carry one, is
unwrapped the way Telethon's `resolve_id` does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import unquote, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from bot.parse.model import Entity
from bot.sources.model import ChannelRef, Forward, Incoming

_BOT_API_CHANNEL_OFFSET = 1_000_000_000_000


class NotAChannelPage(ValueError):
    """The page is not a public channel's preview (no channel header and no posts)."""


@dataclass(frozen=True, slots=True)
class Page:
    channel: ChannelRef
    posts: list[Incoming]  # oldest first
    before: int | None  # `?before=` value of the "load more" link; None on the oldest page


def parse_page(html: str, username: str | None = None) -> Page:
    """Parse a t.me/s page. `username` names the channel when the page has no posts to name it."""
    tree = LexborHTMLParser(html)
    header = tree.css_first(".tgme_channel_info_header_title")
    page_title = _clean(header.text()) if header is not None else None

    posts: list[Incoming] = []
    channel: ChannelRef | None = None
    for node in tree.css("div.tgme_widget_message[data-post]"):
        if "service_message" in _classes(node):
            continue  # "channel created", "pinned ...": not posts
        post = _parse_message(node, page_title)
        if post is None:
            continue
        if channel is None:
            channel = post.channel
        posts.append(post)

    if channel is None:
        if header is None:
            raise NotAChannelPage("no channel header and no posts: not a public channel's preview")
        channel = ChannelRef(username=_header_username(tree) or username, title=page_title)
    elif channel.tg_id is None or channel.title is None:
        found = next((p.channel for p in posts if p.channel.tg_id is not None), channel)
        channel = ChannelRef(tg_id=found.tg_id, username=channel.username, title=channel.title or found.title)
    # One ChannelRef for every post of the page, however much each message carried.
    for p in posts:
        p.channel = channel
    posts.sort(key=lambda p: p.message_id)

    more = tree.css_first("a.tme_messages_more[data-before]")
    before = _int(more.attributes.get("data-before")) if more is not None else None
    return Page(channel=channel, posts=posts, before=before)


def _parse_message(node: LexborNode, page_title: str | None) -> Incoming | None:
    post = node.attributes.get("data-post") or ""
    username, _, raw_id = post.rpartition("/")
    message_id = _int(raw_id)
    if not username or message_id is None:
        return None
    owner = node.css_first(".tgme_widget_message_owner_name")
    title = page_title or (_clean(owner.text()) if owner is not None else None)
    channel = ChannelRef(tg_id=_channel_id(node.attributes.get("data-view")), username=username, title=title)

    link_preview = _link_preview(node)
    # The reply quote and the link preview are other posts' and pages' words: once the preview is
    # read, both leave the tree, so nothing below can mistake their text, media or date for the post's.
    for other in node.css("a.tgme_widget_message_reply, a.tgme_widget_message_link_preview"):
        other.decompose()
    text, entities = _post_text(node)
    return Incoming(
        channel=channel,
        message_id=message_id,
        text=text,
        entities=entities,
        media=_media(node),
        date=_date(node),
        forward=_forward(node),
        views=_views(node),
        link_preview=link_preview,
    )


def _channel_id(data_view: str | None) -> int | None:
    if not data_view:
        return None
    try:
        raw = base64.urlsafe_b64decode(data_view + "=" * (-len(data_view) % 4))
        c = int(json.loads(raw)["c"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    c = abs(c)
    return c - _BOT_API_CHANNEL_OFFSET if c > _BOT_API_CHANNEL_OFFSET else c


# --- text and entities -------------------------------------------------------------------------------

_STYLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-spoiler": "spoiler",
}


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


class _TextBuilder:
    """Walks a message text's HTML, producing the plain text and entities counted in UTF-16 units."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[Entity] = []

    def add(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.pos += _utf16_len(s)

    def walk(self, node: LexborNode) -> None:
        for child in node.iter(include_text=True):
            self.visit(child)

    def visit(self, node: LexborNode) -> None:
        tag = node.tag
        if tag == "-text":
            self.add(node.text_content or "")
            return
        if tag == "br":
            self.add("\n")
            return
        if tag in ("script", "style", "-comment"):
            return
        classes = _classes(node)
        if tag == "i" and "emoji" in classes:
            # An emoji image; its character is the inner <b>, which must not read as bold.
            self.add(node.text(deep=True))
            return
        start = self.pos
        before = len(self.parts)
        self.walk(node)
        length = self.pos - start
        if not length:
            return
        if tag == "a":
            label = "".join(self.parts[before:])
            self.entities.append(_link_entity(node.attributes.get("href") or "", label, start, length))
        elif tag in _STYLE_TAGS:
            self.entities.append(Entity(_STYLE_TAGS[tag], start, length))
        elif tag == "span" and "tg-spoiler" in classes:
            self.entities.append(Entity("spoiler", start, length))

    def result(self) -> tuple[str, list[Entity]]:
        """The text with surrounding whitespace trimmed, entities moved and clipped to match."""
        text = "".join(self.parts)
        stripped = text.strip()
        if not stripped:
            return "", []
        shift = _utf16_len(text[: len(text) - len(text.lstrip())])
        end = _utf16_len(stripped)
        out = []
        for e in self.entities:
            lo, hi = max(e.offset - shift, 0), min(e.offset + e.length - shift, end)
            if hi > lo:
                out.append(Entity(e.type, lo, hi - lo, e.url))
        out.sort(key=lambda e: (e.offset, -e.length))
        return stripped, out


def _link_entity(href: str, label: str, offset: int, length: int) -> Entity:
    if href.startswith("?q=%23") or (href.startswith("?q=") and label.startswith("#")):
        return Entity("hashtag", offset, length)
    if href.startswith("?q=%24") or (href.startswith("?q=") and label.startswith("$")):
        return Entity("cashtag", offset, length)
    if label.startswith("@") and _tme_username(href) == label[1:].lower():
        return Entity("mention", offset, length)
    if href.startswith("mailto:") and unquote(href[7:]) == label:
        return Entity("email", offset, length)
    if _same_url(href, label):
        return Entity("url", offset, length)
    return Entity("text_url", offset, length, url=href)


def _same_url(href: str, label: str) -> bool:
    """Telegram's auto-links: the label is the href, or the href with a scheme (and a slash) added."""
    h, lab = href.rstrip("/"), label.strip().rstrip("/")
    return h == lab or h in (f"http://{lab}", f"https://{lab}")


def _tme_username(href: str) -> str | None:
    parts = urlsplit(href)
    if parts.netloc.lower() not in ("t.me", "telegram.me"):
        return None
    path = parts.path.strip("/")
    return path.lower() if path and "/" not in path else None


def _post_text(node: LexborNode) -> tuple[str, list[Entity]]:
    # An album can show its caption more than once, whole or in part: a block already contained in
    # another is dropped, so each distinct text is kept once, in page order.
    blocks: list[tuple[str, list[Entity]]] = []
    # A block nested in another is contained in it too, and dropped the same way.
    for block in node.css(".tgme_widget_message_text.js-message_text"):
        builder = _TextBuilder()
        builder.walk(block)
        text, entities = builder.result()
        if not text or any(text in seen for seen, _ in blocks):
            continue
        inside = [i for i, (seen, _) in enumerate(blocks) if seen in text]
        if inside:  # the new block holds earlier ones: it takes the first one's place
            blocks[inside[0]] = (text, entities)
            blocks = [b for i, b in enumerate(blocks) if i not in inside[1:]]
        else:
            blocks.append((text, entities))
    if not blocks:
        return "", []
    text, entities = blocks[0]
    parts, out = [text], list(entities)
    pos = _utf16_len(text)
    for more, more_entities in blocks[1:]:
        pos += 2  # "\n\n"
        out.extend(Entity(e.type, e.offset + pos, e.length, e.url) for e in more_entities)
        parts.append(more)
        pos += _utf16_len(more)
    return "\n\n".join(parts), out


# --- the rest of the bubble ----------------------------------------------------------------------------

# Named as the Telethon source names them (bot/sources/telegram.py `media_of`), plus the preview's own
# "unsupported" (shown instead of the media) and "too_big" (a video it will not play).
_MEDIA_CLASSES = (
    ("media_not_supported_cont", "unsupported"),
    ("tgme_widget_message_photo_wrap", "photo"),
    ("tgme_widget_message_document_wrap", "document"),
    ("tgme_widget_message_voice_player", "voice"),
    ("tgme_widget_message_roundvideo_player", "video_note"),
    ("tgme_widget_message_sticker_wrap", "sticker"),
    ("tgme_widget_message_poll", "poll"),
    ("tgme_widget_message_location_wrap", "geo"),
)


def _media(node: LexborNode) -> list[str]:
    flags: list[str] = []
    for el in node.traverse():
        classes = _classes(el)
        if not classes:
            continue
        flag = None
        if "tgme_widget_message_video_player" in classes:
            flag = "too_big" if "not_supported" in classes else "video"
        elif "message_media_not_supported_label" in classes and "too big" in el.text().lower():
            flag = "too_big"
        else:
            flag = next((f for cls, f in _MEDIA_CLASSES if cls in classes), None)
        if flag is not None and flag not in flags:
            flags.append(flag)
    return flags


def _forward(node: LexborNode) -> Forward | None:
    header = node.css_first(".tgme_widget_message_forwarded_from")
    if header is None:
        return None
    link = header.css_first(".tgme_widget_message_forwarded_from_name")
    label = link if link is not None else header
    name = _clean(label.text().strip().removeprefix("Forwarded from"))
    href = link.attributes.get("href") if link is not None else None
    forward = Forward(name=name)
    if href:
        path = [p for p in urlsplit(href).path.split("/") if p]
        if len(path) >= 3 and path[0] == "c":  # private channel link: t.me/c/<bare id>/<post>
            forward = Forward(name=name, tg_id=_int(path[1]), post_id=_int(path[2]))
        elif path and path[0] not in ("s", "c"):
            forward = Forward(name=name, username=path[0], post_id=_int(path[1]) if len(path) > 1 else None)
    return forward


def _date(node: LexborNode) -> datetime | None:
    el = node.css_first("a.tgme_widget_message_date time[datetime]") or node.css_first(
        ".tgme_widget_message_footer time[datetime]"
    )
    if el is None:
        return None
    try:
        when = datetime.fromisoformat(el.attributes.get("datetime") or "")
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


_SCALE = {"": 1, "K": 1_000, "M": 1_000_000, "B": 1_000_000_000}


def parse_views(label: str) -> int | None:
    """ "4.2K" -> 4200, "1.3M" -> 1300000, "917" -> 917."""
    s = label.strip().upper().replace(",", "").replace(" ", "")
    suffix = s[-1:] if s[-1:] in _SCALE else ""
    try:
        return int(Decimal(s.removesuffix(suffix) if suffix else s) * _SCALE[suffix])
    except InvalidOperation:
        return None


def _views(node: LexborNode) -> int | None:
    el = node.css_first(".tgme_widget_message_views")
    return parse_views(el.text()) if el is not None else None


def _link_preview(node: LexborNode) -> dict[str, str | None] | None:
    card = node.css_first("a.tgme_widget_message_link_preview")
    if card is None:
        return None

    def part(selector: str) -> str | None:
        el = card.css_first(selector)
        if el is None:
            return None
        builder = _TextBuilder()
        builder.walk(el)
        return builder.result()[0] or None

    return {
        "site": part(".link_preview_site_name"),
        "title": part(".link_preview_title"),
        "description": part(".link_preview_description"),
        "url": card.attributes.get("href"),
    }


def _header_username(tree: LexborHTMLParser) -> str | None:
    el = tree.css_first(".tgme_channel_info_header_username")
    name = _clean(el.text()) if el is not None else None
    return name.lstrip("@") if name else None


# --- small helpers -------------------------------------------------------------------------------------


def _classes(node: LexborNode) -> list[str]:
    return (node.attributes.get("class") or "").split()


def _clean(s: str | None) -> str | None:
    s = " ".join((s or "").split())
    return s or None


def _int(s: str | None) -> int | None:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None
