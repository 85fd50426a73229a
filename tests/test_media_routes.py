"""Real t.me/s markup and real Telethon TL objects, read into one media vocabulary.

The web fixtures under tests/fixtures/web/real/ are copied from a scraper's test suite (their source is
in the README there and on each file's first line); `channel_page.html` is the captured page the other
web tests use. The Telethon messages are the same posts as real `telethon.tl.types` objects.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from telethon import types

from bot.parse import media
from bot.parse.export import ExportChat, message_of
from bot.sources.model import ChannelRef, Incoming
from bot.sources.telegram import media_of, to_incoming
from bot.sources.webpage import parse_page
from bot.store.models import Message, MessageEdit

FIXTURES = Path(__file__).parent / "fixtures" / "web"
REAL = FIXTURES / "real"
TCHANTEST = 1591537674  # data-view "c" of every tchantest post
T0 = datetime(2023, 2, 24, 7, 0, tzinfo=UTC)


def web(name: str) -> Incoming:
    [post] = parse_page((REAL / f"tchan_{name}.html").read_text(encoding="utf-8")).posts
    return post


def tchantest_page() -> str:
    """Every tchantest capture as one page, as t.me/s lists a channel's posts."""
    parts = [
        f.read_text(encoding="utf-8")
        for f in sorted(REAL.glob("tchan_*.html"))
        if 'data-post="tchantest/' in f.read_text(encoding="utf-8")
    ]
    body = "\n".join(parts)
    return f"<html><body><section class='tgme_channel_history'>{body}</section></body></html>"


# --- the web route ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "flags"),
    [
        ("sticker_message", ["sticker"]),  # beside it: "This media is not supported in your browser"
        ("multimedia_message", ["video", "photo"]),  # an album, with two such fallbacks
        ("photo_multiple", ["photo"]),
        ("photo_single", ["photo"]),
        ("audio_message", ["voice"]),
        ("audio_document", ["audio"]),  # a document whose icon says audio
        ("round_video_single", ["round_video"]),
        ("video_single", ["video"]),  # the video's own "not supported in your browser" fallback
        ("video_big", ["too_big"]),
        ("location_message", ["location"]),
        ("poll", ["poll"]),
        ("emoji_message", []),
        ("text_message_signed_not_edited", []),
    ],
)
def test_real_markup_gets_the_media_the_post_shows(fixture: str, flags: list[str]) -> None:
    post = web(fixture)
    assert post.media == flags
    assert set(post.media) <= set(media.VOCABULARY)
    for noise in ("not supported", "Please open Telegram", "VIEW IN TELEGRAM"):
        assert noise not in post.text


def test_a_withheld_notice_beside_shown_content_is_no_flag_and_a_bare_one_is_unsupported() -> None:
    page = parse_page((FIXTURES / "channel_page.html").read_text(encoding="utf-8"))
    by_id = {p.message_id: p for p in page.posts}
    # 101 has a <tg-emoji>: its emoji is text, not media.
    assert by_id[101].text.startswith("🚨 Срочно") and by_id[101].media == []
    # 104 is an album: two "Please open Telegram" fallbacks beside the media_supported_cont that
    # shows it. Nothing is withheld.
    assert by_id[104].media == ["photo"]
    # 107 is only "Please open Telegram to view this post": withheld, and flagged so.
    assert by_id[107].text == "" and by_id[107].media == ["unsupported"]


def test_poll_question_and_options_are_the_posts_text() -> None:
    post = web("poll")
    assert post.text == "Let's do a quick poll quizz mode\nOpt1\nOpt2\nOpt3"
    assert "Anonymous Quiz" not in post.text and "0%" not in post.text


