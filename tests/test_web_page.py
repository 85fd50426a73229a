"""The t.me/s page parser, against hand-written pages in the preview's markup."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.parse.model import Entity
from bot.sources.model import ChannelRef, Forward
from bot.sources.webpage import NotAChannelPage, Page, parse_page, parse_views

FIXTURES = Path(__file__).parent / "fixtures" / "web"


def utf16_slice(text: str, offset: int, length: int) -> str:
    raw = text.encode("utf-16-le")
    return raw[offset * 2 : (offset + length) * 2].decode("utf-16-le")


@pytest.fixture(scope="module")
def page() -> Page:
    return parse_page((FIXTURES / "channel_page.html").read_text(encoding="utf-8"))


def post(page: Page, message_id: int):
    return next(p for p in page.posts if p.message_id == message_id)


def test_channel_comes_from_the_header_and_data_view(page: Page) -> None:
    # data-view {"c":-1115678342,...}: the bare id, as Telethon and ChannelRef count it.
    assert page.channel == ChannelRef(tg_id=1115678342, username="MFARussia", title="MFA Russia 🇷🇺")
    assert page.channel.key == "mfarussia"
    assert all(p.channel == page.channel for p in page.posts)


def test_posts_in_order_and_paging_link(page: Page) -> None:
    # The album 104 also took id 105, so the page has no post 105.
    assert [p.message_id for p in page.posts] == [101, 102, 103, 104, 106, 107, 108]
    assert page.before == 101


def test_text_entities_emoji_cyrillic_and_line_breaks(page: Page) -> None:
    p = post(page, 101)
    assert p.text == (
        "🚨 Срочно: МИД России & партнёры\n\n"
        "📄 Заявление опубликовано на mid.ru, подробнее у @MID_Russia.\n"
        "Читать полностью\n\n"
        "#СНГ #BRICS"
    )
    # Offsets counted by hand in UTF-16 units: 🚨 and 📄 are two units each.
    assert p.entities == [
        Entity("bold", 3, 7),
        Entity("url", 63, 6),
        Entity("mention", 83, 11),
        Entity("text_url", 96, 16, url="https://mid.ru/ru/foreign_policy/news/1965000/"),
        Entity("hashtag", 114, 4),
        Entity("hashtag", 119, 6),
    ]
    labels = [utf16_slice(p.text, e.offset, e.length) for e in p.entities]
    assert labels == ["Срочно:", "mid.ru", "@MID_Russia", "Читать полностью", "#СНГ", "#BRICS"]
    assert p.media == []
    assert p.forward is None
    assert p.views == 4200
    assert p.date == datetime(2024, 8, 18, 12, 4, 5, tzinfo=UTC)


def test_reply_quote_is_not_the_post_text(page: Page) -> None:
    p = post(page, 102)
    assert p.text == "Уточнение: брифинг переносится на 15:00 по московскому времени."
    assert "Срочно" not in p.text
    assert p.views == 917


def test_forward_header(page: Page) -> None:
    p = post(page, 103)
    assert p.forward == Forward(name="Russian MFA 🇷🇺", username="mfarussia", post_id=20285)
    assert not p.text.startswith("Forwarded")
    assert p.text.startswith("🎙 Foreign Minister")
    assert [utf16_slice(p.text, e.offset, e.length) for e in p.entities] == ["#BRICS"]


def test_album_caption_once_and_its_fallback_no_unsupported_flag(page: Page) -> None:
    p = post(page, 104)
    assert p.text == (
        "🎻 A grand concert was held on the Red Square on August 18.\n\n"
        "#IndiaNationalYouthOrchestraandChorus\n#WYF2024"
    )
    # The album's "Please open Telegram" blocks are t.me's fallback beside the shown photo, not withheld.
    assert p.media == ["photo"]
    assert "Please open Telegram" not in p.text and "VIEW IN TELEGRAM" not in p.text
    assert [e.type for e in p.entities] == ["hashtag", "hashtag"]


def test_too_big_video_is_a_flag_not_text(page: Page) -> None:
    p = post(page, 106)
    assert p.media == ["too_big"]
    assert "Media is too big" not in p.text and "VIEW IN TELEGRAM" not in p.text
    assert p.text.startswith("🎙 Excerpts from President of Russia")
    assert p.text.endswith("leaders of state, will attend this event.")
    assert p.text.count("Russia unquestionably shares") == 1
    # The video's duration is a <time> too; the post's date is the footer's.
    assert p.date == datetime(2024, 12, 11, 9, 15, 30, tzinfo=UTC)
    assert p.views == 1_300_000
    assert p.forward == Forward(name="Russian MFA 🇷🇺", username="mfarussia", post_id=20744)
    tags = [utf16_slice(p.text, e.offset, e.length) for e in p.entities if e.type == "hashtag"]
    assert tags == ["#CIS", "#SCO", "#BRICS"]


def test_unsupported_media_only_post(page: Page) -> None:
    p = post(page, 107)
    assert p.text == ""
    assert p.entities == []
    assert p.media == ["unsupported"]
    assert p.views == 56


def test_link_preview_kept_apart_from_text(page: Page) -> None:
    p = post(page, 108)
    assert p.text == "Интервью министра: https://tass.ru/interviews/21000001"
    assert p.entities == [Entity("url", 19, 35)]
    assert p.link_preview == {
        "site": "ТАСС",
        "title": "Сергей Лавров: «Мы готовы к диалогу»",
        "description": "Министр рассказал о санкциях и переговорах с партнёрами по #BRICS.",
        "url": "https://tass.ru/interviews/21000001",
    }
    assert "санкциях" not in p.text


def test_a_page_that_is_not_a_channel_preview() -> None:
    with pytest.raises(NotAChannelPage):
        parse_page((FIXTURES / "not_a_channel.html").read_text(encoding="utf-8"))


def _message(post: str, body: str, c: int = -1005640892) -> str:
    view = base64.urlsafe_b64encode(f'{{"c":{c},"p":1}}'.encode()).decode().rstrip("=")
    return (
        f'<div class="tgme_widget_message_wrap"><div class="tgme_widget_message js-widget_message" '
        f'data-post="{post}" data-view="{view}"><div class="tgme_widget_message_bubble">{body}'
        f"</div></div></div>"
    )


def test_channel_without_posts_and_last_page() -> None:
    html = (
        '<div class="tgme_channel_info"><div class="tgme_channel_info_header">'
        '<div class="tgme_channel_info_header_title"><span dir="auto">Пусто</span></div>'
        '<div class="tgme_channel_info_header_username"><a href="https://t.me/empty_ch">@empty_ch</a></div>'
        "</div></div>"
    )
    page = parse_page(html)
    assert page.posts == [] and page.before is None
    assert page.channel == ChannelRef(username="empty_ch", title="Пусто")


def test_bot_api_style_id_and_styles() -> None:
    body = (
        '<div class="tgme_widget_message_text js-message_text"><i>курсив</i> и '
        '<tg-emoji emoji-id="1"><i class="emoji"><b>👍</b></i></tg-emoji> '
        '<a href="https://example.org/a?b=1&amp;c=2">здесь</a></div>'
    )
    page = parse_page(_message("chan/7", body, c=-1001005640892))
    p = page.posts[0]
    assert page.channel.tg_id == 1005640892
    assert p.text == "курсив и 👍 здесь"
    # "курсив и " is 9 units, 👍 two, then a space: the link starts at 12.
    assert p.entities == [
        Entity("italic", 0, 6),
        Entity("text_url", 12, 5, url="https://example.org/a?b=1&c=2"),
    ]
    assert p.date is None and p.views is None and p.media == []


def test_caption_shown_again_in_part_is_not_doubled() -> None:
    body = (
        '<div class="tgme_widget_message_text js-message_text">Title<br/>Body line</div>'
        '<div class="tgme_widget_message_text js-message_text">Body line</div>'
    )
    assert parse_page(_message("chan/8", body)).posts[0].text == "Title\nBody line"


def test_service_messages_are_skipped() -> None:
    html = _message("chan/1", '<div class="message_service">Channel created</div>').replace(
        "tgme_widget_message js-widget_message", "tgme_widget_message service_message js-widget_message"
    ) + _message("chan/2", '<div class="tgme_widget_message_text js-message_text">first</div>')
    assert [p.message_id for p in parse_page(html).posts] == [2]


@pytest.mark.parametrize(
    ("label", "count"),
    [
        ("4.2K", 4200),
        ("1.3M", 1_300_000),
        ("917", 917),
        ("12.5K", 12_500),
        ("2K", 2000),
        ("", None),
        ("?", None),
    ],
)
def test_views(label: str, count: int | None) -> None:
    assert parse_views(label) == count


# --- one post, two ways in: the preview and the flattened dump -------------------------------------

SAMPLE = Path(__file__).parent / "fixtures" / "mfa_channel_dump.txt"


@pytest.mark.parametrize(
    ("message_id", "dump_starts"),
    [
        (104, "🎻 A grand concert was held on the Red Square"),  # the album, placeholders twice in the dump
        (106, "🎙 Excerpts from President of Russia"),  # the too-big video, body doubled in the dump
    ],
)
def test_same_post_through_the_preview_and_a_dump_has_one_fingerprint(
    page: Page, message_id: int, dump_starts: str
) -> None:
    from bot.parse import normalise, parse_dump

    dumped = [
        p for p in parse_dump(SAMPLE.read_text(encoding="utf-8")) if p.content.text.startswith(dump_starts)
    ]
    assert len(dumped) == 1
    web = post(page, message_id)
    content = normalise(web.text, web.entities, web.media)
    assert content.fingerprint is not None
    assert content.fingerprint == dumped[0].content.fingerprint
    assert content.hashtags == dumped[0].content.hashtags
    # The dump knows only its placeholders; the preview also sees the album's photos. A flattened
    # page cannot tell t.me's withheld-notice fallback from a withheld post; the markup can.
    assert set(dumped[0].content.media) - {"unsupported"} <= set(content.media)
