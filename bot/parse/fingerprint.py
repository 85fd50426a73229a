"""The fingerprint that recognises the same post in two channels, or twice.

It is a hash of the post's visible words: each line compared as the dump parser compares lines (zero
width characters removed, NFC, white space collapsed), then NFKC, casefolded, emoji dropped, and the
lines' words joined by single spaces. Working line by line gives the same words as working on the
whole text (every line break is white space, and none of these steps reaches across one), and it
lets the dump parser reuse the lines it has already compared.
"""

from __future__ import annotations

import re
import unicodedata

import regex
import xxhash

# Emoji by the properties that hold only emoji: `\p{Emoji}` would also drop digits, '#' and '*'.
EMOJI = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}\p{Emoji_Modifier}]")
# In UTF-8 every such character starts with one of these lead bytes (a test checks it against the
# property): finding those few characters is far cheaper than a property lookup on every character.
_CANDIDATE = re.compile(rb"[\xc2\xe2\xe3\xf0][\x80-\xbf]+")
# Variation selectors and the keycap mark only shape emoji; ZWJ and the other zero-width characters
# are already gone from a compared line.
_TAGS = regex.compile("[\U000e0020-\U000e007f]+")
_ZERO_WIDTH = ("\u200b", "\u200d", "\u2060", "\ufeff")


def compare_key(line: str) -> str:
    """A line as compared: zero-width characters removed, NFC, white space collapsed, ends trimmed."""
    # Any zero-width character, or white space other than a single space, makes a line non-printable.
    if line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " ":
        return line if line.isascii() else unicodedata.normalize("NFC", line)
    for char in _ZERO_WIDTH:
        if char in line:
            line = line.replace(char, "")
    # Zero-width characters go before NFC, so that one between a letter and its accent cannot keep
    # two copies of a line apart. str.split() splits on every Unicode space, no-break space included.
    return " ".join(unicodedata.normalize("NFC", line).split())


_emoji_memo: dict[bytes, bool] = {}


def _is_emoji(char: bytes) -> bool:
    found = _emoji_memo.get(char)
    if found is None:
        if len(_emoji_memo) > 4096:
            _emoji_memo.clear()
        found = _emoji_memo[char] = EMOJI.match(char.decode("utf-8", "surrogatepass")) is not None
    return found


def line_words(key: str) -> bytes:
    """A compared line's words (UTF-8): NFKC, casefolded, emoji dropped, single spaces."""
    if "\ufe0f" in key:
        key = key.replace("\ufe0f", "")
    if "\ufe0e" in key or "\u20e3" in key:
        key = key.replace("\ufe0e", "").replace("\u20e3", "")
    if "\U000e007f" in key:
        key = _TAGS.sub("", key)
    text = unicodedata.normalize("NFKC", key)
    if text is not key and text != key:
        # Compatibility forms can decompose to spaced text.
        text = " ".join(text.split())
    data = text.casefold().encode("utf-8", "surrogatepass")
    if not data.isascii():
        found = _CANDIDATE.findall(data)
        if found:
            for char in set(found):
                if _is_emoji(char):
                    # An emoji may stand between two words, so it leaves a space.
                    data = data.replace(char, b" ")
    # Emoji usually start a line: trimming is enough, collapsing is rarely needed.
    if data[:1] == b" " or data[-1:] == b" ":
        data = data.strip(b" ")
    if b"  " in data:
        data = b" ".join(data.split())
    return data


def digest(words: list[bytes]) -> str | None:
    """The fingerprint of a post from its lines' words; None when there are none (media only)."""
    joined = b" ".join(w for w in words if w)
    return xxhash.xxh3_128_hexdigest(joined) if joined else None


def fingerprint(text: str) -> str | None:
    """A stable hex digest of the post's visible words; None when there are none (media only)."""
    return digest([line_words(compare_key(line)) for line in text.splitlines()])