def test_edited_marker_and_signature_are_read_and_the_signature_is_not_text() -> None:
    signed = web("text_message_signed_not_edited")
    assert (signed.signature, signed.edited, signed.text) == ("Álvaro Justen", False, "Signed and not edited")
    both = web("signed_edited_text_message")
    assert (both.signature, both.edited) == ("Álvaro Justen", True)
    assert "Álvaro" not in both.text
    edited = web("text_message_link_no_preview")
    assert (edited.signature, edited.edited) == (None, True)
    assert web("unsigned_text_message").signature is None


def test_service_messages_are_not_posts() -> None:
    page = parse_page(tchantest_page())
    ids = {p.message_id for p in page.posts}
    # channel created (1), renamed (2), photo changed (3), a message pinned (92)
    assert not ids & {1, 2, 3, 92}
    assert {9, 11, 12, 13, 17, 84} <= ids
    assert page.channel.tg_id == TCHANTEST and not page.rejected


def test_a_channel_page_with_no_posts_or_only_service_messages_is_a_page_of_no_posts() -> None:
    # Real captures: t.me's "No posts found" page, and a page whose one message is a pin. Both are a
    # channel's page with nothing to read, not "not a t.me/s page".
    empty = parse_page((REAL / "tchan_no_posts_found.html").read_text(encoding="utf-8"))
    assert (empty.posts, empty.rejected, empty.channel.username) == ([], [], "some-channel")
    pinned = parse_page((REAL / "tchan_service_message_pinned.html").read_text(encoding="utf-8"))
    assert pinned.posts == [] and (pinned.channel.username, pinned.channel.tg_id) == ("tchantest", TCHANTEST)


# --- the Telethon route -----------------------------------------------------------------------------

_doc_ids = iter(range(10_000, 20_000))


def document(*attributes: Any, mime: str = "application/octet-stream") -> types.MessageMediaDocument:
    return types.MessageMediaDocument(
        document=types.Document(
            id=next(_doc_ids),
            access_hash=1,
            file_reference=b"",
            date=T0,
            mime_type=mime,
            size=1000,
            dc_id=2,
            attributes=list(attributes),
        )
    )


def photo() -> types.MessageMediaPhoto:
    return types.MessageMediaPhoto(
        photo=types.Photo(id=next(_doc_ids), access_hash=1, file_reference=b"", date=T0, sizes=[], dc_id=2)
    )


def poll(question: str, *options: str) -> types.MessageMediaPoll:
    return types.MessageMediaPoll(
        poll=types.Poll(
            id=1,
            question=types.TextWithEntities(question, []),
            answers=[
                types.PollAnswer(text=types.TextWithEntities(o, []), option=bytes([i]))
                for i, o in enumerate(options)
            ],
            hash=0,
            quiz=True,
        ),
        results=types.PollResults(),
    )


def tl(msg_id: int, text: str = "", media_: Any = None, **kw: Any) -> types.Message:
    return types.Message(
        id=msg_id,
        peer_id=types.PeerChannel(TCHANTEST),
        date=T0,
        message=text,
        post=True,
        media=media_,
        **kw,
    )


STICKER = types.DocumentAttributeSticker(alt="👍", stickerset=types.InputStickerSetEmpty())
VIDEO = types.DocumentAttributeVideo(duration=6, w=640, h=360)
CONTACT = types.MessageMediaContact(phone_number="+1", first_name="A", last_name="", vcard="", user_id=0)


@pytest.mark.parametrize(
    ("media_", "flag"),
    [
        (photo(), "photo"),
        (document(VIDEO, mime="video/mp4"), "video"),
        (document(types.DocumentAttributeAnimated(), VIDEO, mime="video/mp4"), "gif"),
        (document(types.DocumentAttributeVideo(duration=5, w=240, h=240, round_message=True)), "round_video"),
        (document(types.DocumentAttributeAudio(duration=1, voice=True), mime="audio/ogg"), "voice"),
        (document(types.DocumentAttributeAudio(duration=60, title="AUD"), mime="audio/mpeg"), "audio"),
        (document(types.DocumentAttributeFilename("report.pdf"), mime="application/pdf"), "document"),
        (document(STICKER, mime="image/webp"), "sticker"),
        (poll("Q?", "a", "b"), "poll"),
        (types.MessageMediaGeo(geo=types.GeoPoint(long=-43.2, lat=-22.9, access_hash=0)), "location"),
        (CONTACT, "contact"),
        (types.MessageMediaUnsupported(), "unsupported"),
    ],
)
def test_telethon_media_maps_to_the_shared_vocabulary(media_: Any, flag: str) -> None:
    assert media_of(tl(1, media_=media_)) == [flag]


