"""tgsentinel as a new user installs it: a wheel in a fresh venv, run from an empty directory.

Nothing here may lean on the checkout: the commands run with the new venv's `tgsentinel`, in a
directory holding only what `init` wrote, with no TGSENTINEL_* variable set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from werkzeug import Response

from tests.test_run import free_port, get, wait_for
from tests.test_web_source import page_html

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "mfa_channel_dump.txt"


# Not what git ignores: a wheel holds what a fresh clone would build into it.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "data"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout: setuptools builds in the source tree's build/,
    which two builds at once (or one left half done) would share."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    dist = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (found,) = dist.glob("tgsentinel-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh venv holding only the built wheel and its dependencies."""
    work = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    pip = subprocess.run(
        [str(work / "venv" / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
    )
    assert pip.returncode == 0, pip.stderr.decode()[-2000:]
    return work / "venv" / "bin"


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TGSENTINEL_", "TELEGRAM_", "DATABASE_URL", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _run(bin_dir: Path, cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "tgsentinel"), *args],
        cwd=cwd,
        env=_env(bin_dir, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_wheel_holds_every_package_and_the_files_it_needs_at_run_time(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every package of the checkout: pyproject.toml lists them by hand, so a new one must be added there.
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "bot").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names
    migrations = {p.name for p in (ROOT / "alembic" / "versions").glob("*.py")}
    assert {f"bot/migrations/versions/{m}" for m in migrations} <= names
    assert {"bot/migrations/env.py", "bot/migrations/script.py.mako"} <= names
    assert {"bot/defaults/schema.json", "bot/defaults/examples/destinations.yaml"} <= names
    assert "bot/envfile/.env.example" in names


def test_a_fresh_install_sets_up_replays_lists_and_upgrades_from_an_empty_directory(
    installed: Path, tmp_path: Path
) -> None:
    here = tmp_path / "empty"
    here.mkdir()
    version = _run(installed, here, "--version")
    assert version.returncode == 0 and version.stdout.startswith("tgsentinel "), version.stderr

    missing = _run(installed, here, "run")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "tgsentinel: rules directory ./rules not found: run 'tgsentinel init' or pass --rules DIR"
    )

    init = _run(installed, here, "init")
    assert init.returncode == 0, init.stderr
    assert (here / "rules" / "watch.yaml").is_file() and (here / "rules" / "schema.json").is_file()
    assert (here / "data").is_dir() and (here / ".env").is_file()
    assert "# yaml-language-server: $schema=./schema.json" in (here / "rules" / "watch.yaml").read_text()
    again = _run(installed, here, "init")
    assert again.returncode == 2 and "nothing written (--force overwrites)" in again.stderr
    assert _run(installed, here, "init", "--force").returncode == 0

    check = _run(installed, here, "rules", "check")
    assert check.returncode == 0 and "1 rule, 1 channel" in check.stdout, check.stdout + check.stderr

    # A user adds rules of their own and replays a dump through them.
    shutil.copy(ROOT / "rules" / "mfa.yaml", here / "rules" / "mfa.yaml")
    replay = _run(installed, here, "replay", str(SAMPLE), "--channel", "mfa")
    assert replay.returncode == 0, replay.stderr
    assert (here / "data" / "tgsentinel.db").is_file()

    listed = _run(installed, here, "alerts", "list")
    assert listed.returncode == 0, listed.stderr
    deliveries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert deliveries and {d["destination"] for d in deliveries} == {"console"}
    assert {d["status"] for d in deliveries} == {"sent"}

    upgraded = _run(installed, here, "db", "upgrade")
    assert upgraded.returncode == 0 and "is up to date" in upgraded.stderr, upgraded.stderr


def test_a_copy_of_env_example_left_as_it_is_changes_nothing(installed: Path, tmp_path: Path) -> None:
    here = tmp_path / "copied"
    here.mkdir()
    shutil.copytree(ROOT / "rules", here / "rules")
    shutil.copy(ROOT / ".env.example", here / ".env")
    replay = _run(installed, here, "replay", str(SAMPLE), "--channel", "mfa")
    assert replay.returncode == 0, replay.stderr
    listed = _run(installed, here, "alerts", "list")
    assert listed.returncode == 0 and listed.stdout.strip(), listed.stderr


def test_init_then_run_watches_its_channel_until_sigterm(installed: Path, tmp_path: Path, httpserver) -> None:
    here = tmp_path / "monitor"
    here.mkdir()
    assert _run(installed, here, "init").returncode == 0
    channel = "telegram"  # the channel init's rules watch
    httpserver.expect_request(f"/s/{channel}").respond_with_handler(
        lambda _: Response(page_html([(1, "An update for all")], channel=channel), content_type="text/html")
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(installed / "tgsentinel"), "run"],
        cwd=here,
        env=_env(
            installed,
            TGSENTINEL_WEB_BASE=httpserver.url_for("/").rstrip("/"),
            TGSENTINEL_HTTP_PORT=str(port),
            TGSENTINEL_WEB_INTERVAL="1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, what="a healthy monitor")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (here / "data" / "tgsentinel.db").is_file()
    assert "Traceback" not in err



def _status(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:  # not listening yet
        return None
