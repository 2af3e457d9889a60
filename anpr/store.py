"""The durable record of a site: plate events and their crops, crossing alerts, watchlists and hits.

PostgreSQL at a site, SQLite embedded (one file under `data_dir`); the same SQLAlchemy Core tables
and the same SQL on both. Several processes (archive, hits matcher, CLI) share one database, so every
write is one short transaction and every insert that a re-delivered stream entry can repeat is
`ON CONFLICT DO NOTHING` on a deterministic id: consumers may retry a batch as often as they like.

Crop JPEGs are files under `<data_dir>/crops/<sha[:2]>/<sha>.jpg`, named by their SHA-256: a
retried batch or two events with the same picture share one file. A file is written (atomically)
before the transaction that references it commits, so a committed row never points at nothing;
a crash in between leaves at worst a file that the next retry reuses.

A crop row's `created_at` is the newest pass (best_seen) that shows it, so retention ages a picture
by the vehicle pass it records, and a picture shared with a newer pass stays as long as that one.

Fuzzy search folds OCR look-alikes (`anpr.plates.confusable_key`) and allows one edit by listing
every key within one edit of the query's key and looking them up in the `plate_key` btree: a few
hundred index probes instead of a scan of millions of rows, the same SQL on both backends.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from anpr.config import RetentionConfig, StoreConfig
from anpr.plates import _GROUP, confusable_key, normalise
from anpr.schema import CrossingAlert, Direction, Hit, PlateEvent, WatchlistEntry, utc_now

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CROPS_DIR = "crops"
SQLITE_BUSY_TIMEOUT_S = 10.0
# An unreachable host must fail as StoreUnavailable in seconds, not after the OS's TCP timeout.
PG_CONNECT_TIMEOUT_S = 10
# Characters a confusable key can hold: one representative per look-alike group.
KEY_ALPHABET: tuple[str, ...] = tuple(sorted(set(_GROUP.values())))
PLATE_MAX = 16
# Execution option: an SQLite transaction that takes the write lock at BEGIN.
_IMMEDIATE = "anpr_sqlite_immediate"
# Bound parameters per IN list: well under SQLite's limit of 32766 per statement.
_IN_CHUNK = 1000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _find_syncfs() -> Any:
    """Linux's syncfs(2): flush one filesystem, not every mounted one (os.sync) nor file by file."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError, TypeError):
        return None


_syncfs = _find_syncfs()


class StoreUnavailable(Exception):
    """The database cannot be reached now; consumers retry (nothing acked)."""


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Naive UTC in the database (SQLite keeps no zone), timezone-aware UTC in Python on both backends.

    A naive datetime handed in is taken as UTC already.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Event ids hold site and lane names (up to 32 characters each) plus 41 of time and digest: up to 105.