def test_a_poll_reads_the_same_on_both_routes_and_in_an_export() -> None:
    from bot.parse import normalise

    telethon = to_incoming(
        ChannelRef(tg_id=TCHANTEST),
        [tl(11, media_=poll("Let's do a quick poll quizz mode", "Opt1", "Opt2", "Opt3"))],
    )
    page = web("poll")
    exported = message_of(
        ExportChat(TCHANTEST, "tchantest", "public_channel"),
        {
            "id": 11,
            "type": "message",
            "text": "",
            "poll": {
                "question": "Let's do a quick poll quizz mode",
                "answers": [{"text": "Opt1"}, {"text": "Opt2"}, {"text": "Opt3"}],
            },
        },
    )
    assert exported is not None
    assert telethon.text == page.text == exported.text
    assert telethon.media == page.media == list(exported.media) == ["poll"]
    assert normalise(telethon.text).fingerprint == normalise(page.text).fingerprint is not None


def test_telethon_signature_is_the_post_author_and_not_text() -> None:
    signed = tl(79, "Signed and not edited", post_author="Álvaro Justen")
    post = to_incoming(ChannelRef(tg_id=TCHANTEST), [signed])
    assert (post.signature, post.text) == ("Álvaro Justen", "Signed and not edited")


# --- both routes over one store ----------------------------------------------------------------------


def telethon_twins(posts: dict[int, Incoming]) -> list[Incoming]:
    """The same tchantest posts as Telethon would deliver them."""
    ref = ChannelRef(tg_id=TCHANTEST, username="tchantest", title="tchan's test channel 👍")
    edit = datetime(2023, 2, 24, 8, 0, tzinfo=UTC)
    audio = types.DocumentAttributeAudio(duration=60, title="AUD-20130329-WA0000", performer="portadosfundos")
    messages: list[list[types.Message]] = [
        [tl(9, media_=document(STICKER, mime="image/webp"))],
        [tl(11, media_=poll("Let's do a quick poll quizz mode", "Opt1", "Opt2", "Opt3"))],
        [tl(12, posts[12].text, document(audio, mime="audio/mpeg"))],
        [tl(13, media_=document(types.DocumentAttributeAudio(duration=1, voice=True), mime="audio/ogg"))],
        [tl(17, media_=document(types.DocumentAttributeVideo(duration=5, w=240, h=240, round_message=True)))],
        [tl(18, posts[18].text, document(VIDEO, mime="video/mp4"))],
        [
            tl(84, posts[84].text, document(VIDEO, mime="video/mp4"), grouped_id=7),
            tl(85, "", photo(), grouped_id=7),
        ],
        [tl(79, posts[79].text, post_author="Álvaro Justen")],
        [tl(5, posts[5].text, edit_date=edit, post_author="Álvaro Justen")],
        [tl(24, posts[24].text, edit_date=edit)],
        [tl(10, media_=types.MessageMediaGeo(geo=types.GeoPoint(long=-43.2, lat=-22.9, access_hash=0)))],
    ]
    return [to_incoming(ref, parts) for parts in messages]


