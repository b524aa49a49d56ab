"""Real servers for tests: a PostgreSQL server on loopback, started and stopped here.

When a service is missing the tests that need it are skipped, unless
``FGDEPTH_REQUIRE_SERVICES=1`` (set by ``.ci/run``, which installs them): then they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def missing(what: str) -> None:
    if os.environ.get("FGDEPTH_REQUIRE_SERVICES"):
        pytest.fail(f"{what} (FGDEPTH_REQUIRE_SERVICES is set)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(args: list[str], ready_path: str, log: Path, **popen):
    """Start a server on 127.0.0.1 and a free port (``args`` may use ``{port}``); yield its
    base URL once ``ready_path`` answers; stop it after. Its output goes to ``log``."""
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen(
            [a.format(port=port) for a in args], stdout=out, stderr=subprocess.STDOUT, **popen
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}{ready_path}", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"{args[:4]} exited: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(20)


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class Postgres:
    """One server with a password-protected user; ``database()`` gives a fresh database URL."""

    user = "fgdepth"

    def __init__(self):
        self.bin = _pg_bin()
        if self.bin is None:
            missing("PostgreSQL is not installed (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing("psycopg is not installed (pip install 'fgdepth[postgres]')")
        self.password = secrets.token_hex(12)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fgdepth-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self._as_user:
            shutil.chown(pwfile, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8",
        )  # fmt: skip
        pwfile.unlink()
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=300", "start",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run(
            [*self._as_user, str(self.bin / tool), *args], capture_output=True, text=True
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stderr.strip() or out.stdout.strip()}")

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        import psycopg

        name = f"db_{secrets.token_hex(4)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
