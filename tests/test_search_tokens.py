"""The tokenizer's fast path (a byte table, for Latin and Cyrillic text with emoji) gives exactly the
words of its definition (the rules' normalisation, then runs of letters, digits and marks), and the
highlighter's words are the indexed ones: otherwise a post would be indexed under one word and
searched, or highlighted, under another."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.rules.terms import normalise_mapped
from bot.search import tokens

# What posts hold, and the characters where a shortcut would go wrong: apostrophes, combining marks
# (a stress mark, a decomposed й), zero-width characters, the soft hyphen, emoji and their variation
# selectors, '№' (two letters to the rules), letters outside cp1251, fullwidth and ligature letters.
TRICKY = list(
    "aZz09 ,.'’ʼ-_#\t\nёЁіЇєҐйиеЕ\u0306\u0301\u0308№™µ…«»"
    "\u200b\u200d\u00ad\ufe0f\u20e3😀❗🇷🇺ßİıΣςαファ①ⓐ²?ＦﬁǅŁ"
)
text = st.text(alphabet=st.sampled_from(TRICKY), max_size=16)


@given(text)
def test_the_fast_path_reads_every_text_as_the_definition_does(sample: str) -> None:
    assert tokens.folded_words(sample) == tokens._slow_words(sample)
    assert tokens.body(sample) == " ".join(tokens.stems(sample))


@given(text)
def test_the_highlighter_sees_the_words_the_index_holds(sample: str) -> None:
    assert [w.stem for w in tokens.words(normalise_mapped(sample))] == tokens.stems(sample)


def test_words_are_folded_as_the_rules_fold_them_and_stemmed_by_script() -> None:
    assert tokens.stems("Санкції, САНКЦИИ; sanctions") == ["санкц", "санкц", "sanction"]
    assert tokens.stems("п'ять пʼять п’ять") == ["пят"] * 3
    assert tokens.stems("сан\u200bкции ёлка Ёлка за\u0301мок") == ["санкц", "елк", "елк", "замок"]
    assert tokens.stems("Ｆｕｌｌ width № 5 αβγ 😀") == ["full", "width", "no", "5", "αβγ"]
    assert tokens.tags(["#Breaking_News", "Україна", "#СНГ", "#снг"]) == ["breaking_news", "україна", "снг"]
