"""`tgsentinel bench match`: posts per second through the engine, against one `re` search per rule.

Rule sets of single-term rules, half of them Cyrillic; about 2 % of the terms occur in the posts.
The naive baseline is what one-regex-per-line tools do: every rule's pattern searched in every post.
It is slow at 10,000 rules, so it runs over a prefix of the posts; both must agree on that prefix.

`--catastrophic N` measures instead what N regex rules that backtrack catastrophically cost one
batch of N posts that set them off, with one ordinary post last: without a budget (each term its own
timeout, as `rules test` runs) and with the monitor's budget, which bounds the delay of that post's alert.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from bot.errors import InputError
from bot.rules.engine import DISABLED, Budget, Engine, Limits, MatchInput
from bot.rules.rule import Rule

_LATIN = "abcdefghijklmnopqrstuvwxyz"
_CYRILLIC = "абвгдежзийклмнопрстуфхцчшщыэюя"  # no ё: the baseline does not know ё is е
SAMPLE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "mfa_channel_dump.txt"
_POST_CHARS = 2300
_NAIVE_WORK = 200_000  # rule x post searches the baseline gets per run


def _word(rng: random.Random, alphabet: str) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(4, 10)))


def _vocabulary(rng: random.Random, sample: Path) -> tuple[list[str], list[str]]:
    if not sample.is_file():
        raise InputError(
            f"no sample dump at {sample}: it comes with the source checkout "
            "(tests/fixtures/mfa_channel_dump.txt), not the wheel; pass --sample FILE"
        )
    latin = {w.lower() for w in re.findall(r"\b[A-Za-z]{3,}\b", sample.read_text(encoding="utf-8"))}
    while len(latin) < 1500:
        latin.add(_word(rng, _LATIN))
    cyrillic = {_word(rng, _CYRILLIC) for _ in range(1500)}
    return sorted(latin), sorted(cyrillic)


def _post(rng: random.Random, latin: list[str], cyrillic: list[str]) -> str:
    words: list[str] = []
    size = 0
    while size < _POST_CHARS:
        word = rng.choice(latin if rng.random() < 0.5 else cyrillic)
        if rng.random() < 0.1:
            word = word.capitalize()
        words.append(word + rng.choice([" ", " ", " ", " ", ", ", ". ", "\n"]))
        size += len(words[-1])
    return "".join(words).strip()


def _rules(rng: random.Random, size: int, latin: list[str], cyrillic: list[str]) -> list[Rule]:
    used = set(latin) | set(cyrillic)
    rules = []
    for i in range(size):
        alphabet, vocab = (_CYRILLIC, cyrillic) if i % 2 else (_LATIN, latin)
        if rng.random() < 0.02:
            term = rng.choice(vocab)
        else:
            term = _word(rng, alphabet) + _word(rng, alphabet)[:3]
            while term in used:
                term += rng.choice(alphabet)
        rules.append(Rule(id=f"r{i}", match={"any": [term]}))
    return rules


def _naive(rules: list[Rule]) -> list[tuple[str, re.Pattern[str]]]:
    return [
        (r.id, re.compile(r"(?<!\w)" + re.escape(r.match.any_[0]) + r"(?!\w)", re.IGNORECASE)) for r in rules
    ]


def run(
    sizes: tuple[int, ...] = (100, 1000, 10000), n_posts: int = 2000, repeat: int = 3, sample: Path = SAMPLE
) -> list[dict]:
    """Posts per second at each rule-set size; the English words come from `sample`, a text dump."""
    rng = random.Random(0)
    latin, cyrillic = _vocabulary(rng, sample)
    texts = [_post(rng, latin, cyrillic) for _ in range(n_posts)]
    posts = [MatchInput(text=t) for t in texts]
    figures = []
    for size in sizes:
        rules = _rules(rng, size, latin, cyrillic)
        started = time.perf_counter()
        engine = Engine(rules)
        build = time.perf_counter() - started
        patterns = _naive(rules)

        # The monitor handles a post and drops its matches, so the timed loop keeps only the rule ids:
        # holding every RuleMatch of the run would time the garbage collector walking them instead.
        match = engine.match
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            results = [[m.rule_id for m in match(p)] for p in posts]
            best = min(best, time.perf_counter() - started)

        n_naive = max(10, min(n_posts, _NAIVE_WORK // size))
        # One pass is enough for the baseline: it is two orders of magnitude slower anyway.
        started = time.perf_counter()
        naive = [[rid for rid, pat in patterns if pat.search(t)] for t in texts[:n_naive]]
        naive_best = time.perf_counter() - started

        ours = results[:n_naive]
        if ours != naive:
            bad = next(i for i, (a, b) in enumerate(zip(ours, naive, strict=True)) if a != b)
            raise RuntimeError(
                f"bench match: engine and baseline disagree on post {bad}: {ours[bad]} != {naive[bad]}"
            )
        engine_rate = n_posts / best
        naive_rate = n_naive / naive_best
        figures.append(
            {
                "rules": size,
                "posts": n_posts,
                "avg_post_chars": round(sum(map(len, texts)) / n_posts),
                "build_s": round(build, 3),
                "engine_posts_per_s": round(engine_rate),
                "naive_posts": n_naive,
                "naive_posts_per_s": round(naive_rate, 1),
                "speedup": round(engine_rate / naive_rate, 1),
                "matches_per_post": round(sum(map(len, results)) / n_posts, 2),
            }
        )
    return figures


def catastrophic(n: int = 20, limits: Limits = Limits()) -> dict:
    """One batch of `n` posts through `n` catastrophic regex rules and one word rule, unbounded and
    budgeted: the seconds each took, and whether the ordinary post's match survived."""
    rules = [Rule(id=f"slow{i}", match={"any": [{"regex": f"(a|aa)+$(?#{i})"}]}) for i in range(n)]
    rules.append(Rule(id="moldova", match={"any": ["Moldova"]}))
    posts = [MatchInput(text="a" * 28 + f"! post {i}") for i in range(n)]
    posts.append(MatchInput(text="Moldova: the ordinary post, last in the batch"))
    figures: dict = {"scenario": "catastrophic", "regex_rules": n, "posts": len(posts)}
    for label, budget in (("unbounded", None), ("budgeted", Budget(limits))):
        engine = Engine(rules)  # fresh: nothing disabled yet
        started = time.perf_counter()
        found = [[m.rule_id for m in engine.match(p, budget)] for p in posts]
        figures[f"{label}_s"] = round(time.perf_counter() - started, 3)
        if found[-1] != ["moldova"]:
            raise RuntimeError(f"bench match: the ordinary post's match was lost ({label}): {found[-1]}")
        if budget is not None:
            figures["batch_budget_s"] = limits.batch
            figures["regex_runs_skipped"] = sum(budget.skipped.values())
            figures["skipped_disabled"] = budget.skipped[DISABLED]
            figures["terms_disabled"] = len(engine.take_disabled())
    return figures


def main() -> None:
    for row in run():
        print(" ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
