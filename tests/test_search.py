"""The archive's search on both stores: word forms in three languages, the query language, filters,
both orders and their pages. Posts go in through the real ingest path, searches through bot.search."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot.pipeline.ingest import Ingest
from bot.search import Filters, QueryError, Results, highlight, search
from bot.sources.model import ChannelRef, Forward, Incoming
from bot.store import channels as channel_rows

NEWS = ChannelRef(tg_id=4242, username="NewsRoom", title="The News Room")
OTHER = ChannelRef(tg_id=4343, username="elsewhere", title="Elsewhere")
DUMP = ChannelRef(dump="dump:Archive", title="archive")
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

# Word forms that must find each other, written from the languages (not from the stemmer): each row
# is one lemma's forms; a post holds one form; a search for any form finds every post of its row and
# no other. Russian and Ukrainian forms of the same word find each other too.
FORMS: dict[str, list[str]] = {
    "sanctions": ["санкции", "санкций", "санкциям", "санкциями", "санкциях", "санкції", "санкціям"],
    "war-uk": ["війна", "війни", "війну", "війною"],
    "talks": ["переговоры", "переговоров", "переговорам", "переговорах", "переговори", "переговорів"],
    "minister": ["министр", "министра", "министру", "министром", "міністр", "міністра"],
    "border-ru": ["граница", "границы", "границу", "границей"],
    "border-uk": ["кордон", "кордону", "кордоном"],
    "security-uk": ["безпека", "безпеки", "безпеку", "безпекою"],
    "sanction-en": ["sanction", "sanctions", "sanctioned", "sanctioning"],
    "attack": ["attack", "attacks", "attacked", "attacking"],
    "negotiation": ["negotiation", "negotiations"],
    "election": ["election", "elections"],
    "ministry-en": ["ministry", "ministries"],
}
# Words that look alike but are other words: none of them may be found by the rows above.
DECOYS = ["санитар", "министерство", "граничный", "sanctuary", "minister", "attic", "war", "electric"]


def _ingest(engine: Engine, items: list[Incoming]) -> None:
    Ingest(engine).ingest_sync(items)


def _ids(engine: Engine, query: str, filters: Filters = Filters(), **kw: object) -> list[int]:
    """The message ids (Telegram's) a search finds, in its order, across every page."""
    out: list[int] = []
    cursor = None
    with Session(engine) as session:
        while True:
            page: Results = search(session, query, filters, cursor=cursor, **kw)  # type: ignore[arg-type]
            out += [h.msg_id for h in page.hits]
            cursor = page.next_cursor
            if cursor is None:
                return out


def _post(n: int, text: str, channel: ChannelRef = NEWS, **kw: object) -> Incoming:
    return Incoming(channel=channel, message_id=n, text=text, date=T0 + timedelta(minutes=n), **kw)  # type: ignore[arg-type]


def test_a_word_in_any_form_finds_its_other_forms_and_nothing_else(store: Engine) -> None:
    posts, rows = [], {}
    n = 0
    for lemma, forms in FORMS.items():
        rows[lemma] = []
        for form in forms:
            n += 1
            posts.append(_post(n, f"Сообщение {n}: {form}."))
            rows[lemma].append(n)
    decoys = {}
    for word in DECOYS:
        n += 1
        posts.append(_post(n, f"Сообщение {n}: {word}."))
        decoys[word] = n
    _ingest(store, posts)
    # A Russian and a Ukrainian minister are one; so are the two rows of sanctions.
    same = {"minister": rows["minister"], "sanctions": rows["sanctions"]}
    for lemma, forms in FORMS.items():
        expected = sorted(same.get(lemma, rows[lemma]))
        for form in forms:
            assert sorted(_ids(store, form)) == expected, (lemma, form)
            assert sorted(_ids(store, form.upper())) == expected, (lemma, form.upper())
    for word, n in decoys.items():
        assert _ids(store, word) == [n], word  # found by itself; by no row above (their sets are exact)


@pytest.fixture
def newsroom(store: Engine) -> Engine:
    _ingest(
        store,
        [
            _post(1, "Foreign ministry statement on the talks"),
            _post(2, "The ministry, foreign trade and its partners"),
            _post(3, "New sanctions announced today #Sanctions #breaking_news"),
            _post(4, "Sanctions were discussed, trade too"),
            _post(5, "Ёлка на площади и новогодняя ярмарка"),
            _post(6, "Новая елка в парке"),
            _post(7, "Обсуждались сан\u200bкции и пере\u200dговоры"),
            _post(8, "A long negotiation ended; negotiations resume"),
            _post(9, "Пʼять років переговорів"),
            _post(10, "#Україна і санкції"),
        ],
    )
    return store


def test_a_phrase_needs_its_words_in_order_and_next_to_each_other(newsroom: Engine) -> None:
    assert _ids(newsroom, '"foreign ministry"') == [1]
    assert _ids(newsroom, '"ministry foreign"') == [2]  # the comma is no word: still next to each other
    assert sorted(_ids(newsroom, "foreign ministry")) == [1, 2]  # words, in any order
    assert _ids(newsroom, '"foreign trade partners"') == []


def test_exclusions_hashtags_and_prefixes(newsroom: Engine) -> None:
    assert sorted(_ids(newsroom, "sanctions")) == [3, 4]
    assert _ids(newsroom, "sanctions -trade") == [3]
    assert _ids(newsroom, 'ministry -"foreign trade"') == [1]
    assert _ids(newsroom, "#sanctions") == [3]  # the tag, not the word in post 4's text
    assert _ids(newsroom, "#SANCTIONS") == [3]
    assert _ids(newsroom, "#sanction") == []  # a tag is not stemmed: the whole tag or nothing
    assert _ids(newsroom, "#breaking_news") == [3]
    assert _ids(newsroom, "#breaking") == []
    assert _ids(newsroom, "#україна") == [10]
    assert _ids(newsroom, "sanctions -#sanctions") == [4]
    assert sorted(_ids(newsroom, "санкц*")) == [7, 10]
    assert sorted(_ids(newsroom, "санкци*")) == [7, 10]
    assert sorted(_ids(newsroom, "negotiat*")) == [8]  # past the stem (negoti) of `negotiations`
    assert _ids(newsroom, "negotiati*") == [8]
    assert sorted(_ids(newsroom, "перегов*")) == [7, 9]
    assert _ids(newsroom, '"foreign minis*"') == [1] == _ids(newsroom, '"foreign minis"*')
    assert _ids(newsroom, '"ministry forei"*') == [2]


def test_case_yo_zero_width_and_apostrophes_are_read_as_the_rules_read_them(newsroom: Engine) -> None:
    assert sorted(_ids(newsroom, "елка")) == [5, 6]
    assert sorted(_ids(newsroom, "ЁЛКУ")) == [5, 6]
    assert sorted(_ids(newsroom, "санкции")) == [7, 10]  # post 7 has a zero-width space inside
    assert sorted(_ids(newsroom, "сан\u200bкций")) == [7, 10]
    assert _ids(newsroom, "переговоров") == [9, 7]
    assert _ids(newsroom, "п'ять") == [9] == _ids(newsroom, "пять")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('"foreign ministry', 'the query has an unclosed quote (")'),
        ("-trade -ministry", "a query needs something to find besides what it excludes (-word)"),
        ("!!!", "'!!!' has no letters or digits to search for"),
        ("ministry ***", "'*' needs a prefix before it: ***"),
        ("mi*", "a prefix needs at least 3 letters before '*': mi*"),
        ("#", "'#' needs a tag after it: #"),
        ("#tag*", "a hashtag takes no '*': #tag*"),
        ("a*b", "'*' goes only at the end of a word: a*b"),
    ],
)
def test_a_query_that_cannot_run_says_why_in_one_line(newsroom: Engine, query: str, message: str) -> None:
    with Session(newsroom) as session, pytest.raises(QueryError) as raised:
        search(session, query)
    assert str(raised.value) == message
    assert "\n" not in message


