"""`tgsentinel <command>`: exit 0 on success, 1 on findings, 2 on bad input or usage."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from bot.commands.alerts import alerts_app, silence_app
from bot.commands.rules import app as rules_app
from bot.commands.stories import app as stories_app
from bot.config import ConfigError
from bot.errors import InputError
from bot.redact import RedactFilter, redact
from bot.settings import load_settings


class _OneLineErrors(TyperGroup):
    """Bad input becomes its one line and exit status 2 here, inside the app, so that the exit code
    is the same whether the app runs as a process or in a test's CliRunner."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            # The FILE:LINE lines `rules check` prints, each as this command's own error line.
            for line in exc.problems:
                typer.echo(f"tgsentinel: {line}", err=True)
            ctx.exit(exc.exit_code)
        except InputError as exc:
            typer.echo(f"tgsentinel: {redact(str(exc))}", err=True)
            ctx.exit(exc.exit_code)

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Usage errors in the same one-line style as every other error, not a box."""
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # the parser's errors: a usage error, no arguments
            # A group run without a command has had its help printed already: that is the answer.
            if type(exc).__name__ != "NoArgsIsHelpError":
                ctx = getattr(exc, "ctx", None)
                hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
                typer.echo(f"tgsentinel: {exc.format_message()}{hint}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("tgsentinel: aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="tgsentinel",
    cls=_OneLineErrors,
    help="A live monitor for public Telegram channels: rules in YAML, alerts to Slack, Discord, "
    "Telegram and webhooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="The database: schema upgrades, giving space back.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (scripts, not tests): print posts/s.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")
app.add_typer(rules_app, name="rules")
app.add_typer(alerts_app, name="alerts")
app.add_typer(silence_app, name="silence")
app.add_typer(stories_app, name="stories")

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: DATABASE_URL, or SQLite under ./data).")
]
RulesOption = Annotated[
    Path | None, typer.Option("--rules", help="Rules directory (default: TGSENTINEL_RULES_DIR or ./rules).")
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tgsentinel {version('tgsentinel')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="[DIR]", help="Where to set up (default: here).")] = (
        Path(".")
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that are already there.")] = False,
) -> None:
    """Set up a directory to run in: rules/ (one channel, one rule, the console), .env, data/."""
    from bot.commands.init import init as do_init

    for path in do_init(directory, force=force):
        typer.echo(f"wrote {path}", err=True)
    where = "" if directory == Path(".") else f"cd {directory} && "
    typer.echo(f"next: {where}tgsentinel rules check && tgsentinel run", err=True)


@app.command()
def parse(
    file: Annotated[
        str, typer.Argument(help="A text dump, a saved t.me/s page or a Desktop export; '-' reads stdin.")
    ],
    format: Annotated[str, typer.Option("--format", help="jsonl or table")] = "jsonl",
) -> None:
    """Split a file into clean posts and print them: one JSON record per post, whatever the format."""
    from bot.sources.files import InputFile, record

    if format not in ("jsonl", "table"):
        raise InputError(f"--format: {format!r} is not one of jsonl, table")
    with InputFile(file) as source:
        if format == "jsonl":
            for post in source.posts():
                sys.stdout.write(json.dumps(record(post), ensure_ascii=False) + "\n")
            return
        posts = list(source.posts())
    from rich.console import Console
    from rich.table import Table

    table = Table("#", "forwarded from", "title", "hashtags", "media", "fingerprint")
    for post in posts:
        c = post.content
        fwd = post.item.forward
        table.add_row(
            str(post.index),
            (fwd.name or fwd.username or "") if fwd else "",
            c.title[:60],
            " ".join(c.hashtags),
            ",".join(c.media),
            (c.fingerprint or "")[:12],
        )
    Console().print(table)


@app.command()
def replay(
    file: Annotated[
        str, typer.Argument(help="A text dump, a saved t.me/s page or a Desktop export; '-' reads stdin.")
    ],
    channel: Annotated[str, typer.Option("--channel", help="Stored as channel dump:NAME.")],
    db: DbOption = None,
    rules: RulesOption = None,
    drain_timeout: Annotated[
        float, typer.Option("--drain-timeout", help="Seconds to wait for delivery.")
    ] = 60.0,
    show: Annotated[bool, typer.Option("--show", help="Print what the channel holds afterwards.")] = False,
) -> None:
    """Feed a dump, a saved t.me/s page or a Desktop export through the whole pipeline: parse, store,
    match, deliver."""
    from bot.commands.replay import replay_file

    settings = load_settings(database_url=db, rules_dir=rules)
    asyncio.run(replay_file(settings, file, channel, drain_timeout=drain_timeout, show=show))


@app.command("import")
def import_(
    export: Annotated[str, typer.Argument(metavar="EXPORT", help="A Telegram Desktop export (result.json).")],
    db: DbOption = None,
    rules: RulesOption = None,
) -> None:
    """Store a Telegram Desktop export's channel posts as history: matched, never alerted."""
    from bot.commands.importer import import_export

    settings = load_settings(database_url=db, rules_dir=rules)
    asyncio.run(import_export(settings, export))


