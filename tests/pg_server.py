"""A PostgreSQL server of a test's own, on its own port, that the test may stop and start: the shared
server at 127.0.0.1:5432 is never stopped."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.test_run import free_port


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PgServer:
    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _tool("initdb"), _tool("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("needs PostgreSQL's initdb and pg_ctl")
        # PostgreSQL refuses to run as root: as root (CI), the server runs as the postgres user.
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="tgs-pg-"))
        self.data, self.sockets = self.dir / "data", self.dir / "sock"
        self.sockets.mkdir()
        if self.user is not None:
            for p in (self.dir, self.sockets):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, *argv: str) -> None:
        prefix = (
            ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups"]
            if self.user is not None
            else []
        )
        subprocess.run([*prefix, *argv], check=True, capture_output=True, cwd=self.dir)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
