"""Real servers for tests, on loopback, started and stopped here: PostgreSQL, and an MLflow
tracking server with sign-in over it.

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
import sys
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
    # a server's start is mostly imports: seconds alone, minutes on a machine that is busy
    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                urllib.request.urlopen(f"{base}{ready_path}", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"{args[:4]} exited: {log.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    late = f"{args[:4]} not ready in 240 s: {log.read_text()[-2000:]}"
                    raise RuntimeError(late) from None
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


def auth_ini(database_url: str) -> str:
    """The sign-in settings of a team's MLflow server (docs/team-server.md): users in
    ``database_url``; every signed-in user may log to every experiment (EDIT); the admin's
    password comes from ``MLFLOW_AUTH_ADMIN_PASSWORD`` on the first start. A password check
    (PBKDF2) is costly and a training run makes hundreds of requests: each user's is cached
    for a minute."""
    return (
        "[mlflow]\n"
        "default_permission = EDIT\n"
        f"database_uri = {database_url}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# a password is checked once a minute per user, not at every request\n"
        "auth_cache_ttl_seconds = 60\n"
    )


@contextlib.contextmanager
def mlflow_server(backend: str, auth_database: str, folder: Path, admin_password: str):
    """``mlflow server --app-name basic-auth`` on 127.0.0.1 over ``backend`` (runs) and
    ``auth_database`` (users), proxying artifacts stored in ``folder/artifacts``; yields its
    base URL."""
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        missing("mlflow[auth] is not installed (pip install -e '.[test]')")
    ini = folder / "auth.ini"
    ini.write_text(auth_ini(auth_database))
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    args = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", "{port}", "--workers", "2",
    ]  # fmt: skip
    with http_server(args, "/health", folder / "server.log", env=env, cwd=folder) as base:
        yield base
