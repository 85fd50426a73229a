"""The one normaliser: entities in UTF-16 units, patterns as a fallback, titles and fingerprints."""

from __future__ import annotations

import xxhash

from bot.parse import Entity, fingerprint, normalise

# UTF-16 units: 🇷 2, 🇺 2, 🎻 2, " Concert " 9 -> "#music" at 15 (6 long), " with " -> "@orchestra_ru" at 27
# (13 long), ", see " -> "here" at 46 (4 long). As Python indices "#music" is at 12.
CONCERT = "🇷🇺🎻 Concert #music with @orchestra_ru, see here #other https://example.org/pattern"
CONCERT_ENTITIES = [
    Entity("bold", 0, 6),
    Entity("hashtag", 15, 6),
    Entity("mention", 27, 13),
    Entity("text_url", 46, 4, url="https://example.org/concert"),
]


def test_entities_count_utf16_units_and_win_over_patterns():
    content = normalise(CONCERT, CONCERT_ENTITIES)
    assert content.hashtags == ("music",)  # "#other" has no entity: the entities are the whole story
    assert content.mentions == ("orchestra_ru",)
    assert content.urls == ("https://example.org/concert",)


def test_without_entities_patterns_find_them():
    content = normalise(CONCERT)
    assert content.hashtags == ("music", "other")
    assert content.mentions == ("orchestra_ru",)
    assert content.urls == ("https://example.org/pattern",)


def test_an_entity_finds_what_no_pattern_would():
    content = normalise(
        "Thanks @abc, see example.org now",
        [Entity("mention", 7, 4), Entity("url", 17, 11)],
    )
    assert content.mentions == ("abc",)
    assert content.urls == ("example.org",)


def test_entity_after_an_astral_emoji_in_an_earlier_line():
    text = "🗓 Title line\n🇺🇳 #UNSC meets"
    # "🗓" 2, " Title line" 11, "\n" 1, "🇺🇳" 4, " " 1 -> "#UNSC" at 19.
    assert normalise(text, [Entity("hashtag", 19, 5)]).hashtags == ("UNSC",)


def test_the_title_skips_lines_that_are_only_hashtags_and_mentions():
    assert normalise("#Announcement\n🗓 The 31st OSCE meeting\nMore").title == "🗓 The 31st OSCE meeting"
    assert normalise("#CIS, #EAEU @mfa_russia\n\nBody text").title == "Body text"
    assert normalise("#a #b\n@someone_x").title == "#a #b"
    with_entities = normalise(
        "#music @orchestra_ru\nReal title", [Entity("hashtag", 0, 6), Entity("mention", 7, 13)]
    )
    assert with_entities.title == "Real title"


def test_text_is_kept_verbatim_with_its_ends_trimmed():
    content = normalise("\n  🎻 Concert\u00a0tonight  \n<...>\nRead in full\n\n")
    assert content.text == "🎻 Concert\u00a0tonight  \n<...>\nRead in full"
    assert content.title == "🎻 Concert\u00a0tonight"


def test_media_flags_are_distinct_in_order():
    assert normalise("x", media=["too_big", "unsupported", "too_big"]).media == ("too_big", "unsupported")


def test_mentions_and_urls_by_pattern():
    content = normalise(
        "mail foo@example.com or @real_user, not @abcd or @" + "a" * 33 + "; @Real_User again.\n"
        "see https://example.org/a_(b) and (https://x.org/y). HTTP://Caps.example/Z…"
    )
    assert content.mentions == ("real_user",)
    assert content.urls == ("https://example.org/a_(b)", "https://x.org/y", "HTTP://Caps.example/Z")


def test_empty_text():
    content = normalise("  \n ")
    assert content.text == content.title == ""
    assert content.fingerprint is None


def test_fingerprint_is_xxh3_128_of_the_visible_words():
    assert fingerprint("Hello  World 👋") == xxhash.xxh3_128_hexdigest(b"hello world")
    assert fingerprint("🇷🇺 Lavrov\u00a0met\u200b his counterpart 🤝\n#CIS") == xxhash.xxh3_128_hexdigest(
        b"lavrov met his counterpart #cis"
    )


def test_same_words_same_fingerprint():
    assert fingerprint("🇷🇺 Lavrov met  his counterpart\n#CIS") == fingerprint(
        "lavrov MET his counterpart #cis 🤝"
    )
    assert fingerprint("👨\u200d👩\u200d👧 family") == fingerprint("family")
    assert fingerprint(
        "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland"
    ) == fingerprint("Scotland")
    assert fingerprint("👍🏽 ok") == fingerprint("ok")
    assert fingerprint("ﬁnance ＣＩＳ") == fingerprint("finance cis")  # NFKC
    assert fingerprint("Straße") == fingerprint("STRASSE")  # casefold
    assert fingerprint("word🔥word") == fingerprint("word word")


def test_digits_hash_and_star_are_words_not_emoji():
    assert fingerprint("Room 1") != fingerprint("Room 2")
    assert fingerprint("#1") != fingerprint("1")
    assert fingerprint("a*b") != fingerprint("ab")
    assert fingerprint("1\ufe0f\u20e3 Lot") == fingerprint("1 Lot")  # keycap: only the digit is a word


def test_media_only_has_no_fingerprint():
    assert fingerprint("") is None
    assert fingerprint("🎻 🇷🇺\n\u200b ❗️") is None
