"""The bundled sample dump, checked against what a reader of the file sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.parse import fingerprint, parse_dump, read_dump
from bot.sources.files import InputFile, record

SAMPLE = Path(__file__).parent / "fixtures" / "mfa_channel_dump.txt"
MFA = "Russian MFA 🇷🇺"


@pytest.fixture(scope="module")
def posts():
    return parse_dump(read_dump(SAMPLE))


def test_the_sample_holds_eleven_posts_in_order(posts):
    assert len(posts) == 11
    assert [p.index for p in posts] == list(range(11))


def test_every_post_but_the_concert_is_forwarded_from_the_ministry(posts):
    assert [p.forwarded_from for p in posts] == [MFA] * 6 + [None] + [MFA] * 4


def test_the_concert_post_has_no_header_two_hashtags_and_unsupported_media(posts):
    concert = posts[6]
    assert concert.forwarded_from is None
    assert concert.content.title == "🎻 A grand concert was held on the Red Square on August 18."
    assert concert.content.hashtags == ("IndiaNationalYouthOrchestraandChorus", "WYF2024")
    assert concert.content.media == ("unsupported",)
    assert concert.content.text == (
        "🎻 A grand concert was held on the Red Square on August 18.\n"
        "#IndiaNationalYouthOrchestraandChorus\n"
        "#WYF2024"
    )


def test_the_last_post_is_the_too_big_video_with_its_title(posts):
    last = posts[-1].content
    assert last.media == ("too_big",)
    assert last.title.startswith("🎙 Excerpts from President")
    assert "Media is too big" not in last.text and "VIEW IN TELEGRAM" not in last.text
    assert last.text.endswith("will attend this event.")


def test_the_announcement_is_titled_by_its_first_real_line(posts):
    announcement = posts[9].content
    assert announcement.text.startswith("#Announcement\n")
    assert announcement.title.startswith("🗓 The 31st OSCE Ministerial Council meeting")
    assert announcement.hashtags[0] == "Announcement"


# Line counts read off the file: title plus the first copy of each block (file lines 2-9, 18-21, ...).
@pytest.mark.parametrize(
    ("index", "lines"),
    [(0, 8), (1, 4), (2, 13), (3, 8), (4, 27), (5, 17), (6, 3), (7, 6), (8, 11), (9, 12), (10, 7)],
)
def test_each_body_is_kept_once(posts, index, lines):
    assert len(posts[index].content.text.split("\n")) == lines


def test_the_security_council_post_whose_second_copy_starts_a_line_later(posts):
    council = posts[5].content
    assert council.title.startswith("🇺🇳 The Russian Federation completed its Presidency")
    assert council.text.split("\n")[1].startswith("On July 16, we held a high-level open debate")
    assert council.text.endswith("Read in full\n#RussiaUN")
    assert council.hashtags == ("CSTO", "CIS", "SCO", "RussiaUN")


def test_no_post_repeats_a_run_of_lines(posts):
    for post in posts:
        lines = post.content.text.split("\n")
        n = len(lines)
        for start in range(n):
            for length in range(1, (n - start) // 2 + 1):
                assert lines[start : start + length] != lines[start + length : start + 2 * length], post.index


def test_first_post_content(posts):
    first = posts[0].content
    assert first.title.startswith("📄 President Vladimir Putin congratulated")
    # Read off file lines 6 and 9: #CIS, #EAEU, #CSTO, #BRICS, then #DiplomatsDay.
    assert first.hashtags == ("CIS", "EAEU", "CSTO", "BRICS", "DiplomatsDay")
    assert first.mentions == () and first.urls == () and first.media == ()


def test_fingerprints_are_those_of_the_kept_text_and_all_differ(posts):
    prints = [p.content.fingerprint for p in posts]
    assert all(prints) and len(set(prints)) == 11
    assert prints == [fingerprint(p.content.text) for p in posts]


def test_records_are_json_with_the_parse_fields(posts):
    """What `tgsentinel parse` prints for a dump's post: a dump knows no channel, id or date."""
    with InputFile(str(SAMPLE)) as source:
        printed = [record(p) for p in source.posts()]
    assert json.loads(json.dumps(printed[6], ensure_ascii=False)) == {
        "index": 6,
        "channel": None,
        "message_id": None,
        "date": None,
        "edited": None,
        "forwarded_from": None,
        "signature": None,
        "title": "🎻 A grand concert was held on the Red Square on August 18.",
        "text": posts[6].content.text,
        "hashtags": ["IndiaNationalYouthOrchestraandChorus", "WYF2024"],
        "mentions": [],
        "urls": [],
        "media": ["unsupported"],
        "fingerprint": posts[6].content.fingerprint,
    }
