"""Helpers shared by tests of every folder: Redis clients and servers, a valid PlateEvent."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from anpr.schema import Direction, PlateEvent


def fast_client(port: int) -> redis.Redis:
    """No retries, short timeouts: an outage shows at the first command, so the tests stay fast."""
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_event(
    i: int,
    plate: str | None = None,
    direction: Direction = Direction.EXIT,
    first_seen: datetime | None = None,
    site: str = "ua-porubne",
) -> PlateEvent:
    """A valid event; `i` makes plate, time and so the event id unique."""
    seen = first_seen or datetime(2025, 6, 1, 8, 0, tzinfo=UTC) + timedelta(seconds=i)
    plate = plate or f"AA{i:04d}BC"
    return PlateEvent(
        event_id=PlateEvent.make_id(site, "l1", plate, seen),
        site=site,
        lane="l1",
        camera="cam1",
        direction=direction,
        plate=plate,
        country="UA",
        confidence=0.93,
        char_confidences=[0.9] * len(plate),
        first_seen=seen,
        last_seen=seen + timedelta(seconds=2),
        best_seen=seen + timedelta(seconds=1),
        reads=3,
        box=[10, 20, 110, 45],
    )


class RedisServer:
    """Our own redis-server, AOF on, to SIGSTOP, kill and restart: the shared one runs without persistence.

    `appendfsync always`, not `everysec`: while a background fsync is slow, `everysec` holds AOF
    writes back for up to 2 s but still acknowledges them, so a kill -9 then loses acknowledged
    writes (seen here once in ~10 runs on a loaded machine). That is Redis's durability setting,
    not ours to fix; the tests write little, so `always` costs nothing worth saving.
    """

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"],
        )  # fmt: skip
        probe = fast_client(self.port)
        for _ in range(200):
            try:
                probe.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, like a crash or an OOM kill."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """Test teardown: thaw a frozen server, then kill it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.kill()


# -- PostgreSQL ---------------------------------------------------------------------------------

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@contextlib.contextmanager
def pg_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A fresh database on a PostgreSQL server, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    name = f"anpr_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    host = admin_url.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://postgres@{host}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PostgresServer:
    """Our own PostgreSQL (initdb in a temp dir, fsync off) to stop and start: the shared one is not ours to stop.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="anpr-pg-"))
        self.data = self.dir / "data"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            [*self._as, str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w",
             "start"],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            [*self._as, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
