"""The rule engine: term semantics, groups, policies and scopes, and agreement with a naive reference."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.rules.engine import Engine, MatchInput
from bot.rules.rule import Rule
from bot.rules.terms import normalise


def rule(rule_id: str = "r", match: dict | None = None, **kw) -> Rule:
    return Rule(id=rule_id, match=match or {"any": ["x"]}, **kw)


def hits(term: str, text: str, hashtags: tuple[str, ...] = ()) -> list[str]:
    """The pieces of `text` a one-term rule emphasises; [] when it does not match."""
    found = Engine([rule(match={"any": [term]})]).match(MatchInput(text, hashtags))
    return [text[h.start : h.end] for m in found for h in m.hits] or (["<tag>"] if found else [])


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        # whole words, with boundaries in every script
        ("Moldova", "Moldova and Moldovan relations", ["Moldova"]),
        ("Moldova", "Moldovan relations", []),
        ("СНГ", "страны (СНГ) и СНГФ", ["СНГ"]),
        ("СНГ", "СНГФ", []),
        ("снг", "саммит СНГ.", ["СНГ"]),
        ("भारत", "भारतीय संघ", []),  # Devanagari: the vowel sign is a word character
        ("भारत", "नमस्ते भारत!", ["भारत"]),
        ("भारतीय", "नमस्ते भारतीय", ["भारतीय"]),
        # ends that are not word characters need no boundary there
        ("C++", "written in C++11 and C#", ["C++"]),
        ("C++", "ABC++", []),
        ("U.S.", "the U.S. economy", ["U.S."]),
        ("U.S.", "the U.S.A.", ["U.S."]),
        # ё and е, case folding, NFKC, zero-width characters
        ("ёлка", "Елка", ["Елка"]),
        ("елка", "ЁЛКА", ["ЁЛКА"]),
        ("straße", "STRASSE", ["STRASSE"]),
        ("BRICS", "ＢＲＩＣＳ summit", ["ＢＲＩＣＳ"]),  # fullwidth letters fold by NFKC
        ("Moldova", "Mol\u200bdova", ["Mol\u200bdova"]),
        ("café", "cafe\u0301 au lait", ["cafe\u0301"]),  # decomposed é matches composed
        # word characters outside Latin and Cyrillic still bound words; emoji and "?" do not
        ("бета", "бета𠀀 бетаé αбета бета😀", ["бета"]),
        ("beta", "betaé? beta?", ["beta"]),
        ("café", "Café, cafés", ["Café"]),
        # prefixes
        ("санкци*", "по санкциям ЕС", ["санкциям"]),
        ("санкци*", "санкции", ["санкции"]),
        ("санкци*", "антисанкционный", []),
        ("sanction*", "Sanctioned entities", ["Sanctioned"]),
        # phrases: any run of white space between the words
        ("global majority", "the Global  \n majority of", ["Global  \n majority"]),
        ("global majority", "global majorityship", []),
        ("global majority", "globalmajority", []),
        (
            "Министерство иностранных дел",
            "МИНИСТЕРСТВО\tиностранных   дел",
            ["МИНИСТЕРСТВО\tиностранных   дел"],
        ),
        ("ограничительн мер*", "ограничительн мерами", ["ограничительн мерами"]),
        # hashtags look at the post's hashtags, not at words
        ("#BRICS", "BRICS summit", []),
        ("#BRICS", "summit #brics", ["#brics"]),
        ("#brics", "summit", ["<tag>"]),  # known from entities only: a hit without a span
        ("BRICS", "#BRICS summit", ["BRICS"]),  # a word term still sees the word inside the hashtag
    ],
)
def test_term_kinds(term: str, text: str, expected: list[str]) -> None:
    tags = tuple(t.lstrip("#") for t in regex.findall(r"#\w+", text))
    if term == "#brics" and text == "summit":
        tags = ("BRICS",)
    assert hits(term, text, tags) == expected


def test_regex_terms_run_on_nfc_text_with_their_own_case_rules() -> None:
    engine = Engine(
        [
            rule("cs", {"any": [{"regex": r"Pu+tin"}]}),
            rule("ci", {"any": [{"regex": r"pu+tin", "flags": "i"}]}),
        ]
    )
    assert [m.rule_id for m in engine.match(MatchInput("PUUTIN"))] == ["ci"]
    found = engine.match(MatchInput("said Puutin."))
    assert [(m.rule_id, m.terms) for m in found] == [("cs", ("Pu+tin",)), ("ci", ("pu+tin",))]
    assert [(h.start, h.end) for h in found[0].hits] == [(5, 11)]


def test_catastrophic_regex_times_out_as_no_hit(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine([rule("slow", {"any": [{"regex": r"(a|aa)+$"}]})])
    text = "a" * 60 + "b"
    assert engine.match(MatchInput(text)) == []
    assert engine.match(MatchInput(text)) == []
    assert sum("timed out" in r.message for r in caplog.records) == 1


def ids(engine: Engine, text: str, **kw) -> list[str]:
    return [m.rule_id for m in engine.match(MatchInput(text, **kw))]


@pytest.mark.parametrize(
    ("match", "text", "expected"),
    [
        ({"all": ["brics", "cis"]}, "BRICS and CIS", True),
        ({"all": ["brics", "cis"]}, "BRICS alone", False),
        ({"any": ["brics", "cis"]}, "CIS alone", True),
        ({"none": ["war"]}, "peace talks", True),  # a none-only group matches when nothing hits
        ({"none": ["war"]}, "war", False),
        ({"none": ["war"]}, "", True),
        ({"any": ["brics"], "none": ["#Announcement"]}, "BRICS summit", True),
        ({"any": ["brics"], "none": ["summit"]}, "BRICS summit", False),
        ({"all": ["brics"], "any": ["cis", "sco"]}, "BRICS and SCO", True),
        ({"all": ["brics"], "any": ["cis", "sco"]}, "BRICS only", False),
        ({"any": [{"all": ["brics", "cis"]}, {"all": ["sco", "asean"]}]}, "SCO meets ASEAN", True),
        ({"any": [{"all": ["brics", "cis"]}, {"all": ["sco", "asean"]}]}, "SCO meets BRICS", False),
        ({"all": ["brics", {"none": ["cis"]}]}, "BRICS", True),
        ({"all": ["brics", {"none": ["cis"]}]}, "BRICS CIS", False),
        ({"any": [{"none": ["brics"]}, "cis"]}, "nothing here", True),
        ({"any": [{"none": ["brics"]}, "cis"]}, "BRICS only", False),
        ({"any": ["brics", {"regex": "S[CK]O"}]}, "the SKO", True),  # a regex alone can satisfy `any`
        ({"all": ["brics", {"regex": "S[CK]O"}]}, "the SKO", False),
    ],
)
def test_groups(match: dict, text: str, expected: bool) -> None:
    assert ids(Engine([rule(match=match)]), text) == (["r"] if expected else [])


def test_match_reports_positive_terms_and_spans_in_original_text() -> None:
    engine = Engine(
        [rule("brics", {"any": ["BRICS", "#BRICS", "global majority"], "none": ["#Announcement"]})]
    )
    text = "ЁЖ\u200b BRICS and the Global\nMajority #BRICS"
    (m,) = engine.match(MatchInput(text, hashtags=("BRICS",)))
    assert m.rule_id == "brics" and m.severity == "medium" and m.notify == ("console",)
    assert m.terms == ("BRICS", "#BRICS", "global majority")
    assert [(text[h.start : h.end], h.term) for h in m.hits] == [
        ("BRICS", "BRICS"),
        ("Global\nMajority", "global majority"),
        ("#BRICS", "#BRICS"),
        ("BRICS", "BRICS"),
    ]


def test_forwards_policy() -> None:
    engine = Engine(
        [
            rule("inc", {"any": ["brics"]}),
            rule("exc", {"any": ["brics"]}, forwards="exclude"),
            rule("only", {"any": ["brics"]}, forwards="only"),
        ]
    )
    assert ids(engine, "BRICS") == ["inc", "exc"]
    assert ids(engine, "BRICS", is_forward=True) == ["inc", "only"]


def test_edits_policy() -> None:
    engine = Engine([rule("re", {"any": ["brics"]}), rule("ign", {"any": ["brics"]}, edits="ignore")])
    assert ids(engine, "BRICS") == ["re", "ign"]
    assert ids(engine, "BRICS", is_edit=True) == ["re"]


def test_disabled_rules_never_match() -> None:
    assert ids(Engine([rule(match={"none": ["x"]}, enabled=False)]), "y") == []


def test_channel_scopes() -> None:
    engine = Engine(
        [
            rule("all", {"any": ["brics"]}),
            rule("mfa", {"any": ["brics"]}, channels=["@MFARussia"]),
            rule("not-mfa", {"any": ["brics"]}, exclude_channels=["https://t.me/s/mfarussia"]),
            rule("dump", {"any": ["brics"]}, channels=["dump"]),
        ]
    )
    assert ids(engine, "BRICS", channel_names=frozenset({"mfarussia"})) == ["all", "mfa"]
    assert ids(engine, "BRICS", channel_names=frozenset({"rian_ru"})) == ["all", "not-mfa"]
    assert ids(engine, "BRICS", channel_names=frozenset({"dump:mfa", "dump"})) == ["all", "not-mfa", "dump"]


def test_many_rules_sharing_terms_and_keys() -> None:
    engine = Engine(
        [
            rule("a", {"any": ["global"]}),
            rule("b", {"any": ["global majority"]}),
            rule("c", {"any": ["global*"]}),
            rule("d", {"any": ["Global"]}),
        ]
    )
    assert ids(engine, "globalisation") == ["c"]
    assert ids(engine, "global minority") == ["a", "c", "d"]
    assert ids(engine, "global majority") == ["a", "b", "c", "d"]


def test_word_terms_inside_and_around_each_other() -> None:
    # Word terms that are prefixes, suffixes and infixes of each other and of the text's words: each
    # hits only where it is a whole word, however the automaton's matches overlap.
    engine = Engine(
        [
            rule("sank", {"any": ["санк"]}),
            rule("sankcii", {"any": ["санкции"]}),
            rule("kcii", {"any": ["кции"]}),
            rule("sankciyam", {"any": ["санкциям"]}),
            rule("prefix", {"any": ["санкци*"]}),
        ]
    )
    text = "Санкции, санкциями и санк; а кции — санкциям."
    found = {m.rule_id: [text[h.start : h.end] for h in m.hits] for m in engine.match(MatchInput(text))}
    assert found == {
        "sank": ["санк"],
        "sankcii": ["Санкции"],
        "kcii": ["кции"],
        "sankciyam": ["санкциям"],
        "prefix": ["Санкции", "санкциями", "санкциям"],
    }


def test_empty_rule_set() -> None:
    assert Engine([]).match(MatchInput("anything")) == []


# --- property: the engine agrees with a naive, one-term-at-a-time reference -------------------------

# é, the emoji and "?" stand for text outside the one-byte codec word terms are scanned in.
ALPHABET = "abcеёЕЁСé+.? \n\u200bश्र😀"
words = st.text(alphabet="abcеёЕЁСé", min_size=1, max_size=3)


def _naive_term(term: str, text: str) -> bool:
    norm = normalise(text)
    if term.startswith("#"):
        return False
    prefix = term.endswith("*")
    body = normalise(term.rstrip("*")).split()
    pattern = r"\s+".join(regex.escape(p) for p in body)
    if regex.match(r"\w", body[0][0]):
        pattern = r"(?<!\w)" + pattern
    if not prefix and regex.match(r"\w", body[-1][-1]):
        pattern += r"(?!\w)"
    return regex.search(pattern, norm) is not None


def _naive_group(group: dict, text: str) -> bool:
    def item(i: object) -> bool:
        return _naive_term(i, text) if isinstance(i, str) else _naive_group(i, text)

    ok = True
    if "all" in group:
        ok &= all(item(i) for i in group["all"])
    if "any" in group:
        ok &= any(item(i) for i in group["any"])
    if "none" in group:
        ok &= not any(item(i) for i in group["none"])
    return ok


terms = st.one_of(
    words,
    st.builds(lambda w: w + "*", words),
    st.builds(lambda a, b: f"{a} {b}", words, words),
    st.sampled_from(["C++", "с.", "श्र", "ёЕ"]),
)
groups = st.recursive(
    st.lists(terms, min_size=1, max_size=3).map(lambda ts: {"any": ts}),
    lambda inner: st.dictionaries(
        st.sampled_from(["all", "any", "none"]),
        st.lists(st.one_of(terms, inner), min_size=1, max_size=3),
        min_size=1,
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(groups, min_size=1, max_size=5), st.lists(st.text(alphabet=ALPHABET, max_size=40), max_size=4)
)
def test_engine_agrees_with_naive_reference(rule_groups: list[dict], texts: list[str]) -> None:
    engine = Engine([rule(f"r{i}", g) for i, g in enumerate(rule_groups)])
    for text in texts:
        expected = [f"r{i}" for i, g in enumerate(rule_groups) if _naive_group(g, text)]
        assert ids(engine, text) == expected


# Every character cp1251 can write, plus a few it cannot, and combining marks that compose.
_CP1251 = [c for c in (bytes([b]).decode("cp1251", "ignore") for b in range(256)) if c]
_OTHERS = ["é", "e\u0301", "\u0301", "ß", "ﬁ", "\u200b", "😀", "Σ", "ς"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_CP1251 + _OTHERS), max_size=40).map("".join))
def test_the_cp1251_fast_path_folds_exactly_as_the_general_one(text: str) -> None:
    from bot.rules.terms import normalise_mapped

    fast = normalise_mapped(text)
    assert fast.text == normalise(text)
    if fast.narrow is not None:
        assert fast.narrow == fast.text.encode("cp1251") and fast.origin is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ЁЛКА Ёлка", "елка елка"),
        ("Moscow\u00a0№\u00a05", "moscow no 5"),  # NBSP and № are not folded byte by byte: the slow path
        ("µ-sized", "μ-sized"),
        ("Ukraine…", "ukraine..."),
    ],
)
def test_folding_of_cp1251_text(text: str, expected: str) -> None:
    from bot.rules.terms import normalise_mapped

    assert normalise_mapped(text).text == expected
