"""`tgsentinel rules check` and `tgsentinel rules test`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.channel import scope_key
from bot.config import ConfigError, load_config, rules_directory
from bot.errors import InputError
from bot.rules.backtest import backtest
from bot.rules.engine import Engine, MatchInput
from bot.settings import load_settings

app = typer.Typer(name="rules", help="Check rules, and try them on history.", no_args_is_help=True)


def default_rules_dir() -> Path:
    """TGSENTINEL_RULES_DIR from the environment or `.env`, as `run` reads it; else ./rules."""
    return load_settings().rules_dir


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@app.command()
def check(
    rules_dir: Annotated[
        Path | None, typer.Argument(metavar="[DIR]", help="default: $TGSENTINEL_RULES_DIR or ./rules")
    ] = None,
) -> None:
    """Report every problem as FILE:LINE: message (exit 1), or a short summary (exit 0).

    Warnings (FILE:LINE: warning: ...) are printed either way and do not fail the check."""
    # Bad input rather than a finding (exit 2, not 1): there are no rules to judge.
    rules_dir = rules_directory(rules_dir or default_rules_dir())
    try:
        config = load_config(rules_dir)
    except ConfigError as exc:
        for line in exc.problems:
            typer.echo(line)
        raise typer.Exit(1) from None
    for line in config.warnings:
        typer.echo(line)
    warned = f" ({_plural(len(config.warnings), 'warning')})" if config.warnings else ""
    typer.echo(
        f"rules OK: {_plural(len(config.files), 'file')}, {_plural(len(config.rules), 'rule')}, "
        f"{_plural(len(config.channels), 'channel')}, {_plural(len(config.destinations), 'destination')}"
        f"{warned}"
    )


def _dump_posts(path: Path, channel: str) -> Iterator[tuple[dict[str, Any], MatchInput]]:
    """A file's posts, whichever format (`bot.sources.files`): a dump's records say `index` (the 0-based
    position); a page's and an export's also `message_id`, `channel` and `date`."""
    from bot.channel import names as channel_names
    from bot.sources.files import InputFile

    try:
        key = scope_key(channel)
    except ValueError as exc:
        raise InputError(f"--channel: {exc}") from None
    with InputFile(str(path)) as source:
        for post in source.posts():
            item, content = post.item, post.content
            ref = item.channel
            fields: dict[str, Any] = {"index": post.index, "title": content.title}
            names = frozenset({key})
            if not post.positional:
                known = ref.tg_id is not None or ref.username is not None
                fields = {
                    "index": post.index,
                    "message_id": item.message_id,
                    "channel": ref.key if known else None,
                    "date": item.date.isoformat() if item.date else None,
                    "title": content.title,
                }
                names |= channel_names(username=ref.username, tg_id=ref.tg_id)
            yield (
                fields,
                MatchInput(
                    text=content.text,
                    hashtags=content.hashtags,
                    channel_names=names,
                    is_forward=item.forward is not None,
                ),
            )


@app.command()
def test(
    file: Annotated[
        Path | None, typer.Argument(help="a text dump, a saved t.me/s page or a Desktop export")
    ] = None,
    rules_dir: Annotated[
        Path | None, typer.Option("--rules", help="default: $TGSENTINEL_RULES_DIR or ./rules")
    ] = None,
    channel: Annotated[
        str, typer.Option("--channel", help="the channel name rule scopes are judged against")
    ] = "dump",
    db: Annotated[str | None, typer.Option("--db", help="run over stored messages instead of a dump")] = None,
    since: Annotated[
        datetime | None, typer.Option("--since", help="with --db: messages from this date")
    ] = None,
) -> None:
    """Run the rules over a file (a dump, a saved page, an export) or --db: one JSON line per match.

    A dump's posts carry `index` (0-based position); a page's and an export's also `message_id`,
    `channel` and `date`; stored ones `message_id`, `channel`, `date`, `url`."""
    if (file is None) == (db is None):
        raise typer.BadParameter("give a dump FILE or --db URL")
    # Invalid rules here are bad input (exit 2): the CLI prints their FILE:LINE lines.
    engine = Engine(load_config(rules_dir or default_rules_dir()).rules)
    read = 0

    def counted(
        posts: Iterator[tuple[dict[str, Any], MatchInput]],
    ) -> Iterator[tuple[dict[str, Any], MatchInput]]:
        nonlocal read
        for post in posts:
            read += 1
            yield post

    from bot.web.backtest import posts_at

    matched = 0
    posts = _dump_posts(file, channel) if file is not None else posts_at(db, since)  # type: ignore[arg-type]
    for record in backtest(counted(posts), engine):
        matched += 1
        typer.echo(json.dumps(record, ensure_ascii=False))
    # On stderr, so the JSON lines stay clean: an empty stdout otherwise says nothing of why.
    typer.echo(f"{matched} of {read} post(s) matched", err=True)