async def test_web_then_telethon_then_web_records_no_edit_and_one_fingerprint(
    store: Engine, sink: Any
) -> None:
    def web_route() -> list[Incoming]:
        # The tchantest page, and a post whose video the preview calls too big (Telethon: a video).
        return [*parse_page(tchantest_page()).posts, web("video_big")]

    posts = web_route()
    by_id = {p.message_id: p for p in posts}
    big = by_id[5343]
    twins = [
        *telethon_twins(by_id),
        to_incoming(big.channel, [tl(5343, big.text, document(VIDEO, mime="video/mp4"))]),
    ]
    assert {t.message_id for t in twins} <= set(by_id)
    # The routes do see some media differently; that alone must not read as an edit.
    assert by_id[5343].media == ["too_big"] and twins[-1].media == ["video"]

    def stored() -> dict[int, tuple[str | None, list[str], str | None, bool]]:
        with Session(store) as s:
            rows = s.scalars(select(Message)).all()
            return {r.msg_id: (r.fingerprint, r.media, r.signature, r.edit_date is not None) for r in rows}

    def edits() -> int:
        with Session(store) as s:
            return s.scalar(select(func.count()).select_from(MessageEdit)) or 0

    first = await sink.ingest(posts)
    assert first.new == len(posts)
    after_web = stored()
    second = await sink.ingest(twins)
    third = await sink.ingest(web_route())
    assert (second.new, second.updated, third.new, third.updated) == (0, 0, 0, 0)
    assert edits() == 0
    final = stored()
    assert {k: v[0] for k, v in final.items()} == {k: v[0] for k, v in after_web.items()}
    # The poll's words are in the fingerprint: the same on both routes, and not the empty text's.
    assert final[11][0] is not None
    # Signatures and the edit marker reach the store, whichever route brought them.
    assert final[79][2] == final[5][2] == "Álvaro Justen"
    assert final[5][3] and final[24][3] and not final[79][3]


async def test_the_web_routes_edit_marker_and_signature_are_stored(store: Engine, sink: Any) -> None:
    await sink.ingest([web("signed_edited_text_message"), web("unsigned_text_message")])
    with Session(store) as s:
        rows = {r.msg_id: r for r in s.scalars(select(Message))}
    assert rows[5].signature == "Álvaro Justen" and rows[5].edit_date is not None
    assert "Álvaro" not in rows[5].text
    assert rows[6].signature is None and rows[6].edit_date is None


def test_custom_emoji_beside_a_withheld_notice_is_a_photo_post_with_its_emoji_in_the_text() -> None:
    # A real 2024 post (Premium/154): a photo, custom emoji in the caption, and t.me's
    # media_not_supported_cont fallback beside the media_supported_cont that shows it all.
    [post] = parse_page((REAL / "tgws_premium_154_custom_emoji_photo.html").read_text(encoding="utf-8")).posts
    assert post.message_id == 154
    assert post.media == ["photo"]
    assert "unsupported" not in post.media
    assert post.text.startswith("Celebrate the Lunar New Year by gifting ⭐️ Telegram Premium to your friends")
    assert "👉 GIFT PREMIUM 🎁." in post.text
    assert post.text.endswith("Subscribe • All Premium Features")
    for noise in ("Please open Telegram", "VIEW IN TELEGRAM"):
        assert noise not in post.text
    assert post.date == datetime(2024, 2, 8, 9, 11, 41, tzinfo=UTC)
    assert post.views == 12_600_000


# --- a real GIF, and a real page from 2020 -------------------------------------------------------------


def in_a_message(player: str, post: str) -> str:
    """A captured player in the smallest message t.me wraps one in: the wrapper is ours, the player real."""
    return (
        '<div class="tgme_widget_message_wrap js-widget_message_wrap">'
        f'<div class="tgme_widget_message js-widget_message" data-post="{post}">'
        f'<div class="tgme_widget_message_bubble">{player}</div></div></div>'
    )


