"""Logging in once (`tgsentinel login`) and building the client `run` uses.

The session file lives under the data directory with mode 0600; `login` also returns the same
session as a string for TELEGRAM_SESSION, so a container can run without the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from telethon import TelegramClient
from telethon.sessions import StringSession

from bot.errors import InputError
from bot.settings import Settings
from bot.sources.telegram import LOGIN_HINT, SessionError

SESSION_FILE = "telegram.session"
Prompt = Callable[[], str | Awaitable[str]]


def session_path(settings: Settings) -> Path:
    """The session file. One process at a time: two sharing it get "database is locked"."""
    return settings.data_dir / SESSION_FILE


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


def make_client(settings: Settings) -> TelegramClient:
    """The client for `run`: TELEGRAM_SESSION if set, else the session file written by `login`."""
    if not settings.api_id or not settings.api_hash:
        raise InputError("TELEGRAM_API_ID and TELEGRAM_API_HASH are not set (get them at https://my.telegram.org)")
    if settings.session:
        try:
            session: StringSession | str = StringSession(settings.session)
        except (ValueError, struct.error):
            raise SessionError(f"TELEGRAM_SESSION is not a valid string session: {LOGIN_HINT}") from None
    else:
        path = session_path(settings)
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
