"""`tgsentinel status`: what the store holds and, when the monitor runs, what its `/healthz` says.

It only reads: the store is opened with `create=False` (a SQLite file that is not there is refused,
not made), and the monitor is asked over HTTP with a short timeout. A monitor that is not running is
no error, only one line of the answer.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, TextIO

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from bot import channel
from bot.settings import Settings

PROBE_TIMEOUT = 2.0  # seconds: a monitor answers /healthz from memory
DEAD_SHOWN = 5


def store_facts(engine: Engine) -> dict[str, Any]:
    """Channels (posts, last post), posts stored, alerts and ops notices by delivery status, dead letters."""
    from bot.store.keeper import describe
    from bot.store.models import Alert, Channel, Delivery, Message

    with Session(engine) as session:
        per_channel = {
            cid: (n, last_id, last_date, last_stored)
            for cid, n, last_id, last_date, last_stored in session.execute(
                select(
                    Message.channel_id,
                    func.count(),
                    func.max(Message.msg_id),
                    func.max(Message.date),
                    func.max(Message.created_at),
                ).group_by(Message.channel_id)
            )
        }
        channels = []
        for row in session.scalars(select(Channel).order_by(Channel.id)):
            n, last_id, last_date, last_stored = per_channel.get(row.id, (0, None, None, None))
            channels.append(
                {
                    "channel": channel.key(username=row.username, tg_id=row.tg_id, dump=row.dump),
                    "title": row.title,
                    "posts": n,
                    "last_post": {
                        "id": last_id,
                        "date": _iso(last_date),
                        "stored_at": _iso(last_stored),
                    }
                    if last_id is not None
                    else None,
                }
            )
        by_status: dict[str, dict[str, int]] = {"alerts": {}, "ops_notices": {}}
        # By the kind itself: PostgreSQL will not group by an expression bound to a parameter twice.
        for kind, status, n in session.execute(
            select(Alert.kind, Delivery.status, func.count())
            .join(Alert, Alert.id == Delivery.alert_id)
            .group_by(Alert.kind, Delivery.status)
        ):
            bucket = by_status["ops_notices" if kind == "ops" else "alerts"]
            bucket[status] = bucket.get(status, 0) + n
        dead = [
            {
                "id": d.id,
                "destination": d.destination,
                "kind": a.kind,
                "rule": a.rule_id,
                "attempts": d.attempts,
                "error": d.last_error,
                "created_at": _iso(d.created_at),
            }
            for d, a in session.execute(
                select(Delivery, Alert)
                .join(Alert, Alert.id == Delivery.alert_id)
                .where(Delivery.status == "dead")
                .order_by(Delivery.id.desc())
                .limit(DEAD_SHOWN)
            )
        ]
        n_dead = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "dead"))
        posts = session.scalar(select(func.count()).select_from(Message))
        leases = describe(session)  # empty but on PostgreSQL with several workers
    return {
        "posts": posts or 0,
        "channels": channels,
        **by_status,
        "dead_letters": {"count": n_dead or 0, "latest": dead},
        **({"leases": leases} if leases["workers"] else {}),
    }


def healthz_url(settings: Settings) -> str:
    """Where the monitor of these settings answers: a wildcard bind address is asked on loopback."""
    host = settings.http_host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}/healthz"


def probe(url: str, token: str | None = None, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """The monitor's /healthz, or why there is none: `running` says which. With the monitor's
    TGSENTINEL_HTTP_TOKEN it gets the detail, not only the bare status."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        # trust_env=False: a proxy from the environment has no business with a loopback address.
        resp = httpx.get(url, headers=headers, timeout=timeout, trust_env=False, follow_redirects=False)
    except httpx.HTTPError as exc:
        return {"running": False, "url": url, "reason": f"nothing answers at {url} ({type(exc).__name__})"}
    try:
        body = resp.json()
        if not isinstance(body, dict) or "healthy" not in body:
            raise ValueError
    except ValueError:
        reason = f"{url} answered HTTP {resp.status_code}, but not as tgsentinel's /healthz"
        return {"running": False, "url": url, "reason": reason}
    return {"running": True, "url": url, "http_status": resp.status_code, "health": body}


def facts(settings: Settings) -> dict[str, Any]:
    from bot.store.db import release, shown_url
    from bot.store.migrate import open_store

    engine = open_store(settings.database_url, create=False)
    try:
        store = {"url": shown_url(settings.database_url), **store_facts(engine)}
    finally:
        release(engine)
    return {"store": store, "monitor": probe(healthz_url(settings), settings.http_token)}


