"""Choosing the session `run` uses, and keeping it private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession, StringSession

from bot.errors import InputError
from bot.settings import Settings
from bot.sources import login
from bot.sources.telegram import SessionError


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **kw)


def a_string_session() -> str:
    s = StringSession()
    s.set_dc(2, "149.154.167.51", 443)
    s.auth_key = AuthKey(bytes(range(256)))
    return s.save()


async def test_missing_api_credentials_say_where_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="TELEGRAM_API_ID and TELEGRAM_API_HASH"):
        login.make_client(settings(tmp_path))


async def test_no_session_says_how_to_log_in(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="tgsentinel login"):
        login.make_client(settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32))


@pytest.mark.parametrize("secret", ["1QUFBQUFBQUFB", "9" + "x" * 40, "1!!!"])
async def test_a_broken_string_session_is_one_line_without_the_secret(tmp_path: Path, secret: str) -> None:
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32, TELEGRAM_SESSION=secret)
    with pytest.raises(SessionError) as info:
        login.make_client(s)
    assert "TELEGRAM_SESSION" in str(info.value) and secret not in str(info.value)
    assert "\n" not in str(info.value)


async def test_string_session_is_preferred_and_floodwaits_reach_the_source(tmp_path: Path) -> None:
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32, TELEGRAM_SESSION=a_string_session())
    client = login.make_client(s)
    assert isinstance(client.session, StringSession)
    assert client.session.dc_id == 2
    assert client.flood_sleep_threshold == 0
    assert not (tmp_path / "data").exists()  # nothing written to disk


async def test_session_file_under_the_data_dir_is_used_when_present(tmp_path: Path) -> None:
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32)
    path = login.session_path(s)
    path.parent.mkdir(parents=True)
    SQLiteSession(str(path)).close()
    client = login.make_client(s)
    assert isinstance(client.session, SQLiteSession)
    assert Path(client.session.filename) == path
    client.session.close()


def test_session_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "telegram.session"
    login._private_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_named_accounts_come_from_their_variables_and_the_sessions_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32)
    assert login.accounts(s) == []
    named = login.session_path(s, "acc2")
    assert named == tmp_path / "data" / "sessions" / "acc2.session"
    named.parent.mkdir(parents=True)
    SQLiteSession(str(named)).close()
    monkeypatch.setenv("TELEGRAM_SESSION_ACC3", a_string_session())
    monkeypatch.setenv("TELEGRAM_SESSION_BAD NAME", "x")  # not a name: ignored
    SQLiteSession(str(login.session_path(s))).close()  # the default account's file
    assert login.accounts(s) == ["default", "acc2", "acc3"]
    from bot.redact import SECRETS

    secret = os.environ["TELEGRAM_SESSION_ACC3"]
    assert secret not in SECRETS(f"a receiver echoed {secret} back")  # redacted like TELEGRAM_SESSION
    client = login.make_client(s, "acc3")
    assert isinstance(client.session, StringSession) and client.session.dc_id == 2
    file_client = login.make_client(s, "acc2")
    assert Path(file_client.session.filename) == named
    file_client.session.close()


async def test_a_broken_named_string_session_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_SESSION_ACC2", "1!!!")
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32)
    with pytest.raises(SessionError, match="TELEGRAM_SESSION_ACC2 is not a valid string session"):
        login.make_client(s, "acc2")


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 33, "../etc"])
def test_login_refuses_a_name_that_is_not_one_in_one_line(bad: str) -> None:
    with pytest.raises(InputError, match="--name"):
        login.account_name(bad)


def test_a_worker_runs_the_accounts_it_is_told_to_and_refuses_one_without_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_SESSION_ACC1", a_string_session())
    monkeypatch.setenv("TELEGRAM_SESSION_ACC2", a_string_session())
    s = settings(tmp_path, TELEGRAM_API_ID=1, TELEGRAM_API_HASH="h" * 32)
    assert login.accounts(s) == ["acc1", "acc2"]
    assert login.accounts(s.model_copy(update={"accounts": "ACC2"})) == ["acc2"]
    with pytest.raises(InputError, match="TGSENTINEL_ACCOUNTS names acc9, with no session"):
        login.accounts(s.model_copy(update={"accounts": "acc2,acc9"}))
