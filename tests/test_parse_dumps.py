"""Dumps written by hand: another channel, Cyrillic, CRLF, BOM, header-less and media-only posts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import InputError
from bot.parse import decode_dump, parse_dump, read_dump

FIXTURES = Path(__file__).parent / "fixtures"


def parse(name: str):
    return parse_dump(read_dump(FIXTURES / name))


def test_news_channel():
    posts = parse("news_channel_dump.txt")
    assert [p.forwarded_from for p in posts] == [
        "World News Daily",
        "World News Daily",
        None,
        None,
        "Evening Wire",
    ]
    storm, turnout, photo, market, bridge = (p.content for p in posts)

    assert storm.title == "⚡️ Storm closes ports on the north coast"
    assert storm.text == (
        "⚡️ Storm closes ports on the north coast\n"
        "Harbour authorities halted all traffic on Tuesday <...>\n"
        "Ferries will resume once winds drop below 40 knots.\n"
        "Details: https://example.org/storm?id=7.\n"
        "📰 Read\n"
        "#Weather #Ports"
    )
    assert storm.hashtags == ("Weather", "Ports")
    assert storm.urls == ("https://example.org/storm?id=7",)
    assert storm.media == ()

    # The second copy includes the title; the album placeholders after it belong to the post.
    assert turnout.text == (
        "🗳 Turnout reaches record high\n"
        "Officials reported 71% by noon, via @election_desk.\n"
        "#Elections #weather"
    )
    assert turnout.hashtags == ("Elections", "weather")
    assert turnout.mentions == ("election_desk",)
    assert turnout.media == ("unsupported",)

    assert photo.text == photo.title == "📷 Photo of the day: sunrise over the bay"
    assert photo.media == ("unsupported",)

    assert market.text == "🧾 Market close: indices flat\nOil rose 2%, gold slipped."
    assert market.media == ()

    # Blank lines are no boundary; the copies differ only in a no-break space, a double space and a
    # zero-width space, and the text keeps the first copy verbatim.
    assert (
        bridge.text == "📌 Bridge reopens after repairs\nThe bridge reopened at 6\u00a0am.\nTraffic is light."
    )


def test_cyrillic_channel():
    posts = parse("cyrillic_channel_dump.txt")
    assert [p.forwarded_from for p in posts] == ["МИД России 🇷🇺", "МИД России 🇷🇺"]
    talks, briefing = (p.content for p in posts)
    assert talks.title.startswith("🗓 10 октября Сергей Лавров провёл переговоры")
    assert len(talks.text.split("\n")) == 4
    assert talks.hashtags == ("СНГ", "ЕАЭС", "Казахстан")  # "#снг" is the same tag
    assert talks.urls == ("https://mid.ru/ru/foreign_policy/news/",)
    assert briefing.title == "📅 Завтра состоится брифинг официального представителя МИД России."
    assert briefing.hashtags == ("Анонс",)
    assert briefing.text == (
        "#Анонс\n📅 Завтра состоится брифинг официального представителя МИД России.\n"
        "Начало в 12:00 по московскому времени."
    )


def test_headerless_posts_follow_one_another():
    posts = parse("headerless_dump.txt")
    assert [(p.forwarded_from, p.content.text) for p in posts] == [
        (None, "🌍 Morning briefing\nMarkets open higher."),
        (None, "🌦 Weather: rain in the west\nTake an umbrella."),
    ]


def test_media_only_posts_have_no_text_and_no_fingerprint():
    posts = parse("media_only_dump.txt")
    assert len(posts) == 3
    assert [p.content.media for p in posts] == [("unsupported",), ("too_big",), ()]
    for post in posts:
        assert post.forwarded_from == "Photo Channel"
        assert post.content.text == post.content.title == ""
        assert post.content.fingerprint is None
        assert post.content.hashtags == ()


def test_crlf_file():
    posts = parse("crlf_dump.txt")
    assert [(p.forwarded_from, p.content.text) for p in posts] == [
        ("Night Desk", "🌙 Late edition\nPrinting starts at midnight.\n#Press"),
        ("Night Desk", "☕ Coffee shortage in the newsroom\nThe machine is broken again."),
    ]
    assert posts[0].content.hashtags == ("Press",)


@pytest.mark.parametrize("ending", ["\r\n", "\r"])
def test_line_endings_do_not_change_the_posts(ending):
    text = read_dump(FIXTURES / "news_channel_dump.txt")
    assert parse_dump(text.replace("\n", ending)) == parse_dump(text)


def test_bom_file():
    posts = parse("bom_dump.txt")
    assert len(posts) == 1
    assert posts[0].forwarded_from == "Morning Desk"
    assert posts[0].content.text == "🌅 Early edition\nDoors open at six."


def test_empty_and_blank_dumps_have_no_posts():
    assert parse_dump("") == []
    assert parse_dump("\n\n  \r\n\t\n") == []


def test_a_post_that_is_not_doubled_runs_to_the_next_header():
    posts = parse_dump("Forwarded from A\nOne\nTwo\nForwarded from B\nThree\nThree\n")
    assert [(p.forwarded_from, p.content.text) for p in posts] == [("A", "One\nTwo"), ("B", "Three")]


def test_tripled_and_nested_repeats_collapse():
    posts = parse_dump("Forwarded from A\nT\nX\nX\nX\nY\nT\nX\nY\n")
    # T X X X Y T X Y: the doubled run X|X ends the first post after the tripling collapses.
    assert [p.content.text for p in posts] == ["T\nX", "X\nY\nT\nX\nY"]


def test_invalid_utf8_names_the_byte_offset():
    with pytest.raises(InputError, match=r"^dump\.txt: not valid UTF-8 at byte 20$"):
        decode_dump(b"Forwarded from X\nabc\xff\n", "dump.txt")
    with pytest.raises(InputError, match=r"at byte 23$"):
        decode_dump(b"\xef\xbb\xbfForwarded from X\nabc\xff\n", "dump.txt")
    with pytest.raises(InputError, match=r"at byte 2$"):
        decode_dump(b"ab\xe2\x80", "dump.txt")


def test_decode_strips_one_bom():
    assert decode_dump(b"\xef\xbb\xbfabc", "x") == "abc"


def test_read_dump_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file") as missing:
        read_dump(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="directory") as directory:
        read_dump(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xc3\x28")
    with pytest.raises(InputError, match=r"bad\.txt: not valid UTF-8 at byte 3$") as not_utf8:
        read_dump(bad)
    for err in (missing, directory, not_utf8):
        assert "\n" not in str(err.value)
