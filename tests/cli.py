"""`tgsentinel` in process (Typer's CliRunner) for most CLI tests, and as a real process for the few
that are about the process itself (the entry point, signals)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from bot.cli import app

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes


def _ambient() -> list[str]:
    """Settings of the developer's shell that must not leak into a test."""
    return [k for k in os.environ if k.startswith(("TGSENTINEL_", "DATABASE_URL", "TELEGRAM_"))]


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def tgs(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Ran:
    """Run a command in this process. An exception the CLI did not turn into its one line is re-raised,
    so a would-be traceback fails the test instead of hiding in the result."""
    runner = CliRunner()
    full_env: dict[str, str | None] = dict.fromkeys(_ambient())
    full_env.update(env or {})
    with _cwd(cwd):
        result = runner.invoke(app, list(args), input=stdin, env=full_env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout_bytes, result.stderr_bytes)


def tgs_process(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[bytes]:
    """Run `tgsentinel` as a real process, through its entry point."""
    full_env = {k: v for k, v in os.environ.items() if k not in _ambient()}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=120,
    )
