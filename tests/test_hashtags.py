"""Hashtags as Telegram finds them: the cases of tdlib's test/message_entities.cpp (TEST hashtag).

tdlib's newer `#tag@username` form is left out: the issue's rule stops a hashtag at '@'.
"""

from __future__ import annotations

import pytest

from bot.parse import extract_hashtags

LONG_INPUT = (
    "#a12345678901234561234567890123456123456789012345612345678901234561234567890123456123456789012345612345678901234"
    "5612345678901234561234567890123456123456789012345612345678901234561234567890123456123456789012345612345678901234"
    "5612345678901234561234567890123456"
)
LONG_EXPECTED = (
    "a1234567890123456123456789012345612345678901234561234567890123456123456789012345612345678901234561234567890123"
    "456123456789012345612345678901234561234567890123456123456789012345612345678901234561234567890123456123456789012"
    "34561234567890123456123456789012345"
)

TDLIB_CASES = [
    ("", []),
    ("#", []),
    ("##", []),
    ("###", []),
    ("#a", ["a"]),
    (" #a", ["a"]),
    ("#a ", ["a"]),
    (" #я ", ["я"]),
    (" я#a ", []),
    (" #a# ", []),
    (" #123 ", []),
    (" #123a ", ["123a"]),
    (" #a123 ", ["a123"]),
    (" #123a# ", []),
    (" #" + "1" * 300, []),
    (" #" + "1" * 256, []),
    (" #" + "1" * 256 + "a ", []),
    (" #" + "1" * 255 + "a", ["1" * 255 + "a"]),
    (" #" + "1" * 255 + "Я", ["1" * 255 + "Я"]),
    (" #" + "1" * 255 + "a" + "b" * 255 + "# ", []),
    ("#a#b #c #d", ["c", "d"]),
    ("#test", ["test"]),
    ("#test@", ["test"]),
    ("#test@a", ["test"]),
    ("#test@ab", ["test"]),
    ("#test@a-c", ["test"]),
    ("#te·st", ["te·st"]),
    (
        "\U0001f604\U0001f604\U0001f604\U0001f604 \U0001f604\U0001f604\U0001f604#"
        + "1" * 200
        + "ООО"
        + "2" * 200,
        ["1" * 200 + "ООО" + "2" * 53],
    ),
    ("#a\u2122", ["a"]),
    ("#a൹", ["a"]),
    ("#aඁං෴ก฿", ["aඁං෴ก"]),
    (LONG_INPUT, [LONG_EXPECTED]),
]


@pytest.mark.parametrize(("text", "expected"), TDLIB_CASES)
def test_tdlib_cases(text, expected):
    assert extract_hashtags(text) == expected


def test_the_long_case_is_cut_at_256_characters():
    assert len(LONG_EXPECTED) == 256 and LONG_INPUT[1:257] == LONG_EXPECTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the #CIS’s chairmanship", ["CIS"]),
        ("Organisation (#CSTO), the", ["CSTO"]),
        ("в рамках #СНГ и", ["СНГ"]),
        ("#a#b #c", ["c"]),
        ("#CIS #cis #Cis #EAEU", ["CIS", "EAEU"]),
        ("#b #a #b", ["b", "a"]),
        ("#a\u200cb", ["a\u200cb"]),
        ("a\u200c#b _#c 1#d ·#e", []),
        ("#_1a", ["_1a"]),
        ("#2024", []),
        (
            "#WYF2024\n#IndiaNationalYouthOrchestraandChorus",
            ["WYF2024", "IndiaNationalYouthOrchestraandChorus"],
        ),
        ("line one #end\n#start line two", ["end", "start"]),
        ("C# and F#", []),
        ("#Κρήτη #東京", ["Κρήτη", "東京"]),
    ],
)
def test_issue_rules(text, expected):
    assert extract_hashtags(text) == expected
