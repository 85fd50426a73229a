"""Loading the rules directory: every problem as FILE:LINE: message, env substitution, the schema."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from bot.config import ConfigError, json_schema, load_config
from bot.duration import parse_duration
from bot.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/secretpath",
    "SLACK_BOT_TOKEN": "xoxb-1-secret",
    "TELEGRAM_BOT_TOKEN": "123:secret",
    "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/secret",
    "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def write(d: Path, name: str, text: str) -> Path:
    path = d / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(d: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(d, env or {})
    assert isinstance(exc.value, InputError)
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


def test_shipped_rules_load_with_an_empty_environment() -> None:
    config = load_config(ROOT / "rules", {})
    assert {c.name for c in config.channels} >= {"mfarussia"}
    assert {"brics", "cis", "moldova"} <= {r.id for r in config.rules}
    assert list(config.destinations) == ["console"]


def test_examples_load_with_their_variables_set(tmp_path: Path) -> None:
    for path in (ROOT / "rules" / "examples").glob("*.yaml"):
        shutil.copy(path, tmp_path)
    config = load_config(tmp_path, EXAMPLE_ENV)
    assert set(config.destinations) == {"console", "ops-slack", "desk-slack", "analysts", "newsroom", "siem"}
    assert config.destinations["desk-slack"].edits  # a bot token: its alerts are edited in place
    assert config.ops == "ops-slack"
    assert config.destinations["ops-slack"].url.get_secret_value() == EXAMPLE_ENV["SLACK_WEBHOOK_URL"]
    strike = next(r for r in config.rules if r.id == "strike-alert")
    assert strike.throttle == 600 and strike.channels == ["rian_ru", "tass_agency"]
    assert next(r for r in config.rules if r.id == "un-vetoes").digest == 3600


def test_unset_variable_names_file_line_and_variable_without_leaking_values(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "d.yaml",
        """
        destinations:
          - name: hook
            type: webhook
            url: https://siem.example/${PATH_PART}
            secret: ${WEBHOOK_SECRET}
        """,
    )
    assert problems(tmp_path, {"PATH_PART": "hooks/abc"}) == [
        f"{f}:5: environment variable WEBHOOK_SECRET is not set"
    ]


def test_dotenv_is_read_without_touching_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "d.yaml", "destinations:\n  - {name: s, type: slack, url: '${TGS_TEST_SLACK}'}\n")
    (tmp_path / ".env").write_text("TGS_TEST_SLACK=https://hooks.slack.com/services/T/B/x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TGS_TEST_SLACK", raising=False)
    config = load_config(rules)
    assert config.destinations["s"].url.get_secret_value() == "https://hooks.slack.com/services/T/B/x"
    import os

    assert "TGS_TEST_SLACK" not in os.environ


def test_every_problem_kind_with_its_line(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "a.yaml",
        """
        channels:
          - mfarussia
          - t.me/
        rules:
          - id: brics
            severity: urgent
            match:
              any: ["BRICS", {regx: 'B.*'}]
            chanels: [mfarussia]
          - id: star
            match:
              any:
                - "san*ctions"
          - id: rx
            match:
              all: [{regex: '(unclosed'}]
          - id: empty
            match:
              any: []
          - id: nokeys
            match: {}
          - id: dest
            notify: [slakc]
            channels: [rian_ru]
            match: {any: [x]}
            throttle: soon
          - id: ok
            match: {any: [z]}
        """,
    )
    b = write(
        tmp_path,
        "b.yml",
        """
        rules:
          - id: ok
            match: {any: [y]}
        """,
    )
    write(tmp_path, "c.yaml", "rules:\n  - id: x\n    match: {any: [a]\n")
    write(tmp_path, "d.yaml", "rulez: []\n")
    assert problems(tmp_path) == [
        f"{a}:3: not a channel username, t.me link or -100… id: 't.me/'",
        f"{a}:6: severity: Input should be 'info', 'low', 'medium', 'high' or 'critical' (got 'urgent')",
        f"{a}:8: unknown key 'regx' (did you mean 'regex'?)",
        f"{a}:9: unknown key 'chanels' (did you mean 'channels'?)",
        f"{a}:13: '*' is allowed only at the end of a term: 'san*ctions'",
        f"{a}:16: invalid regex '(unclosed': missing ) at position 9",
        f"{a}:19: any: empty group: the list has no items",
        f"{a}:21: match: empty group: it needs at least one of all, any, none",
        f"{a}:26: throttle: a duration is like 30s, 10m, 2h or 1d, not 'soon'",
        f"{b}:2: duplicate rule id 'ok' (first at {a}:27)",
        f"{tmp_path / 'c.yaml'}:4: YAML syntax error: expected ',' or '}}', but got '<stream end>'",
        f"{tmp_path / 'd.yaml'}:1: unknown key 'rulez' (did you mean 'rules'?)",
    ]


def test_cross_file_references(tmp_path: Path) -> None:
    write(tmp_path, "channels.yaml", "channels: [mfarussia, '@rian_ru']\n")
    r = write(
        tmp_path,
        "rules.yaml",
        """
        ops: pager
        rules:
          - id: a
            notify: [console, slakc]
            match: {any: [x]}
          - id: b
            channels: [mfarusia, dump, "dump:mfa", rian_ru]
            match: {any: [x]}
        destinations:
          - {name: slack, type: slack, url: "https://hooks.slack.com/services/T/B/x"}
        """,
    )
    assert problems(tmp_path) == [
        f"{r}:1: ops: unknown destination 'pager'",
        f"{r}:3: rule 'a': unknown destination 'slakc' (did you mean 'slack'?)",
        f"{r}:6: rule 'b': channel 'mfarusia' is not watched (did you mean 'mfarussia'?)",
    ]


def test_channel_forms(tmp_path: Path) -> None:
    write(
        tmp_path,
        "c.yaml",
        """
        channels:
          - mfarussia
          - "@rian_ru"
          - https://t.me/s/tass_agency
          - t.me/durov
          - "-1001234567890"
          - {name: MID_Russia, via: web, interval: 120, backfill: 20}
        """,
    )
    config = load_config(tmp_path, {})
    assert [(c.name, c.tg_id) for c in config.channels] == [
        ("mfarussia", None),
        ("rian_ru", None),
        ("tass_agency", None),
        ("durov", None),
        (None, 1234567890),
        ("MID_Russia", None),
    ]
    last = config.channels[-1]
    assert (last.via, last.interval, last.backfill, last.key) == ("web", 120.0, 20, "mid_russia")


def test_only_top_level_yaml_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "examples").mkdir()
    write(tmp_path / "examples", "x.yaml", "rules: [{id: bad, match: {}}]\n")
    write(tmp_path, "notes.txt", "not yaml: [")
    write(tmp_path, "r.yml", "rules: [{id: ok, match: {any: [x]}}]\n")
    assert [r.id for r in load_config(tmp_path, {}).rules] == ["ok"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), (90, 90)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_committed_schema_is_the_generated_one() -> None:
    committed = json.loads((ROOT / "rules" / "schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema()


def test_schema_describes_the_rule_files() -> None:
    # No JSON Schema validator is installed: check the structure editors rely on.
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"channels", "rules", "destinations", "ops"}
    rule = schema["$defs"]["Rule"]
    assert rule["additionalProperties"] is False and rule["required"] == ["id", "match"]
    assert schema["$defs"]["Severity"]["enum"] == ["info", "low", "medium", "high", "critical"]
    group = schema["$defs"]["Group"]
    assert set(group["properties"]) == {"all", "any", "none"}
    item_kinds = group["properties"]["any"]["anyOf"][0]["items"]["oneOf"]
    assert {"$ref": "#/$defs/RegexTerm"} in item_kinds and {"$ref": "#/$defs/Group"} in item_kinds
    channel_item = schema["properties"]["channels"]["items"]["anyOf"]
    assert {"type": "string"} in channel_item


def test_a_duplicate_is_reported_even_when_the_first_one_is_invalid(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "a.yaml",
        """
        rules:
          - id: dup
            match: {any: []}
          - id: dup
            match: {any: ["$TSLA"]}
        destinations:
          - {name: hook, type: webhook, url: "not a url"}
          - {name: hook, type: webhook, url: "https://siem.example/h"}
          - {name: same, type: webhook, url: "https://siem.example/h"}
        """,
    )
    # The same destination written twice (in two files) is one destination, not a duplicate.
    write(tmp_path, "b.yaml", "destinations:\n  - {name: same, type: webhook, url: 'https://siem.example/h'}\n")
    assert problems(tmp_path) == [
        f"{a}:3: any: empty group: the list has no items",
        f"{a}:4: duplicate rule id 'dup' (first at {a}:2)",
        f"{a}:7: url: no scheme (write https://...)",
        f"{a}:8: duplicate destination 'hook' (first at {a}:7)",
    ]
