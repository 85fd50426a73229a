"""The command line as a user meets it: real files, exit statuses, one-line errors. In process, and
through the real entry point where the process itself is what is tested."""

from __future__ import annotations

import json

import pytest

from tests.cli import ROOT, tgs, tgs_process
from tests.conftest import SAMPLE


def test_parse_prints_the_eleven_posts_of_the_sample():
    proc = tgs("parse", str(SAMPLE))
    assert proc.returncode == 0, proc.stderr
    posts = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [p["index"] for p in posts] == list(range(11))
    assert {
        "index",
        "forwarded_from",
        "title",
        "text",
        "hashtags",
        "mentions",
        "urls",
        "media",
        "fingerprint",
    } <= set(posts[0])
    assert posts[6]["forwarded_from"] is None
    assert posts[6]["title"].startswith("🎻 A grand concert")
    assert posts[10]["media"] == ["too_big"]


def test_parse_reads_stdin_and_an_empty_file_is_bad_input(tmp_path):
    proc = tgs("parse", "-", stdin=SAMPLE.read_bytes())
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 11
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    proc = tgs("parse", str(empty))  # none of the three formats (issue 12)
    assert (proc.returncode, proc.stdout) == (2, b"") and "empty file" in proc.stderr.decode()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.txt", "no such file"),
        (lambda d: d, "is a directory"),
        (
            lambda d: (d / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1")) and d / "latin1.txt",
            "not valid UTF-8 at byte 6",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, make, expected):
    path = make(tmp_path)
    proc = tgs_process("parse", str(path))  # the real entry point: no traceback reaches the terminal
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert expected in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url at all", "--db is invalid: not a database URL"),
        ("mysql://u@127.0.0.1/x", "unsupported database mysql://"),
        ("postgresql://postgres:hunter2@127.0.0.1:port/x", "the port is not a number"),
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nowhere", "cannot open database"),
    ],
)
def test_a_bad_database_url_is_one_line_and_exit_2(url, expected):
    proc = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", url)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert expected in err and "Traceback" not in err
    assert "hunter2" not in err  # a password never reaches the terminal
    assert len(err.strip().splitlines()) == 1


def test_replay_twice_stores_nothing_new_and_summarises_on_stderr(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    first = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(tmp_path))
    assert first.returncode == 0, first.stderr
    summary = first.stderr.decode().strip().splitlines()[-1]
    assert "11 posts read, 11 new, 0 unchanged" in summary
    second = tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db, "--rules", str(tmp_path))
    assert "11 posts read, 0 new, 11 unchanged" in second.stderr.decode()
    assert second.stdout == b""


def test_usage_errors_exit_2():
    proc = tgs("parse")
    assert proc.returncode == 2
    proc = tgs("parse", str(SAMPLE), "--format", "xml")
    assert proc.returncode == 2 and "--format" in proc.stderr.decode()


def test_rules_test_runs_over_stored_messages(tmp_path):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert tgs("replay", str(SAMPLE), "--channel", "mfa", "--db", db).returncode == 0
    from_db = tgs("rules", "test", "--db", db, "--rules", str(ROOT / "rules"))
    from_dump = tgs("rules", "test", str(SAMPLE), "--rules", str(ROOT / "rules"))
    assert from_db.returncode == 0 == from_dump.returncode, from_db.stderr
    db_lines = [json.loads(line) for line in from_db.stdout.decode().splitlines()]
    dump_lines = [json.loads(line) for line in from_dump.stdout.decode().splitlines()]
    # The same posts match the same rules; a stored dump's message id is its 1-based position.
    assert [(d["message_id"] - 1, d["matches"]) for d in db_lines] == [
        (d["index"], d["matches"]) for d in dump_lines
    ]
    assert all("index" not in d and d["channel"] == "dump:mfa" and d["url"] is None for d in db_lines)
    assert any(m["rule"] == "moldova" for d in db_lines for m in d["matches"])


def test_bad_settings_and_a_taken_port_are_one_line_and_exit_2(tmp_path):
    import socket

    bad = tgs("run", env={"TGSENTINEL_HTTP_PORT": "eighty"})
    assert bad.returncode == 2 and "TGSENTINEL_HTTP_PORT is invalid" in bad.stderr.decode()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = tgs(
            "run",
            env={
                "TGSENTINEL_HTTP_HOST": "127.0.0.1",
                "TGSENTINEL_HTTP_PORT": str(port),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                "TGSENTINEL_RULES_DIR": str(tmp_path),
            },
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2 and f"cannot serve /healthz on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
    missing = tgs("rules", "check", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    said = missing.stderr.decode()
    assert f"rules directory {tmp_path / 'nowhere'} not found: run 'tgsentinel init'" in said
