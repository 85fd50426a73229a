"""One t.me/s web preview page -> the posts on it. Pure: HTML in, `Incoming` out, no I/O.

Only the post's own text (`.tgme_widget_message_text.js-message_text`) becomes text. Everything else
the bubble shows - the reply quote, the forwarded header, media placeholders ("Please open Telegram to
view this post", "Media is too big"), the link preview card - becomes a field or a media flag, which is
what keeps the noise of a flattened page out of the fingerprint.

Channel ids: a post's `data-view` is base64 JSON whose "c" is the channel id negated, without the Bot
API's -100 prefix (`{"c":-1005640892}` is the channel Telethon calls 1005640892). `ChannelRef.tg_id`
is the bare positive id, so "c" is negated; a -100-prefixed value, should the page ever carry one, is
unwrapped the way Telethon's `resolve_id` does.

One post never costs the page: a message whose markup cannot be read (an id that is no number, or
anything the parser trips on) becomes a `Rejected` entry beside the posts, and the others are read.
The text walk uses its own stack, not recursion, so nesting costs no Python frames; past `MAX_DEPTH`
levels an element's text is taken flat (its words kept for the rules, its formatting dropped), since
no post Telegram renders nests that deep and a page that does must not cost the post its alert.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from urllib.parse import unquote, urlsplit

from selectolax.lexbor import LexborHTMLParser, LexborNode

from bot.errors import first_line
from bot.parse import media as vocabulary
from bot.parse.model import Entity
from bot.sources.model import ChannelRef, Forward, Incoming, Rejected

log = logging.getLogger(__name__)

_BOT_API_CHANNEL_OFFSET = 1_000_000_000_000
# Levels of markup inside a post's text that keep their formatting; deeper is read as plain text.
# Telegram's entities nest a handful deep, so this is far past any real post.
MAX_DEPTH = 64


class NotAChannelPage(ValueError):
    """The page is not a public channel's preview (no channel header and no posts)."""


@dataclass(frozen=True, slots=True)
class Page:
    channel: ChannelRef
    posts: list[Incoming]  # oldest first
    before: int | None  # `?before=` value of the "load more" link; None on the oldest page
    # Messages that could not be read; `message_id` set where their id could.
    rejected: list[Rejected] = field(default_factory=list)


class _BadPost(ValueError):
    """A message whose markup says nothing usable about it (no channel, an id that is no number)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def parse_page(html: str, username: str | None = None) -> Page:
    """Parse a t.me/s page. `username` names the channel when the page has no posts to name it."""
    tree = LexborHTMLParser(html)
    header = tree.css_first(".tgme_channel_info_header_title")
    page_title = _clean(header.text()) if header is not None else None

    posts: list[Incoming] = []
    bad: list[tuple[str, int | None, str, str]] = []  # ref, id, reason, detail
    channel: ChannelRef | None = None
    service: ChannelRef | None = None  # the channel a service message names, for a page of only those
    for node in tree.css("div.tgme_widget_message[data-post]"):
        if "service_message" in _classes(node):
            # "channel created", "pinned ...": not posts, but they say whose page this is.
            if service is None:
                owner = (node.attributes.get("data-post") or "").rpartition("/")[0] or None
                service = ChannelRef(tg_id=_channel_id(node.attributes.get("data-view")), username=owner)
            continue
        raw_id = (node.attributes.get("data-post") or "").rpartition("/")[2]
        try:
            post = _parse_message(node, page_title)
        except _BadPost as exc:
            bad.append((raw_id, None, exc.reason, str(exc)))
            continue
        except Exception as exc:  # whatever else one message trips on: the page's other posts go on
            bad.append((raw_id, _int(raw_id), "unparsable", f"{type(exc).__name__}: {first_line(exc)}"))
            continue
        if channel is None:
            channel = post.channel
        posts.append(post)

    if channel is None:
        # A channel's page with no posts to read still says it is one: by its header, its service
        # messages, or the history section t.me fills with "No posts found".
        if header is None and service is None and tree.css_first(".tgme_channel_history") is None:
            raise NotAChannelPage("no channel header and no posts: not a public channel's preview")
        service = service or ChannelRef()
        named = _header_username(tree) or service.username or _main_username(tree) or username
        channel = ChannelRef(tg_id=service.tg_id, username=named, title=page_title)
    elif channel.tg_id is None or channel.title is None:
        found = next((p.channel for p in posts if p.channel.tg_id is not None), channel)
        channel = ChannelRef(tg_id=found.tg_id, username=channel.username, title=channel.title or found.title)
    # One ChannelRef for every post of the page, however much each message carried.
    for p in posts:
        p.channel = channel
    posts.sort(key=lambda p: p.message_id)

    more = tree.css_first("a.tme_messages_more[data-before]")
    before = _int(more.attributes.get("data-before")) if more is not None else None
    rejected = [Rejected(channel, ref, reason, detail, message_id) for ref, message_id, reason, detail in bad]
    return Page(channel=channel, posts=posts, before=before, rejected=rejected)


def _parse_message(node: LexborNode, page_title: str | None) -> Incoming:
    post = node.attributes.get("data-post") or ""
    username, _, raw_id = post.rpartition("/")
    message_id = _int(raw_id)
    if not username or message_id is None:
        raise _BadPost("bad_id", f"data-post is not channel/number: {post[:80]!r}")
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
        text=vocabulary.with_poll(text, _poll(node)),
        entities=entities,
        media=_media(node),
        date=_date(node),
        edited=_edited(node),
        signature=_signature(node),
        forward=_forward(node),
        views=_views(node),
        link_preview=link_preview,
        media_key=vocabulary.media_key(photo_url=_photo_url(node)),
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


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, and the walk makes many
class _Close:
    """An element the walk has entered: where its text began, to make its entity once it ends."""

    node: LexborNode
    tag: str | None
    classes: list[str]
    start: int  # UTF-16 offset
    before: int  # index into the builder's parts


class _TextBuilder:
    """Walks a message text's HTML, producing the plain text and entities counted in UTF-16 units."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[Entity] = []
        self.flattened = False  # some of the text lay deeper than MAX_DEPTH and was read flat

    def add(self, s: str) -> None:
        if s:
            self.parts.append(s)
            self.pos += _utf16_len(s)

    def walk(self, root: LexborNode) -> None:
        # A stack of its own, not recursion: a post's nesting is the page's to choose, and Python's
        # frames are not. Each level is an element's children still to read, and the element, whose
        # entity is made once they are done; the stack's height is the depth.
        stack: list[tuple[Iterator[LexborNode], _Close | None]] = [(root.iter(include_text=True), None)]
        while stack:
            children, opened = stack[-1]
            for node in children:  # resumes where the level was left when a child element was entered
                tag = node.tag
                if tag == "-text":
                    self.add(node.text_content or "")
                elif tag == "br":
                    self.add("\n")
                elif tag in ("script", "style", "-comment"):
                    pass
                elif tag == "i" and "emoji" in _classes(node):
                    # An emoji image; its character is the inner <b>, which must not read as bold.
                    self.add(node.text(deep=True))
                elif len(stack) > MAX_DEPTH:
                    self.flattened = True
                    self.add(node.text(deep=True))  # lexbor's own walk: no Python frames either
                else:
                    entered = _Close(node, tag, _classes(node), self.pos, len(self.parts))
                    stack.append((node.iter(include_text=True), entered))
                    break
            else:
                stack.pop()
                if opened is not None:
                    self.close(opened)

    def close(self, opened: _Close) -> None:
        start, tag, classes = opened.start, opened.tag, opened.classes
        length = self.pos - start
        if not length:
            return
        if tag == "a":
            label = "".join(self.parts[opened.before :])
            href = opened.node.attributes.get("href") or ""
            self.entities.append(_link_entity(href, label, start, length))
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
        if builder.flattened:
            post = node.attributes.get("data-post")
            log.debug("web: post %s nests deeper than %d levels; read flat past them", post, MAX_DEPTH)
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

