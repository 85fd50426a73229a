"""`tgsentinel web`: the archive over a store, without the monitor (a database filled by `import` or
`replay`, or one a monitor elsewhere writes).

It only reads and never migrates: a store that is missing or behind the code's schema is one line and
exit 2, saying what to run, rather than a schema upgrade under a running monitor's feet.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import InputError
from bot.settings import Settings
from bot.store.db import make_engine, release, shown_url, store_error
from bot.store.migrate import alembic_config
from bot.web.app import create_app
from bot.web.server import serve

log = logging.getLogger("tgsentinel")


def open_archive(url: str) -> Engine:
    """An engine on an existing store whose schema is the code's; InputError (one line) otherwise."""
    engine = make_engine(url, create=False)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        engine.dispose()
        raise InputError(store_error(url, exc)) from None
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    if current != heads:
        engine.dispose()
        state = "has no tgsentinel schema" if not current else "has an older schema"
        raise InputError(f"the database at {shown_url(url)} {state}: run 'tgsentinel db upgrade' first")
    return engine


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


async def serve_archive(settings: Settings) -> None:
    """Serve until SIGTERM or Ctrl-C; one log line says where."""
    # uvicorn announces its process, its start and its shutdown at INFO: the line below says it all.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    if not settings.web_token:
        raise InputError(
            "TGSENTINEL_WEB_TOKEN is not set: the archive needs a sign-in token "
            "(`tgsentinel init` writes one into .env)"
        )
    engine = open_archive(settings.database_url)
    try:
        app = create_app(
            engine, token=settings.web_token, rules_dir=settings.rules_dir, https=settings.web_https
        )
        host, port = settings.http_host, settings.http_port
        try:
            server = await serve(app, host, port)
        except OSError as exc:
            raise InputError(
                f"cannot serve the archive on {host}:{port}: {exc.strerror or exc} (pass --port)"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("archive at %s over %s", _url(host, server.port), shown_url(settings.database_url))
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.close()
            log.info("stopped")
    finally:
        release(engine)
