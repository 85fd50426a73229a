"""`tgsentinel alerts ...` and `tgsentinel silence ...`: the outbox seen and steered from the shell."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bot.alerts.listing import deliveries
from bot.errors import InputError
from bot.redact import SECRETS

if TYPE_CHECKING:
    from bot.alerts.model import AlertView
    from bot.config import Config

alerts_app = typer.Typer(
    help="Deliveries: list them, send dead ones again, send a test alert.", no_args_is_help=True
)
silence_app = typer.Typer(help="Silences: mute a rule (in a channel) for a while.", no_args_is_help=True)

DbOption = Annotated[str | None, typer.Option("--db", help="Database URL (default: DATABASE_URL).")]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Rules directory (default: TGSENTINEL_RULES_DIR or ./rules).")
]
STATUSES = ("pending", "held", "sent", "dead", "folded")
TEST_RULE = "tgsentinel-test"


def _store(db: str | None) -> Engine:
    from bot.settings import load_settings
    from bot.store.migrate import open_store

    return open_store(load_settings(database_url=db).database_url, create=False)


def _rules(rules_dir: Path | None) -> tuple[Path, Config]:
    """The rules directory (`--rules`, else the settings') and what it holds; invalid rules are the
    FILE:LINE lines and exit 2."""
    from bot.config import load_config
    from bot.settings import load_settings

    path = load_settings(rules_dir=rules_dir).rules_dir
    return path, load_config(path)


def sample_alert(destination: str) -> AlertView:
    """The sample `alerts test` sends: a match of no post, saying it is a test wherever it shows."""
    import uuid

    from bot.alerts.model import AlertView

    return AlertView(
        # A fresh id each time: a receiver that drops repeated webhook-ids must not drop a second test.
        id=f"{TEST_RULE}-{uuid.uuid4().hex}",
        kind="match",
        rule_id=TEST_RULE,
        severity="info",
        channel_title="tgsentinel (test)",
        date=datetime.now(UTC),
        title="tgsentinel test alert",
        text=(
            f"This is a test alert, sent by `tgsentinel alerts test` to check the destination "
            f"{destination}. No post matched any rule: there is nothing to do."
        ),
    )


async def _send_test(dest: Any) -> tuple[Any, list[int]]:
    """Send the sample through the destination's real sender, built as the monitor builds it.
    Returns what the sender answered and the HTTP status of each response."""
    import sys

    from bot.alerts.senders import build_sender
    from bot.app import http_client

    statuses: list[int] = []

    async def note(response: Any) -> None:
        statuses.append(response.status_code)

    async with http_client() as client:
        hooks = client.event_hooks
        client.event_hooks = {**hooks, "response": [*hooks.get("response", []), note]}
        sender = build_sender(dest, client, console=sys.stdout)
        return await sender.send(sample_alert(dest.name)), statuses


@alerts_app.command("test")
def send_test(
    destination: Annotated[str, typer.Option("--destination", help="A destination's name.")],
    rules_dir: RulesOption = None,
) -> None:
    """Send one sample alert, marked as a test, to a destination; print what it answered
    (exit 1 if it did not take it). Needs no database."""
    import asyncio

    from bot.alerts.model import RetryAfter, SendError
    from bot.alerts.silences import did_you_mean

    path, config = _rules(rules_dir)
    dest = config.destinations.get(destination)
    if dest is None:
        known = did_you_mean(destination, config.destinations)
        raise InputError(f"--destination: no destination {destination!r} in {path}{known}")
    try:
        sent, statuses = asyncio.run(_send_test(dest))
    except SendError as exc:
        # Senders' reasons name the endpoint as scheme://host only, and are redacted of secrets.
        wait = f" (rate limited: retry in {exc.seconds:.0f}s)" if isinstance(exc, RetryAfter) else ""
        typer.echo(f"tgsentinel: {dest.name}: failed: {SECRETS(exc.reason)}{wait}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # a bug, not the destination's answer: its type only, a message may hold a URL
        typer.echo(f"tgsentinel: {dest.name}: failed: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    said = [f"HTTP {statuses[-1]}"] if statuses else []
    if sent.provider_id is not None:
        said.append(f"message {sent.provider_id}")
    typer.echo(f"sent to {dest.name} ({dest.type})" + (f": {', '.join(said)}" if said else ""))


@alerts_app.command("list")
def list_(
    status: Annotated[str | None, typer.Option("--status", help="pending | held | sent | dead")] = None,
    limit: int = 100,
    db: DbOption = None,
) -> None:
    """One JSON line per delivery, newest first."""

    if status is not None and status not in STATUSES:
        raise InputError(f"--status: {status!r} is not one of {', '.join(STATUSES)}")
    engine = _store(db)
    _learn_secrets()
    for row in deliveries(engine, status, limit):
        typer.echo(json.dumps(row, ensure_ascii=False))
    engine.dispose()


def _learn_secrets() -> None:
    """The destinations' secrets, for the redactor, from the rules in force, if they load: a listing
    of the store must not depend on the rules being valid today."""
    from bot.alerts.senders import secrets
    from bot.config import ConfigError

    try:
        _, config = _rules(None)
    except (ConfigError, InputError, OSError):
        return
    for dest in config.destinations.values():
        SECRETS.learn(*secrets(dest))


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
    rules_dir: RulesOption = None,
) -> None:
    """Mute a rule (in one channel, or everywhere) for a while. The rule must be in the rules."""
    from bot.alerts import silences

    def known() -> tuple[str, set[str]]:
        # Invalid rules exit 2 here with their FILE:LINE lines, after --for and --channel are checked.
        path, config = _rules(rules_dir)
        return str(path), {r.id for r in config.rules}

    try:
        new = silences.prepare(rule, for_, rules=known, channel=channel, reason=reason)
    except silences.SilenceError as exc:
        raise InputError(f"--{exc.field}: {exc.reason}") from None
    engine = _store(db)
    with Session(engine) as session, session.begin():
        row = silences.add(session, new)
        typer.echo(
            json.dumps(
                {"id": row.id, "rule": row.rule, "channel": row.channel, "until": row.until.isoformat()}
            )
        )
    engine.dispose()


@silence_app.command("list")
def silence_list(db: DbOption = None) -> None:
    """Active silences, one JSON line each."""
    from bot.alerts import silences

    engine = _store(db)
    with Session(engine) as session:
        for s in silences.active(session):
            typer.echo(json.dumps(s.record(), ensure_ascii=False))
    engine.dispose()


@silence_app.command("remove")
def silence_remove(
    silence_id: Annotated[int, typer.Argument(help="The silence's id.")], db: DbOption = None
) -> None:
    """End a silence now."""
    from bot.alerts import silences

    engine = _store(db)
    with Session(engine) as session, session.begin():
        if not silences.remove(session, silence_id):
            raise InputError(f"no silence with id {silence_id}")
    engine.dispose()
    typer.echo(f"silence {silence_id} removed", err=True)
