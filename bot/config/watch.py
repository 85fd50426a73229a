"""Hot reload: pick up changes in the rules directory without a restart, keeping the last good set."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from watchfiles import Change, awatch

from bot.config.load import ConfigError
from bot.config.ruleset import RuleSet

log = logging.getLogger(__name__)

Callback = Callable[[Any], Awaitable[None] | None]


class RulesWatcher:
    """Holds the current rule set; `run()` reloads it when a YAML file directly in the directory changes.
    `on_reload` is handed the new RuleSet and puts it in force; if it raises, nothing changed and the
    reload is refused like an invalid one.

    The first load happens in the constructor and raises ConfigError, so a monitor never starts on
    invalid rules; later invalid changes are logged (one line per problem) and the old set stays.
    """

    def __init__(
        self,
        rules_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        on_reload: Callback | None = None,
        on_error: Callback | None = None,
        debounce_ms: int = 300,
    ) -> None:
        self.rules_dir = Path(rules_dir)
        self._env = env
        self._on_reload = on_reload
        self._on_error = on_error
        self._debounce_ms = debounce_ms
        self._stop = asyncio.Event()
        self.current = self._load()
        self._filled = self._nonblank()
        _warn(self.current)

    def _nonblank(self) -> set[Path]:
        return {p for p in self.current.config.files if not _blank(p)}

    def _load(self) -> RuleSet:
        return RuleSet.load(self.rules_dir, self._env)

    async def reload(self) -> bool:
        """Load the directory again; True when the new rules replaced the old ones."""
        try:
            # Building the automaton for a large rule set takes a moment: keep the loop responsive.
            ruleset = await asyncio.to_thread(self._load)
        except ConfigError as exc:
            log.warning("rules not reloaded: %d problem(s); keeping the last good rules", len(exc.problems))
            for line in exc.problems:
                log.warning("%s", line)
            await _notify(self._on_error, exc.problems)
            return False
        if refusal := self._suspicious(ruleset):
            log.warning("rules not reloaded: %s; keeping the last good rules", refusal)
            await _notify(self._on_error, [f"{self.rules_dir}: {refusal}"])
            return False
        try:
            await _call(self._on_reload, ruleset)
        except Exception as exc:
            # The subscriber builds everything the new set needs before it swaps anything (see
            # Monitor._reloaded): a failure here left the last good set running, whole.
            log.warning("rules not reloaded: %s; keeping the last good rules", exc)
            await _notify(self._on_error, [f"{self.rules_dir}: {exc}"])
            return False
        self.current = ruleset
        self._filled = self._nonblank()
        # Said only now: the rules, their senders and their channels are all in force.
        log.info(
            "rules reloaded: %d rules, %d channels", len(ruleset.config.rules), len(ruleset.config.channels)
        )
        _warn(ruleset)
        return True

    def _suspicious(self, new: RuleSet) -> str | None:
        """Why a valid-looking reload is more likely a half-written file than what the user meant.

        An editor's non-atomic save, `> file` or an emptied ConfigMap leaves a file empty for a
        moment; loaded, it would stop every poll. A monitor that should watch nothing is stopped,
        not emptied.
        """
        emptied = sorted(p.name for p in self._filled if _blank(p))
        if emptied:
            return f"{', '.join(emptied)} is empty now"
        if self.current.config.channels and not new.config.channels:
            return f"the new rules watch no channels (were {len(self.current.config.channels)})"
        return None

    def relevant(self, change: Change, path: str) -> bool:
        """Whether a change can alter the rules: a YAML file directly in the directory, nothing below."""
        p = Path(path)
        return p.suffix in (".yaml", ".yml") and p.parent.resolve() == self.rules_dir.resolve()

    async def run(self) -> None:
        async for _changes in awatch(
            self.rules_dir,
            watch_filter=self.relevant,
            debounce=self._debounce_ms,
            step=50,
            recursive=False,
            stop_event=self._stop,
        ):
            await self.reload()

    def stop(self) -> None:
        self._stop.set()


async def _call(callback: Callback | None, arg: Any) -> None:
    if callback is None:
        return
    result = callback(arg)
    if inspect.isawaitable(result):
        await result


async def _notify(callback: Callback | None, arg: Any) -> None:
    """Tell of a refused reload; a failure to tell (the store down) must not stop the watcher."""
    try:
        await _call(callback, arg)
    except Exception as exc:
        log.warning("could not report the refused reload: %s", exc)


def _blank(path: Path) -> bool:
    try:
        return not path.read_bytes().strip()
    except OSError:
        return False


def _warn(ruleset: RuleSet) -> None:
    # What `rules check` warns of, said where a running monitor's operator looks.
    for line in ruleset.config.warnings:
        log.warning("%s", line)