def _media(node: LexborNode) -> list[str]:
    """The post's media in the shared vocabulary (`bot.parse.media`, which holds the class table)."""
    flags: list[str] = []
    for el in node.traverse():
        classes = _classes(el)
        if not classes:
            continue
        if vocabulary.WEB_VIDEO_PLAYER in classes:
            # A GIF and a video share the player; only what it holds tells them apart.
            inside = (c for child in el.traverse() for c in _classes(child))
            flag: str | None = vocabulary.web_video_flag(classes, inside)
        else:
            flag = vocabulary.web_flag(classes)
        if flag is None and "message_media_not_supported_label" in classes:
            label = " ".join(el.text().split()).casefold()
            if vocabulary.WEB_TOO_BIG_LABEL in label:
                flag = vocabulary.TOO_BIG
            elif vocabulary.WEB_WITHHELD_LABEL in label and not _shown_beside(el):
                flag = vocabulary.UNSUPPORTED
        if flag is not None and flag not in flags:
            flags.append(flag)
    return vocabulary.refined(flags)


_BACKGROUND_URL = re.compile(r"background-image\s*:\s*url\(\s*['\"]?([^'\")]+)")


def _photo_url(node: LexborNode) -> str | None:
    """The address of the post's first photo, as the CDN serves it (a style's background image)."""
    for wrap in node.css(".tgme_widget_message_photo_wrap"):
        found = _BACKGROUND_URL.search(wrap.attributes.get("style") or "")
        if found:
            return found.group(1).strip()
    return None


def _shown_beside(label: LexborNode) -> bool:
    """Whether a withheld-notice is only t.me's fallback: its `media_not_supported_cont` has a
    `media_supported_cont` sibling that shows the content (custom emoji, albums, stickers)."""
    el = label.parent
    while el is not None and "media_not_supported_cont" not in _classes(el):
        if "tgme_widget_message" in _classes(el):
            return False
        el = el.parent
    if el is None or el.parent is None:
        return False
    return any("media_supported_cont" in _classes(c) for c in el.parent.iter())


def _poll(node: LexborNode) -> str:
    poll = node.css_first(".tgme_widget_message_poll")
    if poll is None:
        return ""
    question = poll.css_first(".tgme_widget_message_poll_question")
    options = poll.css(".tgme_widget_message_poll_option_text")
    asked = _clean(question.text()) if question is not None else None
    return vocabulary.poll_text(asked or "", (_clean(o.text()) or "" for o in options))


def _edited(node: LexborNode) -> bool:
    meta = node.css_first(".tgme_widget_message_meta")
    return meta is not None and "edited" in meta.text(deep=False).split()


def _signature(node: LexborNode) -> str | None:
    el = node.css_first(".tgme_widget_message_from_author")
    return _clean(el.text()) if el is not None else None


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


def _main_username(tree: LexborHTMLParser) -> str | None:
    # <main class="tgme_main" data-url="/name">: the page's own path.
    main = tree.css_first("main.tgme_main[data-url]")
    path = (main.attributes.get("data-url") or "").strip("/") if main is not None else ""
    return path or None


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