def test_highlight_marks_every_form_phrase_prefix_and_tag_and_keeps_the_text_whole() -> None:
    text = "Санкции: новые санкциям, старые \u200bсанкцій. Foreign Ministry; #Sanctions #sanctionsx"

    def marked(query: str) -> list[str]:
        pieces = highlight(text, query)
        assert "".join(p for p, _ in pieces) == text
        return [p for p, hit in pieces if hit]

    assert marked("санкции") == ["Санкции", "санкциям", "санкцій"]
    assert marked('"foreign ministry"') == ["Foreign Ministry"]
    assert marked("#sanctions") == ["#Sanctions"]
    assert marked("санк* -foreign") == ["Санкции", "санкциям", "санкцій"]
    assert marked("nothing") == []
    assert highlight("", "x") == [("", False)]
    with pytest.raises(QueryError):
        highlight(text, '"open')


@pytest.fixture
async def filtered(make_pipeline: Callable[..., object], store: Engine) -> Engine:
    pipeline = make_pipeline("rules:\n  - id: grid\n    match: {any: [blackout]}\n    notify: [console]\n")
    posts = [
        _post(1, "blackout in the north", media=["photo"]),
        _post(2, "blackout in the south", forward=Forward(name="Regional Энерго Desk")),
        _post(3, "blackout report", media=["video", "photo"]),
        _post(4, "blackout over", channel=OTHER),
        _post(5, "blackout archive entry", channel=DUMP),
        _post(6, "no power, a blackout"),
    ]
    await pipeline.ingest.ingest(posts)  # type: ignore[attr-defined]
    edit = _post(6, "no power, a blackout (edited)", edit_date=T0 + timedelta(hours=1))
    await pipeline.ingest.ingest([edit])  # type: ignore[attr-defined]
    with Session(store) as session, session.begin():
        channel_rows.mark_deleted(session, NEWS, [3])
    return store


