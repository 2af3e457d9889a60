"""`anpr hits run`: every new plate event against the active watchlists; each hit once per event and entry.

A consumer group on the events stream (anpr/streams.py). For each event the in-memory index
(anpr/watchlist.py) finds the entries it matches; each hit is written to the hits stream together
with a marker key in one script, so a re-delivered event (after a crash) raises nothing new. The
archive stores hits and the notifiers send them on from that stream.

The index is rebuilt when the store's watchlist revision changes (checked every `hits.reload_s`).
With the database away matching goes on with the last list loaded; only a matcher that never
loaded one waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from anpr.config import AnprConfig
from anpr.keys import Keys
from anpr.schema import Hit, PlateEvent
from anpr.store import Store, StoreUnavailable
from anpr.streams import Entry, GroupConsumer, StreamKeys, TransientError, check_block
from anpr.watchlist import WatchlistIndex

log = logging.getLogger(__name__)

# Raise a hit once: a repeat finds the marker and adds nothing. The marker outlives any redelivery.
_EMIT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'hit', ARGV[2])
  return 1
end
return 0
"""

_MARKER_TTL_S = 14 * 86400
# The stream is a hand-over to the archive and notifiers, not the record: months of hits at a busy crossing.
_MAX_HITS = 100_000


class HitMatcher(GroupConsumer):
    """Matches events against the watchlist index and writes hits to the hits stream."""

    done_counter = "matched"

    def __init__(self, cfg: AnprConfig, r: redis.Redis, store: Store, stop: threading.Event | None = None) -> None:
        check_block(cfg.hits, "hits", cfg.redis)
        keys = Keys(cfg.redis.prefix)
        hc = cfg.hits
        names = StreamKeys(
            keys.events,
            keys.consumer_stats(hc.group),
            keys.consumer_health(hc.group, hc.consumer),
            keys.dead_letters(hc.group),
        )
        super().__init__(r, hc, names, stop)
        self._cfg = hc
        self._keys = keys
        self._store = store
        self._emit = r.register_script(_EMIT)
        self._index: WatchlistIndex | None = None
        self._revision = -1
        self._next_reload = 0.0
        self.hits = 0

    @property
    def index(self) -> WatchlistIndex | None:
        return self._index

    def reload(self, force: bool = False) -> bool:
        """Rebuild the index if the watchlist changed; keep the old one while the store is away."""
        now = time.monotonic()
        if not force and now < self._next_reload and self._index is not None:
            return True
        self._next_reload = now + self._cfg.reload_s
        try:
            revision = self._store.watchlist_revision()
            if revision != self._revision or self._index is None:
                started = time.perf_counter()
                self._index = WatchlistIndex(self._store.entries())
                self._revision = revision
                log.info(
                    "watchlist revision %d: %d entries indexed in %.2f s",
                    revision,
                    len(self._index),
                    time.perf_counter() - started,
                )
        except StoreUnavailable as exc:
            if self._index is None:
                raise TransientError(f"no watchlist loaded yet and the store is unavailable: {exc}") from None
            log.warning(
                "watchlist reload skipped, store unavailable (%s): matching with revision %d", exc, self._revision
            )
        return True

    def handle(self, entries: list[Entry]) -> None:
        if self.retry(self.reload) is None:
            return  # stopped while waiting for a first list: the batch stays pending
        index = self._index
        assert index is not None
        done: list[str] = []
        for e in entries:
            raw = e.fields.get(b"event")
            try:
                event = PlateEvent.model_validate_json(raw or b"")
            except ValidationError as exc:
                self.dead_letter(e.id, f"malformed entry: not a PlateEvent: {exc.errors()[0]['msg']}", e.text())
                continue
            now = datetime.now(UTC)
            for entry, how in index.match(event):
                hit = Hit(
                    hit_id=Hit.make_id(event.event_id, entry.entry_id),
                    matched_as=how,
                    raised_at=now,
                    event=event,
                    entry=entry,
                )
                if self._emit(
                    keys=[self._keys.hit_emitted(hit.hit_id), self._keys.hits],
                    args=[_MARKER_TTL_S, hit.model_dump_json(), _MAX_HITS],
                ):
                    self.hits += 1
                    log.info(
                        "hit %s: %s matched %s (%s, %s)",
                        hit.hit_id,
                        event.plate,
                        entry.plate,
                        how.value,
                        entry.severity.value,
                    )
            done.append(e.id)
        self.ack(done)

    def health_extra(self) -> dict[str, Any]:
        return {"hits": self.hits, "watchlist_revision": self._revision, "entries": len(self._index or ())}