def status(settings: Settings, *, as_json: bool = False, out: TextIO | None = None) -> None:
    """`tgsentinel status`: one JSON object with `--json`, tables otherwise."""
    out = out or sys.stdout
    got = facts(settings)
    if as_json:
        out.write(json.dumps(got, ensure_ascii=False) + "\n")
        return
    _tables(got, out)


# --- tables ----------------------------------------------------------------------------------------


def _tables(got: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, width=None if out.isatty() else 160)
    store, monitor = got["store"], got["monitor"]
    health = monitor.get("health") or {}
    live = health.get("channels") or {}

    console.print(f"store: {store['url']}", markup=False)
    console.print(
        f"posts stored: {store['posts']}; alerts: {_counts(store['alerts'])}; "
        f"ops notices: {_counts(store['ops_notices'])}; dead letters: {store['dead_letters']['count']}",
        markup=False,
    )
    table = Table("channel", "posts", "last post", "stored", "state", "source", "problem / last error")
    seen = set()
    for ch in store["channels"]:
        seen.add(ch["channel"])
        last = ch["last_post"] or {}
        row = live.get(ch["channel"], {})
        table.add_row(
            ch["channel"],
            str(ch["posts"]),
            (f"#{last['id']}" + (f" {_short(last['date'])}" if last.get("date") else "")) if last else "-",
            _short(last.get("stored_at")) if last else "-",
            row.get("state", "-"),
            row.get("source", "-"),
            row.get("problem") or row.get("last_error") or "",
        )
    for name, row in sorted(live.items()):
        if name not in seen:  # watched, but nothing stored yet (a problem, or not polled yet)
            table.add_row(
                name, "0", "-", "-", row.get("state", "-"), row.get("source", "-"),
                row.get("problem") or row.get("last_error") or "",
            )  # fmt: skip
    console.print(table)
    if "leases" in store:
        _leases(console, store["leases"])
    for d in store["dead_letters"]["latest"]:
        console.print(
            f"dead letter {d['id']}: {d['destination']}, {d['kind']} {d['rule'] or ''}: "
            f"{d['error'] or 'no error recorded'}",
            markup=False,
        )
    if monitor["running"]:
        sources = ", ".join(
            f"{name} {_connected(s.get('connected'))}" for name, s in (health.get("sources") or {}).items()
        )
        verdict = "healthy" if health.get("healthy") else f"not healthy ({health.get('status', '?')})"
        console.print(
            f"monitor: running at {monitor['url']}, {verdict}" + (f"; {sources}" if sources else ""),
            markup=False,
        )
    else:
        console.print(f"monitor: not running: {monitor['reason']}", markup=False)


def _leases(console: Any, leases: dict[str, Any]) -> None:
    """The workers sharing the channels (PostgreSQL): each one's heartbeat and what it holds."""
    from rich.table import Table

    table = Table("worker", "role", "accounts", "heartbeat", "leases", "capacity", "channels held (expiry)")
    for wid, w in leases["workers"].items():
        mine = sorted((c, v) for c, v in leases["channels"].items() if v["holder"] == wid)
        shown = ", ".join(f"{c}{'@' + v['account'] if v['account'] else ''}" for c, v in mine[:6]) + (
            f" and {len(mine) - 6} more" if len(mine) > 6 else ""
        )
        expiry = min((v["expires_at"] for _, v in mine if v["expires_at"]), default=None)
        table.add_row(
            wid,
            w["role"],
            ", ".join(w["accounts"]) or "web preview",
            "stopped " + _short(w["stopped_at"], True)
            if w["stopped_at"]
            else _short(w["heartbeat_at"], True),
            str(w["leases"]),
            str(w["capacity"]),
            shown + (f" (until {_short(expiry, True)})" if expiry else ""),
        )
    console.print(table)
    free = [c for c, v in leases["channels"].items() if not v["holder"]]
    if free:
        console.print(f"channels no worker holds: {', '.join(free)}", markup=False)


def _connected(value: bool | None) -> str:
    return "not tried yet" if value is None else "connected" if value else "not connected"


def _counts(by_status: dict[str, int]) -> str:
    order = ("sent", "pending", "held", "dead", "folded")
    shown = [f"{by_status[s]} {s}" for s in order if by_status.get(s)]
    shown += [f"{n} {s}" for s, n in sorted(by_status.items()) if s not in order]
    return ", ".join(shown) if shown else "none"


def _short(stamp: str | None, seconds: bool = False) -> str:
    if not stamp:
        return "-"
    return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