async def test_filters_narrow_the_hits(filtered: Engine) -> None:
    everything = [6, 5, 4, 3, 2, 1]
    assert _ids(filtered, "blackout") == everything
    assert _ids(filtered, "", Filters(channel="@newsroom")) == [6, 3, 2, 1]
    assert _ids(filtered, "blackout", Filters(channel="NewsRoom")) == [6, 3, 2, 1]
    assert _ids(filtered, "blackout", Filters(channel="https://t.me/elsewhere")) == [4]
    assert _ids(filtered, "blackout", Filters(channel="-1004343")) == [4]
    assert _ids(filtered, "blackout", Filters(channel="dump:archive")) == [5]
    assert _ids(filtered, "blackout", Filters(channel="nobodyhere")) == []
    assert _ids(filtered, "", Filters(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))) == [
        3,
        2,
    ]
    assert _ids(filtered, "blackout", Filters(rule="grid")) == everything
    assert _ids(filtered, "blackout", Filters(rule="other")) == []
    assert _ids(filtered, "", Filters(media="any")) == [3, 1]
    assert _ids(filtered, "", Filters(media="video")) == [3]
    assert _ids(filtered, "", Filters(forwarded_from="regional Энерго")) == [2]
    assert _ids(filtered, "", Filters(forwarded_from="desk_")) == []  # '_' is no wildcard
    assert _ids(filtered, "", Filters(edited=True)) == [6]
    assert _ids(filtered, "blackout", Filters(edited=False)) == [5, 4, 3, 2, 1]
    assert _ids(filtered, "", Filters(deleted=True)) == [3]
    assert _ids(filtered, "blackout", Filters(deleted=False, channel="newsroom")) == [6, 2, 1]
    with Session(filtered) as session:
        with pytest.raises(QueryError, match="channel: "):
            search(session, "", Filters(channel="not a channel!"))
        with pytest.raises(QueryError, match="media: "):
            search(session, "", Filters(media="hologram"))
        hit = search(session, "north").hits[0]
    assert hit.channel == "@newsroom" and hit.url == "https://t.me/newsroom/1"
    assert hit.media == ("photo",) and [p for p, is_hit in hit.snippet if is_hit] == ["north"]


