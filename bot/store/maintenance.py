"""Housekeeping on a schedule: the database's size for /metrics, and retention."""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session

from bot.store.channels import now
from bot.store.models import Alert, Delivery, Message


def database_size(engine: Engine) -> int:
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return 0
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


def prune(engine: Engine, older_than: float) -> dict[str, int]:
    """Delete messages and finished deliveries older than `older_than` seconds.

    A channel's cursor lives on its own row (`channels.last_seen_id`), so pruning never rewinds it.
    Pending, held and dead deliveries stay whatever their age: someone still owes them a look.
    """
    cutoff = now() - timedelta(seconds=older_than)
    with Session(engine) as session, session.begin():
        done = session.execute(
            delete(Delivery).where(Delivery.status.in_(("sent", "folded")), Delivery.created_at < cutoff)
        ).rowcount
        orphan_alerts = session.execute(
            delete(Alert).where(Alert.created_at < cutoff, ~Alert.id.in_(select(Delivery.alert_id)))
        ).rowcount
        old = select(Message.id).where(Message.created_at < cutoff)
        # Alerts still owed to someone point at their message: those messages stay too.
        held = (
            select(Alert.message_id)
            .join(Delivery, Delivery.alert_id == Alert.id)
            .where(Delivery.status.in_(("pending", "held", "dead")), Alert.message_id.is_not(None))
        )
        messages = session.execute(delete(Message).where(Message.id.in_(old), ~Message.id.in_(held))).rowcount
    return {"deliveries": done or 0, "alerts": orphan_alerts or 0, "messages": messages or 0}
