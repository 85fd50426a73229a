"""`tgsentinel bench stories`: how well and how fast near-duplicate posts are found.

- Quality, on the labelled set in tests/fixtures/stories (real posts and realistic copies of them,
  and different stories on the same topic): each pair goes into an index of its own, the first post
  added and the second assigned; "same story" is the second finding the first. Precision, recall and
  F1 at the threshold, and recall or false-positive rate per kind of edit.
- Speed: the generated replay corpus (posts the sample's size), one assign + add per post; and the
  whole replay path on the same posts with the story stage and without it, in CPU time: the share
  of ingest throughput kept with stories on.
- Memory: tracemalloc's peak over `memory_posts` generated posts, per post and for 1,000,000.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.bench.corpus import generate_dump
from bot.errors import InputError
from bot.parse.dump import parse_dump
from bot.stories import Stories, StoryConfig, StoryPost
from bot.stories.boilerplate import Boilerplate

SET = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "stories"


def load_set(folder: Path = SET) -> tuple[list[dict], list[dict]]:
    pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    history = [
        json.loads(line) for line in (folder / "history.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return pairs, history


def judge(pair: dict, config: StoryConfig, boilerplate: Boilerplate) -> bool:
    """Whether the second post of the pair joins the first's story."""
    stories = Stories(config, boilerplate)
    a, b = pair["a"], pair["b"]
    first = stories.assign(StoryPost(1, a["channel"], 1_000_000.0, a["text"], media_key=a["media_key"]))
    stories.add(first, 1, learn=False)
    second = stories.assign(StoryPost(2, b["channel"], 1_003_600.0, b["text"], media_key=b["media_key"]))
    return second.candidate is not None


def quality(config: StoryConfig, folder: Path = SET) -> dict[str, Any]:
    pairs, history = load_set(folder)
    learner = Stories(config)
    for post in history:
        learner.learn(post["channel"], post["text"])
    tp = fp = fn = tn = 0
    missed: Counter[str] = Counter()
    merged: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for pair in pairs:
        same = judge(pair, config, learner.boilerplate)
        kinds[pair["kind"]] += 1
        if pair["label"] == "same":
            tp += same
            fn += not same
            missed[pair["kind"]] += not same
        else:
            fp += same
            tn += not same
            merged[pair["kind"]] += same
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairs": len(pairs),
        "same": tp + fn,
        "different": fp + tn,
        "threshold": config.threshold,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "missed": {k: f"{missed[k]}/{kinds[k]}" for k in sorted(missed) if missed[k]},
        "merged_wrongly": {k: f"{merged[k]}/{kinds[k]}" for k in sorted(merged) if merged[k]},
    }


def _stream(n: int, seed: int = 0) -> list[StoryPost]:
    """The replay bench's posts, one channel in three, a post every 2 s (a day spans 43,200 posts)."""
    posts = parse_dump(generate_dump(n, seed=seed))
    return [
        StoryPost(i, f"bench{i % 3}", 1_700_000_000.0 + 2.0 * i, p.content.text, p.content.fingerprint)
        for i, p in enumerate(posts)
    ]


def speed(config: StoryConfig, n: int = 10_000, repeat: int = 3) -> dict[str, Any]:
    """assign + add per post, CPU time of this process (best of `repeat`: the machine may be shared)."""
    posts = _stream(n)
    best = float("inf")
    for _ in range(repeat):
        stories = Stories(config)
        started = time.process_time()
        for post in posts:
            found = stories.assign(post)
            stories.add(found, found.story_id or post.post_id)
        best = min(best, time.process_time() - started)
    return {"posts": n, "us_per_post": round(best / n * 1e6, 1), "posts_per_s": round(n / best)}


def replay_cpu(n: int, repeat: int = 3) -> tuple[float, float]:
    """The replay path's CPU seconds per post on the same generated posts, with the story stage and
    without it (duplicates then fall back to exact fingerprints, as `stories: each` rules do)."""
    from bot.bench.replay import cost
    from bot.pipeline.story import AssignStories

    on, off = cost(generate_dump(n), n, AssignStories, repeat, clock=time.process_time)
    return on / n, off / n


def memory(config: StoryConfig, n: int = 100_000) -> dict[str, Any]:
    """Bytes per indexed post, from tracemalloc's count of what the index holds after `n` posts.

    Each post gets its own signature (one of 1,000 random ones with one value changed: text cleaning
    is not what is measured, and costs the same however many posts are kept), a fingerprint, and one
    in four a media key; the posts span less than the window, so none expire.
    """
    import numpy as np

    stories = Stories(replace(config, window=max(config.window, 10.0 * n)))
    rng = np.random.default_rng(0)
    hasher = stories.hasher
    sigs = [hasher.signature(rng.integers(0, 2**32, 40, dtype=np.uint32)) for _ in range(1000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = stories.index
    for i in range(n):
        sig = sigs[i % 1000].copy()
        sig[i % config.num_perm] ^= np.uint8(1 + i % 255)  # every post its own signature
        index.insert(
            i,
            i,
            1_700_000_000.0 + i,
            sig,
            fp=(i * 2654435761) % 2**63 + 1,
            media=(i + 1) if i % 4 == 0 else 0,
        )
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_post = (held - before) / n
    return {
        "posts": n,
        "bytes_per_post": round(per_post),
        "mb_for_1m_posts": round(per_post * 1_000_000 / 2**20),
        # The peak includes a merge's copy of the two segments it joins (at most `max_segment` posts),
        # so it does not grow in proportion: it is measured, not extrapolated.
        "peak_mb": round((peak - before) / 2**20),
        "segments": index.segments,
    }


def run(
    threshold: float = 0.7,
    posts: int = 10_000,
    memory_posts: int = 100_000,
    compare: bool = True,
    labelled: Path = SET,
) -> dict[str, Any]:
    if not (labelled / "pairs.jsonl").is_file():
        raise InputError(
            f"no labelled set at {labelled}: it comes with the source checkout (tests/fixtures/stories), "
            "not the wheel; pass --set DIR"
        )
    config = StoryConfig(threshold=threshold)
    out: dict[str, Any] = {
        "bench": "stories",
        "num_perm": config.num_perm,
        "bands": config.bands,
        "rows": config.rows,
    }
    out["quality"] = quality(config, labelled)
    out["speed"] = speed(config, posts)
    if compare:
        on, off = replay_cpu(min(posts, 5_000), repeat=5)
        out["ingest"] = {
            "us_per_post_stories_on": round(on * 1e6, 1),
            "us_per_post_stories_off": round(off * 1e6, 1),
            "throughput_kept": round(off / on, 3),  # posts/s with stories over posts/s without
        }
    out["memory"] = memory(config, memory_posts)
    return out