@app.command()
def run(
    rules: RulesOption = None,
    db: DbOption = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            metavar="all|source|delivery",
            help="What this process runs (TGSENTINEL_ROLE): sources, delivery, or both. Several "
            "processes on one PostgreSQL share the channels; on SQLite only 'all'.",
        ),
    ] = None,
) -> None:
    """The monitor: watch the configured channels until SIGTERM."""
    from bot.app import run_monitor

    asyncio.run(run_monitor(load_settings(database_url=db, rules_dir=rules, role=role)))


@app.command()
def web(
    db: DbOption = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default: TGSENTINEL_HTTP_HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port to listen on (default: TGSENTINEL_HTTP_PORT, 8080).")
    ] = None,
    rules: RulesOption = None,
) -> None:
    """Serve the archive (search, posts, rules, alerts, channels) over a store, without the monitor.

    Needs TGSENTINEL_WEB_TOKEN, the sign-in token; stops on SIGTERM or Ctrl-C.
    """
    from bot.commands.web import serve_archive

    settings = load_settings(database_url=db, rules_dir=rules, http_host=host, http_port=port)
    asyncio.run(serve_archive(settings))


@app.command()
def status(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of tables.")] = False,
) -> None:
    """What the store holds and, when the monitor runs, what its /healthz says."""
    from bot.commands.status import status as show_status

    show_status(load_settings(database_url=db), as_json=as_json)


@app.command()
def login(
    phone: Annotated[
        str | None, typer.Option("--phone", envvar="TELEGRAM_PHONE", help="International format, e.g. +44...")
    ] = None,
    print_session: Annotated[
        bool, typer.Option("--print-session", help="Also print a string session for TELEGRAM_SESSION.")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="A named account (for several per worker): kept as data/sessions/NAME.session; its "
            "string session goes in TELEGRAM_SESSION_NAME.",
        ),
    ] = None,
) -> None:
    """Log in to Telegram once; the session is kept under the data directory (mode 0600).

    The code and the 2FA password are asked for on the terminal, or read from stdin (one line each)
    when there is none; the password may also come from TELEGRAM_PASSWORD.
    """
    import getpass
    import os

    from bot.sources.login import DEFAULT, account_name, session_path
    from bot.sources.login import login as do_login

    settings = load_settings()
    if not settings.api_id or not settings.api_hash:
        raise InputError("set TELEGRAM_API_ID and TELEGRAM_API_HASH first (from https://my.telegram.org)")

    def line(prompt: str, secret: bool = False) -> str:
        if sys.stdin.isatty():
            return getpass.getpass(prompt) if secret else input(prompt)
        value = sys.stdin.readline()
        if not value:
            raise InputError(f"{prompt.strip(': ')}: nothing on stdin")
        return value.strip()

    def password() -> str:
        return os.environ.get("TELEGRAM_PASSWORD") or line("2FA password: ", secret=True)

    path = session_path(settings, account_name(name) if name is not None else DEFAULT)
    session = asyncio.run(
        do_login(settings.api_id, settings.api_hash, path, phone, lambda: line("Code: "), password)
    )
    typer.echo(f"logged in; session kept in {path}", err=True)
    if print_session:
        typer.echo(session)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create or upgrade the schema (the monitor also does this on start)."""
    from bot.store.db import shown_url
    from bot.store.migrate import open_store

    settings = load_settings(database_url=db)
    open_store(settings.database_url).dispose()
    typer.echo(f"database at {shown_url(settings.database_url)} is up to date", err=True)


@db_app.command("vacuum")
def db_vacuum(db: DbOption = None) -> None:
    """Give pruned rows' space back: VACUUM on SQLite (monitor stopped), VACUUM (ANALYZE) on PostgreSQL."""
    from bot.store.maintenance import vacuum_store

    typer.echo(vacuum_store(load_settings(database_url=db).database_url), err=True)


@bench_app.command("parse")
def bench_parse(posts: int = 10_000, repeat: int = 3) -> None:
    """Parse generated dumps; prints posts/s (best of `repeat`)."""
    from bot.bench.parse import run as bench

    typer.echo(json.dumps(bench(n_posts=posts, repeat=repeat)))


