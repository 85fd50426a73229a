"""Bounded matching: regex terms spend a per-post and per-batch budget, a term that keeps timing out is
disabled until the rules reload, `rules check` warns about nested repeats, and matching runs off the
store's thread."""

from __future__ import annotations

import asyncio
import io

from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.rules.engine import BATCH_BUDGET, DISABLED, POST_BUDGET, Budget, Engine, Limits, MatchInput
from bot.rules.rule import Rule
from bot.sources.model import ChannelRef, Incoming
from bot.store.models import Alert, Match
from tests.cli import tgs

# `regex` handles (a+)+$ quickly; (a|aa)+$ against a run of a's and a '!' backtracks exponentially.
SLOW = "(a|aa)+$"
TRAP = "a" * 28 + "! post"


def slow_rules(n: int) -> list[Rule]:
    # A comment makes each pattern its own term: the engine runs one pattern once per post.
    rules = [Rule(id=f"slow{i}", match={"any": [{"regex": f"{SLOW}(?#{i})"}]}) for i in range(n)]
    return [*rules, Rule(id="moldova", match={"any": ["Moldova"]})]


def skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("tgsentinel_regex_skipped_total", {"reason": reason}) or 0.0


def test_the_batch_budget_skips_the_remaining_regex_terms_counted_and_the_ordinary_rule_still_matches():
    engine = Engine(slow_rules(20))
    limits = Limits(post=0.25, batch=0.5, disable_after=1000)
    budget = Budget(limits)
    before = {r: skipped(r) for r in (POST_BUDGET, BATCH_BUDGET)}
    posts = [MatchInput(text=f"{TRAP} {i}") for i in range(20)] + [MatchInput(text="Moldova news")]
    found = [[m.rule_id for m in engine.match(p, budget)] for p in posts]
    assert found[-1] == ["moldova"]
    assert all(f == [] for f in found[:-1])
    # 420 regex runs were asked for; the budget let through only what fits, the rest are counted.
    assert budget.skipped[BATCH_BUDGET] > 0 and budget.skipped[POST_BUDGET] > 0
    assert sum(budget.skipped.values()) > 20 * 21 - 20
    assert skipped(BATCH_BUDGET) - before[BATCH_BUDGET] == budget.skipped[BATCH_BUDGET]
    assert skipped(POST_BUDGET) - before[POST_BUDGET] == budget.skipped[POST_BUDGET]


def test_the_post_budget_is_per_post_and_a_fast_regex_is_untouched():
    rules = [*slow_rules(10), Rule(id="fast", match={"any": [{"regex": r"\bpost \d+"}]})]
    engine = Engine(rules)
    budget = Budget(Limits(post=0.1, batch=100.0, disable_after=1000))
    # The fast term comes last in the rule order: it runs on what is left of each post's budget, so a
    # post's slow terms must not eat into the next post's.
    for i in range(3):
        before = budget.skipped[POST_BUDGET]
        engine.match(MatchInput(text=f"{TRAP} {i}"), budget)
        assert budget.skipped[POST_BUDGET] > before  # each post ran out of its own budget
        assert budget.skipped[BATCH_BUDGET] == 0
    assert [m.rule_id for m in Engine(rules).match(MatchInput(text="a post 7"), Budget())] == ["fast"]


def test_without_a_budget_every_term_runs_as_rules_test_needs():
    engine = Engine(slow_rules(2))
    assert engine.match(MatchInput(text=TRAP)) == []
    assert engine.take_disabled() == []  # `rules test` never disables anything


def test_a_term_that_keeps_timing_out_is_disabled_until_the_rules_reload():
    rules = [
        Rule(id="cat", match={"any": [{"regex": SLOW}]}),
        Rule(id="both", match={"all": ["news", {"regex": SLOW}]}),
    ]
    engine = Engine(rules)
    limits = Limits(post=10.0, batch=100.0, disable_after=3)
    before = skipped(DISABLED)
    for i in range(2):
        engine.match(MatchInput(text=f"{TRAP} {i} news"), Budget(limits))
    assert engine.take_disabled() == []  # two in a row: not yet
    engine.match(MatchInput(text=f"{TRAP} 3 news"), Budget(limits))
    [disabled] = engine.take_disabled()
    assert (disabled.term, disabled.rule_ids, disabled.timeouts) == (SLOW, ("cat", "both"), 3)
    assert engine.take_disabled() == []  # told once

    budget = Budget(limits)
    assert engine.match(MatchInput(text=f"{TRAP} 4 news"), budget) == []
    assert budget.skipped[DISABLED] == 1 and budget.spent == 0  # not run at all
    assert skipped(DISABLED) - before == 1
    # Even where it would hit now: disabled is disabled, until the rules reload.
    assert engine.match(MatchInput(text="aaa"), Budget(limits)) == []
    reloaded = Engine(rules)
    assert [m.rule_id for m in reloaded.match(MatchInput(text="aaa"), Budget(limits))] == ["cat"]


