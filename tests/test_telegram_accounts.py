"""Several Telegram accounts in one source worker, offline through Telethon's real dispatch: the
channels split within each account's join budget, and when one account's session is revoked mid-run
its channels move to the other account (which then receives their posts), the rest go to the web
preview, and ops hear of it once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.health import Health
from bot.settings import Settings
from bot.sources.accounts import Accounts, plan
from bot.sources.telegram import TelegramSource
from tests.tg_harness import Entry, FakeTelegram, RecordingSink, make_client, message, new_post, push

CHANNELS = {2001 + i: f"news{i}" for i in range(5)}


class Two:
    """Two accounts on one Telegram: each its own connection (and revocation), the same channels."""

    def __init__(self) -> None:
        self.fakes = {"acc1": FakeTelegram(), "acc2": FakeTelegram()}
        for tg_id, name in CHANNELS.items():
            self.fakes["acc1"].add_channel(tg_id, name)
            self.fakes["acc1"].fill(tg_id, range(1, 4))
        self.fakes["acc2"].channels = self.fakes["acc1"].channels
        self.sink = RecordingSink()
        self.health = Health(lag_threshold=900)
        self.notices: list[tuple[str, str]] = []
        self.web: list[str] = []
        settings = Settings(_env_file=None)
        self.sources = {
            name: TelegramSource(
                make_client(fake),
                self.sink,
                self.health,
                settings,
                self.ops,
                pace=0,
                backoff=(0.01, 0.05),
                account=name,
            )
            for name, fake in self.fakes.items()
        }
        self.lost = asyncio.Event()

    async def ops(self, kind: str, summary: str) -> None:
        self.notices.append((kind, summary))

    async def on_lost(self, left: list) -> None:
        self.web = [e.name for e in left]
        self.lost.set()

    def watching(self, account: str) -> set[str]:
        return {ref.username for ref in self.sources[account].channels}


@pytest.fixture
async def two() -> AsyncIterator[Two]:
    t = Two()
    yield t
    for source in t.sources.values():
        await source.client.disconnect()


def test_the_plan_keeps_each_channel_with_its_account_and_fills_the_emptiest_first() -> None:
    entries = [Entry(f"c{i}") for i in range(7)]
    shares, left = plan(entries, ["a", "b"], 3, {"c0": "b", "c1": "b"})
    # c2-c4 to a (the most room; a first on the c4 tie), c5 to b, and c6 finds no room.
    assert [e.name for e in shares["b"]] == ["c0", "c1", "c5"]
    assert [e.name for e in shares["a"]] == ["c2", "c3", "c4"]
    assert [e.name for e in left] == ["c6"]


async def test_a_revoked_account_hands_its_channels_to_the_other_and_ops_hear_of_it(two: Two) -> None:
    accounts = Accounts(two.sources.values(), budget=4, ops=two.ops, on_lost=two.on_lost)
    entries = [Entry(name) for name in CHANNELS.values()]
    assert await accounts.update(entries) == []
    run = asyncio.create_task(accounts.run())
    # Both start: every channel's newest post is its starting point, each channel through one account.
    await two.sink.wait_for(
        lambda: len({p.channel.username for p in two.sink.posts.values()}) == len(CHANNELS)
    )
    first, second = two.watching("acc1"), two.watching("acc2")
    assert first and second and not first & second and first | second == set(CHANNELS.values())
    assert two.health.sources["telegram:acc1"].connected is True

    # acc1's session is revoked; it learns so when its connection drops and it logs in again.
    two.fakes["acc1"].authorized = False
    two.fakes["acc1"].drop()
    await asyncio.wait_for(two.lost.wait(), 10)
    assert two.watching("acc2") == set(CHANNELS.values()) - set(two.web)
    assert len(two.web) == 1  # five channels, a budget of four: one goes to the web preview
    assert accounts.lost.keys() == {"acc1"} and accounts.capacity == 4
    # Once: where its channels went, and how to log it in again.
    assert [kind for kind, _ in two.notices] == ["telegram.account_lost"]
    [(_, summary)] = two.notices
    assert "tgsentinel login --name acc1" in summary and "1 past their join budget" in summary

    # A post in a channel acc1 had arrives through acc2 now.
    moved = next(iter(first - set(two.web)))
    tg_id = next(i for i, n in CHANNELS.items() if n == moved)
    msg = message(tg_id, 10, "after the move")
    two.fakes["acc2"].post(tg_id, msg)
    await push(two.sources["acc2"].client, new_post(msg), chats=[two.fakes["acc2"].channels[tg_id].chat])
    await two.sink.wait_for(
        lambda: any(p.message_id == 10 and p.channel.username == moved for p in two.sink.posts.values())
    )
    assert not run.done()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


async def test_losing_the_last_account_stops_the_source_with_the_session_error(two: Two) -> None:
    from bot.sources.telegram import SessionError

    accounts = Accounts([two.sources["acc1"]], budget=10, ops=two.ops)
    await accounts.update([Entry(name) for name in CHANNELS.values()])
    run = asyncio.create_task(accounts.run())
    await two.sink.wait_for(lambda: len(two.sink.posts) >= len(CHANNELS))
    two.fakes["acc1"].authorized = False
    two.fakes["acc1"].drop()
    with pytest.raises(SessionError):
        await asyncio.wait_for(run, 10)
    assert "telegram.account_lost" not in [k for k, _ in two.notices]


async def test_an_account_in_a_floodwait_holds_what_it_has_and_claims_no_more(two: Two) -> None:
    import time

    accounts = Accounts(two.sources.values(), budget=4)
    await accounts.update([Entry(name) for name in CHANNELS.values()])  # three and two, or two and three
    assert accounts.capacity == 8
    held = sum(1 for a in accounts.of.values() if a == "acc1")
    two.sources["acc1"].flood_until = time.monotonic() + 300  # as `_flood` records a 300 s FloodWait
    assert accounts.capacity == held + 4


def test_an_account_in_a_floodwait_keeps_its_channels_and_is_given_no_new_ones() -> None:
    entries = [Entry(f"c{i}") for i in range(5)]
    shares, left = plan(entries, ["a", "b"], 3, {"c0": "a", "c1": "b"}, closed=frozenset({"a"}))
    assert [e.name for e in shares["a"]] == ["c0"]
    assert [e.name for e in shares["b"]] == ["c1", "c2", "c3"]
    assert [e.name for e in left] == ["c4"]


async def test_the_monitor_runs_every_named_account_and_moves_a_revoked_ones_channels(
    tmp_path, monkeypatch: pytest.MonkeyPatch, two: Two
) -> None:
    """`tgsentinel run`'s Monitor, in process on SQLite, with two named accounts (TELEGRAM_SESSION_*)
    whose clients are the offline harness's: both watch, and a revoked one's channels move."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from bot.app import Monitor
    from bot.sources import login
    from bot.store.models import Alert
    from tests.test_run import free_port
    from tests.test_telegram_login import a_string_session

    for name in ("ACC1", "ACC2"):
        monkeypatch.setenv(f"TELEGRAM_SESSION_{name}", a_string_session())
    monkeypatch.setattr(login, "make_client", lambda settings, account: make_client(two.fakes[account]))
    rules = tmp_path / "rules"
    rules.mkdir()
    listed = "".join(f"  - {name}\n" for name in CHANNELS.values())
    (rules / "watch.yaml").write_text(f"channels:\n{listed}", encoding="utf-8")
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'run.db'}",
        rules_dir=rules,
        data_dir=tmp_path / "data",
        api_id=1,
        api_hash="0123456789abcdef0123456789abcdef",
        http_port=free_port(),
        resolve_interval=0.01,
    )
    monitor = Monitor(settings)
    await monitor.start()
    try:
        accounts = monitor.telegram
        assert isinstance(accounts, Accounts) and sorted(accounts.sources) == ["acc1", "acc2"]

        def watching(account: str) -> set[str]:
            return {ref.username for ref in accounts.sources[account].channels}

        async def until(check, what: str) -> None:  # type: ignore[no-untyped-def]
            for _ in range(200):
                if check():
                    return
                await asyncio.sleep(0.05)  # polling the monitor's own tasks' progress
            raise AssertionError(f"timed out waiting for {what}")

        await until(lambda: watching("acc1") | watching("acc2") == set(CHANNELS.values()), "both accounts")
        assert watching("acc1") and watching("acc2")
        two.fakes["acc1"].authorized = False
        two.fakes["acc1"].drop()
        await until(lambda: watching("acc2") == set(CHANNELS.values()), "acc1's channels on acc2")

        def notices() -> list[str]:
            with Session(monitor.store) as session:
                return list(session.scalars(select(Alert.summary).where(Alert.kind == "ops")))

        await until(lambda: any("account acc1" in n for n in notices()), "the ops notice")
        assert len([n for n in notices() if "acc1" in n]) == 1
        health = monitor.health.snapshot()
        assert health["sources"]["telegram:acc1"]["connected"] is False
        assert {ch["source"] for ch in health["channels"].values()} == {"telegram:acc2"}
    finally:
        await monitor.stop()