@pytest.fixture
def many(store: Engine) -> Iterator[Engine]:
    # 23 posts with `ceasefire` 1 to 3 times (so relevance has ties), 5 without it.
    posts = [_post(n, " ".join(["ceasefire talk"] * (1 + n % 3)) + f" number {n}") for n in range(1, 24)]
    posts += [_post(n, f"unrelated post {n}") for n in range(24, 29)]
    _ingest(store, posts)
    yield store


@pytest.mark.parametrize("order", ["newest", "relevance"])
def test_pages_neither_repeat_nor_skip_a_hit_in_either_order(many: Engine, order: str) -> None:
    pages: list[list[tuple[int, float | None]]] = []
    cursor = None
    with Session(many) as session:
        while True:
            page = search(session, "ceasefire", order=order, cursor=cursor, limit=4)  # type: ignore[arg-type]
            pages.append([(h.row_id, h.score) for h in page.hits])
            cursor = page.next_cursor
            if cursor is None:
                break
        first = search(session, "ceasefire", order=order, limit=1).next_cursor  # type: ignore[arg-type]
        other = "newest" if order == "relevance" else "relevance"
        with pytest.raises(QueryError, match="cursor"):
            search(session, "ceasefire", order=other, cursor=first)  # type: ignore[arg-type]
        # Tampered cursors: the query language's one-line error, never the driver's overflow.
        for raw in (
            '["newest",null,1e30,null]',
            f'["{order}",null,{10**23},null]',
            "[" * 5000,
            f'["{order}",NaN,5,null]',
            f'["{order}",null,true,null]',
        ):
            tampered = base64.urlsafe_b64encode(raw.encode()).decode()
            with pytest.raises(QueryError, match="cursor"):
                search(session, "ceasefire", order=order, cursor=tampered)  # type: ignore[arg-type]
        with pytest.raises(QueryError, match="cursor"):
            search(session, "ceasefire", order=order, cursor="not-a-cursor")  # type: ignore[arg-type]
    hits = [h for page in pages for h in page]
    assert len(pages) == 6 and all(len(p) == 4 for p in pages[:-1])
    ids = [row_id for row_id, _ in hits]
    assert len(ids) == 23 == len(set(ids))
    if order == "newest":
        assert ids == sorted(ids, reverse=True)
        assert all(score is None for _, score in hits)
    else:
        keys = [(-(score or 0.0), -row_id) for row_id, score in hits]
        assert keys == sorted(keys)
        assert hits[0][1] is not None and hits[0][1] > hits[-1][1]  # type: ignore[operator]


def test_relevance_puts_the_post_that_says_it_most_first(many: Engine) -> None:
    with Session(many) as session:
        top = search(session, "ceasefire", order="relevance", limit=3).hits
    assert all(h.msg_id % 3 == 2 for h in top)  # three times `ceasefire`


def test_a_post_with_a_word_longer_than_postgresql_indexes_is_stored_and_found(store: Engine) -> None:
    # PostgreSQL refuses a tsvector with a lexeme over 2,047 bytes: such a post (a pasted hash, a
    # base64 blob) must not fail its batch for good; it is stored, and found by its other words.
    blob = "я" * 1500
    _ingest(store, [_post(1, f"leaked archive {blob} attached"), _post(2, "another post")])
    assert _ids(store, "archive") == [1]
    if store.dialect.name == "postgresql":  # a query for such a word is refused in one line there
        with Session(store) as session, pytest.raises(QueryError, match="2,047 bytes"):
            search(session, blob)
