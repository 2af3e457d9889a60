"""The durable store on both of its backends: embedded SQLite and the shared PostgreSQL on 5432."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from support import PostgresServer, free_port, pg_database

from anpr.config import RetentionConfig, StoreConfig
from anpr.plates import confusable_key, edit_distance
from anpr.schema import (
    CrossingAlert,
    Direction,
    Hit,
    MatchMode,
    PlateEvent,
    Severity,
    WatchlistEntry,
)
from anpr.store import (
    KEY_ALPHABET,
    EventQuery,
    EventRecord,
    Store,
    StoreUnavailable,
    alembic_config,
    make_engine,
    metadata,
    one_edit_neighbourhood,
    watchlist_entries,
)

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
TABLES = ("events", "crops", "crossing_alerts", "watchlist_entries", "hits")


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """One fresh database for the module (dropped afterwards); each test starts from empty tables."""
    with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    data_dir = tmp_path / "store"
    if request.param == "sqlite":
        cfg = StoreConfig(data_dir=data_dir)
    else:
        cfg = StoreConfig(url=request.getfixturevalue("pg_url"), data_dir=data_dir)
    s = Store.from_config(cfg)
    with s.engine.begin() as conn:
        for table in TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("UPDATE watchlist_revision SET revision = 0"))
    yield s
    s.close()


def event(
    plate: str,
    seen: datetime = T0,
    lane: str = "l1",
    direction: Direction = Direction.ENTRY,
    country: str | None = "UA",
    site: str = "ua-porubne",
) -> PlateEvent:
    return PlateEvent(
        event_id=PlateEvent.make_id(site, lane, plate, seen),
        site=site,
        lane=lane,
        camera="cam1",
        direction=direction,
        plate=plate,
        country=country,
        confidence=0.93,
        char_confidences=[0.9] * len(plate),
        first_seen=seen - timedelta(seconds=1),
        last_seen=seen + timedelta(seconds=1),
        best_seen=seen,
        reads=3,
        box=[10, 20, 110, 45],
    )


def entry(entry_id: str, plate: str = "AA1234BC", **kw: object) -> WatchlistEntry:
    return WatchlistEntry.model_validate({"entry_id": entry_id, "plate": plate, "added_by": "officer1", **kw})


def hit(ev: PlateEvent, en: WatchlistEntry, raised_at: datetime) -> Hit:
    return Hit(
        hit_id=Hit.make_id(ev.event_id, en.entry_id),
        matched_as=MatchMode.EXACT,
        raised_at=raised_at,
        event=ev,
        entry=en,
    )


def alert(ev: PlateEvent, raised_at: datetime) -> CrossingAlert:
    return CrossingAlert(
        alert_id=f"exited_not_entered:{ev.event_id}",
        kind="exited_not_entered",
        event_id=ev.event_id,
        plate=ev.plate,
        site="md-leuseni",
        seen_at=ev.best_seen,
        raised_at=raised_at,
        detail="left MD, not seen entering",
    )


def plates(events: list[PlateEvent]) -> list[str]:
    return [e.plate for e in events]


# -- schema ------------------------------------------------------------------------------------


def test_migrations_leave_no_difference_from_metadata(store: Store) -> None:
    def diff(md: sa.MetaData) -> list[object]:
        with store.engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), md))

    assert diff(metadata) == []
    # The comparison does see a difference when there is one.
    changed = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    sa.Table("events", changed, sa.Column("extra", sa.Integer()), extend_existing=True)
    assert diff(changed) != []

    store.migrate()  # again: nothing to do
    assert diff(metadata) == []
    cfg = alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(sa.inspect(store.engine).get_table_names()) == {"alembic_version"}
    store.migrate()
    assert diff(metadata) == []
    assert store.watchlist_revision() == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_services_starting_together_migrate_one_at_a_time(backend: str, tmp_path: Path) -> None:
    """The archive, the matcher and the CLI all migrate at start: on a new database they must not race."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(pg_database()) if backend == "postgresql" else None
        # Each process imports everything, says so, and waits for the word: then all migrate at once.
        code = (
            "import sys; from pathlib import Path; from anpr.config import StoreConfig; from anpr.store import Store;"
            "print('ready', flush=True); sys.stdin.readline();"
            "Store.from_config(StoreConfig(url=sys.argv[1] or None, data_dir=Path(sys.argv[2]))).close()"
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url or "", str(tmp_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        s = Store.from_config(StoreConfig(url=url, data_dir=tmp_path), migrate=False)
        try:
            with s.engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), metadata) == []
                assert conn.scalar(sa.text("SELECT count(*) FROM watchlist_revision")) == 1
        finally:
            s.close()


