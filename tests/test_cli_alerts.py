"""Dead letters, retry and silences from the command line, over a real database."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.store.db import release
from bot.store.migrate import open_store
from bot.store.models import Delivery
from tests.cli import tgs
from tests.conftest import SAMPLE

RULES = """
destinations:
  - {name: hook, type: webhook, url: "%s"}
rules:
  - id: moldova
    match: {any: [Moldova]}
    notify: [hook]
"""


def test_a_dead_letter_is_listed_retried_and_sent(tmp_path, httpserver):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES % httpserver.url_for("/hook"))
    # The receiver rejects the first attempt outright (400: dead at once), then accepts.
    httpserver.expect_oneshot_request("/hook").respond_with_data("bad", status=400)
    first = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(rules))
    assert first.returncode == 0, first.stderr
    # Dead at once; the one sent delivery is the ops notice about it, on the console.
    assert "1 sent, 0 pending, 0 held, 1 dead" in first.stderr.decode()
    assert "dead letter" in first.stderr.decode()

    dead = [
        json.loads(line) for line in tgs("alerts", "list", "--status", "dead", "--db", db).stdout.splitlines()
    ]
    assert [(d["destination"], d["rule"]) for d in dead] == [("hook", "moldova")]
    assert "400" in dead[0]["error"]
    assert httpserver.url_for("/hook") not in dead[0]["error"]  # the URL is a secret
    # The same record as the archive's /api/alerts: the post it is about, no next attempt when dead.
    assert isinstance(dead[0]["post"], int) and dead[0]["next_attempt_at"] is None

    retried = tgs("alerts", "retry", "--all-dead", "--db", db)
    assert retried.returncode == 0 and "1 deliveries queued again" in retried.stderr.decode()
    assert tgs("alerts", "list", "--status", "dead", "--db", db).stdout == b""

    # The next run of the pipeline (here: a replay that stores nothing new) delivers it.
    httpserver.expect_request("/hook").respond_with_data("ok")
    again = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(rules))
    assert again.returncode == 0
    engine = open_store(db)
    with Session(engine) as s:
        assert s.scalar(select(Delivery.status).where(Delivery.destination == "hook")) == "sent"
    release(engine)


def test_retry_of_something_not_dead_is_an_error(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert tgs("db", "upgrade", "--db", db).returncode == 0
    proc = tgs("alerts", "retry", "42", "--db", db)
    assert proc.returncode == 2 and "delivery 42 is not dead" in proc.stderr.decode()
    assert tgs("alerts", "retry", "--db", db).returncode == 2
    assert tgs("alerts", "list", "--status", "lost", "--db", db).returncode == 2


def test_silences_are_added_listed_honoured_and_removed(tmp_path, httpserver):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES % httpserver.url_for("/hook"))
    assert tgs("db", "upgrade", "--db", db).returncode == 0
    added = tgs(
        "silence", "add", "--rule", "moldova", "--for", "2h", "--reason", "noisy week",
        "--db", db, "--rules", str(rules),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence = json.loads(added.stdout)
    listed = [json.loads(line) for line in tgs("silence", "list", "--db", db).stdout.splitlines()]
    assert [(s["id"], s["rule"], s["reason"]) for s in listed] == [(silence["id"], "moldova", "noisy week")]

    replayed = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(rules))
    assert "1 matches" in replayed.stderr.decode()  # matched and recorded...
    assert "0 sent, 0 pending, 0 held, 0 dead" in replayed.stderr.decode()  # ...but silenced
    assert httpserver.log == []

    assert tgs("silence", "remove", str(silence["id"]), "--db", db).returncode == 0
    assert tgs("silence", "list", "--db", db).stdout == b""
    assert tgs("silence", "remove", str(silence["id"]), "--db", db).returncode == 2
    assert tgs("silence", "add", "--rule", "x", "--for", "soon", "--db", db).returncode == 2


def test_a_silence_for_a_rule_that_does_not_exist_is_refused(tmp_path, httpserver):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES % httpserver.url_for("/hook"))
    assert tgs("db", "upgrade", "--db", db).returncode == 0
    typo = tgs("silence", "add", "--rule", "moldva", "--for", "2h", "--db", db, "--rules", str(rules))
    assert typo.returncode == 2
    assert typo.stderr.decode().splitlines() == [
        f"tgsentinel: --rule: no rule has id 'moldva' in {rules} (did you mean 'moldova'?)"
    ]
    assert tgs("silence", "list", "--db", db).stdout == b""  # nothing muted
    # Without --rules, the settings' rules directory is the one read.
    from_env = tgs(
        "silence", "add", "--rule", "moldova", "--for", "2h", "--db", db,
        env={"TGSENTINEL_RULES_DIR": str(rules)},
    )  # fmt: skip
    assert from_env.returncode == 0, from_env.stderr
    assert [json.loads(line)["rule"] for line in tgs("silence", "list", "--db", db).stdout.splitlines()] == [
        "moldova"
    ]


def test_invalid_rules_print_the_check_lines_and_exit_2_for_every_command(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: x\n    mach: {any: [a]}\n")
    check = tgs("rules", "check", str(rules))
    assert check.returncode == 1
    lines = check.stdout.decode().strip().splitlines()
    assert lines and all(line.startswith(f"{rules / 'bad.yaml'}:") for line in lines)
    db = f"sqlite:///{tmp_path}/x.db"
    for args in (
        ["replay", str(SAMPLE), "--channel", "m", "--db", db],
        ["run"],
        ["silence", "add", "--rule", "x", "--for", "2h", "--db", db],
        ["alerts", "test", "--destination", "console"],
    ):
        proc = tgs(*args, "--rules", str(rules))
        assert proc.returncode == 2
        # The check's FILE:LINE lines, each as the command's own error line.
        assert proc.stderr.decode().strip().splitlines() == [f"tgsentinel: {line}" for line in lines]