@bench_app.command("replay")
def bench_replay(
    posts: int = 10_000,
    repeat: int = 3,
    index_cost: Annotated[
        bool, typer.Option(help="Also replay without the search index stage, alternating: what it adds.")
    ] = False,
) -> None:
    """Replay generated dumps into a fresh SQLite database; prints posts/s (best of `repeat`)."""
    from bot.bench.replay import run as bench

    typer.echo(json.dumps(bench(n_posts=posts, repeat=repeat, index_cost=index_cost)))


@bench_app.command("import")
def bench_import(
    megabytes: Annotated[int, typer.Option("--megabytes", help="Size of the generated export.")] = 200,
) -> None:
    """Import a generated Desktop export of that size into a fresh SQLite store: posts/s and peak RSS."""
    from bot.bench.importer import run as bench

    typer.echo(json.dumps(bench(megabytes=megabytes)))


@bench_app.command("match")
def bench_match(
    repeat: int = 3,
    catastrophic: Annotated[
        int, typer.Option(help="Instead: N catastrophic regex rules over N posts, with and without a budget.")
    ] = 0,
    sample: Annotated[
        Path | None,
        typer.Option(help="A dump whose English words the rules and posts use (default: the checkout's)."),
    ] = None,
) -> None:
    """The rule engine against the naive one-regex-per-rule approach, at 100, 1,000 and 10,000 rules."""
    from bot.bench.match import SAMPLE
    from bot.bench.match import catastrophic as bench_catastrophic
    from bot.bench.match import run as bench

    if catastrophic:
        typer.echo(json.dumps(bench_catastrophic(catastrophic)))
        return
    for row in bench(repeat=repeat, sample=sample or SAMPLE):
        typer.echo(json.dumps(row))


@bench_app.command("delivery")
def bench_delivery(
    posts: int = 1000,
    hanging: Annotated[
        bool, typer.Option("--hanging", help="Also send each alert to a webhook that never answers.")
    ] = False,
) -> None:
    """Latency from ingest to a loopback webhook, one post every 20 ms: p50 and p99."""
    from bot.bench.delivery import run as bench

    typer.echo(json.dumps(bench(n=posts, hanging=hanging)))


@bench_app.command("soak")
def bench_soak(
    minutes: Annotated[float, typer.Option(help="Stop after this long at most.")] = 10.0,
    posts: Annotated[int, typer.Option(help="Posts to store after the warm-up.")] = 20_000,
    warmup: Annotated[int, typer.Option(help="Posts stored before memory is measured.")] = 2_000,
) -> None:
    """A real `tgsentinel run` over a channel with new posts on every poll: RSS growth per 1,000 posts."""
    from bot.bench.soak import run as bench

    typer.echo(json.dumps(bench(minutes=minutes, posts=posts, warmup=warmup)))


@bench_app.command("scale")
def bench_scale(
    db: Annotated[str, typer.Option("--db", help="A PostgreSQL server: the run gets a schema of its own.")],
    channels: Annotated[int, typer.Option(help="Channels the loopback t.me serves.")] = 2000,
    workers: Annotated[int, typer.Option(help="Source worker processes.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between polls of a channel.")] = 60.0,
    seconds: Annotated[float, typer.Option(help="Length of the steady-state measurement.")] = 60.0,
    lease: Annotated[float, typer.Option(help="Channel lease time (TGSENTINEL_CHANNEL_LEASE).")] = 60.0,
    rate: Annotated[float, typer.Option(help="New posts a second, across the channels.")] = 10.0,
) -> None:
    """Source workers sharing channels on PostgreSQL: channels per worker, takeover after kill -9, load."""
    from bot.bench.scale import run as bench

    shape = {"channels": channels, "workers": workers, "interval": interval, "seconds": seconds}
    typer.echo(json.dumps(bench(db, lease=lease, rate=rate, **shape)))


@bench_app.command("dispatch")
def bench_dispatch(
    posts: int = 100_000,
    store: Annotated[bool, typer.Option(help="Into a fresh SQLite store (else a counting stand-in).")] = True,
) -> None:
    """Posts through Telethon's real update dispatch and the live source: posts/s and RSS growth."""
    import tempfile

    from bot.bench.dispatch import run as bench

    if not store:
        bench(posts)
        return
    from bot.pipeline.ingest import Ingest
    from bot.store.db import release
    from bot.store.migrate import open_store

    with tempfile.TemporaryDirectory() as tmp:
        engine = open_store(f"sqlite:///{tmp}/bench.db")
        try:
            bench(posts, Ingest(engine))
        finally:
            release(engine)