# -- events and crops --------------------------------------------------------------------------


def test_save_events_is_idempotent_and_crops_are_content_addressed(store: Store) -> None:
    shared, other, vehicle = b"\xff\xd8plate-a\xff\xd9", b"\xff\xd8plate-b\xff\xd9", b"\xff\xd8car\xff\xd9"
    e1, e2, e3 = event("AA1234BC"), event("AA1234BC", T0 + timedelta(minutes=5)), event("BC5678EH")
    batch = [
        EventRecord(e1, plate_jpeg=shared, vehicle_jpeg=vehicle),
        EventRecord(e2, plate_jpeg=shared),
        EventRecord(e3, plate_jpeg=other),
        EventRecord(e1, plate_jpeg=shared, vehicle_jpeg=vehicle),  # repeated within the batch
    ]
    assert store.save_events(batch) == 3
    assert store.save_events(batch) == 0
    assert store.save_events([EventRecord(e3), EventRecord(event("CE0001PH"))]) == 1

    files = sorted(p for p in (store.data_dir / "crops").rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted(f"{hashlib.sha256(j).hexdigest()}.jpg" for j in (shared, other, vehicle))
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM crops")) == 3

    got1, got2 = store.get_event(e1.event_id), store.get_event(e2.event_id)
    assert got1 is not None and got2 is not None
    sha = hashlib.sha256(shared).hexdigest()
    assert got1.plate_image == got2.plate_image == f"crops/{sha[:2]}/{sha}.jpg"
    assert store.crop_path(sha) == store.data_dir / got1.plate_image
    assert (store.data_dir / got1.plate_image).read_bytes() == shared
    assert got1.vehicle_image is not None and (store.data_dir / got1.vehicle_image).read_bytes() == vehicle
    assert got2.vehicle_image is None
    assert got1.model_copy(update={"plate_image": None, "vehicle_image": None}) == e1
    assert got1.best_seen.tzinfo is not None and got1.best_seen.utcoffset() == timedelta(0)
    assert store.get_event("nope") is None
    with pytest.raises(ValueError):
        store.crop_path("../../etc/passwd")


def test_datetimes_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    kyiv = timezone(timedelta(hours=3))
    ev = event("AA1234BC", datetime(2025, 6, 1, 11, 0, 0, 123456, tzinfo=kyiv))
    store.save_events([EventRecord(ev)])
    got = store.get_event(ev.event_id)
    assert got is not None
    assert got.best_seen == datetime(2025, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)
    assert got.best_seen.tzinfo == UTC
    assert store.search_events(EventQuery(since=datetime(2025, 6, 1, 10, 59, tzinfo=kyiv))) == [got]
    assert store.search_events(EventQuery(since=datetime(2025, 6, 1, 11, 1, tzinfo=kyiv))) == []


# -- search ------------------------------------------------------------------------------------


def test_one_edit_neighbourhood_is_every_key_within_one_edit() -> None:
    key = confusable_key("K7A")
    brute = {
        "".join(chars)
        for n in range(len(key) - 1, len(key) + 2)
        for chars in itertools.product(KEY_ALPHABET, repeat=n)
        if edit_distance("".join(chars), key) <= 1
    }
    assert one_edit_neighbourhood(key) == brute
    assert max(len(k) for k in one_edit_neighbourhood("A" * 16)) == 16


def test_search_exact_normalises_the_query(store: Store) -> None:
    store.save_events([EventRecord(event("AA1234BC")), EventRecord(event("AA1234BX")), EventRecord(event("A"))])
    assert plates(store.search_events(EventQuery(plate="aa 1234-bc"))) == ["AA1234BC"]
    assert plates(store.search_events(EventQuery(plate="АА1234ВС"))) == ["AA1234BC"]  # Cyrillic
    assert store.search_events(EventQuery(plate="AA1234B")) == []
    assert store.search_events(EventQuery(plate="AA12З4BC")) == []  # Cyrillic Ze is no plate letter
    assert store.search_events(EventQuery(plate="-")) == []
    assert store.search_events(EventQuery(plate="-", fuzzy=True)) == []  # not every one-character plate


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("BO1234AK", True),  # the plate itself
        ("ВО1234АК", True),  # typed in Cyrillic
        ("B01234AK", True),  # O read as 0
        ("8O1Z34AK", True),  # B as 8 and 2 as Z: look-alikes fold before the edit is counted
        ("BO12345AK", True),  # one character inserted
        ("BO123AK", True),  # one dropped
        ("BO1234AX", True),  # one replaced
        ("BO12AK", False),  # two dropped
        ("XO1234AX", False),  # two replaced
        ("BO1234AKXX", False),  # two inserted
    ],
)
def test_search_fuzzy_finds_lookalikes_and_one_edit(store: Store, query: str, found: bool) -> None:
    store.save_events([EventRecord(event("BO1234AK")), EventRecord(event("CE5678PH"))])
    assert plates(store.search_events(EventQuery(plate=query, fuzzy=True))) == (["BO1234AK"] if found else [])


