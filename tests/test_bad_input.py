"""Bad settings, URLs and stores: one line, `tgsentinel: ...`, exit status 2, for every command.

Each row was a traceback, or a silent acceptance, before (issue 10, "Why" point 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import ROOT, tgs

SAMPLE = ROOT / "tests" / "fixtures" / "mfa_channel_dump.txt"
RULES = str(ROOT / "rules")

# (command, environment, the line it must print)
SETTINGS = [
    (["run"], {"TGSENTINEL_HTTP_PORT": "99999"}, "TGSENTINEL_HTTP_PORT must be 1-65535 (got '99999')"),
    (["alerts", "list"], {"TGSENTINEL_HTTP_PORT": "0"}, "TGSENTINEL_HTTP_PORT must be 1-65535 (got '0')"),
    (["silence", "list"], {"TGSENTINEL_LEASE": "soon"}, "TGSENTINEL_LEASE is invalid: a duration is like"),
    (["run"], {"TGSENTINEL_RETENTION": "90 days"}, "TGSENTINEL_RETENTION is invalid: a duration is like"),
    (["run"], {"TGSENTINEL_LOG_FORMAT": "xml"}, "TGSENTINEL_LOG_FORMAT must be 'text' or 'json' (got 'xml')"),
    (["run"], {"TGSENTINEL_LOG_LEVEL": "loud"}, "TGSENTINEL_LOG_LEVEL must be 'DEBUG', 'INFO'"),
    (
        ["db", "upgrade"],
        {"TELEGRAM_API_ID": "abc"},
        "TELEGRAM_API_ID is invalid: Input should be a valid integer",
    ),
    (
        ["run"],
        {"TGSENTINEL_WEB_BASE": "t.me"},
        "TGSENTINEL_WEB_BASE is invalid: must be an http:// or https://",
    ),
    (
        ["alerts", "list"],
        {"DATABASE_URL": "mysql://u@127.0.0.1/x"},
        "DATABASE_URL is invalid: unsupported database",
    ),
    (
        ["silence", "list"],
        {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:port/x"},
        "DATABASE_URL is invalid: postgresql://...: the port is not a number",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "expected"), SETTINGS, ids=[" ".join(r[0]) + str(r[1]) for r in SETTINGS]
)
def test_a_bad_setting_is_one_line_naming_the_variable(args, env, expected, tmp_path) -> None:
    ran = tgs(*args, env=env, cwd=tmp_path)
    err = ran.stderr.decode()
    assert ran.returncode == 2, err
    assert err.startswith(f"tgsentinel: {expected}"), err
    assert len(err.strip().splitlines()) == 1
    assert "hunter2" not in err
    assert not (tmp_path / "data").exists()  # nothing made on the way to the error


def test_empty_values_are_unset(tmp_path) -> None:
    empty = {
        "TELEGRAM_API_ID": "",
        "TGSENTINEL_RETENTION": "",
        "TGSENTINEL_HTTP_PORT": "",
        "DATABASE_URL": "",
    }
    db = tmp_path / "data" / "tgsentinel.db"
    ran = tgs("replay", str(SAMPLE), "--channel", "mfa", "--rules", RULES, env=empty, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert db.is_file()  # the default URL, not an empty one


def test_every_postgresql_spelling_reaches_the_server_through_psycopg() -> None:
    # Port 1 on loopback: nothing listens, so the error is the driver's own "connection refused",
    # which proves the URL was accepted and handed to psycopg 3.
    for scheme in ("postgresql+psycopg2", "postgres", "postgresql"):
        ran = tgs("alerts", "list", "--db", f"{scheme}://u:hunter2@127.0.0.1:1/x")
        err = ran.stderr.decode()
        assert (
            ran.returncode == 2 and "cannot open database postgresql+psycopg://u:***@127.0.0.1:1/x" in err
        ), err
        assert "hunter2" not in err and "ModuleNotFoundError" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["alerts", "list"],
        ["alerts", "retry", "--all-dead"],
        ["silence", "list"],
        ["rules", "test", "--rules", RULES],
    ],
)
def test_a_command_that_reads_never_creates_a_database(args, tmp_path) -> None:
    ran = tgs(*args, "--db", "sqlite:///dta/x.db", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.decode().strip() == "tgsentinel: no database at dta/x.db"
    assert list(tmp_path.iterdir()) == []


def _as_another_user(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`tgsentinel` as a user who does not own `cwd`: as root (CI), nobody; else ourselves, since a
    chmod binds us there."""
    ambient = ("TGSENTINEL_", "DATABASE_URL", "TELEGRAM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ambient)}
    # setpriv, not subprocess's user=: that one cannot exec an interpreter kept under /root.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    return subprocess.run(
        [*nobody, sys.executable, "-m", "bot.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _uid() -> int:
    return 65534 if os.geteuid() == 0 else os.geteuid()


def test_a_data_directory_that_cannot_be_written_names_its_path_and_uid(tmp_path) -> None:
    here = tmp_path / "mount"
    here.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(here, 0o555)  # a bind mount owned by someone else
    ran = _as_another_user(["replay", str(SAMPLE), "--channel", "mfa", "--rules", RULES], cwd=here)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip() == f"tgsentinel: cannot write {here / 'data'} (uid {_uid()}): permission denied"


@pytest.mark.parametrize(
    "args",
    [
        ["replay", str(SAMPLE), "--channel", "mfa", "--rules", RULES],
        ["silence", "add", "--rule", "moldova", "--for", "1h", "--rules", RULES],
        ["db", "upgrade"],
    ],
)
def test_a_read_only_database_names_its_path_and_uid(args, tmp_path) -> None:
    here = tmp_path / "work"
    (here / "data").mkdir(parents=True)
    made = tgs("db", "upgrade", cwd=here)
    assert made.returncode == 0, made.stderr
    db = here / "data" / "tgsentinel.db"
    os.chmod(tmp_path, 0o755)
    for path in (here, here / "data"):
        os.chmod(path, 0o777)
    os.chmod(db, 0o444)
    if os.geteuid() == 0:
        os.chown(db, 65534, 65534)
    ran = _as_another_user(args, cwd=here)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip() == f"tgsentinel: cannot write {db} (uid {_uid()}): permission denied"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench", "match", "--sample", "gone.txt"], "no sample dump at gone.txt: it comes with the source"),
        (["bench", "stories", "--set", "missing"], "no labelled set at missing: it comes with the source"),
    ],
    ids=["bench match", "bench stories"],
)
def test_a_bench_without_its_checkout_data_says_which_option_to_pass(args, expected, tmp_path) -> None:
    ran = tgs(*args, cwd=tmp_path)
    err = ran.stderr.decode()
    assert ran.returncode == 2, err
    assert err.startswith(f"tgsentinel: {expected}"), err
    assert len(err.strip().splitlines()) == 1
