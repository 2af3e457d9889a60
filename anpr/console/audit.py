"""The console's audit log: who did what, when and from where, in a hash chain that shows tampering.

Each row's hash is sha256(prev_hash + canonical JSON of its id, time, actor, action, target, detail
and ip), and prev_hash is the hash of the row before (64 zeros for the first). Ids are handed out
under the chain's lock as the last id + 1, never by a sequence: a rolled-back insert leaves no hole,
so a missing id always means a removed row. `verify` then finds a row edited in place, a row
removed, and a row rewritten with a fresh hash (the next row's link no longer matches).

What a chain kept in the same database cannot show: the newest rows cut off, or every hash
recomputed by someone with write access. For that, keep the newest row's hash (`anpr audit list
--json --limit 1`) somewhere else now and then: a rewritten chain no longer contains it.

Writers in several processes (console workers, the CLI) take one lock per append, so the chain never
forks: a PostgreSQL advisory transaction lock, on SQLite the write lock of BEGIN IMMEDIATE.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from anpr.schema import utc_now
from anpr.store import _IMMEDIATE, Store, _available, audit_log

GENESIS = "0" * 64
# Any constant other than the migrations' lock: held by whoever appends to the chain.
_PG_AUDIT_LOCK = 0x61756474
_VERIFY_CHUNK = 5000
_LIMITS = {"actor": 64, "target": 200, "ip": 64}
ACTION_MAX = 32


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    ip: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    rows: int
    first_bad: int | None
    reason: str


def canonical(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 as is; what JSON has no type for becomes text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _at(when: datetime) -> str:
    # Microseconds: what both PostgreSQL and SQLite give back unchanged.
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def row_hash(prev_hash: str, id_: int, at: datetime, actor: str, action: str, target: str, detail: Any, ip: str) -> str:
    body = canonical([id_, _at(at), actor, action, target, detail, ip])
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


class AuditLog:
    """Append and read the chain; one instance is safe to share between threads."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utc_now) -> None:
        self._engine = store.engine
        self._clock = clock

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction holding the chain's lock, for changes that must commit with their audit row.

        The lock comes first, before any other write, so two such transactions never wait on each other
        in opposite orders.
        """
        with _available(), self._engine.connect() as conn:
            conn = conn.execution_options(**{_IMMEDIATE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_AUDIT_LOCK)))
                yield conn

    def append(
        self,
        conn: Connection,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        ip: str = "",
    ) -> AuditRow:
        """Add a row inside `transaction()`. Actor, target and ip longer than their columns are cut."""
        if not action or len(action) > ACTION_MAX:
            raise ValueError(f"audit action must be 1 to {ACTION_MAX} characters: {action!r}")
        actor, target, ip = actor[: _LIMITS["actor"]], target[: _LIMITS["target"]], ip[: _LIMITS["ip"]]
        text = canonical(detail or {})
        stored_detail = json.loads(text)
        last = conn.execute(
            sa.select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
        ).first()
        id_, prev = (1, GENESIS) if last is None else (last.id + 1, last.hash)
        # The database keeps microseconds at most; hash what it will give back.
        at = self._clock().astimezone(UTC)
        digest = row_hash(prev, id_, at, actor, action, target, stored_detail, ip)
        conn.execute(
            sa.insert(audit_log).values(
                id=id_,
                at=at,
                actor=actor,
                action=action,
                target=target,
                detail=text,
                ip=ip,
                prev_hash=prev,
                hash=digest,
            )
        )
        return AuditRow(id_, at, actor, action, target, stored_detail, ip, prev, digest)

    def record(
        self,
        actor: str,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        ip: str = "",
    ) -> AuditRow:
        """Append one row in a transaction of its own."""
        with self.transaction() as conn:
            return self.append(conn, actor, action, target, detail, ip)

    def verify(self) -> AuditCheck:
        """Walk the chain from row 1; the first row missing, altered or relinked fails it."""
        prev_id, prev_hash, count = 0, GENESIS, 0
        while True:
            with _available(), self._engine.connect() as conn:
                chunk = conn.execute(
                    sa.select(audit_log).where(audit_log.c.id > prev_id).order_by(audit_log.c.id).limit(_VERIFY_CHUNK)
                ).all()
            for r in chunk:
                if r.id != prev_id + 1:
                    missing = f"row {prev_id + 1}" if r.id == prev_id + 2 else f"rows {prev_id + 1} to {r.id - 1}"
                    where = f"ids jump from {prev_id} to {r.id}" if prev_id else f"the log starts at row {r.id}"
                    return AuditCheck(False, count, prev_id + 1, f"{missing} removed ({where})")
                try:
                    detail = json.loads(r.detail)
                except ValueError:
                    return AuditCheck(False, count, r.id, f"row {r.id} altered: its detail is not JSON")
                expected = row_hash(r.prev_hash, r.id, r.at, r.actor, r.action, r.target, detail, r.ip)
                if expected != r.hash or canonical(detail) != r.detail:
                    return AuditCheck(False, count, r.id, f"row {r.id} altered: its contents do not match its hash")
                if r.prev_hash != prev_hash:
                    # This row is as written, so the one before it was rewritten with a fresh hash.
                    if prev_id == 0:
                        return AuditCheck(False, count, r.id, f"row {r.id} does not start the chain")
                    return AuditCheck(
                        False, count, prev_id, f"row {prev_id} rewritten: its hash is not the one row {r.id} links to"
                    )
                prev_id, prev_hash, count = r.id, r.hash, count + 1
            if len(chunk) < _VERIFY_CHUNK:
                return AuditCheck(True, count, None, "")

    def rows(
        self,
        limit: int = 100,
        before_id: int | None = None,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[AuditRow]:
        """Newest first; `before_id` pages back (rows with smaller ids)."""
        c = audit_log.c
        stmt = sa.select(audit_log)
        if before_id is not None:
            stmt = stmt.where(c.id < before_id)
        if actor is not None:
            stmt = stmt.where(c.actor == actor)
        if action is not None:
            stmt = stmt.where(c.action == action)
        stmt = stmt.order_by(c.id.desc()).limit(limit)
        with _available(), self._engine.connect() as conn:
            found = conn.execute(stmt).all()
        return [
            AuditRow(r.id, r.at, r.actor, r.action, r.target, _loads(r.detail), r.ip, r.prev_hash, r.hash)
            for r in found
        ]


def _loads(text: str) -> dict[str, Any]:
    """A detail as stored; a tampered one that is no JSON object still shows (verify names it)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"unparsed": text}