def test_search_filters_order_and_limit(store: Store) -> None:
    evs = [
        event("AA1111BC", T0, lane="l1", direction=Direction.ENTRY, country="UA"),
        event("AA1111BC", T0 + timedelta(hours=1), lane="l2", direction=Direction.EXIT, country="UA"),
        event("AA1111BC", T0 + timedelta(hours=2), lane="l1", direction=Direction.EXIT, country="MD"),
        event("AA1111BE", T0 + timedelta(hours=3), lane="l2", direction=Direction.ENTRY, country=None),
    ]
    store.save_events([EventRecord(e) for e in evs])

    def ids(q: EventQuery) -> list[str]:
        return [e.event_id for e in store.search_events(q)]

    newest_first = [e.event_id for e in reversed(evs)]
    assert ids(EventQuery()) == newest_first
    assert ids(EventQuery(limit=2)) == newest_first[:2]
    assert ids(EventQuery(limit=None)) == newest_first
    assert ids(EventQuery(plate="AA1111BC")) == newest_first[1:]
    assert ids(EventQuery(plate="AA1111BC", fuzzy=True)) == newest_first
    assert ids(EventQuery(since=T0 + timedelta(hours=1))) == newest_first[:3]
    assert ids(EventQuery(until=T0 + timedelta(hours=1))) == [evs[0].event_id]
    assert ids(EventQuery(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2, minutes=30))) == [
        evs[2].event_id,
        evs[1].event_id,
    ]
    assert ids(EventQuery(lane="l2")) == [evs[3].event_id, evs[1].event_id]
    assert ids(EventQuery(direction=Direction.EXIT)) == [evs[2].event_id, evs[1].event_id]
    assert ids(EventQuery(country="md")) == [evs[2].event_id]
    assert ids(EventQuery(plate="AA1111BC", fuzzy=True, lane="l1", direction=Direction.ENTRY)) == [evs[0].event_id]


