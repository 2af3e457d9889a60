"""`anpr archive`: the events, crossing alerts and hits streams into the durable store, each exactly once.

One consumer group per stream (anpr/streams.py). A batch is written in one transaction that
inserts what is new and skips what is stored already (by event, alert or hit id), and only then
acknowledged: a crash between commit and XACK repeats the batch, and the repeat stores nothing
twice. With the database away the batch is retried in place and nothing is acknowledged, so the
streams hold the backlog until it is back. Redis keeps crops for days; the archive copies each
event's crops into the store as content-addressed files, so history outlives them.

The same process runs the retention job (`store.retention`), with its counts as metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import redis
from prometheus_client import Counter, Gauge, start_http_server
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from anpr.config import AnprConfig
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import CrossingAlert, Hit, PlateEvent
from anpr.store import EventRecord, Store, StoreUnavailable
from anpr.streams import Entry, GroupConsumer, StreamKeys, TransientError, check_block

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

STORED = Counter("anpr_archive_stored_total", "records newly written to the store", ["kind"])
RETENTION_DELETED = Counter("anpr_retention_deleted_total", "records deleted by the retention job", ["kind"])
RETENTION_LAST_RUN = Gauge("anpr_retention_last_run_timestamp_seconds", "when the retention job last finished")


class Archiver(GroupConsumer, Generic[M]):
    """Copies one stream into the store. `save` writes a batch of parsed records; returns how many were new."""

    done_counter = "stored"

    def __init__(
        self,
        r: redis.Redis,
        cfg: AnprConfig,
        kind: str,
        stream: str,
        field: str,
        model: type[M],
        save: Callable[[list[tuple[Entry, M]]], int],
        stop: threading.Event | None = None,
    ) -> None:
        keys = Keys(cfg.redis.prefix)
        group = cfg.archive.group
        names = StreamKeys(
            stream,
            keys.consumer_stats(f"{group}-{kind}"),
            keys.consumer_health(f"{group}-{kind}", cfg.archive.consumer),
            keys.dead_letters(f"{group}-{kind}"),
        )
        super().__init__(r, cfg.archive, names, stop)
        self.kind = kind
        self._field = field.encode()
        self._model = model
        self._save = save
        self.stored = 0

    def handle(self, entries: list[Entry]) -> None:
        parsed: list[tuple[Entry, M]] = []
        for e in entries:
            raw = e.fields.get(self._field)
            if raw is None:
                self.dead_letter(e.id, f"malformed entry: no '{self._field.decode()}' field", e.text())
                continue
            try:
                parsed.append((e, self._model.model_validate_json(raw)))
            except ValidationError as exc:
                self.dead_letter(
                    e.id, f"malformed entry: not a {self._model.__name__}: {exc.errors()[0]['msg']}", e.text()
                )
        if not parsed:
            return
        try:
            new = self.retry(lambda: self._write(parsed), count=len(parsed))
        except SQLAlchemyError:
            # The database refuses the batch itself (not an outage): store what it takes one by one,
            # and dead-letter the record it refuses, so one bad record never blocks the stream.
            new = 0
            for one in parsed:
                try:
                    got = self.retry(lambda one=one: self._write([one]))  # type: ignore[misc]
                except SQLAlchemyError as exc:
                    self.dead_letter(one[0].id, f"store refused: {str(exc).splitlines()[0][:300]}", one[0].text())
                    continue
                if got is None:
                    return
                new += got
                self.ack([one[0].id])
            self._count(new)
            return
        if new is None:
            return  # stopped while the database was away: the batch stays pending
        self.ack([e.id for e, _ in parsed])
        self._count(new)

    def _write(self, batch: list[tuple[Entry, M]]) -> int:
        try:
            return self._save(batch)
        except StoreUnavailable as exc:
            raise TransientError(f"store unavailable: {exc}") from None

    def _count(self, new: int) -> None:
        self.stored += new
        STORED.labels(self.kind).inc(new)

    def health_extra(self) -> dict[str, Any]:
        return {"new_records": self.stored}


def archivers(cfg: AnprConfig, store: Store, stop: threading.Event | None = None) -> list[Archiver[Any]]:
    """The three archivers of a site: events (with their crops), crossing alerts, hits."""
    check_block(cfg.archive, "archive", cfg.redis)
    keys = Keys(cfg.redis.prefix)

    def crops(r: redis.Redis) -> Callable[[list[tuple[Entry, PlateEvent]]], int]:
        def save(batch: list[tuple[Entry, PlateEvent]]) -> int:
            events = [ev for _, ev in batch]
            wanted: list[str] = []
            for ev in events:
                wanted += [keys.plate_image(ev.event_id), keys.vehicle_image(ev.event_id)]
            blobs: list[Any] = r.mget(wanted)
            records = [EventRecord(ev, _bytes(blobs[2 * i]), _bytes(blobs[2 * i + 1])) for i, ev in enumerate(events)]
            return store.save_events(records)

        return save

    def models(save: Callable[[Sequence[Any]], int]) -> Callable[[list[tuple[Entry, Any]]], int]:
        return lambda batch: save([m for _, m in batch])

    out: list[Archiver[Any]] = []
    for kind, stream, field, model, make in (
        ("events", keys.events, "event", PlateEvent, crops),
        ("alerts", keys.crossing_alerts, "alert", CrossingAlert, lambda _r: models(store.save_alerts)),
        ("hits", keys.hits, "hit", Hit, lambda _r: models(store.save_hits)),
    ):
        r = connect(cfg.redis)
        out.append(Archiver(r, cfg, kind, stream, field, model, make(r), stop))
    return out


def enforce_retention(store: Store, cfg: AnprConfig) -> dict[str, int]:
    """One run of the retention job; its counts go to the metrics."""
    deleted = store.enforce_retention(cfg.store.retention)
    for kind, n in deleted.items():
        RETENTION_DELETED.labels(kind).inc(n)
    RETENTION_LAST_RUN.set_to_current_time()
    log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in deleted.items()))
    return deleted


def run_archive(cfg: AnprConfig, stop: threading.Event, burst: bool = False) -> list[Archiver[Any]]:
    """Run every archiver in its own thread (and the retention job) until stopped, or drained in burst mode."""
    store = Store.from_config(cfg.store)
    if cfg.archive.metrics_port and not burst:
        start_http_server(cfg.archive.metrics_port, addr=cfg.archive.metrics_host)
    workers = archivers(cfg, store, stop)
    failed: list[BaseException] = []

    def work(w: Archiver[Any]) -> None:
        try:
            w.run(burst)
        except BaseException as exc:  # reported by the caller: a thread's exception is otherwise lost
            failed.append(exc)
            stop.set()

    threads = [threading.Thread(target=work, args=(w,), name=f"archive-{w.kind}") for w in workers]
    for t in threads:
        t.start()
    if not burst:
        while not stop.is_set():
            try:
                enforce_retention(store, cfg)
            except StoreUnavailable as exc:
                log.warning("retention skipped, store unavailable: %s", exc)
            stop.wait(cfg.store.retention.every_s)
    for t in threads:
        t.join()
    store.close()
    if failed:
        raise failed[0]
    return workers


def _bytes(value: Any) -> bytes | None:
    return value if isinstance(value, bytes) and value else None
