"""Logging in once (`tgsentinel login`) and building the client `run` uses.

The session file lives under the data directory with mode 0600; `login` also returns the same
session as a string for TELEGRAM_SESSION, so a container can run without the file.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from dotenv import dotenv_values
from telethon import TelegramClient
from telethon.sessions import StringSession

from bot.errors import InputError
from bot.redact import SECRETS
from bot.settings import Settings
from bot.sources.telegram import LOGIN_HINT, SessionError

SESSION_FILE = "telegram.session"
SESSIONS_DIR = "sessions"  # under the data directory: one `NAME.session` per named account
DEFAULT = "default"
_ENV_PREFIX = "TELEGRAM_SESSION_"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
Prompt = Callable[[], str | Awaitable[str]]


def account_name(name: str) -> str:
    """An account's name (`login --name`, TGSENTINEL_ACCOUNTS), checked: letters, digits, - and _."""
    name = name.strip().lower()
    if not _NAME.fullmatch(name):
        raise InputError(f"account name {name!r} must be 1-32 letters, digits, '-' or '_' (--name)")
    return name


def session_path(settings: Settings, account: str = DEFAULT) -> Path:
    """The session file. One process at a time: two sharing it get "database is locked"."""
    if account == DEFAULT:
        return settings.data_dir / SESSION_FILE
    return settings.data_dir / SESSIONS_DIR / f"{account}.session"


def _named_strings(settings: Settings) -> dict[str, str]:
    """TELEGRAM_SESSION_<NAME> from the environment, or from .env as the settings read it."""
    found: dict[str, str] = {}
    env_file = Path(str(settings.model_config.get("env_file") or ".env"))
    sources = [dotenv_values(env_file) if env_file.is_file() else {}, os.environ]
    for source in sources:
        for key, value in source.items():
            if key.upper().startswith(_ENV_PREFIX) and value:
                name = key[len(_ENV_PREFIX) :].lower()
                if _NAME.fullmatch(name):
                    found[name] = value
    SECRETS.learn(*found.values())  # an auth key as much as TELEGRAM_SESSION: never shown anywhere
    return found


def accounts(settings: Settings) -> list[str]:
    """Every account this process has a session for, by name: `default` (TELEGRAM_SESSION, or the
    file `login` writes), each TELEGRAM_SESSION_<NAME>, and each `login --name NAME` file."""
    names = []
    if settings.session or session_path(settings).exists():
        names.append(DEFAULT)
    names += _named_strings(settings)
    folder = settings.data_dir / SESSIONS_DIR
    if folder.is_dir():
        names += [f.stem for f in folder.glob("*.session") if _NAME.fullmatch(f.stem)]
    found = sorted(set(names), key=lambda n: (n != DEFAULT, n))
    if settings.accounts is None:
        return found
    chosen = [account_name(n) for n in settings.accounts.split(",") if n.strip()]
    missing = [n for n in chosen if n not in found]
    if missing:
        raise InputError(
            f"TGSENTINEL_ACCOUNTS names {', '.join(missing)}, with no session (log in with "
            f"`tgsentinel login --name NAME`, or set TELEGRAM_SESSION_NAME)"
        )
    return chosen


def _private_file(path: Path) -> None:
    # Created 0600 before SQLite opens it, so the auth key is never readable by others, not even briefly.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


async def login(
    api_id: int,
    api_hash: str,
    session_path: Path,
    phone: str | None,
    code_callback: Prompt,
    password_callback: Prompt,
) -> str:
    """Log in (phone, code, 2FA password as needed) and return the session as a StringSession string."""
    session_path = session_path if session_path.suffix == ".session" else session_path.with_suffix(".session")
    _private_file(session_path)
    client = TelegramClient(str(session_path), api_id, api_hash)
    try:
        await client.start(
            phone=phone if phone else _ask_phone,
            code_callback=code_callback,
            password=password_callback,
        )
        return StringSession.save(client.session)
    finally:
        await client.disconnect()
        if session_path.exists():
            os.chmod(session_path, 0o600)


def _ask_phone() -> str:
    return input("Phone number (international format, e.g. +44...): ")


def make_client(settings: Settings, account: str = DEFAULT) -> TelegramClient:
    """The client for `run`: the account's string session if set, else its session file."""
    if not settings.api_id or not settings.api_hash:
        raise InputError("TELEGRAM_API_ID and TELEGRAM_API_HASH are not set (get them at https://my.telegram.org)")
    variable = "TELEGRAM_SESSION" if account == DEFAULT else f"{_ENV_PREFIX}{account.upper()}"
    string = settings.session if account == DEFAULT else _named_strings(settings).get(account)
    if string:
        try:
            session: StringSession | str = StringSession(string)
        except (ValueError, struct.error):
            raise SessionError(f"{variable} is not a valid string session: {LOGIN_HINT}") from None
    else:
        path = session_path(settings, account)
        if not path.exists():
            raise SessionError(f"no Telegram session ({path} does not exist): {LOGIN_HINT}")
        session = str(path)
    return TelegramClient(
        session,
        settings.api_id,
        settings.api_hash,
        # The source owns reconnection: it reconnects forever and catches up after each one.
        auto_reconnect=False,
        # Every FloodWait reaches the source, which counts it, reports it and sleeps through it.
        flood_sleep_threshold=0,
    )
