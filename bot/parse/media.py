"""The one media vocabulary, and how each route's markers map to it.

Every source (Telethon, the t.me/s preview, the Desktop export, a text dump) names a post's media with
these flags, so one post reads the same whichever way it came. Formatting (a blockquote, a spoiler) is
an entity, never media; a link preview is its own field.

`unsupported` means the content is withheld from the route ("Please open Telegram to view this post")
and nothing else on the page shows it; `too_big` is a video the preview will not play. Neither is a
difference of content, and media alone never makes an edit (`bot.sources.model.Revision`).

A poll is media (`poll`) and words: its question and options are appended to the post's text the same
way on every route (`with_poll`), so rules match them and the fingerprint covers them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

PHOTO = "photo"
VIDEO = "video"
GIF = "gif"
ROUND_VIDEO = "round_video"
VOICE = "voice"
AUDIO = "audio"
DOCUMENT = "document"
STICKER = "sticker"
POLL = "poll"
LOCATION = "location"
CONTACT = "contact"
TOO_BIG = "too_big"
UNSUPPORTED = "unsupported"

VOCABULARY: tuple[str, ...] = (
    PHOTO,
    VIDEO,
    GIF,
    ROUND_VIDEO,
    VOICE,
    AUDIO,
    DOCUMENT,
    STICKER,
    POLL,
    LOCATION,
    CONTACT,
    TOO_BIG,
    UNSUPPORTED,
)

# --- t.me/s ---------------------------------------------------------------------------------------
# CSS class of an element -> flag. Fallback blocks (`media_not_supported_cont`, "This media is not
# supported in your browser") are absent on purpose: t.me puts them beside real content (custom emoji,
# albums, stickers, videos), so they say nothing about what the post holds.
WEB_CLASSES: Mapping[str, str] = {
    "tgme_widget_message_photo_wrap": PHOTO,
    "tgme_widget_message_video_player": VIDEO,  # TOO_BIG or GIF by what it holds (see web_video_flag)
    "tgme_widget_message_roundvideo_player": ROUND_VIDEO,
    "tgme_widget_message_voice_player": VOICE,
    "tgme_widget_message_document_wrap": DOCUMENT,  # an `audio` icon inside: AUDIO (see web_flag)
    "tgme_widget_message_sticker_wrap": STICKER,
    "tgme_widget_message_poll": POLL,
    "tgme_widget_message_location_wrap": LOCATION,
}
WEB_VIDEO_PLAYER = "tgme_widget_message_video_player"
# A GIF is a video player with no play button: t.me plays it by itself, muted and looping
# (`<video ... autoplay loop>`, no `message_video_play`, no duration), as a real capture shows
# (tests/fixtures/web/real/any2feed_gif_player.html). Every real video, too big or not, has the button.
WEB_PLAY_BUTTON = "message_video_play"
WEB_DOCUMENT_ICON = "tgme_widget_message_document_icon"
# Labels of `message_media_not_supported_label`, casefolded.
WEB_WITHHELD_LABEL = "please open telegram to view this post"
WEB_TOO_BIG_LABEL = "media is too big"


def web_flag(classes: Iterable[str]) -> str | None:
    """The flag one t.me/s element's classes name, if any (a video player: see `web_video_flag`)."""
    names = set(classes)
    if WEB_VIDEO_PLAYER in names:
        return TOO_BIG if "not_supported" in names else VIDEO
    if WEB_DOCUMENT_ICON in names:
        return AUDIO if "audio" in names else None
    return next((flag for cls, flag in WEB_CLASSES.items() if cls in names), None)


def web_video_flag(classes: Iterable[str], inside: Iterable[str]) -> str:
    """The flag of a t.me/s video player, from its classes and the classes of what it holds."""
    flag = web_flag(classes)
    if flag == VIDEO and WEB_PLAY_BUTTON not in set(inside):
        return GIF
    return flag or VIDEO


# A flag that says more about what another says: the page shows an audio file as a document with an
# audio icon, and a GIF as a video that loops.
REFINES: Mapping[str, str] = {AUDIO: DOCUMENT, GIF: VIDEO}


def refined(flags: Iterable[str]) -> list[str]:
    """Flags once each, in order, without those a more specific one refines."""
    kept = list(dict.fromkeys(flags))
    dropped = {REFINES[f] for f in kept if f in REFINES}
    return [f for f in kept if f not in dropped]


