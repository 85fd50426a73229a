"""The deliveries as `tgsentinel alerts list` and the archive's alerts page and API list them: one
query and one record, so the two never disagree about what a delivery shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.redact import SECRETS
from bot.store.models import Alert, Delivery


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _shown(text: str | None) -> str | None:
    # Stored errors were redacted when written; this covers rows from before that, and secrets
    # learned since (a receiver that echoed a token back).
    return SECRETS(text) if text else text


def deliveries(engine: Engine, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest deliveries, of one status or all, with their alert (blocking): when the next
    attempt is due for a pending one, and the post the alert is about."""
    query = select(Delivery, Alert).join(Alert, Alert.id == Delivery.alert_id).order_by(Delivery.id.desc())
    if status:
        query = query.where(Delivery.status == status)
    with Session(engine) as session:
        return [
            {
                "id": d.id,
                "status": d.status,
                "destination": d.destination,
                "kind": a.kind,
                "rule": a.rule_id,
                "attempts": d.attempts,
                "error": _shown(d.last_error),
                "created_at": _iso(d.created_at),
                "sent_at": _iso(d.sent_at),
                "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
                "summary": _shown(a.summary),
                "post": a.message_id,
            }
            for d, a in session.execute(query.limit(limit))
        ]
