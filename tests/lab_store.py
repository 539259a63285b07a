"""A lab's shared store for the tests and the load benchmark, with the real parts: a
throwaway PostgreSQL cluster (initdb / pg_ctl in a temp folder, 127.0.0.1, a free port) and
a real `mlflow server` over it with MLflow's basic-auth app. Nothing is mocked.

Debian's `postgresql` package puts the binaries under /usr/lib/postgresql/VERSION/bin;
`available()` says whether they are here (tests skip without them; .ci/run installs them).
initdb refuses root, so as root the cluster runs as the package's `postgres` user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

ADMIN, ADMIN_PASSWORD = "admin", "admin-Secret-1"  # the auth app's first user
USER, PASSWORD = "lab", "lab-Secret-2"  # a user with its own studies
READER, READER_PASSWORD = "reader", "reader-Secret-3"  # default permission: READ
DB_USER, DB_PASSWORD = "ablate", "db-Secret-4"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's binaries (None: not installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def available() -> bool:
    return pg_bin() is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class Postgres:
    root: Path
    port: int

    def uri(self, password: str = DB_PASSWORD, database: str = "mlflow") -> str:
        return f"postgresql://{DB_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def ctl(self, *args: str) -> None:
        cmd = [str(pg_bin() / "pg_ctl"), "-D", str(self.root / "data"), *args]
        subprocess.run(_as_owner(cmd), check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        log = self.root / "postgres.log"
        opts = f"-p {self.port} -k {self.root} -h 127.0.0.1"
        self.ctl("-l", str(log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.ctl("-m", "fast", "-w", "-t", "60", "stop")

    def sql(self, statement: str, database: str = "postgres") -> None:
        cmd = [str(pg_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        cmd += ["-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-c", statement]
        subprocess.run(_as_owner(cmd), check=True, capture_output=True, timeout=60)


def start_postgres() -> Postgres:
    """A new cluster with a password-protected role `ablate` owning databases `mlflow`
    (the tracking store) and `auth` (the basic-auth app's users)."""
    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    initdb = [str(pg_bin() / "initdb"), "-D", str(root / "data"), "-U", "postgres"]
    initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"]
    pwfile = root / "pw"
    pwfile.write_text("postgres-Secret-0\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        _as_owner([*initdb, f"--pwfile={pwfile}"]), check=True, capture_output=True, timeout=300
    )
    pg = Postgres(root, free_port())
    os.environ.setdefault("PGPASSWORD", "postgres-Secret-0")
    pg.start()
    pg.sql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'")
    pg.sql(f"CREATE DATABASE mlflow OWNER {DB_USER}")
    pg.sql(f"CREATE DATABASE auth OWNER {DB_USER}")
    return pg


def remove_postgres(pg: Postgres) -> None:
    try:
        pg.stop()
    except (subprocess.SubprocessError, OSError):
        pass
    shutil.rmtree(pg.root, ignore_errors=True)


@dataclass
class Server:
    """`mlflow server --app-name basic-auth` over the cluster."""

    url: str
    proc: subprocess.Popen
    root: Path

    def env(self, user: str = USER, password: str = PASSWORD) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
        }

    def stop(self) -> None:
        """The server and every process it started (its job runners outlive a SIGTERM)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def start_server(
    pg: Postgres, root: Path, port: int | None = None, auth_cache_s: int = 0
) -> Server:
    """The tracking server with basic auth, users `lab` (its own studies) and `reader`
    (default permission READ) made by the admin. Waits until it answers. `auth_cache_s`:
    how long a checked login is trusted (MLflow's default 0: every request hashes it)."""
    root.mkdir(parents=True, exist_ok=True)
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {pg.uri(database='auth')}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {auth_cache_s}\n"
    )
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"]
    cmd += ["--backend-store-uri", pg.uri(), "--artifacts-destination", str(root / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env |= {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_LOGGING_LEVEL": "WARNING"}
    env |= {"MLFLOW_FLASK_SERVER_SECRET_KEY": "ablate-tests-csrf-key"}  # the auth app needs one
    log = open(root / "server.log", "a")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True, cwd=root)
    log.close()
    server = Server(f"http://127.0.0.1:{port}", proc, root)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urlopen(f"{server.url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        server.stop()
        raise RuntimeError("mlflow server did not answer within 180 s")
    _users(server)
    return server


def _users(server: Server) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ |= {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    try:
        client = AuthServiceClient(server.url)
        for user, password in ((USER, PASSWORD), (READER, READER_PASSWORD)):
            try:
                client.create_user(user, password)
            except MlflowException as err:
                if "exists" not in str(err).lower():
                    raise
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
