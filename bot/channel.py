"""A channel's identity, decided once: how a reference is spelled, its key, its label, its names.

Every stage uses these: rules and silences scope by `key`, health, metrics and logs name a channel by
`key`, alerts say `label`, and a rule's channel scope is checked against `names`.

- key: the username in lower case, `-100<id>` for a channel known only by id, `dump:<name>` for a dump;
- label: `@username`, else the title, else the key;
- names: every spelling a scope may use for the channel.
"""

from __future__ import annotations

import re

_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,31}$")
_LINK = re.compile(r"^(?:https?://)?(?:www\.)?(?:t|telegram)\.me/(?:s/)?([^/?#]+)/?$", re.IGNORECASE)
_CHANNEL_ID = re.compile(r"^-100(\d{1,15})$")
_DUMP = re.compile(r"^dump(?::[^\s]+)?$", re.IGNORECASE)

DUMP_PREFIX = "dump:"


def parse(ref: str) -> tuple[str | None, int | None]:
    """`(username, tg_id)` from '@name', 't.me/name', 'https://t.me/s/name', 'name' or '-100…' id."""
    ref = ref.strip()
    if m := _CHANNEL_ID.match(ref):
        return None, int(m.group(1))
    if m := _LINK.match(ref):
        ref = m.group(1)
    name = ref.removeprefix("@")
    if not _USERNAME.match(name):
        raise ValueError(f"not a channel username, t.me link or -100… id: {ref!r}")
    return name, None


def scope_key(ref: str) -> str:
    """The key of a channel as a user writes it in a rule or a silence (`dump`, `dump:NAME` kept)."""
    if _DUMP.match(ref.strip()):
        return ref.strip().lower()
    name, tg_id = parse(ref)
    return key(username=name, tg_id=tg_id)


def key(*, username: str | None = None, tg_id: int | None = None, dump: str | None = None) -> str:
    """The one name of a channel in logs, metrics, health, rules and silences. Never a secret."""
    if dump:
        return dump if dump.startswith(DUMP_PREFIX) else f"{DUMP_PREFIX}{dump}"
    if username:
        return username.lower().removeprefix("@")
    return f"-100{tg_id}"


def label(
    *,
    username: str | None = None,
    title: str | None = None,
    tg_id: int | None = None,
    dump: str | None = None,
) -> str:
    """How an alert names a channel in a line of text: `@username`, else its title, else its key."""
    if username and not dump:
        return f"@{username}"
    return title or key(username=username, tg_id=tg_id, dump=dump)


def names(
    *, username: str | None = None, tg_id: int | None = None, dump: str | None = None
) -> frozenset[str]:
    """Every spelling a rule's channel scope may use for this channel, lower case."""
    out: set[str] = set()
    if dump:
        full = key(dump=dump).lower()
        out |= {full, full.removeprefix(DUMP_PREFIX)}
    if username:
        out.add(username.lower())
    if tg_id is not None:
        out |= {str(tg_id), f"-100{tg_id}"}
    return frozenset(out)
