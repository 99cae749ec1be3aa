"""A private PostgreSQL server for the tests: Debian's binaries, a temporary cluster, a free loopback port.

initdb and postgres refuse to run as root, and the tests run as root in CI: as root, the cluster belongs to
``nobody`` (its folder is made in the system's temporary folder, outside pytest's root-only ``tmp_path``)
and the server is started as that user by :class:`subprocess.Popen` itself (``user=``, ``group=``); as
anyone else, as the caller. The server listens on 127.0.0.1 only (no Unix socket) and asks for a password
(SCRAM): the catalogue's password file is exercised as a hospital's would be. Stopped by its PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import free_port, until

USER = "medianode"
PASSWORD = "catalogue-test-password"


def bin_dir() -> Path:
    """Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``), the newest installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    assert found, "PostgreSQL is missing: run scripts/install --test as root (Debian package postgresql)"
    return Path(found[-1]).parent


def _as_owner() -> dict[str, Any]:
    """Popen's arguments that run a command as the cluster's owner: nobody when we are root."""
    return {"user": "nobody", "group": "nogroup", "extra_groups": []} if os.geteuid() == 0 else {}


class Postgres:
    """One cluster and its server; :meth:`stop` and :meth:`start` again keep its data (an outage)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="medianode-pg-"))
        self.data = self.root / "data"
        self.password_file = self.root / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        pwfile = self.root / "initdb-password"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            shutil.chown(pwfile, "nobody", "nogroup")
        subprocess.run([bin_dir() / "initdb", "-D", self.data, "-U", USER, "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, cwd=self.root, **_as_owner())
        pwfile.unlink()

    def url(self, db: str = "catalogue") -> str:
        """The catalogue URL a station's configuration gives (no password: that is in :attr:`password_file`)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{db}"

    def connect(self, db: str = "catalogue", **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=db,
                               connect_timeout=5, **kwargs)

    def start(self) -> None:
        # fsync off: a test's cluster is thrown away, and a crash of the machine is no test of ours
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [bin_dir() / "postgres", "-D", self.data, "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200"],
                stdout=subprocess.DEVNULL, stderr=log, cwd=self.root, start_new_session=True, **_as_owner())

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (self.root / "server.log").read_text()
            try:
                self.connect("postgres").close()
            except psycopg.OperationalError:
                return False
            return True

        until(ready, f"PostgreSQL to accept connections on port {self.port}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions are cut, the data stays), by the server's PID."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=60)
        self.proc = None

    def create_database(self, name: str = "catalogue") -> None:
        with self.connect("postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A running PostgreSQL with an empty ``catalogue`` database; removed after the test."""
    pg = Postgres()
    try:
        pg.start()
        pg.create_database()
        yield pg
    finally:
        pg.remove()
