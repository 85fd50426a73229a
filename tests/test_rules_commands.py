"""`rules check` and `rules test`, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app

ROOT = Path(__file__).resolve().parents[1]
DUMP = ROOT / "tests" / "fixtures" / "mfa_channel_dump.txt"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_ambient_rules_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TGSENTINEL_RULES_DIR", raising=False)


def test_check_shipped_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["rules", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rules OK: 3 files, 5 rules, 2 channels, 1 destination")


def test_check_reports_problems_and_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("rules:\n  - id: a\n    match: {any: ['a*b']}\n  - id: b\n    mach: {any: [x]}\n")
    result = runner.invoke(app, ["rules", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{f}:3: '*' is allowed only at the end of a term: 'a*b'",
        f"{f}:4: missing key 'match'",
        f"{f}:5: unknown key 'mach' (did you mean 'match'?)",
    ]


def test_rules_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - id: a\n    match: {any: [x]}\n")
    monkeypatch.setenv("TGSENTINEL_RULES_DIR", str(tmp_path))
    result = runner.invoke(app, ["rules", "check"])
    assert result.exit_code == 0 and "1 file, 1 rule, 0 channels, 1 destination (1 warning)" in result.output
    # Rules that watch nothing are valid, but a monitor started on them would sit idle: say so.
    assert f"{tmp_path}: warning: no channels listed" in result.output


def test_other_commands_give_rules_problems_as_their_own_error_lines(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - id: a\n    match: {any: [x]\n")
    result = runner.invoke(app, ["rules", "test", str(DUMP), "--rules", str(tmp_path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"tgsentinel: {tmp_path / 'r.yaml'}:4: YAML syntax error")


def test_backtest_a_dump_with_the_shipped_rules() -> None:
    result = runner.invoke(app, ["rules", "test", str(DUMP), "--rules", str(ROOT / "rules")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    # The JSON lines on stdout, a summary on stderr: an empty stdout still says it ran.
    assert result.stderr == f"{len(records)} of 11 post(s) matched\n"
    by_index = {r["index"]: r for r in records}
    # Post 4 (a briefing) names Moldova; its other "Moldovan" mentions are not whole-word hits.
    assert {"rule": "moldova", "terms": ["Moldova", "#Moldova"]} in by_index[4]["matches"]
    assert by_index[0]["title"].startswith("📄 President Vladimir Putin congratulated")
    assert {"rule": "brics", "terms": ["BRICS", "#BRICS", "global majority"]} in by_index[0]["matches"]
    assert all(m["rule"] != "moldova" for r in records if r["index"] != 4 for m in r["matches"])


def test_backtest_judges_scopes_against_the_channel_name(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - id: scoped\n    channels: [mfarussia]\n    match: {any: [BRICS]}\n"
        "  - id: dumps\n    channels: [dump]\n    match: {any: [BRICS]}\n"
    )
    default = runner.invoke(app, ["rules", "test", str(DUMP), "--rules", str(tmp_path)])
    named = runner.invoke(
        app, ["rules", "test", str(DUMP), "--rules", str(tmp_path), "--channel", "@mfarussia"]
    )
    rules_hit = lambda out: {m["rule"] for line in out.splitlines() for m in json.loads(line)["matches"]}  # noqa: E731
    assert rules_hit(default.stdout) == {"dumps"}
    assert rules_hit(named.stdout) == {"scoped"}


def test_invalid_rules_make_test_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("rules:\n  - id: a\n    match: {}\n")
    result = runner.invoke(app, ["rules", "test", str(DUMP), "--rules", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{f}:3: match: empty group: it needs at least one of all, any, none" in result.output


def test_missing_dump_is_one_line_exit_2() -> None:
    result = runner.invoke(app, ["rules", "test", "/nonexistent/dump.txt", "--rules", str(ROOT / "rules")])
    assert result.exit_code == 2
    assert "/nonexistent/dump.txt: no such file" in result.output


def test_backtest_over_stored_messages_names_each_post_by_channel_date_and_link(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from bot.pipeline.ingest import Ingest
    from bot.sources.model import ChannelRef, Incoming
    from bot.store.db import release
    from bot.store.migrate import open_store

    db = f"sqlite:///{tmp_path / 'x.db'}"
    store = open_store(db)
    news = ChannelRef(tg_id=5, username="NewsRoom", title="News")
    private = ChannelRef(tg_id=6, title="No username")
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    Ingest(store).ingest_sync(
        [
            Incoming(channel=news, message_id=7, text="BRICS summit opens", date=when),
            Incoming(channel=news, message_id=8, text="weather", date=when),
            Incoming(channel=private, message_id=3, text="BRICS again", date=when),
        ]
    )
    release(store)
    (tmp_path / "r.yaml").write_text("rules:\n  - id: brics\n    match: {any: [BRICS]}\n")
    result = runner.invoke(app, ["rules", "test", "--db", db, "--rules", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    matches = [{"rule": "brics", "terms": ["BRICS"]}]
    # A stored message is named by its id, never by an `index` (that is a dump's position).
    assert records == [
        {
            "message_id": 7,
            "channel": "newsroom",
            "date": "2024-05-01T12:00:00+00:00",
            "url": "https://t.me/newsroom/7",
            "title": "BRICS summit opens",
            "matches": matches,
        },
        {
            "message_id": 3,
            "channel": "-1006",
            "date": "2024-05-01T12:00:00+00:00",
            "url": None,
            "title": "BRICS again",
            "matches": matches,
        },
    ]
