"""A source worker's Telegram accounts: which account watches which channel.

Each account (a `TelegramSource` with its own client and session) watches at most `budget`
channels: Telegram caps the channels an account may join at 500 (1,000 with Premium), and joining
is rate limited per account. A channel stays with the account it has while that account is alive
and within its budget, so a reload or a lost account moves only what must move. Channels no account
has room for are handed back to the caller, which reads them through the web preview: a public
channel can be read without joining.

An account whose session is revoked (or banned) stops; its channels move to the others, and ops
hear of it once. When the last account goes, the error goes up: the process has no Telegram left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from bot.health import Ops, tell
from bot.sources.model import ChannelRef
from bot.sources.telegram import ChannelEntryLike, SessionError, TelegramSource

log = logging.getLogger(__name__)


def _key(entry: ChannelEntryLike) -> str:
    return ChannelRef(tg_id=entry.tg_id, username=entry.name).key  # as the source keys its channels


def plan(
    entries: Sequence[ChannelEntryLike],
    accounts: Sequence[str],
    budget: int,
    had: dict[str, str],
    closed: frozenset[str] = frozenset(),
) -> tuple[dict[str, list[ChannelEntryLike]], list[ChannelEntryLike]]:
    """Each account's channels (at most `budget` each), keeping the account a channel `had` where it
    can, and the channels left over, in the order given. A `closed` account (one sitting out a
    FloodWait) keeps what it had and is given nothing new."""
    out: dict[str, list[ChannelEntryLike]] = {a: [] for a in accounts}
    rest = []
    for entry in entries:  # first, those that keep their account
        account = had.get(_key(entry))
        if account in out and len(out[account]) < budget:
            out[account].append(entry)
        else:
            rest.append(entry)
    open_ = [a for a in accounts if a not in closed]
    left = []
    for entry in rest:  # then each to the open account with the most room (the first on a tie)
        room = max(open_, key=lambda a: budget - len(out[a]), default=None)
        if room is not None and len(out[room]) < budget:
            out[room].append(entry)
        else:
            left.append(entry)
    return out, left


class Accounts:
    """Several `TelegramSource`s as one: `update` gives each its share, `run` runs them all."""

    def __init__(
        self,
        sources: Iterable[TelegramSource],
        budget: int,
        ops: Ops | None = None,
        on_lost: Callable[[list[ChannelEntryLike]], Awaitable[None]] | None = None,
    ) -> None:
        self.sources = {s.account: s for s in sources}
        if len(self.sources) > 1:
            for source in self.sources.values():
                source.tell_session_loss = False  # `_drop` tells ops, once, with where its channels went
        self.budget = budget
        self._ops = ops
        self._on_lost = on_lost
        self.lost: dict[str, str] = {}  # account -> why
        self.of: dict[str, str] = {}  # channel key -> the account watching it
        self._entries: list[ChannelEntryLike] = []

    @property
    def live(self) -> list[str]:
        return [a for a in self.sources if a not in self.lost]

    @property
    def capacity(self) -> int:
        """Channels the accounts may hold: each its budget, but an account sitting out a FloodWait
        only what it has (joining more would earn a longer one)."""
        now = time.monotonic()
        held = {a: 0 for a in self.live}
        for account in self.of.values():
            if account in held:
                held[account] += 1
        return sum(held[a] if self.sources[a].flood_until > now else self.budget for a in self.live)

    async def update(self, entries: Iterable[ChannelEntryLike]) -> list[ChannelEntryLike]:
        """Watch these channels across the live accounts; returns those no account has room for."""
        self._entries = list(entries)
        now = time.monotonic()
        flooded = frozenset(a for a in self.live if self.sources[a].flood_until > now)
        shares, left = plan(self._entries, self.live, self.budget, self.of, flooded)
        self.of = {_key(e): account for account, mine in shares.items() for e in mine}
        for account, mine in shares.items():
            try:
                await self.sources[account].update(mine)
            except Exception as exc:  # the account's own sweeps subscribe what this could not
                log.warning("telegram %s: channels not all updated: %s", account, exc)
        if left:
            log.info(
                "telegram: %d channel(s) past the join budget (%d an account): read via the web preview",
                len(left),
                self.budget,
            )
        return left

    async def sweep_all(self) -> int:
        return sum([await self.sources[a].sweep_all() for a in self.live])

    async def run(self) -> None:
        """Run every account until cancelled; an account that loses its session drops out, and the
        last one's loss is raised."""
        tasks = {asyncio.create_task(self.sources[a].run(), name=f"telegram {a}"): a for a in self.live}
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    account = tasks.pop(task)
                    exc = task.exception()
                    if not isinstance(exc, SessionError):
                        raise exc if exc is not None else RuntimeError(f"telegram {account} stopped")
                    if not tasks:
                        raise exc
                    await self._drop(account, exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _drop(self, account: str, exc: SessionError) -> None:
        self.lost[account] = str(exc)
        moved = [k for k, a in self.of.items() if a == account]
        log.warning("telegram account %s lost its session (%s): %d channel(s) move", account, exc, len(moved))
        with contextlib.suppress(Exception):
            await self.sources[account].update([])
        left = await self.update(self._entries)
        await tell(
            self._ops,
            "telegram.account_lost",
            f"{exc}; its {len(moved)} channel(s) moved "
            f"to the other accounts" + (f", {len(left)} past their join budget" if left else ""),
        )
        if self._on_lost is not None:
            await self._on_lost(left)  # the web preview for those, and fewer leases for this worker

    async def stop(self) -> None:
        await asyncio.gather(
            *(asyncio.wait_for(self.sources[a].stop(), timeout=3) for a in self.live), return_exceptions=True
        )
