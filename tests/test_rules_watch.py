"""Hot reload: a good change is picked up, a bad one is reported and the last good rules keep running."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.config import Config, ConfigError
from bot.rules.engine import MatchInput
from bot.rules.watch import RulesWatcher

GOOD = "rules:\n  - id: brics\n    match: {any: [BRICS]}\n"
CHANGED = "rules:\n  - id: cis\n    match: {any: [CIS]}\n"
BAD = "rules:\n  - id: cis\n    match: {any: []}\n"


def rule_ids(watcher: RulesWatcher, text: str) -> list[str]:
    return [m.rule_id for m in watcher.engine.match(MatchInput(text))]


async def test_reload_picks_up_good_changes_and_keeps_old_rules_on_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(GOOD)
    reloaded: asyncio.Queue[Config] = asyncio.Queue()
    failed: asyncio.Queue[list[str]] = asyncio.Queue()
    watcher = RulesWatcher(
        tmp_path, env={}, on_reload=reloaded.put_nowait, on_error=failed.put_nowait, debounce_ms=50
    )
    assert rule_ids(watcher, "BRICS and CIS") == ["brics"]
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.2)  # let the watcher register with the OS before the first change
        with caplog.at_level(logging.WARNING, logger="bot.rules.watch"):
            rules.write_text(BAD)
            problems = await asyncio.wait_for(failed.get(), 5)
        assert problems == [f"{rules}:3: any: empty group: the list has no items"]
        assert f"{rules}:3: any: empty group: the list has no items" in caplog.messages
        assert rule_ids(watcher, "BRICS and CIS") == ["brics"]

        rules.write_text(CHANGED)
        config = await asyncio.wait_for(reloaded.get(), 5)
        assert [r.id for r in config.rules] == ["cis"]
        assert rule_ids(watcher, "BRICS and CIS") == ["cis"]
    finally:
        watcher.stop()
        await asyncio.wait_for(task, 5)


async def test_files_in_subdirectories_do_not_trigger_reloads(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD)
    (tmp_path / "examples").mkdir()
    reloaded: asyncio.Queue[Config] = asyncio.Queue()
    watcher = RulesWatcher(tmp_path, env={}, on_reload=reloaded.put_nowait, debounce_ms=50)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.2)
        (tmp_path / "examples" / "x.yaml").write_text(BAD)
        (tmp_path / "r.yaml").write_text(CHANGED)
        config = await asyncio.wait_for(reloaded.get(), 5)
        assert [r.id for r in config.rules] == ["cis"]
        assert reloaded.empty()
    finally:
        watcher.stop()
        await asyncio.wait_for(task, 5)


def test_invalid_rules_at_start_raise(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(BAD)
    with pytest.raises(ConfigError):
        RulesWatcher(tmp_path, env={})