_EVENT_ID = sa.String(128)

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", _EVENT_ID, primary_key=True),
    sa.Column("site", sa.String(32), nullable=False),
    sa.Column("lane", sa.String(32), nullable=False),
    sa.Column("camera", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("plate", sa.String(PLATE_MAX), nullable=False),
    sa.Column("plate_key", sa.String(PLATE_MAX), nullable=False),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("confidence", sa.Float(), nullable=False),
    sa.Column("char_confidences", sa.JSON(), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("best_seen", UtcDateTime(), nullable=False),
    sa.Column("reads", sa.Integer(), nullable=False),
    sa.Column("box", sa.JSON(), nullable=False),
    sa.Column("plate_crop", sa.String(64), nullable=True),
    sa.Column("vehicle_crop", sa.String(64), nullable=True),
    sa.Column("linked_event_id", _EVENT_ID, nullable=True),
    sa.Column("stored_at", UtcDateTime(), nullable=False),
    sa.Index("ix_events_plate", "plate"),
    sa.Index("ix_events_plate_key", "plate_key"),
    sa.Index("ix_events_best_seen", "best_seen"),
    sa.Index("ix_events_lane_best_seen", "lane", "best_seen"),
)

crops = sa.Table(
    "crops",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_crops_created_at", "created_at"),
)

crossing_alerts = sa.Table(
    "crossing_alerts",
    metadata,
    # "<kind>:<event_id>"
    sa.Column("alert_id", sa.String(160), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("event_id", _EVENT_ID, nullable=False),
    sa.Column("plate", sa.String(PLATE_MAX), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("seen_at", UtcDateTime(), nullable=False),
    sa.Column("raised_at", UtcDateTime(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("acked_at", UtcDateTime(), nullable=True),
    sa.Column("acked_by", sa.String(64), nullable=True),
    sa.Index("ix_crossing_alerts_raised_at", "raised_at"),
    sa.Index("ix_crossing_alerts_seen_at", "seen_at"),
)

watchlist_entries = sa.Table(
    "watchlist_entries",
    metadata,
    sa.Column("entry_id", sa.String(64), primary_key=True),
    sa.Column("plate", sa.String(PLATE_MAX), nullable=False),
    sa.Column("plate_key", sa.String(PLATE_MAX), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("valid_from", UtcDateTime(), nullable=True),
    sa.Column("valid_until", UtcDateTime(), nullable=True),
    sa.Column("lanes", sa.JSON(), nullable=False),
    sa.Column("directions", sa.JSON(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("added_by", sa.String(64), nullable=False),
    sa.Column("added_at", UtcDateTime(), nullable=False),
    sa.Column("removed_at", UtcDateTime(), nullable=True),
    sa.Column("removed_by", sa.String(64), nullable=True),
    sa.Index("ix_watchlist_entries_plate_key", "plate_key"),
)

watchlist_revision = sa.Table(
    "watchlist_revision",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("revision", sa.Integer(), nullable=False),
)

hits = sa.Table(
    "hits",
    metadata,
    sa.Column("hit_id", sa.String(64), primary_key=True),
    sa.Column("event_id", _EVENT_ID, nullable=False),
    sa.Column("entry_id", sa.String(64), nullable=False),
    sa.Column("matched_as", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(8), nullable=False),
    sa.Column("plate", sa.String(PLATE_MAX), nullable=False),
    sa.Column("entry_plate", sa.String(PLATE_MAX), nullable=False),
    sa.Column("lane", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("seen_at", UtcDateTime(), nullable=False),
    sa.Column("raised_at", UtcDateTime(), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("acked_at", UtcDateTime(), nullable=True),
    sa.Column("acked_by", sa.String(64), nullable=True),
    sa.Column("ack_note", sa.Text(), nullable=True),
    sa.Column("disposition", sa.String(16), nullable=True),
    sa.Index("ix_hits_event_id", "event_id"),
    sa.Index("ix_hits_seen_at", "seen_at"),
    sa.Index("ix_hits_raised_at", "raised_at"),
)

# What an officer found when acting on a hit.
DISPOSITIONS = ("checked", "stopped", "false_match")

# -- the officer console (anpr/console) ---------------------------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("disabled", sa.Boolean(), nullable=False),
    sa.Column("language", sa.String(8), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

console_sessions = sa.Table(
    "console_sessions",
    metadata,
    # The cookie holds the raw token; a copy of this table lets nobody log in.
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Index("ix_console_sessions_user_name", "user_name"),
)

login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Index("ix_login_failures_user_name", "user_name"),
    sa.Index("ix_login_failures_at", "at"),
)

# SQLite numbers rows by itself only for a column declared exactly INTEGER PRIMARY KEY.
_AUDIT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", _AUDIT_ID, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_actor", "actor", "id"),
    sa.Index("ix_audit_log_action", "action", "id"),
)


@dataclass(frozen=True)
class EventRecord:
    """An event to store with its crop JPEGs (the event's own plate_image/vehicle_image are ignored)."""

    event: PlateEvent
    plate_jpeg: bytes | None = None
    vehicle_jpeg: bytes | None = None


@dataclass(frozen=True)
class EventQuery:
    """Filters ANDed together; `fuzzy` also finds look-alike reads and reads one character off."""

    plate: str | None = None
    fuzzy: bool = False
    since: datetime | None = None  # best_seen >= since
    until: datetime | None = None  # best_seen < until
    lane: str | None = None
    direction: Direction | None = None
    country: str | None = None
    limit: int | None = 100  # search_events only; None: all


@dataclass(frozen=True)
class StoredHit:
    hit: Hit
    acked_at: datetime | None
    acked_by: str | None
    ack_note: str | None
    disposition: str | None = None


@dataclass(frozen=True)
class StoredAlert:
    alert: CrossingAlert
    acked_at: datetime | None
    acked_by: str | None


def one_edit_neighbourhood(key: str) -> set[str]:
    """Every confusable key within Levenshtein distance 1 of `key`: itself, deletions, substitutions, insertions.

    Keys longer than a plate can be are left out: no stored key can equal them.
    """
    out = {key}
    for i in range(len(key) + 1):
        head, tail = key[:i], key[i:]
        if tail:
            out.add(head + tail[1:])
            out.update(head + c + tail[1:] for c in KEY_ALPHABET)
        out.update(head + c + tail for c in KEY_ALPHABET)
    return {k for k in out if len(k) <= PLATE_MAX}


@contextlib.contextmanager
def _available() -> Iterator[None]:
    """Server down, connection refused or lost (and SQLite busy past its timeout): retry later."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(str(exc.orig or exc)) from exc
    except DisconnectionError as exc:
        raise StoreUnavailable(str(exc)) from exc


def make_engine(url: str) -> Engine:
    """An engine for several processes sharing one database, that reconnects after a server restart."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, pool_pre_ping=True)
        _sqlite_setup(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never wait for the writer), a 10 s wait for a busy lock, transactions SQLAlchemy controls.

    pysqlite opens its own transactions only before DML and never for DDL; handing BEGIN to
    SQLAlchemy (its documented recipe) makes migrations and multi-statement writes atomic.
    """

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        # Switching a new file to WAL (it stays WAL) fails at once, without the busy wait, while another
        # process holds a lock on it: as when several services start together.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at once (waiting up to the busy timeout): for work that
        # reads before it writes, as migrations do, where a deferred BEGIN could fail half-way.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_IMMEDIATE) else "BEGIN")


def alembic_config() -> Config:
    """Alembic's configuration for our migrations, without an alembic.ini."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


class Store:
    """Every read and write of the durable record; safe to share between threads (one pooled engine)."""

    def __init__(self, engine: Engine, data_dir: Path) -> None:
        self._engine = engine
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, cfg: StoreConfig, migrate: bool = True) -> Store:
        store = cls(make_engine(cfg.sqlalchemy_url), cfg.data_dir)
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        """`alembic upgrade head`; a no-op when the database is already there."""
        cfg = alembic_config()
        with _available(), self._engine.connect() as conn:
            conn = conn.execution_options(**{_IMMEDIATE: True})
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        with _available(), self._engine.connect() as conn:
            conn.execute(sa.select(1))

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, for ON CONFLICT (both dialects spell it the same)."""
        name = self._engine.dialect.name
        if name == "postgresql":
            return postgresql.insert(table)
        if name == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"no store support for {name}")

    # -- events and crops ------------------------------------------------------------------------

    def crop_path(self, sha: str) -> Path:
        """Where the crop with this SHA-256 lives; ValueError for anything that is not one (no path tricks)."""
        if not _SHA256.match(sha):
            raise ValueError(f"not a crop sha256: {sha!r}")
        return self.data_dir / CROPS_DIR / sha[:2] / f"{sha}.jpg"

    def _crop_ref(self, sha: str | None) -> str | None:
        return None if sha is None else f"{CROPS_DIR}/{sha[:2]}/{sha}.jpg"

    def _write_crops(self, jpegs: dict[str, bytes]) -> None:
        """Store JPEGs under their SHA-256 (once: an existing file is kept), durably, before any row names them.

        Each file is written under a temporary name and renamed into place; then one `syncfs` makes the
        whole batch (data and renames) durable: one journal commit per batch instead of two fsyncs per
        crop, which made crop writing the archive's bottleneck. Where syncfs is missing, every file and
        folder is fsynced.
        """
        written: list[Path] = []
        for sha, jpeg in jpegs.items():
            path = self.crop_path(sha)
            with contextlib.suppress(FileNotFoundError):
                # Whole already: kept. Short: a power cut came between rename and sync; written again.
                if path.stat().st_size == len(jpeg):
                    continue
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{sha[:16]}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(jpeg)
                    if _syncfs is None:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            written.append(path)
        if not written:
            return
        folders = {p.parent for p in written} if _syncfs is None else {self.data_dir}
        for folder in folders:
            fd = os.open(folder, os.O_RDONLY)
            try:
                if _syncfs is None:
                    os.fsync(fd)
                elif _syncfs(fd) != 0:
                    raise OSError(ctypes.get_errno(), "syncfs failed", str(folder))
            finally:
                os.close(fd)

    def save_events(self, records: Sequence[EventRecord]) -> int:
        """Store events not stored yet (by event_id) with their crops; returns how many were new."""
        rows: dict[str, dict[str, Any]] = {}
        crop_rows: dict[str, dict[str, Any]] = {}
        jpegs: dict[str, bytes] = {}
        now = utc_now()
        for record in records:
            ev = record.event
            if ev.event_id in rows:
                continue
            shas: list[str | None] = []
            for jpeg in (record.plate_jpeg, record.vehicle_jpeg):
                if jpeg is None:
                    shas.append(None)
                    continue
                sha = hashlib.sha256(jpeg).hexdigest()
                jpegs[sha] = jpeg
                shas.append(sha)
                known = crop_rows.get(sha)
                if known is None or known["created_at"] < ev.best_seen:
                    crop_rows[sha] = {"sha256": sha, "size": len(jpeg), "created_at": ev.best_seen}
            rows[ev.event_id] = {
                "event_id": ev.event_id,
                "site": ev.site,
                "lane": ev.lane,
                "camera": ev.camera,
                "direction": ev.direction.value,
                "plate": ev.plate,
                "plate_key": confusable_key(ev.plate),
                "country": ev.country,
                "confidence": ev.confidence,
                "char_confidences": list(ev.char_confidences),
                "first_seen": ev.first_seen,
                "last_seen": ev.last_seen,
                "best_seen": ev.best_seen,
                "reads": ev.reads,
                "box": list(ev.box),
                "plate_crop": shas[0],
                "vehicle_crop": shas[1],
                "linked_event_id": ev.linked_event_id,
                "stored_at": now,
            }
        if not rows:
            return 0
        self._write_crops(jpegs)
        with _available(), self._engine.begin() as conn:
            if crop_rows:
                ins = self._insert(crops)
                # Sorted: concurrent writers lock shared crop rows in one order, so they never deadlock.
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[crops.c.sha256],
                        set_={
                            "created_at": sa.case(
                                (ins.excluded.created_at > crops.c.created_at, ins.excluded.created_at),
                                else_=crops.c.created_at,
                            )
                        },
                    ),
                    [crop_rows[sha] for sha in sorted(crop_rows)],
                )
            stmt = self._insert(events).on_conflict_do_nothing(index_elements=[events.c.event_id])
            return len(conn.execute(stmt.returning(events.c.event_id), list(rows.values())).all())

    def _event(self, row: Row[Any]) -> PlateEvent:
        return PlateEvent(
            event_id=row.event_id,
            site=row.site,
            lane=row.lane,
            camera=row.camera,
            direction=Direction(row.direction),
            plate=row.plate,
            country=row.country,
            confidence=row.confidence,
            char_confidences=row.char_confidences,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            best_seen=row.best_seen,
            reads=row.reads,
            box=row.box,
            plate_image=self._crop_ref(row.plate_crop),
            vehicle_image=self._crop_ref(row.vehicle_crop),
            linked_event_id=row.linked_event_id,
        )

    def get_event(self, event_id: str) -> PlateEvent | None:
        with _available(), self._engine.connect() as conn:
            row = conn.execute(sa.select(events).where(events.c.event_id == event_id)).first()
        return None if row is None else self._event(row)

    def _event_filters(self, q: EventQuery) -> list[sa.ColumnElement[bool]]:
        c = events.c
        where: list[sa.ColumnElement[bool]] = []
        if q.plate is not None:
            if q.fuzzy:
                key = confusable_key(q.plate)
                # An empty key would list every one-character plate: nothing was asked for.
                where.append(c.plate_key.in_(sorted(one_edit_neighbourhood(key))) if key else sa.false())
            else:
                where.append(c.plate == normalise(q.plate))
        if q.since is not None:
            where.append(c.best_seen >= q.since)
        if q.until is not None:
            where.append(c.best_seen < q.until)
        if q.lane is not None:
            where.append(c.lane == q.lane)
        if q.direction is not None:
            where.append(c.direction == Direction(q.direction).value)
        if q.country is not None:
            where.append(c.country == q.country.upper())
        return where

    def _events_query(
        self, q: EventQuery, limit: int | None, after: tuple[datetime, str] | None = None
    ) -> sa.Select[Any]:
        """Matching events newest first (best_seen, then event_id), from just after `after` if given.

        With a plate, the matches are fetched first (a MATERIALIZED CTE, honoured by PostgreSQL and
        SQLite alike) and sorted afterwards. Without that fence PostgreSQL, expecting thousands of
        rows from hundreds of keys, walks the best_seen index backwards for the LIMIT's newest ones:
        ~0.9 s over 5 million events for a plate with a handful of passes, against ~5 ms.
        """
        where = self._event_filters(q)
        if after is not None:
            seen, event_id = after
            where += [events.c.best_seen <= seen, sa.or_(events.c.best_seen < seen, events.c.event_id < event_id)]
        source: sa.FromClause = events
        if q.plate is not None:
            source = sa.select(events).where(*where).cte("matches").prefix_with("MATERIALIZED")
            where = []
        return (
            sa.select(source).where(*where).order_by(source.c.best_seen.desc(), source.c.event_id.desc()).limit(limit)
        )

    def search_events(self, q: EventQuery) -> list[PlateEvent]:
        """Matching events, newest best_seen first, at most `q.limit`."""
        with _available(), self._engine.connect() as conn:
            return [self._event(row) for row in conn.execute(self._events_query(q, q.limit))]

    def iter_events(self, q: EventQuery, chunk: int = 1000) -> Iterator[PlateEvent]:
        """Every match (`q.limit` is ignored), newest first, read `chunk` rows at a time.

        Keyset pagination on (best_seen, event_id): each chunk is one short query that starts where
        the last ended, so an export of millions holds no transaction open and never slows down.
        """
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        after: tuple[datetime, str] | None = None
        while True:
            with _available(), self._engine.connect() as conn:
                rows = conn.execute(self._events_query(q, chunk, after)).all()
            for row in rows:
                yield self._event(row)
            if len(rows) < chunk:
                return
            after = (rows[-1].best_seen, rows[-1].event_id)

    # -- crossing alerts -------------------------------------------------------------------------

    def save_alerts(self, alerts: Sequence[CrossingAlert]) -> int:
        """Store alerts not stored yet (by alert_id); returns how many were new."""
        if not alerts:
            return 0
        rows = {
            a.alert_id: {
                "alert_id": a.alert_id,
                "kind": a.kind,
                "event_id": a.event_id,
                "plate": a.plate,
                "site": a.site,
                "seen_at": a.seen_at,
                "raised_at": a.raised_at,
                "detail": a.detail,
            }
            for a in alerts
        }
        stmt = self._insert(crossing_alerts).on_conflict_do_nothing(index_elements=[crossing_alerts.c.alert_id])
        with _available(), self._engine.begin() as conn:
            return len(conn.execute(stmt.returning(crossing_alerts.c.alert_id), list(rows.values())).all())

    def list_alerts(self, unacked: bool = False, since: datetime | None = None, limit: int = 100) -> list[StoredAlert]:
        """Newest raised first; `since`: raised at or after."""
        c = crossing_alerts.c
        stmt = sa.select(crossing_alerts)
        if unacked:
            stmt = stmt.where(c.acked_at.is_(None))
        if since is not None:
            stmt = stmt.where(c.raised_at >= since)
        stmt = stmt.order_by(c.raised_at.desc(), c.alert_id.desc()).limit(limit)
        with _available(), self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            StoredAlert(
                alert=CrossingAlert(
                    alert_id=r.alert_id,
                    kind=r.kind,
                    event_id=r.event_id,
                    plate=r.plate,
                    site=r.site,
                    seen_at=r.seen_at,
                    raised_at=r.raised_at,
                    detail=r.detail,
                ),
                acked_at=r.acked_at,
                acked_by=r.acked_by,
            )
            for r in rows
        ]

    def ack_alert(self, alert_id: str, by: str) -> bool:
        """False if the alert is unknown or already acknowledged (the first acknowledgement stands)."""
        stmt = (
            sa.update(crossing_alerts)
            .where(crossing_alerts.c.alert_id == alert_id, crossing_alerts.c.acked_at.is_(None))
            .values(acked_at=utc_now(), acked_by=by)
        )
        with _available(), self._engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    # -- watchlist -------------------------------------------------------------------------------

    def _bump_revision(self, conn: Connection) -> None:
        bumped = conn.execute(
            sa.update(watchlist_revision)
            .where(watchlist_revision.c.id == 1)
            .values(revision=watchlist_revision.c.revision + 1)
        )
        if bumped.rowcount == 0:
            conn.execute(sa.insert(watchlist_revision).values(id=1, revision=1))

    def add_entries(self, entries: Sequence[WatchlistEntry]) -> None:
        """Add all or none: an entry_id already present (even removed) is a ValueError naming it.

        Ids are never reused, so the history of who listed and who removed each entry stays whole.
        """
        ids = [e.entry_id for e in entries]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"watchlist entry ids given twice: {', '.join(repeated)}")
        if not entries:
            return
        rows = [
            {
                "entry_id": e.entry_id,
                "plate": e.plate,
                "plate_key": confusable_key(e.plate),
                "mode": e.mode.value,
                "reason": e.reason,
                "severity": e.severity.value,
                "valid_from": e.valid_from,
                "valid_until": e.valid_until,
                "lanes": list(e.lanes),
                "directions": [d.value for d in e.directions],
                "source": e.source.value,
                "added_by": e.added_by,
                "added_at": e.added_at,
            }
            for e in entries
        ]
        with _available():
            try:
                # Written first, checked by the primary key: no window between a check and the insert.
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(watchlist_entries), rows)
                    self._bump_revision(conn)
            except IntegrityError as exc:
                with self._engine.connect() as conn:
                    present = conn.scalars(
                        sa.select(watchlist_entries.c.entry_id)
                        .where(watchlist_entries.c.entry_id.in_(ids))
                        .order_by(watchlist_entries.c.entry_id)
                    ).all()
                if not present:
                    raise
                raise ValueError(f"watchlist entry ids already present: {', '.join(present)}") from exc

    def remove_entry(self, entry_id: str, by: str) -> bool:
        """Soft delete (the row stays, with who and when); False if unknown or already removed."""
        stmt = (
            sa.update(watchlist_entries)
            .where(watchlist_entries.c.entry_id == entry_id, watchlist_entries.c.removed_at.is_(None))
            .values(removed_at=utc_now(), removed_by=by)
        )
        with _available(), self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            self._bump_revision(conn)
            return True

    def entries(self, include_removed: bool = False) -> list[WatchlistEntry]:
        """The entries in the order they were added."""
        c = watchlist_entries.c
        stmt = sa.select(watchlist_entries)
        if not include_removed:
            stmt = stmt.where(c.removed_at.is_(None))
        stmt = stmt.order_by(c.added_at, c.entry_id)
        with _available(), self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            WatchlistEntry(
                entry_id=r.entry_id,
                plate=r.plate,
                mode=r.mode,
                reason=r.reason,
                severity=r.severity,
                valid_from=r.valid_from,
                valid_until=r.valid_until,
                lanes=r.lanes,
                directions=r.directions,
                source=r.source,
                added_by=r.added_by,
                added_at=r.added_at,
            )
            for r in rows
        ]

    def watchlist_revision(self) -> int:
        """Grows with every change to the watchlist: a matcher polls this one row, not the list."""
        with _available(), self._engine.connect() as conn:
            revision = conn.scalar(sa.select(watchlist_revision.c.revision).where(watchlist_revision.c.id == 1))
        return int(revision or 0)

    # -- hits ------------------------------------------------------------------------------------

    def save_hits(self, hits_: Sequence[Hit]) -> int:
        """Store hits not stored yet (by hit_id); returns how many were new."""
        if not hits_:
            return 0
        rows = {
            h.hit_id: {
                "hit_id": h.hit_id,
                "event_id": h.event.event_id,
                "entry_id": h.entry.entry_id,
                "matched_as": h.matched_as.value,
                "severity": h.entry.severity.value,
                "plate": h.event.plate,
                "entry_plate": h.entry.plate,
                "lane": h.event.lane,
                "direction": h.event.direction.value,
                "seen_at": h.event.best_seen,
                "raised_at": h.raised_at,
                "payload": h.model_dump(mode="json"),
            }
            for h in hits_
        }
        stmt = self._insert(hits).on_conflict_do_nothing(index_elements=[hits.c.hit_id])
        with _available(), self._engine.begin() as conn:
            return len(conn.execute(stmt.returning(hits.c.hit_id), list(rows.values())).all())

    def list_hits(self, unacked: bool = False, since: datetime | None = None, limit: int = 100) -> list[StoredHit]:
        """Newest raised first; `since`: raised at or after."""
        c = hits.c
        stmt = sa.select(c.payload, c.acked_at, c.acked_by, c.ack_note, c.disposition)
        if unacked:
            stmt = stmt.where(c.acked_at.is_(None))
        if since is not None:
            stmt = stmt.where(c.raised_at >= since)
        stmt = stmt.order_by(c.raised_at.desc(), c.hit_id.desc()).limit(limit)
        with _available(), self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            StoredHit(
                hit=Hit.model_validate(r.payload),
                acked_at=r.acked_at,
                acked_by=r.acked_by,
                ack_note=r.ack_note,
                disposition=r.disposition,
            )
            for r in rows
        ]

    def ack_hit(self, hit_id: str, by: str, note: str = "", disposition: str | None = None) -> bool:
        """False if the hit is unknown or already acknowledged (the first acknowledgement stands).

        `disposition`: what the officer found, one of DISPOSITIONS (ValueError otherwise).
        """
        if disposition is not None and disposition not in DISPOSITIONS:
            raise ValueError(f"disposition {disposition!r} is not one of {', '.join(DISPOSITIONS)}")
        stmt = (
            sa.update(hits)
            .where(hits.c.hit_id == hit_id, hits.c.acked_at.is_(None))
            .values(acked_at=utc_now(), acked_by=by, ack_note=note, disposition=disposition)
        )
        with _available(), self._engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    # -- retention -------------------------------------------------------------------------------

    def enforce_retention(self, retention: RetentionConfig, now: datetime | None = None) -> dict[str, int]:
        """Delete what is older than the retention allows; returns how many of each went.

        Events (by best_seen) and their crossing alerts (by seen_at) after `events_days`, hits (by
        raised_at) after `hits_days`, crop files and rows after `crops_days`: the events keep their
        row, with no picture. Files go after the commit, so a failed transaction deletes none.
        """
        now = now or utc_now()
        events_cut = now - timedelta(days=retention.events_days)
        hits_cut = now - timedelta(days=retention.hits_days)
        crops_cut = now - timedelta(days=retention.crops_days)
        c = events.c
        with _available(), self._engine.begin() as conn:
            n_events = conn.execute(sa.delete(events).where(c.best_seen < events_cut)).rowcount
            n_alerts = conn.execute(sa.delete(crossing_alerts).where(crossing_alerts.c.seen_at < events_cut)).rowcount
            n_hits = conn.execute(sa.delete(hits).where(hits.c.raised_at < hits_cut)).rowcount
            gone = list(conn.scalars(sa.delete(crops).where(crops.c.created_at < crops_cut).returning(crops.c.sha256)))
            if gone:
                # A crop's created_at is its newest pass, so only events older than the cut can show it.
                def dangling(col: sa.Column[Any]) -> sa.ColumnElement[bool]:
                    return sa.and_(col.is_not(None), ~sa.exists().where(crops.c.sha256 == col))

                plate_gone, vehicle_gone = dangling(c.plate_crop), dangling(c.vehicle_crop)
                conn.execute(
                    sa.update(events)
                    .where(c.best_seen < crops_cut, sa.or_(plate_gone, vehicle_gone))
                    .values(
                        plate_crop=sa.case((plate_gone, None), else_=c.plate_crop),
                        vehicle_crop=sa.case((vehicle_gone, None), else_=c.vehicle_crop),
                    )
                )
        if gone:
            # A crop stored again since the delete (a late event with the same picture) keeps its file.
            back: set[str] = set()
            with _available(), self._engine.connect() as conn:
                for i in range(0, len(gone), _IN_CHUNK):
                    back.update(
                        conn.scalars(sa.select(crops.c.sha256).where(crops.c.sha256.in_(gone[i : i + _IN_CHUNK])))
                    )
            for sha in gone:
                if sha not in back:
                    self.crop_path(sha).unlink(missing_ok=True)
        return {"events": n_events, "alerts": n_alerts, "hits": n_hits, "crops": len(gone)}
