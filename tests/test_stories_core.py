"""The near-duplicate story core (bot/stories): cleaning and shingles, boilerplate, the index.

The posts are real ones (tests/fixtures: the sample channel's dump and a Ukrainian
air-alert channel's export); the copies are edited as relaying channels edit them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from bot.bench.stories import quality
from bot.parse.dump import parse_dump
from bot.stories import FINGERPRINT, MEDIA, TEXT, Stories, StoryConfig, StoryPost, media_key
from bot.stories.boilerplate import Boilerplate
from bot.stories.minhash import Hasher
from bot.stories.shingles import lines, shingles

SAMPLE = Path(__file__).parent / "fixtures" / "mfa_channel_dump.txt"
HOUR = 3600.0
T0 = 1_723_000_000.0


@pytest.fixture(scope="module")
def mfa() -> list[str]:
    return [
        p.content.text for p in parse_dump(SAMPLE.read_text(encoding="utf-8"))
    ]


def words(text: str) -> list[str]:
    return [
        w.decode("cp1251") if not w.startswith(b"\x00") else w[1:].decode() for ln in lines(text) for w in ln
    ]


# --- cleaning ------------------------------------------------------------------------------------


def test_emoji_are_left_out_and_split_words_they_stand_between() -> None:
    assert lines("🔥 Срочно: переговоры 🇷🇺 в Москве ❗️") == lines("Срочно: переговоры в Москве")
    assert words("мир🕊️труд") == ["мир", "труд"]


def test_links_mentions_and_hashtags_are_left_out() -> None:
    text = "Read https://mid.ru/ru/news/1965000/ and t.me/MFARussia/21 via @MID_Russia #СНГ #BRICS today"
    assert words(text) == ["read", "and", "via", "today"]
    assert words("Подробнее: mid.ru/foreign_policy/news/ и www.example.org") == ["подробнее", "и"]


def test_cyrillic_folds_as_the_rules_fold_it() -> None:
    # Case folded, ё read as е, Ukrainian letters kept, punctuation and the arrow gone.
    assert words("ЁЛКА Ёжик") == ["елка", "ежик"]
    assert words("✈️БПЛА→Захід через Київщину/Житомирщину") == [
        "бпла",
        "захід",
        "через",
        "київщину",
        "житомирщину",
    ]
    # A word is the same bytes whether or not the post also holds a script cp1251 cannot spell.
    assert lines("Россия сегодня")[0] == lines("Россия сегодня Ελλάδα")[0][:2]


def test_a_line_break_or_extra_space_does_not_change_the_shingles() -> None:
    a = shingles([w for ln in lines("Foreign Minister Sergey Lavrov took part") for w in ln])
    b = shingles([w for ln in lines("Foreign  Minister\nSergey Lavrov, took part.") for w in ln])
    assert sorted(a) == sorted(b)


def test_signatures_are_datasketchs_minhash() -> None:
    values = shingles([w for ln in lines("President Vladimir Putin congratulated current staff") for w in ln])
    ours = Hasher(64, seed=1).full(values)
    theirs = MinHash(num_perm=64, seed=1, hashfunc=int)
    theirs.update_batch(values.tolist())
    assert np.array_equal(ours, theirs.hashvalues)


# --- boilerplate ---------------------------------------------------------------------------------

FOOTER = "👉 Подписаться | Прислать новость"


def test_a_channels_footer_is_learned_and_left_out(mfa: list[str]) -> None:
    stories = Stories()
    for text in mfa[:8]:
        stories.learn("relay", f"⚡️ Срочно\n{text.splitlines()[0]}\n{FOOTER}")
    post = mfa[6]  # a short one ("A grand concert was held on the Red Square..."): a footer counts
    bare, _, _ = stories.sketch("relay", post)
    wrapped, _, _ = stories.sketch("relay", f"⚡️ Срочно\n{post}\n{FOOTER}")
    assert np.array_equal(bare, wrapped)
    # Another channel has not learned it: there the footer is text.
    other, _, _ = stories.sketch("elsewhere", f"⚡️ Срочно\n{post}\n{FOOTER}")
    assert not np.array_equal(bare, other)


def test_a_line_seen_twice_is_not_boilerplate() -> None:
    learner = Boilerplate()
    learner.learn("c", [b"line a", b"footer"])
    learner.learn("c", [b"line b", b"footer"])
    assert learner.lines("c") == frozenset()
    learner.learn("c", [b"line c", b"footer"])
    assert learner.lines("c") == {b"footer"}


def test_boilerplate_memory_is_bounded_per_channel() -> None:
    learner = Boilerplate(capacity=64)
    for n in range(5_000):
        learner.learn("c", [f"unique line {n}".encode(), b"footer", f"and {n % 7}".encode()])
    state = learner._channels["c"]
    assert len(state.counts) <= 64
    assert b"footer" in learner.lines("c")


# --- the index -----------------------------------------------------------------------------------


def story_of(stories: Stories, post: StoryPost) -> int:
    found = stories.assign(post)
    story = found.story_id if found.story_id is not None else post.post_id
    stories.add(found, story)
    return story


def test_a_copy_with_header_and_footer_joins_the_story_and_another_story_does_not(mfa: list[str]) -> None:
    stories = Stories()
    other = "\n".join(mfa[7].splitlines()[:3])  # Lavrov chairs the CIS Council of Foreign Ministers
    for n, text in enumerate(mfa):
        if n != 7:  # a trimmed copy of it is the other story below
            story_of(stories, StoryPost(n, "mfarussia", T0 + n * 60, text))
    lavrov = mfa[1]
    copy = StoryPost(
        100, "relay", T0 + HOUR, f"❗️ BREAKING\n{lavrov}\n🌍 World Relay — subscribe: t.me/worldrelay"
    )
    found = stories.assign(copy)
    assert found.candidate is not None
    assert (found.candidate.post_id, found.candidate.reason) == (1, TEXT)
    # The same minister, the same organisations, another meeting: a story of its own.
    assert stories.assign(StoryPost(101, "relay", T0 + HOUR, other)).candidate is None


def test_one_template_with_another_region_is_another_alert() -> None:
    stories = Stories()
    story_of(stories, StoryPost(1, "rynda", T0, "✈️БПЛА→Захід через Київщину/Житомирщину"))
    assert (
        stories.assign(StoryPost(2, "rynda", T0 + 60, "✈️БПЛА→Захід через Черкащину/Полтавщину")).candidate
        is None
    )
    # Another emoji and spacing: the same alert.
    again = stories.assign(StoryPost(3, "copy", T0 + 60, "🛩 БПЛА → Захід через Київщину / Житомирщину"))
    assert again.candidate is not None and again.candidate.post_id == 1


def test_the_exact_fingerprint_is_tried_first(mfa: list[str]) -> None:
    stories = Stories()
    story_of(stories, StoryPost(1, "a", T0, mfa[3]))
    found = stories.assign(StoryPost(2, "b", T0 + 60, mfa[3].replace("🤝", "👍")))
    assert found.candidate is not None and found.candidate.reason == FINGERPRINT


def test_the_same_photo_is_the_same_story_unless_its_text_says_otherwise(mfa: list[str]) -> None:
    stories = Stories()
    photo = media_key(file_id="AQADvKYxG2")
    story_of(stories, StoryPost(1, "a", T0, mfa[6], media_key=photo))
    bare = stories.assign(StoryPost(2, "b", T0 + 60, "", media_key=photo))
    assert bare.candidate is not None and bare.candidate.reason == MEDIA
    assert stories.assign(StoryPost(3, "c", T0 + 60, mfa[1], media_key=photo)).candidate is None
    assert media_key(photo_url="https://cdn4.telesco.pe/file/abc.jpg").startswith("url:")


def test_posts_outside_the_window_are_not_candidates(mfa: list[str]) -> None:
    stories = Stories(StoryConfig(window=72 * HOUR))
    story_of(stories, StoryPost(1, "a", T0, mfa[2]))
    assert stories.assign(StoryPost(2, "b", T0 + 71 * HOUR, mfa[2] + "\nИсточник: МИД")).candidate is not None
    assert stories.assign(StoryPost(3, "b", T0 + 73 * HOUR, mfa[2] + "\nИсточник: МИД")).candidate is None


def test_expiry_bounds_memory() -> None:
    config = StoryConfig(window=1000.0, active_size=256)
    stories = Stories(config)
    rng = np.random.default_rng(0)
    sizes = []
    for n in range(20_000):
        sig = rng.integers(0, 256, config.num_perm, dtype=np.uint8)
        stories.index.insert(n, n, T0 + n, sig, fp=n + 1)
        if n % 500 == 0:
            stories.expire(T0 + n)
            sizes.append((len(stories.index), stories.index.nbytes()))
    # 1,000 posts in the window: what is held stays near it, not near the 20,000 inserted.
    assert max(count for count, _ in sizes[4:]) < 2_000
    assert max(nbytes for _, nbytes in sizes[4:]) < 2 * sizes[4][1] + 100_000
    assert stories.index.by_fingerprint(1, T0 + 19_999) == []


def test_a_rebuilt_index_gives_the_same_answers(mfa: list[str]) -> None:
    feed = []
    for n, text in enumerate(mfa):
        feed.append(StoryPost(2 * n, "mfarussia", T0 + n * 600, text))
        feed.append(StoryPost(2 * n + 1, f"relay{n % 3}", T0 + n * 600 + 300, f"⚡️ Срочно\n{text}\n{FOOTER}"))
    live = Stories()
    stored = [StoryPost(p.post_id, p.channel, p.time, p.text, story_id=story_of(live, p)) for p in feed]
    assert len({s.story_id for s in stored}) == len(mfa)  # each copy joined its original
    rebuilt = Stories.rebuild(stored)
    derived = Stories.rebuild([StoryPost(p.post_id, p.channel, p.time, p.text) for p in feed])
    probes = [
        StoryPost(900 + n, "late", T0 + 8 * HOUR, f"{text}\nПодробнее: https://mid.ru/x")
        for n, text in enumerate(mfa)
    ]
    for probe in probes:
        want = live.assign(probe).candidate
        assert rebuilt.assign(probe).candidate == want
        assert derived.assign(probe).candidate == want


def test_the_evaluation_set_meets_the_floor() -> None:
    result = quality(StoryConfig())
    assert result["same"] >= 200 and result["different"] >= 200
    assert result["f1"] >= 0.95, result


def test_a_batchs_sketches_are_each_posts_own(mfa: list[str]) -> None:
    # Long, short (fewer words than a shingle), empty once cleaned, in every order: one pass over the
    # batch must give each post the signature it would get alone.
    texts = [mfa[0], "two words", "🙂 https://t.me/x", mfa[1][:200], "one", "", mfa[2], "a b", mfa[3]]
    posts = [StoryPost(i, "c", 1.0, t) for i, t in enumerate(texts * 40)]
    stories = Stories()
    alone = [stories.sketch(p.channel, p.text) for p in posts]
    together = stories.sketches(posts)
    assert [s is None for s, _, _ in together] == [s is None for s, _, _ in alone]
    assert [keys for _, keys, _ in together] == [keys for _, keys, _ in alone]
    assert [lines for _, _, lines in together] == [lines for _, _, lines in alone]
    for (a, _, _), (b, _, _) in zip(alone, together, strict=True):
        assert a is None or np.array_equal(a, b)