def test_a_real_gif_is_a_gif_on_the_web_route_as_on_telethon() -> None:
    # The GIF player (March 2023) has no play button and a muted looping <video>; the same capture's
    # video player has the button. Both carry "This media is not supported in your browser".
    gif = (REAL / "any2feed_gif_player.html").read_text(encoding="utf-8")
    video = (REAL / "any2feed_video_player.html").read_text(encoding="utf-8")
    [web_gif] = parse_page(in_a_message(gif, "channel/6")).posts
    [web_video] = parse_page(in_a_message(video, "channel/7")).posts
    assert (web_gif.media, web_video.media) == (["gif"], ["video"])
    assert "not supported" not in web_gif.text
    animated = document(types.DocumentAttributeAnimated(), VIDEO, mime="video/mp4")
    assert media_of(tl(6, media_=animated)) == web_gif.media


def test_a_real_2020_page_reads_its_posts_texts_dates_and_views() -> None:
    # t.me/s/xCareers as it was on 2020-05-04: three job posts with bold titles, emoji, hashtags,
    # mentions and inline buttons, and no media.
    page = parse_page((REAL / "hashsub_xcareers_2020.html").read_text(encoding="utf-8"))
    assert (page.channel.tg_id, page.channel.username) == (1179933704, "xCareers")
    assert page.channel.title == "xCareers: Digital Jobs"
    assert (page.before, page.rejected) == (1491, [])
    got = [(p.message_id, p.date, p.views, p.media, p.edited, p.signature) for p in page.posts]
    assert got == [
        (1491, datetime(2020, 4, 30, 17, 0, 4, tzinfo=UTC), 4400, [], False, None),
        (1510, datetime(2020, 5, 3, 15, 0, 3, tzinfo=UTC), 4100, [], False, None),
        (1511, datetime(2020, 5, 4, 7, 0, 2, tzinfo=UTC), 1500, [], False, None),
    ]

    def words(text: str) -> str:
        # The capture went through jsoup, which indented the markup; t.me's own has no such spaces.
        return " ".join(text.split())

    def tagged(post: Incoming) -> list[str]:
        units = post.text.encode("utf-16-le")
        return [
            units[2 * e.offset : 2 * (e.offset + e.length)].decode("utf-16-le")
            for e in post.entities
            if e.type in ("hashtag", "mention")
        ]

    first, node, java = page.posts
    assert words(first.text).startswith(
        "РАЗРАБОТЧИК IOS 🔥 Формат: #удаленка (на время карантина) потом #офис Локация: #москва,"
    )
    assert words(first.text).endswith("Откликнуться: @Levelller #разработка #ios")
    assert words(node.text).startswith("NODE.JS DEVELOPER Формат: #офис Локация: #казань, #россия")
    assert words(java.text).startswith("MIDDLE/ SENIOR JAVA DEVELOPER Формат: #офис")
    places = ["#удаленка", "#офис", "#москва", "#санкт_петербург", "#россия"]
    assert tagged(first) == [*places, "@Levelller", "#разработка", "#ios"]
    assert tagged(node) == ["#офис", "#казань", "#россия", "@askamasaska", "#nodejs", "@xCareers"]
    for post in page.posts:
        # The inline buttons ("Разместить вакансию") and the channel's name are not the post's words.
        assert "Разместить" not in post.text and "xCareers: Digital Jobs" not in post.text


@pytest.mark.parametrize(
    "media_",
    [
        types.MessageMediaDice(value=4, emoticon="🎲"),
        types.MessageMediaGame(
            game=types.Game(
                id=1, access_hash=1, short_name="g", title="A game", description="", photo=types.PhotoEmpty(1)
            )
        ),
        types.MessageMediaInvoice(
            title="Donate", description="", currency="XTR", total_amount=5, start_param=""
        ),
    ],
)
def test_telethon_media_outside_the_vocabulary_is_no_flag_and_no_text(media_: Any) -> None:
    post = to_incoming(ChannelRef(tg_id=TCHANTEST), [tl(40, "words", media_)])
    assert (post.media, post.text) == ([], "words")
    assert type(media_).__name__ in media.TELETHON_MEDIA  # a decision in the table, not an accident
