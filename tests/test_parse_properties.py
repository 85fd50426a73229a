"""Properties of the dump parser (hypothesis)."""

from __future__ import annotations

import unicodedata

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.parse import fingerprint, parse_dump
from bot.parse.fingerprint import EMOJI

PLACEHOLDERS = {"please open telegram to view this post", "media is too big", "view in telegram"}


def key(line: str) -> str:
    """The issue's comparison form, written out independently of the parser."""
    for zero_width in "\u200b\u200d\u2060\ufeff":
        line = line.replace(zero_width, "")
    return " ".join(unicodedata.normalize("NFC", line).split())


def has_doubled_run(lines: list[str]) -> bool:
    keys = [key(line) for line in lines]
    n = len(keys)
    return any(
        keys[s : s + length] == keys[s + length : s + 2 * length]
        for s in range(n)
        for length in range(1, (n - s) // 2 + 1)
    )


def plain_line(line: str) -> bool:
    k = key(line)
    return (
        bool(k)
        and line == line.strip()
        and not k.startswith("Forwarded from")
        and k.casefold() not in PLACEHOLDERS
    )


ALPHABET = st.sampled_from([*list("abcXYZ йЖ 01#@_.,!'’-🎻🇷🇺❗️\xa0"), "\u200b", "é", "é"])
LINE = st.lists(ALPHABET, min_size=1, max_size=12).map("".join).map(str.strip).filter(plain_line)
NAME = st.text(st.sampled_from(list("Ab Мир 🇷🇺")), min_size=1, max_size=10).map(str.strip).filter(bool)


def variant(line: str, how: int) -> str:
    """A copy of `line` that compares equal to it."""
    if how == 1:
        return line.replace(" ", "\u00a0")
    if how == 2:
        return line + "\u200b"
    if how == 3:
        return " " + line.replace(" ", "  ") + "\t"
    return line


DUMP_LINE = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "Forwarded from A",
            "Forwarded from B 🇷🇺",
            "Please open Telegram to view this post",
            "VIEW IN TELEGRAM",
            "Media is too big",
            "",
            "x",
            "y",
            "#tag",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsing_never_raises_on_arbitrary_text(text):
    parse_dump(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(DUMP_LINE, max_size=40), st.sampled_from(["\n", "\r\n", "\r"]))
def test_parsed_posts_are_clean(lines, ending):
    posts = parse_dump(ending.join(lines))
    assert [p.index for p in posts] == list(range(len(posts)))
    for post in posts:
        text_lines = post.content.text.split("\n") if post.content.text else []
        assert not has_doubled_run(text_lines)
        assert not any(key(line).casefold() in PLACEHOLDERS for line in text_lines)
        assert post.content.fingerprint == fingerprint(post.content.text)
        assert "\r" not in post.content.text


@settings(max_examples=300, deadline=None)
@given(
    NAME,
    LINE,
    st.lists(LINE, min_size=1, max_size=6),
    st.lists(st.integers(0, 3), min_size=7, max_size=7),
    st.booleans(),
)
def test_a_doubled_body_collapses_back_to_the_post(name, title, block, hows, with_title):
    post = [title, *block]
    if has_doubled_run(post) or key(title) in {key(line) for line in block}:
        return
    # The export prints header, title, block, then the block again (sometimes with the title).
    second = [variant(line, how) for line, how in zip(post if with_title else block, hows, strict=False)]
    dump = "\n".join([f"Forwarded from {name}", *post, *second])
    posts = parse_dump(dump)
    assert len(posts) == 1
    assert posts[0].forwarded_from == name
    assert posts[0].content.text == "\n".join(post)
    # The title line titles the post unless it is only hashtags, mentions and punctuation.
    if "#" not in title and "@" not in title:
        assert posts[0].content.title == title or not regex.search(r"[^\s\p{P}]", title)


def test_the_emoji_byte_prefilter_covers_every_emoji():
    """The fingerprint looks up only characters whose UTF-8 starts as an emoji's can: check them all."""
    emoji = EMOJI.findall("".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000))
    assert len(emoji) > 1000
    for char in emoji:
        assert char.encode()[0] in (0xC2, 0xE2, 0xE3, 0xF0), hex(ord(char))
        # NFKC comes first, so an emoji with a compatibility form ("‼" is "!!") is words.
        if unicodedata.normalize("NFKC", char) == char:
            assert fingerprint(f"a{char}b") == fingerprint("a b"), hex(ord(char))
    assert fingerprint("‼ ok") == fingerprint("!! ok")
