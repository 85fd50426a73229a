"""The shared rendering step: safe URLs, cutting to a budget, excerpts around hits, every alert kind."""

from __future__ import annotations

from bot.alerts.model import AlertView
from bot.alerts.render import (
    ELLIPSIS,
    Span,
    card,
    excerpt,
    fit,
    layout,
    plain,
    utf16_len,
)
from bot.redact import endpoint
from bot.rules.model import Hit
from tests.conftest import alert_view


def test_an_endpoint_keeps_scheme_and_host_only() -> None:
    assert endpoint("https://hooks.slack.com/services/T0/B0/SECRET?x=1") == "https://hooks.slack.com"
    assert endpoint("https://user:pw@example.org:8443/hook#frag") == "https://example.org:8443"
    assert endpoint("http://127.0.0.1:5000/bot123:ABC/sendMessage") == "http://127.0.0.1:5000"
    assert endpoint("not a url") == "<invalid url>"


def test_utf16_counts_astral_characters_twice() -> None:
    assert utf16_len("a😀") == 3
    assert utf16_len("ж€") == 2


def test_fit_cuts_before_an_astral_character_that_would_straddle_the_budget() -> None:
    # "ab😀cd" is 1+1+2+1+1 = 6 units. Budget 4 leaves 3 after the ellipsis: "ab" fits, 😀 does not.
    assert plain(fit((Span("ab😀cd"),), 4, utf16_len)) == "ab" + ELLIPSIS
    # Budget 5 leaves 4: "ab😀" is exactly 4.
    assert plain(fit((Span("ab😀cd"),), 5, utf16_len)) == "ab😀" + ELLIPSIS
    assert plain(fit((Span("ab😀cd"),), 6, utf16_len)) == "ab😀cd"


def test_fit_never_splits_a_flag() -> None:
    # A flag is two regional indicators, 4 UTF-16 units; half of one would show as a letter box.
    assert plain(fit((Span("🇺🇦🇺🇦"),), 7, utf16_len)) == "🇺🇦" + ELLIPSIS


def test_fit_keeps_markup_whole_and_counts_it() -> None:
    def overhead(span: Span) -> int:
        return 2 if span.style == "bold" else 0

    # 2 + (11 + 2) = 15 > 8. After the ellipsis 7 remain: "xx" (2), the bold markers (2), "hel" (3).
    got = fit((Span("xx"), Span("hello world", "bold")), 8, len, overhead)
    assert got == (Span("xx"), Span("hel", "bold"), Span(ELLIPSIS))
    # A link is whole or absent.
    got = fit((Span("xx"), Span("https://t.me/a/1", "link", "https://t.me/a/1")), 10, len)
    assert got == (Span("xx"), Span(ELLIPSIS))


def test_excerpt_centres_on_the_hit_and_marks_what_was_left_out() -> None:
    text = "lorem " * 200 + "the TARGET word" + " ipsum" * 200
    at = text.index("TARGET")
    got = excerpt(text, [Hit("target", at, at + 6)], width=100)
    assert got[0].text.startswith(ELLIPSIS)
    assert got[-1].text.endswith(ELLIPSIS)
    assert [s.text for s in got if s.style == "bold"] == ["TARGET"]
    body = plain(got)
    assert len(body) <= 100 + 4
    assert "the TARGET word" in body
    # Snapped to whitespace: no half words at either end.
    assert body.split()[1] in ("lorem", "the") and body.split()[-2] in ("ipsum", "word")


def test_excerpt_merges_overlapping_hits_and_ignores_bad_spans() -> None:
    got = excerpt("alpha beta gamma", [Hit("beta", 6, 10), Hit("beta g", 6, 12), Hit("x", 40, 50)])
    assert got == (Span("alpha "), Span("beta g", "bold"), Span("amma"))


def _view(**kw: object) -> AlertView:
    return alert_view(**{"id": "a1", "text": "attack on the grid", "forwarded_from": "Other channel", **kw})


def test_match_card_says_everything_an_alert_must() -> None:
    text = plain(layout(card(_view(hits=(Hit("grid", 14, 18),))), 4096))
    for part in (
        "HIGH",
        "grid",
        "News (@news)",
        "https://t.me/news/5",
        "2024-05-01 12:00 UTC",
        "forwarded from Other channel",
        "Grid attack",
        "attack on the grid",
        "#grid",
    ):
        assert part in text, part


def test_followup_digest_and_ops_render_their_summaries() -> None:
    followup = _view(kind="followup", summary="+4 more matches for rule grid in News")
    assert "+4 more matches for rule grid in News" in plain(layout(card(followup), 4096))
    items = tuple(_view(id=f"i{n}", channel_title=f"Chan {n}", url=f"https://t.me/c{n}/1") for n in range(3))
    digest = plain(
        layout(card(_view(kind="digest", summary="3 matches in the last hour", items=items)), 4096)
    )
    assert "3 matches in the last hour" in digest
    assert all(f"Chan {n}" in digest and f"https://t.me/c{n}/1" in digest for n in range(3))
    ops = plain(layout(card(_view(kind="ops", rule_id="", severity="", summary="disk almost full")), 4096))
    assert "disk almost full" in ops and "tgsentinel" in ops


def test_layout_fits_the_budget_and_keeps_the_tail() -> None:
    view = _view(text="word " * 5000, hits=(Hit("word", 0, 4),))
    spans = layout(card(view), 500)
    assert len(plain(spans)) <= 500
    assert plain(spans).endswith("#grid")  # hashtags survive; the excerpt was cut instead


def test_bidi_and_invisible_controls_never_reach_a_destination_but_stay_in_the_stored_text() -> None:
    """U+202E makes "gpj.exe" read as "exe.jpg"; ESC drives a terminal. Every renderer shows the
    text without them, the hit still falls on the right word, and emoji joiners survive."""
    import io
    import json

    from rich.console import Console

    from bot.alerts import console, discord, slack, telegram
    from bot.alerts.render import INVISIBLE

    tricky = "Grid \u202eattack\u202c at \u2066dawn\u2069\x1b[31m \u200bfile\ufeffgpj.exe 👨\u200d👩\u200d👧"
    view = alert_view(
        text=tricky,
        title="Grid \u202eattack",
        channel_title="News\u200f",
        hits=(Hit(term="attack", start=tricky.index("attack"), end=tricky.index("attack") + 6),),
    )
    rendered = {
        "slack": json.dumps(slack.payload(view), ensure_ascii=False),
        "discord": json.dumps(discord.payload(view), ensure_ascii=False),
        "telegram": telegram.render_html(telegram.visible(view)),
    }
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(console.panel(view))
    rendered["console"] = out.getvalue()
    for name, text in rendered.items():
        assert not INVISIBLE.search(text), (name, [hex(ord(c)) for c in INVISIBLE.findall(text)])
        assert "\x1b" not in text, name
        assert "👨\u200d👩\u200d👧" in text, name  # the family emoji is one grapheme, not three
    assert "<b>attack</b>" in rendered["telegram"]
    assert "*attack*" in rendered["slack"]
    assert "\u202e" in view.text  # the alert's own data is untouched