# --- Telethon -------------------------------------------------------------------------------------
# By TL class name, so this module needs no Telethon import. A document is read by its attributes.
TELETHON_MEDIA: Mapping[str, str | None] = {
    "MessageMediaPhoto": PHOTO,
    "MessageMediaDocument": DOCUMENT,
    "MessageMediaPoll": POLL,
    "MessageMediaGeo": LOCATION,
    "MessageMediaGeoLive": LOCATION,
    "MessageMediaVenue": LOCATION,
    "MessageMediaContact": CONTACT,
    "MessageMediaUnsupported": UNSUPPORTED,
    # Not media of a post: a link preview is `link_preview`, and empty is nothing.
    "MessageMediaEmpty": None,
    "MessageMediaWebPage": None,
    # Outside the vocabulary, on purpose: no flag. None of them is a photo, a file or a place the post
    # carries, and the vocabulary has no word the other routes would give them; a dice's value or an
    # invoice's title is not the post's text either.
    "MessageMediaDice": None,
    "MessageMediaGame": None,
    "MessageMediaInvoice": None,
    "MessageMediaGiveaway": None,
    "MessageMediaGiveawayResults": None,
    "MessageMediaStory": None,
    "MessageMediaVideoStream": None,
    "MessageMediaToDo": None,
}
# Document attributes, most specific first: a round video is a video, a GIF is often a video too.
TELETHON_DOCUMENT: tuple[tuple[str, str | None, str], ...] = (
    # (attribute class, attribute field that must be true or None, flag)
    ("DocumentAttributeSticker", None, STICKER),
    ("DocumentAttributeAnimated", None, GIF),
    ("DocumentAttributeVideo", "round_message", ROUND_VIDEO),
    ("DocumentAttributeVideo", None, VIDEO),
    ("DocumentAttributeAudio", "voice", VOICE),
    ("DocumentAttributeAudio", None, AUDIO),
)


def telethon_flag(media: object | None) -> str | None:
    """The flag of a Telethon `MessageMedia*` object; None for no media, and for media outside the
    vocabulary (a dice, a game, an invoice: listed in `TELETHON_MEDIA`) or a kind it does not know."""
    if media is None:
        return None
    flag = TELETHON_MEDIA.get(type(media).__name__)
    if flag != DOCUMENT:
        return flag
    attributes = getattr(getattr(media, "document", None), "attributes", None) or ()
    for cls, field, doc_flag in TELETHON_DOCUMENT:
        for attr in attributes:
            if type(attr).__name__ == cls and (field is None or getattr(attr, field, False)):
                return doc_flag
    return DOCUMENT


# --- Desktop export -------------------------------------------------------------------------------
EXPORT_MEDIA_TYPES: Mapping[str, str] = {
    "video_file": VIDEO,
    "animation": GIF,
    "video_message": ROUND_VIDEO,
    "voice_message": VOICE,
    "audio_file": AUDIO,
    "sticker": STICKER,
}

# --- flattened text dumps -------------------------------------------------------------------------
# A placeholder line, casefolded -> the flag it sets (None: the line is only dropped). "This media is
# not supported in your browser" is a fallback beside content the dump lost, not a withheld post.
DUMP_PLACEHOLDERS: Mapping[str, str | None] = {
    WEB_WITHHELD_LABEL: UNSUPPORTED,
    "this media is not supported in your browser": None,
    WEB_TOO_BIG_LABEL: TOO_BIG,
    "view in telegram": None,
}


# --- polls ----------------------------------------------------------------------------------------


def poll_text(question: str, options: Iterable[str]) -> str:
    """A poll as words: the question, then one option a line (each trimmed, empty ones left out)."""
    lines = [question.strip(), *(option.strip() for option in options)]
    return "\n".join(line for line in lines if line)


def with_poll(text: str, poll: str) -> str:
    """The post's text with its poll's words after it, a blank line between."""
    if not poll:
        return text
    return f"{text.rstrip()}\n\n{poll}" if text.strip() else poll


def media_key(file_id: str | None = None, photo_url: str | None = None) -> str | None:
    """A post's media identity, to tell the same picture reposted (bot.stories): Telegram's own id
    of the file (the Telethon route: a Photo's or Document's id, the same wherever the file is
    reposted; the Bot API calls it file_unique_id), or the photo's address on the web preview's CDN
    (hashed: it is long and says nothing)."""
    if file_id:
        return f"tg:{file_id}"
    if photo_url:
        return "url:" + hashlib.sha256(photo_url.encode("utf-8")).hexdigest()[:32]
    return None
