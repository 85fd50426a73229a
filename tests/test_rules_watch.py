"""Hot reload: a good change is picked up, a bad one is reported and the last good rules keep running."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from watchfiles import Change

from bot.config import ConfigError
from bot.config.ruleset import RuleSet
from bot.config.watch import RulesWatcher
from bot.rules.engine import MatchInput

GOOD = "rules:\n  - id: brics\n    match: {any: [BRICS]}\n"
CHANGED = "rules:\n  - id: cis\n    match: {any: [CIS]}\n"
BAD = "rules:\n  - id: cis\n    match: {any: []}\n"


def rule_ids(watcher: RulesWatcher, text: str) -> list[str]:
    return [m.rule_id for m in watcher.current.engine.match(MatchInput(text))]


async def test_reload_picks_up_good_changes_and_keeps_old_rules_on_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(GOOD)
    reloaded: asyncio.Queue[RuleSet] = asyncio.Queue()
    failed: asyncio.Queue[list[str]] = asyncio.Queue()
    watcher = RulesWatcher(
        tmp_path, env={}, on_reload=reloaded.put_nowait, on_error=failed.put_nowait, debounce_ms=50
    )
    assert rule_ids(watcher, "BRICS and CIS") == ["brics"]
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.2)  # let the watcher register with the OS before the first change
        with caplog.at_level(logging.WARNING, logger="bot.config.watch"):
            rules.write_text(BAD)
            problems = await asyncio.wait_for(failed.get(), 5)
        assert problems == [f"{rules}:3: any: empty group: the list has no items"]
        assert f"{rules}:3: any: empty group: the list has no items" in caplog.messages
        assert rule_ids(watcher, "BRICS and CIS") == ["brics"]

        rules.write_text(CHANGED)
        ruleset = await asyncio.wait_for(reloaded.get(), 5)
        assert [r.id for r in ruleset.config.rules] == ["cis"]
        assert rule_ids(watcher, "BRICS and CIS") == ["cis"]
    finally:
        watcher.stop()
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(
    ("path", "relevant"),
    [
        ("r.yaml", True),
        ("more.yml", True),
        ("examples/x.yaml", False),  # a subdirectory: examples, drafts, a git checkout's .github
        ("deep/er/x.yml", False),
        ("notes.txt", False),
        (".r.yaml.swp", False),  # an editor's swap file
    ],
)
def test_only_yaml_files_directly_in_the_directory_trigger_a_reload(
    tmp_path: Path, path: str, relevant: bool
) -> None:
    (tmp_path / "r.yaml").write_text(GOOD)
    watcher = RulesWatcher(tmp_path, env={})
    assert watcher.relevant(Change.modified, str(tmp_path / path)) is relevant


def test_invalid_rules_at_start_raise(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(BAD)
    with pytest.raises(ConfigError):
        RulesWatcher(tmp_path, env={})


async def test_an_emptied_file_or_a_reload_that_drops_every_channel_changes_nothing(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text("channels: [first, second]\n")
    (tmp_path / "r.yaml").write_text(GOOD)
    failed: list[list[str]] = []
    watcher = RulesWatcher(tmp_path, env={}, on_error=failed.append)

    channels.write_text("")  # an editor's non-atomic save, `> file`, an emptied ConfigMap
    assert await watcher.reload() is False
    assert failed[-1] == [f"{tmp_path}: channels.yaml is empty now"]
    channels.write_text("# nothing yet\n\n")  # comments only: just as empty
    assert await watcher.reload() is False

    channels.write_text("channels: []\n")  # valid, and would stop every poll
    assert await watcher.reload() is False
    assert failed[-1] == [f"{tmp_path}: the new rules watch no channels (were 2)"]
    assert [c.key for c in watcher.current.config.channels] == ["first", "second"]
    assert rule_ids(watcher, "BRICS") == ["brics"]

    channels.write_text("channels: [third]\n")  # a real change goes through
    assert await watcher.reload() is True
    assert [c.key for c in watcher.current.config.channels] == ["third"]


async def test_a_reload_the_pipeline_cannot_take_changes_nothing_and_is_not_called_reloaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, make_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The senders are built before anything is swapped: one that refuses its destination leaves
    the running rules, their senders and the watcher's set as they were."""
    from bot.alerts import senders
    from bot.alerts.config import WebhookDestination

    pipeline = make_pipeline(GOOD)
    (tmp_path / "r.yaml").write_text(GOOD)
    refused: list[list[str]] = []
    watcher = RulesWatcher(tmp_path, env={}, on_reload=pipeline.reload, on_error=refused.append)
    before_rules, before_senders = pipeline.rules, dict(pipeline.senders)
    (tmp_path / "r.yaml").write_text(
        CHANGED + "destinations:\n  - {name: hook, type: webhook, url: 'http://127.0.0.1:9/x'}\n"
    )

    class Refusing:
        def __init__(self, dest: object, shared: object) -> None:
            raise ValueError("this sender cannot serve hook")

    # Only the reload's constructor refuses: the load's check (senders.refusal) has passed by then.
    loaded = watcher._load()
    monkeypatch.setattr(watcher, "_load", lambda: loaded)
    monkeypatch.setitem(senders.SENDERS, WebhookDestination, Refusing)
    with caplog.at_level(logging.INFO, logger="bot.config.watch"):
        assert await watcher.reload() is False
    assert pipeline.rules is before_rules and pipeline.senders == before_senders
    assert rule_ids(watcher, "BRICS and CIS") == ["brics"]
    assert refused == [[f"{tmp_path}: this sender cannot serve hook"]]
    assert not any("rules reloaded" in m for m in caplog.messages)
    assert "rules not reloaded: this sender cannot serve hook; keeping the last good rules" in caplog.messages


def test_rules_check_runs_every_sender_constructor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.alerts import senders
    from bot.alerts.config import WebhookDestination
    from bot.config.load import load_config

    class Refusing:
        def __init__(self, dest: object, shared: object) -> None:
            raise ValueError("this sender cannot serve hook")

    (tmp_path / "r.yaml").write_text(
        "destinations:\n  - {name: hook, type: webhook, url: 'http://127.0.0.1:9/x'}\n" + GOOD
    )
    monkeypatch.setitem(senders.SENDERS, WebhookDestination, Refusing)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, env={})
    where = tmp_path / "r.yaml"
    assert caught.value.problems == [f"{where}:2: destination 'hook': this sender cannot serve hook"]