@bench_app.command("ingest")
def bench_ingest(
    sizes: Annotated[str, typer.Option(help="Stored posts to measure at, comma-separated.")] = (
        "10000,200000,1000000"
    ),
    posts: Annotated[int, typer.Option(help="New posts ingested at each size.")] = 10_000,
    batch: Annotated[int, typer.Option(help="Posts per ingest call.")] = 100,
    db: Annotated[
        str | None, typer.Option("--db", help="A PostgreSQL server: the run gets a schema of its own.")
    ] = None,
) -> None:
    """Ingest posts/s through the real ingest path at 10k, 200k and 1M stored posts."""
    from bot.bench.ingest import run as bench

    try:
        counts = [int(s.replace("_", "")) for s in sizes.split(",")]
    except ValueError:
        raise InputError(f"--sizes must be numbers separated by commas, not {sizes!r}") from None
    for row in bench(counts, posts=posts, batch=batch, db=db):
        typer.echo(json.dumps(row))


@bench_app.command("search")
def bench_search(
    posts: Annotated[int, typer.Option(help="Posts stored through the ingest path.")] = 1_000_000,
    repeat: Annotated[int, typer.Option(help="Runs of each search.")] = 20,
    pages: Annotated[int, typer.Option(help="Post pages fetched.")] = 200,
    compare: Annotated[
        int, typer.Option(help="Posts ingested with and without the index (0: skip).")
    ] = 20_000,
    db: Annotated[
        str | None, typer.Option("--db", help="A PostgreSQL server: the run gets a schema of its own.")
    ] = None,
) -> None:
    """The archive at scale, on one core: search and post page p95, store bytes per post, index cost."""
    from bot.bench.search import run as bench

    typer.echo(
        json.dumps(bench(posts=posts, repeat=repeat, pages=pages, compare=compare, db=db), ensure_ascii=False)
    )


@bench_app.command("retention")
def bench_retention(
    old: Annotated[int, typer.Option(help="Old posts to prune.")] = 1_000_000,
    recent: Annotated[int, typer.Option(help="Recent posts that stay.")] = 10_000,
    batch: Annotated[int, typer.Option(help="Rows per prune transaction.")] = 5_000,
    db: Annotated[
        str | None, typer.Option("--db", help="A PostgreSQL server: the run gets a schema of its own.")
    ] = None,
) -> None:
    """Prune old posts while a writer stores one every 50 ms: prune time, ingest p99, store size."""
    from bot.bench.retention import run as bench

    typer.echo(json.dumps(bench(old=old, recent=recent, batch=batch, db=db)))


@bench_app.command("stories")
def bench_stories(
    threshold: Annotated[float, typer.Option(help="Estimated Jaccard similarity for the same story.")] = 0.7,
    posts: Annotated[int, typer.Option(help="Generated posts assigned and indexed for throughput.")] = 10_000,
    memory_posts: Annotated[int, typer.Option(help="Posts indexed to measure bytes per post.")] = 100_000,
    compare: Annotated[bool, typer.Option(help="Also time ingest with the story stage and without.")] = True,
    labelled: Annotated[
        Path | None,
        typer.Option("--set", help="The labelled pairs (default: tests/fixtures/stories of the checkout)."),
    ] = None,
) -> None:
    """Near-duplicate stories: precision, recall and F1 on the labelled set, posts/s, bytes per post."""
    from bot.bench.stories import SET
    from bot.bench.stories import run as bench

    if not 0.0 < threshold <= 1.0:
        raise InputError(f"--threshold must be above 0 and at most 1, not {threshold}")
    result = bench(
        threshold=threshold, posts=posts, memory_posts=memory_posts, compare=compare, labelled=labelled or SET
    )
    typer.echo(json.dumps(result, ensure_ascii=False))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (TGSENTINEL_LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            # RedactFilter leaves a traceback as redacted exc_text only.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False)


def _logging() -> None:
    try:
        settings = load_settings()
        fmt, level = settings.log_format.lower(), settings.log_level.upper()
    except InputError:
        fmt, level = "text", "INFO"  # the command itself reports the bad setting, in one line
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())  # every record, whoever logs it: no secret reaches stderr
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO", handlers=[handler]
    )


def main() -> None:
    _logging()
    # Alembic announces every migration context at INFO: noise in a CLI. httpx logs every request's
    # full URL at INFO, and a Slack/Discord webhook URL or a Bot API URL *is* the secret.
    # APScheduler logs every run of every job at INFO.
    for name in ("alembic", "httpx", "httpcore", "telethon", "apscheduler"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app(prog_name="tgsentinel")


if __name__ == "__main__":
    main()
