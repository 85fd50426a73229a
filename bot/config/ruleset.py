"""The rules in force: a loaded rules directory and its compiled engine, swapped whole on a reload.

A batch takes one snapshot when it starts and every stage of it reads that snapshot, so a reload in
the middle of a batch never mixes two rule sets in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.config.load import Config, load_config
from bot.rules.engine import Engine
from bot.rules.rule import Rule


@dataclass(frozen=True, slots=True)
class RuleSet:
    config: Config
    engine: Engine
    by_id: Mapping[str, Rule] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config) -> RuleSet:
        return cls(config=config, engine=Engine(config.rules), by_id={r.id: r for r in config.rules})

    @classmethod
    def load(cls, rules_dir: Path, env: Mapping[str, str] | None = None) -> RuleSet:
        """Raises ConfigError with every problem of the directory."""
        return cls.build(load_config(rules_dir, env))

    def rule(self, rule_id: str) -> Rule | None:
        return self.by_id.get(rule_id)
