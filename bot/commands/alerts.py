"""`tgsentinel alerts ...` and `tgsentinel silence ...`: the outbox seen and steered from the shell."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.errors import InputError

alerts_app = typer.Typer(help="Deliveries: list them, send dead ones again.", no_args_is_help=True)
silence_app = typer.Typer(help="Silences: mute a rule (in a channel) for a while.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (default: DATABASE_URL).")]
STATUSES = ("pending", "held", "sent", "dead", "folded")


def _store(db: str | None) -> Engine:
    from bot.settings import load_settings
    from bot.store.migrate import open_store

    return open_store(load_settings(database_url=db).database_url, create=False)


@alerts_app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status", help="pending | held | sent | dead")] = None,
    limit: int = 100,
    db: DbOption = None,
) -> None:
    """One JSON line per delivery, newest first."""
    from bot.store.models import Alert, Delivery

    if status is not None and status not in STATUSES:
        raise InputError(f"--status: {status!r} is not one of {', '.join(STATUSES)}")
    engine = _store(db)
    with Session(engine) as session:
        query = (
            select(Delivery, Alert).join(Alert, Alert.id == Delivery.alert_id).order_by(Delivery.id.desc())
        )
        if status:
            query = query.where(Delivery.status == status)
        for d, a in session.execute(query.limit(limit)):
            typer.echo(
                json.dumps(
                    {
                        "id": d.id,
                        "status": d.status,
                        "destination": d.destination,
                        "kind": a.kind,
                        "rule": a.rule_id,
                        "attempts": d.attempts,
                        "error": d.last_error,
                        "created_at": d.created_at.isoformat(),
                        "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                        "summary": a.summary,
                    },
                    ensure_ascii=False,
                )
            )
    engine.dispose()


@alerts_app.command("retry")
def retry(
    delivery_id: Annotated[int | None, typer.Argument(help="A dead delivery's id.")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead delivery.")] = False,
    db: DbOption = None,
) -> None:
    """Send dead deliveries again; the running monitor (or the next replay) picks them up."""
    from bot.alerts.worker import retry_dead

    if (delivery_id is None) == (not all_dead):
        raise InputError("give a delivery ID or --all-dead (one of them)")
    engine = _store(db)
    with Session(engine) as session, session.begin():
        n = retry_dead(session, None if all_dead else delivery_id)
    engine.dispose()
    if delivery_id is not None and n == 0:
        raise InputError(f"delivery {delivery_id} is not dead (see `tgsentinel alerts list --status dead`)")
    typer.echo(f"{n} deliveries queued again", err=True)


@silence_app.command("add")
def silence_add(
    rule: Annotated[str, typer.Option("--rule", help="The rule id to mute.")],
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the team.")] = "",
    channel: Annotated[str | None, typer.Option("--channel", help="Only in this channel.")] = None,
    db: DbOption = None,
) -> None:
    """Mute a rule (in one channel, or everywhere) for a while."""
    from bot.channel import scope_key
    from bot.duration import parse_duration
    from bot.store.channels import now
    from bot.store.models import Silence

    try:
        seconds = parse_duration(for_)
    except ValueError as exc:
        raise InputError(f"--for: {exc}") from None
    try:
        scope = scope_key(channel) if channel else None
    except ValueError as exc:
        raise InputError(f"--channel: {exc}") from None
    engine = _store(db)
    with Session(engine) as session, session.begin():
        row = Silence(
            rule_id=rule,
            channel=scope,
            until=now() + timedelta(seconds=seconds),
            reason=reason,
            created_at=now(),
        )
        session.add(row)
        session.flush()
        typer.echo(
            json.dumps({"id": row.id, "rule": rule, "channel": row.channel, "until": row.until.isoformat()})
        )
    engine.dispose()


@silence_app.command("list")
def silence_list(db: DbOption = None) -> None:
    """Active silences, one JSON line each."""
    from bot.store.channels import now
    from bot.store.models import Silence

    engine = _store(db)
    with Session(engine) as session:
        for s in session.scalars(select(Silence).where(Silence.until > now()).order_by(Silence.id)):
            typer.echo(
                json.dumps(
                    {
                        "id": s.id,
                        "rule": s.rule_id,
                        "channel": s.channel,
                        "until": s.until.isoformat(),
                        "reason": s.reason,
                    },
                    ensure_ascii=False,
                )
            )
    engine.dispose()


@silence_app.command("remove")
def silence_remove(
    silence_id: Annotated[int, typer.Argument(help="The silence's id.")], db: DbOption = None
) -> None:
    """End a silence now."""
    from bot.store.models import Silence

    engine = _store(db)
    with Session(engine) as session, session.begin():
        row = session.get(Silence, silence_id)
        if row is None:
            raise InputError(f"no silence with id {silence_id}")
        session.delete(row)
    engine.dispose()
    typer.echo(f"silence {silence_id} removed", err=True)
