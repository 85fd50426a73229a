"""Silences: a rule muted, in one channel or everywhere, until a time.

The one implementation behind `tgsentinel silence add|list|remove` and the archive's alerts page, so
both check the same things and store the same rows. The pipeline honours them
(`bot.pipeline.silenced`); this module only writes and reads them.

Adding is two steps, `prepare` then `add`, because the CLI checks what it was given before it opens
the store: a typo in `--for` is told without a database round trip, and the store is not opened for a
request that cannot be honoured.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.channel import scope_key
from bot.duration import parse_duration
from bot.store.channels import now
from bot.store.models import Silence


class SilenceError(ValueError):
    """A silence that cannot be added: `field` is what was given wrong ("rule", "for", "channel"),
    `reason` says why in one line. The CLI shows it as `--FIELD: reason`."""

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True, slots=True)
class NewSilence:
    """A checked request for a silence, not yet stored."""

    rule: str
    seconds: float
    channel: str | None  # the channel's key (`bot.channel.scope_key`), None for every channel
    reason: str


@dataclass(frozen=True, slots=True)
class SilenceView:
    """A stored silence, detached from its session."""

    id: int
    rule: str
    channel: str | None
    until: datetime
    reason: str
    created_at: datetime

    def record(self) -> dict[str, Any]:
        """As `tgsentinel silence list` prints it (and the API gives it)."""
        return {
            "id": self.id,
            "rule": self.rule,
            "channel": self.channel,
            "until": self.until.isoformat(),
            "reason": self.reason,
        }


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A hint for a name that is not among `known`: the nearest one, or the short list of them."""
    known = sorted(known)
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if near:
        return f" (did you mean {near[0]!r}?)"
    if not known:
        return " (there are none)"
    return f" (there are: {', '.join(known)})" if len(known) <= 10 else ""


def prepare(
    rule: str,
    duration: str,
    *,
    rules: Callable[[], tuple[str, Collection[str]]],
    channel: str | None = None,
    reason: str = "",
) -> NewSilence:
    """Check a silence request: the duration (30m, 2h, 1d), the channel as a rule would name it, and
    the rule, which must be in the rules. `rules()` gives (where they are, their ids); it is called
    last, so a request that is wrong on its face is told before the rules are read.

    SilenceError for the first thing wrong."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise SilenceError("for", str(exc)) from None
    try:
        scope = scope_key(channel) if channel else None
    except ValueError as exc:
        raise SilenceError("channel", str(exc)) from None
    where, ids = rules()
    if rule not in ids:
        # A typo would otherwise mute nothing, silently, while the noisy rule keeps paging.
        raise SilenceError("rule", f"no rule has id {rule!r} in {where}" + did_you_mean(rule, ids))
    return NewSilence(rule=rule, seconds=seconds, channel=scope, reason=reason)


def _view(row: Silence) -> SilenceView:
    return SilenceView(
        id=row.id,
        rule=row.rule_id,
        channel=row.channel,
        until=row.until,
        reason=row.reason,
        created_at=row.created_at,
    )


def add(session: Session, new: NewSilence) -> SilenceView:
    """Store the silence (in the caller's transaction); it holds from now for `new.seconds`."""
    at = now()
    row = Silence(
        rule_id=new.rule,
        channel=new.channel,
        until=at + timedelta(seconds=new.seconds),
        reason=new.reason,
        created_at=at,
    )
    session.add(row)
    session.flush()  # its id, for the answer
    return _view(row)


def active(session: Session) -> list[SilenceView]:
    """The silences still in force, oldest first."""
    return [
        _view(s) for s in session.scalars(select(Silence).where(Silence.until > now()).order_by(Silence.id))
    ]


def remove(session: Session, silence_id: int) -> bool:
    """End a silence now (in the caller's transaction); False when there is no such silence."""
    row = session.get(Silence, silence_id)
    if row is None:
        return False
    session.delete(row)
    return True