def test_iter_events_returns_every_match_in_search_order(store: Store) -> None:
    # Pairs share a best_seen, so chunks end in the middle of a tie: the keyset must still not skip one.
    evs = [event(f"AA{i:04d}BC", T0 + timedelta(seconds=i // 2), lane=f"l{i % 3}") for i in range(25)]
    store.save_events([EventRecord(e) for e in evs])
    every = store.search_events(EventQuery(limit=None))
    assert len(every) == 25
    assert list(store.iter_events(EventQuery(limit=3), chunk=4)) == every
    assert list(store.iter_events(EventQuery(), chunk=25)) == every
    lane1 = list(store.iter_events(EventQuery(lane="l1"), chunk=2))
    assert lane1 == [e for e in every if e.lane == "l1"] and len(lane1) == 8
    with pytest.raises(ValueError):
        next(store.iter_events(EventQuery(), chunk=0))


# -- watchlist ---------------------------------------------------------------------------------


def test_watchlist_add_is_all_or_nothing_remove_is_soft_and_revision_counts_changes(store: Store) -> None:
    a = entry(
        "a",
        "АА1234ВС",
        reason="stolen",
        severity=Severity.STOP,
        lanes=["l1"],
        directions=[Direction.ENTRY],
        valid_from=T0,
        valid_until=T0 + timedelta(days=30),
        added_at=T0,
    )
    b = entry("b", "BO1234AK", added_at=T0 + timedelta(minutes=1))
    assert store.watchlist_revision() == 0
    store.add_entries([a, b])
    assert store.watchlist_revision() == 1
    assert store.entries() == [a, b]
    assert store.entries()[0].plate == "AA1234BC"

    with pytest.raises(ValueError, match="already present: a"):
        store.add_entries([entry("c", added_at=T0 + timedelta(minutes=2)), entry("a")])
    with pytest.raises(ValueError, match="given twice: d"):
        store.add_entries([entry("d"), entry("d")])
    assert store.entries() == [a, b]
    assert store.watchlist_revision() == 1

    assert store.remove_entry("a", by="officer2") is True
    assert store.watchlist_revision() == 2
    assert store.remove_entry("a", by="officer3") is False
    assert store.remove_entry("unknown", by="officer3") is False
    assert store.watchlist_revision() == 2
    assert store.entries() == [b]
    assert store.entries(include_removed=True) == [a, b]
    with store.engine.connect() as conn:
        removed = conn.execute(
            sa.select(watchlist_entries.c.removed_by, watchlist_entries.c.removed_at).where(
                watchlist_entries.c.entry_id == "a"
            )
        ).one()
    assert removed.removed_by == "officer2" and removed.removed_at is not None

    with pytest.raises(ValueError, match="already present: a"):
        store.add_entries([entry("a")])  # removed ids are never reused
    store.add_entries([])
    assert store.watchlist_revision() == 2


def test_watchlist_revision_counts_concurrent_changes_from_several_processes(store: Store) -> None:
    # Two Stores, two engines: the way the CLI and a matcher process share one database.
    other = Store(make_engine(store.engine.url.render_as_string(hide_password=False)), store.data_dir)
    errors: list[BaseException] = []

    def work(s: Store, worker: int) -> None:
        try:
            for i in range(10):
                s.add_entries([entry(f"w{worker}-{i}")])
                if i % 2:
                    assert s.remove_entry(f"w{worker}-{i}", by="x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, w)) for w, s in enumerate([store, other, store, other])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert errors == []
    assert store.watchlist_revision() == 4 * 15
    assert len(store.entries()) == 4 * 5
    assert len(store.entries(include_removed=True)) == 4 * 10


# -- hits and alerts ---------------------------------------------------------------------------


def test_hits_save_idempotent_list_and_ack(store: Store) -> None:
    en = entry("stolen-1", "AA1234BC", severity=Severity.STOP)
    e1, e2, e3 = (event("AA1234BC", T0 + timedelta(minutes=i)) for i in range(3))
    h1, h2, h3 = (hit(e, en, T0 + timedelta(minutes=i, seconds=1)) for i, e in enumerate((e1, e2, e3)))
    assert store.save_hits([h1, h2, h1]) == 2
    assert store.save_hits([h1, h2, h3]) == 1
    assert store.save_hits([]) == 0

    listed = store.list_hits()
    assert [s.hit for s in listed] == [h3, h2, h1]
    assert all(s.acked_at is None and s.acked_by is None and s.ack_note is None for s in listed)
    assert [s.hit.hit_id for s in store.list_hits(limit=1)] == [h3.hit_id]
    assert [s.hit.hit_id for s in store.list_hits(since=h2.raised_at)] == [h3.hit_id, h2.hit_id]

    assert store.ack_hit(h2.hit_id, by="officer7", note="driver questioned") is True
    assert store.ack_hit(h2.hit_id, by="officer8") is False
    assert store.ack_hit("unknown", by="officer8") is False
    assert [s.hit.hit_id for s in store.list_hits(unacked=True)] == [h3.hit_id, h1.hit_id]
    acked = next(s for s in store.list_hits() if s.hit.hit_id == h2.hit_id)
    assert acked.acked_by == "officer7" and acked.ack_note == "driver questioned"
    assert acked.acked_at is not None and acked.acked_at.tzinfo is not None
    assert abs(acked.acked_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_alerts_save_idempotent_list_and_ack(store: Store) -> None:
    a1, a2 = alert(event("AA1234BC"), T0 + timedelta(hours=1)), alert(event("BC5678EH"), T0 + timedelta(hours=2))
    assert store.save_alerts([a1, a2, a2]) == 2
    assert store.save_alerts([a1]) == 0
    assert [s.alert for s in store.list_alerts()] == [a2, a1]
    assert [s.alert for s in store.list_alerts(since=a2.raised_at)] == [a2]
    assert [s.alert for s in store.list_alerts(limit=1)] == [a2]
    assert store.ack_alert(a2.alert_id, by="officer7") is True
    assert store.ack_alert(a2.alert_id, by="officer8") is False
    assert store.ack_alert("unknown", by="officer8") is False
    assert [s.alert for s in store.list_alerts(unacked=True)] == [a1]
    acked = store.list_alerts()[0]
    assert acked.acked_by == "officer7" and acked.acked_at is not None


# -- retention ---------------------------------------------------------------------------------


def test_a_crop_file_cut_short_before_its_batch_was_synced_is_written_again(store: Store) -> None:
    jpeg = b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"
    path = store.crop_path(hashlib.sha256(jpeg).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg[:100])  # renamed into place, data lost by a power cut before the sync
    assert store.save_events([EventRecord(event("AA1234BC"), plate_jpeg=jpeg)]) == 1
    assert path.read_bytes() == jpeg


def test_retention_deletes_old_rows_and_crop_files(store: Store) -> None:
    now = datetime(2025, 9, 1, tzinfo=UTC)
    ancient, mid, shared_old, recent = (
        event("AA0001BC", now - timedelta(days=100)),
        event("AA0002BC", now - timedelta(days=50)),
        event("AA0003BC", now - timedelta(days=50)),
        event("AA0004BC", now - timedelta(days=1)),
    )
    jpeg = {name: f"jpeg-{name}".encode() for name in ("ancient", "mid-plate", "mid-car", "shared", "recent-car")}
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in jpeg.items()}
    store.save_events(
        [
            EventRecord(ancient, plate_jpeg=jpeg["ancient"]),
            EventRecord(mid, plate_jpeg=jpeg["mid-plate"], vehicle_jpeg=jpeg["mid-car"]),
            EventRecord(shared_old, plate_jpeg=jpeg["shared"]),
            EventRecord(recent, plate_jpeg=jpeg["shared"], vehicle_jpeg=jpeg["recent-car"]),
        ]
    )
    store.save_alerts([alert(ancient, now - timedelta(days=99)), alert(mid, now - timedelta(days=49))])
    en = entry("e1", "AA0001BC")
    store.save_hits([hit(ancient, en, now - timedelta(days=400)), hit(mid, en, now - timedelta(days=100))])

    retention = RetentionConfig(events_days=90, crops_days=30, hits_days=365)
    assert store.enforce_retention(retention, now=now) == {"events": 1, "alerts": 1, "hits": 1, "crops": 3}

    assert store.get_event(ancient.event_id) is None
    kept_mid = store.get_event(mid.event_id)
    assert kept_mid is not None and kept_mid.plate_image is None and kept_mid.vehicle_image is None
    # A picture that a newer pass shows too stays as long as that pass's pictures.
    kept_shared, kept_recent = store.get_event(shared_old.event_id), store.get_event(recent.event_id)
    assert kept_shared is not None and kept_recent is not None
    assert kept_shared.plate_image == kept_recent.plate_image == f"crops/{sha['shared'][:2]}/{sha['shared']}.jpg"
    assert kept_recent.vehicle_image is not None
    for name in ("ancient", "mid-plate", "mid-car"):
        assert not store.crop_path(sha[name]).exists()
    for name in ("shared", "recent-car"):
        assert store.crop_path(sha[name]).read_bytes() == jpeg[name]
    assert [s.alert.event_id for s in store.list_alerts()] == [mid.event_id]
    assert [s.hit.event.event_id for s in store.list_hits()] == [mid.event_id]

    assert store.enforce_retention(retention, now=now) == {"events": 0, "alerts": 0, "hits": 0, "crops": 0}
    later = store.enforce_retention(retention, now=now + timedelta(days=30))
    assert later == {"events": 0, "alerts": 0, "hits": 0, "crops": 2}
    assert not store.crop_path(sha["shared"]).exists()
    gone = store.get_event(recent.event_id)
    assert gone is not None and gone.plate_image is None and gone.vehicle_image is None


# -- availability ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_unreachable_database_raises_store_unavailable(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql":
        cfg = StoreConfig(url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/anpr", data_dir=tmp_path)
    else:
        (tmp_path / "anpr.db").mkdir()  # a directory where the database file should be: cannot be opened
        cfg = StoreConfig(data_dir=tmp_path)
    with pytest.raises(StoreUnavailable):
        Store.from_config(cfg)
    s = Store.from_config(cfg, migrate=False)
    try:
        with pytest.raises(StoreUnavailable):
            s.ping()
        with pytest.raises(StoreUnavailable):
            s.save_events([EventRecord(event("AA1234BC"))])
        with pytest.raises(StoreUnavailable):
            s.search_events(EventQuery(plate="AA1234BC"))
    finally:
        s.close()


def test_store_comes_back_after_a_postgresql_restart(tmp_path: Path) -> None:
    """PostgreSQL only: SQLite has no server to lose. Pooled connections die with the server."""
    server = PostgresServer()
    try:
        server.start()
        with pg_database(server.admin_url) as url:
            s = Store.from_config(StoreConfig(url=url, data_dir=tmp_path))
            try:
                assert s.save_events([EventRecord(event("AA0001BC"))]) == 1
                server.stop()
                with pytest.raises(StoreUnavailable):
                    s.save_events([EventRecord(event("AA0002BC", T0 + timedelta(1)))])
                with pytest.raises(StoreUnavailable):
                    s.ping()
                server.start()
                assert s.save_events([EventRecord(event("AA0002BC", T0 + timedelta(1)))]) == 1
                assert plates(s.search_events(EventQuery())) == ["AA0002BC", "AA0001BC"]
            finally:
                s.close()
    finally:
        server.close()
