"""The audit log's hash chain on both store backends: what it records, what verify catches, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from anpr.config import StoreConfig
from anpr.console import audit as audit_module
from anpr.console.audit import GENESIS, AuditLog, row_hash
from anpr.store import Store, audit_log


@pytest.fixture
def store(store_url: str | None, tmp_path: Path) -> Iterator[Store]:
    s = Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store"))
    yield s
    s.close()


def fill(log: AuditLog, n: int) -> None:
    for i in range(1, n + 1):
        log.record(f"officer{i}", "event_view", f"event-{i}", {"n": i}, ip=f"10.0.0.{i}")


def sql(store: Store, statement: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def test_rows_link_into_a_chain_of_sha256_over_canonical_json(store: Store) -> None:
    at = datetime(2025, 7, 1, 8, 30, 15, 123456, tzinfo=UTC)
    log = AuditLog(store, clock=lambda: at)
    first = log.record("ivan", "search", "plate", {"plate": "ВН2741КХ", "fuzzy": True}, ip="192.0.2.7")
    second = log.record("олена", "hit_ack", "hit-1", {"note": "водія перевірено", "disposition": "checked"})
    third = log.record("cli", "user_add", "petro")

    body = json.dumps(
        [
            1,
            "2025-07-01T08:30:15.123456+00:00",
            "ivan",
            "search",
            "plate",
            {"fuzzy": True, "plate": "ВН2741КХ"},
            "192.0.2.7",
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert first.id == 1 and first.prev_hash == GENESIS == "0" * 64
    assert first.hash == hashlib.sha256((GENESIS + body).encode()).hexdigest()
    assert (second.id, second.prev_hash) == (2, first.hash)
    assert (third.id, third.prev_hash, third.detail, third.ip) == (3, second.hash, {}, "")

    # As stored: the same rows back, newest first, with the time and detail they were hashed with.
    assert log.rows() == [third, second, first]
    with store.engine.connect() as conn:
        stored = conn.scalar(sa.select(audit_log.c.detail).where(audit_log.c.id == 2))
    assert stored == '{"disposition":"checked","note":"водія перевірено"}'
    assert log.verify() == audit_module.AuditCheck(True, 3, None, "")


def test_rows_filter_and_page_newest_first(store: Store) -> None:
    log = AuditLog(store)
    for i in range(6):
        log.record("ivan" if i % 2 else "olena", "search" if i < 3 else "export", f"t{i}")
    assert [r.id for r in log.rows()] == [6, 5, 4, 3, 2, 1]
    assert [r.id for r in log.rows(limit=2)] == [6, 5]
    assert [r.id for r in log.rows(limit=2, before_id=5)] == [4, 3]
    assert [r.id for r in log.rows(actor="ivan")] == [6, 4, 2]
    assert [r.id for r in log.rows(action="export")] == [6, 5, 4]
    assert [r.id for r in log.rows(actor="ivan", action="search")] == [2]


def test_long_values_are_cut_to_their_columns_and_still_verify(store: Store) -> None:
    log = AuditLog(store)
    row = log.record("x" * 100, "login_failed", "t" * 300, {"k": "v" * 5000}, ip="i" * 100)
    assert (len(row.actor), len(row.target), len(row.ip)) == (64, 200, 64)
    assert log.verify().ok
    with pytest.raises(ValueError, match="action"):
        log.record("ivan", "a" * 33)
    with pytest.raises(ValueError, match="action"):
        log.record("ivan", "")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("detail", '{"n":99}'),
        ("detail", '{"n": 2}'),  # the same JSON spelt otherwise
        ("actor", "someone-else"),
        ("action", "login"),
        ("target", "event-x"),
        ("ip", "203.0.113.9"),
        ("at", datetime(2020, 1, 1)),
    ],
)
def test_verify_names_a_row_edited_in_the_database(store: Store, column: str, value: object) -> None:
    log = AuditLog(store)
    fill(log, 4)
    sql(store, f"UPDATE audit_log SET {column} = :v WHERE id = 2", v=value)
    check = log.verify()
    assert (check.ok, check.first_bad, check.rows) == (False, 2, 1)
    assert check.reason == "row 2 altered: its contents do not match its hash"


def test_verify_names_a_row_rewritten_with_a_fresh_hash(store: Store) -> None:
    """Whoever recomputes the edited row's hash breaks the next row's link instead."""
    log = AuditLog(store)
    fill(log, 4)
    r = next(x for x in log.rows() if x.id == 2)
    forged = row_hash(r.prev_hash, r.id, r.at, "nobody", r.action, r.target, r.detail, r.ip)
    sql(store, "UPDATE audit_log SET actor = 'nobody', hash = :h WHERE id = 2", h=forged)
    check = log.verify()
    assert (check.ok, check.first_bad) == (False, 2)
    assert check.reason == "row 2 rewritten: its hash is not the one row 3 links to"


@pytest.mark.parametrize(
    ("deleted", "first_bad", "reason"),
    [
        ([3], 3, "row 3 removed (ids jump from 2 to 4)"),
        ([2, 3], 2, "rows 2 to 3 removed (ids jump from 1 to 4)"),
        ([1], 1, "row 1 removed (the log starts at row 2)"),
    ],
)
def test_verify_names_a_removed_row(store: Store, deleted: list[int], first_bad: int, reason: str) -> None:
    log = AuditLog(store)
    fill(log, 5)
    for i in deleted:
        sql(store, "DELETE FROM audit_log WHERE id = :i", i=i)
    check = log.verify()
    assert (check.ok, check.first_bad, check.reason) == (False, first_bad, reason)
    # Rows written after the removal do not hide it.
    log.record("ivan", "search")
    assert log.verify().first_bad == first_bad


def test_verify_reads_a_long_chain_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "_VERIFY_CHUNK", 3)
    log = AuditLog(store)
    fill(log, 10)
    assert log.verify() == audit_module.AuditCheck(True, 10, None, "")
    sql(store, "UPDATE audit_log SET detail = '{}' WHERE id = 8")
    assert (log.verify().first_bad, log.verify().rows) == (8, 7)


def test_empty_log_verifies(store: Store) -> None:
    assert AuditLog(store).verify() == audit_module.AuditCheck(True, 0, None, "")


@pytest.mark.slow
def test_concurrent_writers_keep_one_unbroken_chain(store: Store, store_url: str | None, tmp_path: Path) -> None:
    """Writers with engines of their own, as separate console workers and the CLI have, never fork the chain."""
    writers, each = 6, 40
    stores = [Store.from_config(StoreConfig(url=store_url, data_dir=tmp_path / "store")) for _ in range(writers)]
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            log = AuditLog(stores[i])
            start.wait()
            for n in range(each):
                log.record(f"worker{i}", "search", f"{i}:{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    log = AuditLog(store)
    assert log.verify() == audit_module.AuditCheck(True, writers * each, None, "")
    rows = log.rows(limit=writers * each)
    assert sorted(r.target for r in rows) == sorted(f"{i}:{n}" for i in range(writers) for n in range(each))
    # Each writer's rows in the order it wrote them: the chain is one sequence of commits.
    for i in range(writers):
        mine = [int(r.target.split(":")[1]) for r in reversed(rows) if r.actor == f"worker{i}"]
        assert mine == list(range(each))