def test_only_timeouts_in_a_row_and_at_full_length_count_towards_disabling():
    engine = Engine([Rule(id="cat", match={"any": [{"regex": SLOW}]})])
    limits = Limits(post=10.0, batch=100.0, disable_after=3)
    for text in (TRAP, TRAP, "aaa", TRAP, TRAP):  # a post it finishes on starts the count again
        engine.match(MatchInput(text=text), Budget(limits))
    assert engine.take_disabled() == []
    # A timeout cut short by a spent budget says nothing about the term.
    short = Limits(post=0.01, batch=100.0, disable_after=1)
    for _ in range(5):
        engine.match(MatchInput(text=TRAP), Budget(short))
    assert engine.take_disabled() == []


RULES = """
rules:
  - id: nested
    match:
      any:
        - Moldova
        - {regex: '(a+)+$'}
  - id: star
    match: {all: [news, {any: [{regex: '(\\w*)*x'}]}]}
  - id: alternation
    match: {none: [{regex: '(a|aa)+', flags: i}], any: [x]}
  - id: fine
    match: {any: [{regex: '(\\d+,)+'}, {regex: '\\bMoldova\\b'}, {regex: '\\p{L}+'}]}
"""


def test_rules_check_warns_about_nested_repeats_with_file_and_line(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    result = tgs("rules", "check", str(rules))
    assert result.returncode == 0, result.stdout  # a warning, not an error
    lines = result.stdout.decode().splitlines()
    where = f"{rules / 'r.yaml'}"
    warnings = [line.split(", like ")[0] for line in lines[:-1] if line.startswith(f"{where}:")]
    assert warnings == [
        f"{where}:7: warning: regex: nested repeat in (a+)+$",
        f"{where}:9: warning: regex: nested repeat in (\\w*)*x",
        f"{where}:11: warning: regex: nested repeat in (a|aa)+",
    ]
    assert lines[-1].endswith("(4 warnings)")  # and that these rules watch no channel


async def test_a_slow_match_blocks_neither_storage_nor_delivery(make_pipeline, store, tmp_path):
    yaml = "rules:\n" + "".join(
        f"  - id: slow{i}\n    match: {{any: [{{regex: '{SLOW}(?#{i})'}}]}}\n" for i in range(40)
    )
    console = io.StringIO()
    # A budget large enough that this one batch matches for seconds (40 terms at 50 ms of CPU each).
    pipeline = make_pipeline(
        yaml + "  - id: moldova\n    match: {any: [Moldova]}\n",
        console=console,
        match_post_budget=30.0,
        match_batch_budget=30.0,
        regex_disable_after=1000,
    )
    ch = ChannelRef(tg_id=1, username="a")
    slow = asyncio.create_task(pipeline.ingest.ingest([Incoming(channel=ch, message_id=1, text=TRAP)]))
    await asyncio.sleep(0)  # let the batch hand its matching to the match thread
    # Meanwhile: a write to the store (an ops notice), its delivery, and a read.
    await pipeline.ops("test.ping", "the store answers while a batch is being matched")
    await pipeline.worker.run_once()
    assert "the store answers" in console.getvalue()
    assert await pipeline.ingest.cursor(ch) is None  # the slow batch is not stored yet...
    assert not slow.done()  # ...because it is still matching, and all of the above went past it
    result = await slow
    assert result.new == 1 and result.matches == 0
    # The ordinary rule of a later batch is judged as before.
    second = await pipeline.ingest.ingest([Incoming(channel=ch, message_id=2, text="Moldova news")])
    assert second.matches == 1
    with Session(store) as session:
        assert list(session.scalars(select(Match.rule_id))) == ["moldova"]


async def test_a_disabled_term_is_one_ops_notice_naming_the_rule_and_its_line(make_pipeline, store):
    yaml = (
        "rules:\n  - id: moldova\n    match: {any: [Moldova]}\n"
        "  - id: cat\n    match: {any: [{regex: '%s'}]}\n"
    )
    pipeline = make_pipeline(yaml % SLOW, regex_disable_after=2)
    ch = ChannelRef(tg_id=1, username="a")
    for i in range(1, 5):
        await pipeline.ingest.ingest([Incoming(channel=ch, message_id=i, text=f"{TRAP} {i}")])
    with Session(store) as session:
        notices = list(session.scalars(select(Alert.summary).where(Alert.rule_id == "rules.regex_disabled")))
    assert len(notices) == 1
    assert "'(a|aa)+$' of rule cat (" in notices[0] and "rules.yaml:4)" in notices[0]
    assert "disabled until the rules are reloaded" in notices[0]


def test_the_batch_budget_is_per_page_of_posts_so_a_replay_batch_is_not_starved() -> None:
    """400 fast regex rules over a 1,000-post replay batch spent one page's 2 s and skipped a third
    of the matches: the budget bounds the delay per page, not per batch whatever its size."""
    limits = Limits(batch=2.0)
    assert Budget(limits, 20).batch_left == 2.0  # a t.me page
    assert Budget(limits, 100).batch_left == 2.0
    assert Budget(limits, 101).batch_left == 4.0
    assert Budget(limits, 1000).batch_left == 20.0  # a replay's or an import's batch
