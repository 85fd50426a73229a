"""`tgsentinel init [DIR]`: a working setup for someone who installed the package, not the checkout."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from bot.errors import InputError
from bot.packaged import defaults, env_example

# One public channel, one rule, the console: enough to see the monitor work before any secret is set.
WATCH_YAML = """\
# yaml-language-server: $schema=./schema.json
# What to watch, what to look for, and where to say so. Every *.yaml directly in this directory is
# read (examples/ is not): `tgsentinel rules check` checks them, `tgsentinel run` watches.
# Slack, Discord, Telegram and webhook destinations: see examples/.
channels:
  - telegram            # a username, a t.me link, or a -100... id

rules:
  - id: telegram-updates
    description: Posts about a new Telegram update
    severity: info
    match:
      any: ["update*", "#update", "обновлени*"]
    notify: [console]

destinations:
  - name: console
    type: console
"""


WEB_TOKEN_LINE = "# TGSENTINEL_WEB_TOKEN="


def env_file() -> str:
    """`.env.example` with a fresh random archive sign-in token set: the UI is on from the first run,
    behind a secret nobody else has (the rest stays commented out, keeping its defaults)."""
    text = env_example().read_text(encoding="utf-8")
    token = secrets.token_urlsafe(32)
    if WEB_TOKEN_LINE not in text:  # a packaging mistake; the UI just stays off
        return text
    return text.replace(WEB_TOKEN_LINE, f"TGSENTINEL_WEB_TOKEN={token}", 1)


def init(directory: Path, force: bool = False) -> list[Path]:
    """Write `rules/`, `.env` and `data/` under `directory`; return what was written.

    Nothing is overwritten without `force`: if any file is there already, nothing is written at all,
    so a half-initialised directory never mixes our files with the user's.
    """
    rules = directory / "rules"
    files: dict[Path, str | Path] = {
        rules / "watch.yaml": WATCH_YAML,
        rules / "schema.json": defaults() / "schema.json",
        directory / ".env": env_file(),
    }
    files.update(
        {rules / "examples" / src.name: src for src in sorted((defaults() / "examples").glob("*.yaml"))}
    )
    present = [path for path in files if path.exists()]
    if present and not force:
        shown = ", ".join(str(p) for p in present)
        raise InputError(f"{shown}: already there; nothing written (--force overwrites)")
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, path)
            else:
                path.write_text(content, encoding="utf-8")
        (directory / ".env").chmod(0o600)  # it is where the secrets go
        (directory / "data").mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        where = Path(exc.filename or directory).resolve()
        raise InputError(f"cannot write {where}: {(exc.strerror or str(exc)).lower()}") from None
    return [*files, directory / "data"]
