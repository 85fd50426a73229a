"""The monitor's HTTP port: uvicorn serving one ASGI app, inside the caller's event loop.

uvicorn speaks HTTP; two limits the port has always had are added to its h11 protocol, because a
monitor that runs for months must not be starved of descriptors by idle or trickling clients:

- connections past `MAX_CONNECTIONS` are closed at once, not queued to the descriptor limit;
- a request must arrive whole, headers and body, within `REQUEST_DEADLINE` seconds of the
  connection opening or of the previous response (uvicorn's keep-alive timer restarts on every
  byte, so a client trickling headers would otherwise hold a connection for ever).

The socket is bound here, before uvicorn starts, so a port in use is an OSError for the caller to
report in one line, not uvicorn's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_CONNECTIONS = 64  # probes, a scraper and a few analysts need a handful; the rest are idle or hostile
REQUEST_DEADLINE = 5.0  # seconds for a whole request, headers and body
ACCEPT_ERROR_EVERY = 60.0  # seconds between two log lines about failed accepts

log = logging.getLogger(__name__)


class _Guarded(H11Protocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on a kept-alive connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(REQUEST_DEADLINE, self._expire)

    def _expire(self) -> None:
        # IDLE: the request line or headers are still coming; SEND_BODY: the body is. A request read
        # whole (DONE) is the app's to answer, however long that takes (an export streams).
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves signals to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Out of descriptors, asyncio logs a traceback for every failed accept (it retries each second):
    one line a minute, with a count, says the same."""
    import time

    previous = loop.get_exception_handler()
    last, missed = 0.0, 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last, missed
        if "socket.accept()" not in str(context.get("message", "")):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        missed += 1
        if now - last >= ACCEPT_ERROR_EVERY:
            exc = context.get("exception")
            log.warning("HTTP server cannot accept connections (%s): %d failed accept(s)", exc, missed)
            last, missed = now, 0

    loop.set_exception_handler(handler)


class Served:
    """A running server: `port` is the bound one (useful with port 0); `close()` stops it."""

    def __init__(self, server: _Embedded, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server, self._task, self._sock = server, task, sock
        self.port: int = sock.getsockname()[1]

    async def close(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()


async def serve(app: Any, host: str, port: int) -> Served:
    """Serve `app` on host:port until `close()`; OSError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    config = uvicorn.Config(
        app,
        http=_Guarded,
        lifespan="off",
        log_config=None,  # the process's logging, with its redaction filter, not uvicorn's own
        access_log=False,
        server_header=False,
        timeout_keep_alive=REQUEST_DEADLINE,
        timeout_graceful_shutdown=3,
    )
    server = _Embedded(config)
    _quiet_accept_errors(asyncio.get_running_loop())
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    while not server.started:
        if task.done():
            task.result()  # its error, raised here
            raise OSError(f"the HTTP server on {host}:{port} stopped while starting")
        await asyncio.sleep(0.01)
    return Served(server, task, sock)
