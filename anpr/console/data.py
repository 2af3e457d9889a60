"""What the pages and the API show, read from the store and, until the archive has stored it, from the streams.

The archive stores events and hits behind the matcher; an officer must see a hit the moment it is raised,
so every view here merges the store with the newest entries of the Redis streams.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import httpx
import redis
import sqlalchemy as sa
from pydantic import BaseModel
from starlette.requests import Request

from anpr.console.i18n import N_
from anpr.console.web import Console, iso, local_to_utc, tz_offset
from anpr.plates import confusable_key, normalise
from anpr.schema import CrossingMatch, Direction, Hit, PlateEvent, Severity
from anpr.store import EventQuery, StoreUnavailable, crossing_alerts, one_edit_neighbourhood
from anpr.store import events as events_table
from anpr.store import hits as hits_table
from anpr.streams import group_lag, text

M = TypeVar("M", bound=BaseModel)

RECENT_HITS = 200  # hits read back from the stream for the Hits page (the archive may lag)
RECENT_EVENTS = 300  # events read back from the stream for the Lanes page
SCAN_LIMIT = 20_000  # stream entries searched for an event's crossing match or dead letter
ALERTS_PER_EVENT = 50
STREAM_ID = re.compile(r"^\d+-\d+$")
_SEVERITY_RANK = {Severity.STOP: 0, Severity.CHECK: 1, Severity.INFO: 2}


def _field(fields: Any, name: bytes) -> bytes | None:
    value = fields.get(name)
    return value if isinstance(value, bytes) else None


def newer(a: str, b: str) -> bool:
    """Stream id a is after b."""
    ams, aseq = (int(x) for x in a.split("-"))
    bms, bseq = (int(x) for x in b.split("-"))
    return (ams, aseq) > (bms, bseq)


@dataclass(frozen=True)
class HitView:
    """A hit as a page shows it: from the store, or from the stream while the archive has not stored it."""

    hit: Hit
    stored: bool
    acked_at: datetime | None = None
    acked_by: str | None = None
    note: str | None = None
    disposition: str | None = None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    def sort_key(self) -> tuple[bool, int, float]:
        """Unacknowledged first, then stop, check, info, then newest."""
        return (self.acked, _SEVERITY_RANK[self.hit.entry.severity], -self.hit.raised_at.timestamp())

    def as_json(self) -> dict[str, Any]:
        ack = None
        if self.acked_at is not None:
            ack = {"by": self.acked_by, "at": iso(self.acked_at), "note": self.note, "disposition": self.disposition}
        return {"hit": self.hit.model_dump(mode="json"), "stored": self.stored, "ack": ack}


@dataclass(frozen=True)
class SearchParams:
    """A search as typed (for the form and the pager) and as understood (for the store)."""

    raw: dict[str, str]
    query: EventQuery | None
    hit: str
    page: int
    errors: list[str]

    @property
    def submitted(self) -> bool:
        return any(v for k, v in self.raw.items() if k not in ("tz", "page"))


# -- streams ---------------------------------------------------------------------------------------


def sse_streams(console: Console) -> dict[str, str]:
    """The stream of each kind a page follows live."""
    k = console.keys
    return {"pass": k.events, "hit": k.hits, "ack": k.console_acks}


def stream_top(console: Console, stream: str) -> str:
    last: Any = console.redis.xrevrange(stream, count=1)
    return text(last[0][0]) if last else "0-0"


def stream_from(console: Console, kinds: Iterable[str]) -> str:
    """Where a page's live stream starts: the streams' newest ids now, so nothing after the render is missed."""
    streams = sse_streams(console)
    return ";".join(f"{k}={stream_top(console, streams[k])}" for k in kinds)


def recent_stream_hits(console: Console, count: int = RECENT_HITS) -> list[Hit]:
    return _recent(console, console.keys.hits, b"hit", Hit, count)


def recent_stream_events(console: Console, count: int = RECENT_EVENTS) -> list[PlateEvent]:
    return _recent(console, console.keys.events, b"event", PlateEvent, count)


def _recent(console: Console, stream: str, field: bytes, model: type[M], count: int) -> list[M]:
    """The newest entries of a stream, newest first; an unreadable one is skipped (the archive dead-letters it)."""
    out: list[M] = []
    entries: Any = console.redis.xrevrange(stream, count=count)
    for _id, fields in entries:
        raw = _field(fields, field)
        if raw is None:
            continue
        with contextlib.suppress(ValueError):
            out.append(model.model_validate_json(raw))
    return out


# -- hits and lanes --------------------------------------------------------------------------------


def hit_views(console: Console, unacked_only: bool = False) -> list[HitView]:
    """Stored hits (every unacknowledged one, the newest acknowledged) and those still only on the stream."""
    store = console.store
    found: dict[str, HitView] = {}
    stored = store.list_hits(unacked=True, limit=1000)
    if not unacked_only:
        stored += store.list_hits(limit=100)
    for sh in stored:
        found[sh.hit.hit_id] = HitView(sh.hit, True, sh.acked_at, sh.acked_by, sh.ack_note, sh.disposition)
    stream_only = [h for h in recent_stream_hits(console) if h.hit_id not in found]
    if stream_only:
        with store.engine.connect() as conn:
            known = {
                r.hit_id: r
                for r in conn.execute(
                    sa.select(hits_table.c.hit_id, hits_table.c.acked_at).where(
                        hits_table.c.hit_id.in_([h.hit_id for h in stream_only])
                    )
                )
            }
        for h in stream_only:
            row = known.get(h.hit_id)
            if row is None:
                found[h.hit_id] = HitView(h, False)
            elif row.acked_at is None:  # stored since list_hits ran
                found[h.hit_id] = HitView(h, True)
    views = [v for v in found.values() if not (unacked_only and v.acked)]
    return sorted(views, key=HitView.sort_key)


def lane_view(console: Console) -> dict[str, list[PlateEvent]]:
    """The latest passes of each lane: the store, and the stream for what the archive has not stored yet."""
    n = console.cfg.console.lane_history
    recent = recent_stream_events(console, max(RECENT_EVENTS, n * max(1, len(console.lanes)) * 3))
    lanes = list(console.lanes)
    for ev in recent:
        if ev.lane not in lanes:
            lanes.append(ev.lane)
    out: dict[str, list[PlateEvent]] = {}
    for lane in lanes:
        merged = {ev.event_id: ev for ev in recent if ev.lane == lane}
        merged.update({ev.event_id: ev for ev in console.store.search_events(EventQuery(lane=lane, limit=n))})
        out[lane] = sorted(merged.values(), key=lambda e: (e.best_seen, e.event_id), reverse=True)[:n]
    return out


# -- search ----------------------------------------------------------------------------------------


def parse_search(console: Console, request: Request) -> SearchParams:
    names = ("plate", "fuzzy", "since", "until", "lane", "direction", "country", "hit", "tz", "page")
    raw = {n: request.query_params.get(n, "").strip() for n in names}
    errors: list[str] = []
    t = console.t
    plate = raw["plate"] or None
    if plate is not None and not normalise(plate):
        errors.append(t(request, N_("The plate %(plate)s has no letters or digits."), plate=plate))
    fuzzy = raw["fuzzy"] in ("1", "on", "true", "yes")
    offset = tz_offset(raw)
    when: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        when[name] = None
        if raw[name]:
            try:
                when[name] = local_to_utc(raw[name], offset)
            except ValueError:
                errors.append(t(request, N_("%(value)s is not a date and time."), value=raw[name]))
    lane = raw["lane"] or None
    if lane is not None and console.lanes and lane not in console.lanes:
        errors.append(t(request, N_("Unknown lane %(lane)s."), lane=lane))
    direction: Direction | None = None
    if raw["direction"]:
        try:
            direction = Direction(raw["direction"])
        except ValueError:
            errors.append(t(request, N_("Unknown direction %(value)s."), value=raw["direction"]))
    country = raw["country"].upper() or None
    if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
        errors.append(t(request, N_("The country must be a two-letter code, such as UA.")))
    hit = raw["hit"] if raw["hit"] in ("yes", "no") else "any"
    page = int(raw["page"]) if raw["page"].isdigit() and int(raw["page"]) >= 1 else 1
    query = None
    if not errors:
        query = EventQuery(
            plate=plate,
            fuzzy=fuzzy and plate is not None,
            since=when["since"],
            until=when["until"],
            lane=lane,
            direction=direction,
            country=country,
            limit=None,
        )
    return SearchParams(raw, query, hit, page, errors)


def search_detail(params: SearchParams) -> dict[str, Any]:
    """A search as the audit log keeps it, with its times in UTC."""
    detail: dict[str, Any] = {k: v for k, v in params.raw.items() if v and k != "tz"}
    q = params.query
    if q is not None:
        detail["since_utc"] = iso(q.since) or None
        detail["until_utc"] = iso(q.until) or None
    return {k: v for k, v in detail.items() if v is not None}


def event_ids_with_hits(console: Console, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    with console.store.engine.connect() as conn:
        return set(conn.scalars(sa.select(hits_table.c.event_id).where(hits_table.c.event_id.in_(ids)).distinct()))


def matching_events(console: Console, q: EventQuery, hit: str) -> Iterator[PlateEvent]:
    """Every event of the query, newest first, that has a stored hit (yes), has none (no), or either."""
    if hit == "yes":
        yield from _events_with_hits(console, q)
        return
    if hit == "any":
        yield from console.store.iter_events(q, chunk=500)
        return
    source = console.store.iter_events(q, chunk=500)
    while chunk := list(islice(source, 500)):
        with_hits = event_ids_with_hits(console, [e.event_id for e in chunk])
        yield from (e for e in chunk if e.event_id not in with_hits)


def _events_with_hits(console: Console, q: EventQuery) -> Iterator[PlateEvent]:
    """From the hits table (far smaller than the events), each event once, the rest of the filter in Python."""
    c = hits_table.c
    stmt = sa.select(c.event_id, sa.func.max(c.seen_at).label("seen")).group_by(c.event_id)
    if q.since is not None:
        stmt = stmt.where(c.seen_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(c.seen_at < q.until)
    if q.lane is not None:
        stmt = stmt.where(c.lane == q.lane)
    if q.direction is not None:
        stmt = stmt.where(c.direction == q.direction.value)
    if q.plate is not None and not q.fuzzy:
        stmt = stmt.where(c.plate == normalise(q.plate))
    stmt = stmt.order_by(sa.desc("seen"), c.event_id.desc())
    with console.store.engine.connect() as conn:
        ids = list(conn.scalars(stmt))
    keys = one_edit_neighbourhood(confusable_key(q.plate)) if q.plate is not None and q.fuzzy else None
    for event_id in ids:
        ev = console.store.get_event(event_id)
        if ev is None:  # the event aged out before its hit
            continue
        if keys is not None and confusable_key(ev.plate) not in keys:
            continue
        if q.country is not None and ev.country != q.country:
            continue
        yield ev


# -- one event -------------------------------------------------------------------------------------


def find_event(console: Console, event_id: str) -> tuple[PlateEvent | None, bool]:
    """The event from the store, else from the stream while the archive has not stored it; (event, stored)."""
    ev = console.store.get_event(event_id)
    if ev is not None:
        return ev, True
    r = console.redis
    entry = r.get(console.keys.event_seen(event_id))
    if isinstance(entry, bytes) and STREAM_ID.match(text(entry)):
        found: Any = r.xrange(console.keys.events, min=text(entry), max=text(entry), count=1)
        for _id, fields in found:
            raw = _field(fields, b"event")
            if raw is not None:
                with contextlib.suppress(ValueError):
                    return PlateEvent.model_validate_json(raw), False
    return None, False


def linked_events(console: Console, event_id: str) -> list[tuple[str, str, datetime]]:
    """Events (trailers) whose linked_event_id is this one: (event_id, plate, best_seen)."""
    c = events_table.c
    with console.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.event_id, c.plate, c.best_seen).where(c.linked_event_id == event_id).order_by(c.best_seen)
        ).all()
    return [(r.event_id, r.plate, r.best_seen) for r in rows]


def event_hits(console: Console, event_id: str) -> list[HitView]:
    c = hits_table.c
    with console.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.payload, c.acked_at, c.acked_by, c.ack_note, c.disposition).where(c.event_id == event_id)
        ).all()
    found = {
        (h := Hit.model_validate(r.payload)).hit_id: HitView(h, True, r.acked_at, r.acked_by, r.ack_note, r.disposition)
        for r in rows
    }
    for h in recent_stream_hits(console):
        if h.event.event_id == event_id and h.hit_id not in found:
            found[h.hit_id] = HitView(h, False)
    return sorted(found.values(), key=HitView.sort_key)


def event_alerts(console: Console, event_id: str) -> list[dict[str, Any]]:
    c = crossing_alerts.c
    with console.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(crossing_alerts)
            .where(c.event_id == event_id)
            .order_by(c.raised_at.desc())
            .limit(ALERTS_PER_EVENT)
        ).all()
    return [dict(r._mapping) for r in rows]


def crossing_matches(console: Console, event_id: str) -> tuple[list[CrossingMatch], bool]:
    """Matches naming this event among the newest SCAN_LIMIT of the stream; (matches, whole stream searched)."""
    found: list[CrossingMatch] = []
    upper = "+"
    scanned = 0
    needle = event_id.encode()
    while scanned < SCAN_LIMIT:
        batch: Any = console.redis.xrevrange(console.keys.crossing_matches, max=upper, count=1000)
        if not batch:
            return found, True
        for entry_id, fields in batch:
            raw = _field(fields, b"match")
            if raw is not None and needle in raw:
                with contextlib.suppress(ValueError):
                    m = CrossingMatch.model_validate_json(raw)
                    if event_id in (m.exit_event_id, m.entry_event_id):
                        found.append(m)
            upper = f"({text(entry_id)}"
        scanned += len(batch)
        if len(batch) < 1000:
            return found, True
    return found, False


def delivery(console: Console, event_id: str) -> tuple[str, str]:
    """(delivered | pending | dead-lettered | unknown, why unknown): where the publisher stands with this event.

    From the event's stream entry id (kept with a TTL by the event sink): in the publisher's
    dead letters, in its pending list (handed out, not acknowledged), or after its last-delivered id
    (not read yet) it is not delivered; read and acknowledged it is. Without the entry id ("gone") or
    without a publisher group on the stream ("no_publisher"), nobody can tell.
    """
    r, keys = console.redis, console.keys
    raw = r.get(keys.event_seen(event_id))
    entry_id = text(raw) if isinstance(raw, bytes) and STREAM_ID.match(text(raw)) else None
    if _dead_lettered(console, event_id, entry_id):
        return "dead-lettered", ""
    if entry_id is None:
        return "unknown", "gone"
    group = console.cfg.publisher.group
    try:
        groups: Any = r.xinfo_groups(keys.events)
    except redis.ResponseError:  # no stream
        return "unknown", "gone"
    info = next((g for g in groups if text(g["name"]) == group), None)
    if info is None:
        return "unknown", "no_publisher"
    if r.xpending_range(keys.events, group, min=entry_id, max=entry_id, count=1):
        return "pending", ""
    last = text(info.get("last-delivered-id", b"0-0"))
    return ("pending" if newer(entry_id, last) else "delivered"), ""


def _dead_lettered(console: Console, event_id: str, entry_id: str | None) -> bool:
    needle = event_id.encode()
    upper, scanned = "+", 0
    while scanned < SCAN_LIMIT:
        batch: Any = console.redis.xrevrange(console.keys.exchange_dead, max=upper, count=1000)
        for dead_id, fields in batch:
            if entry_id is not None and _field(fields, b"source_id") == entry_id.encode():
                return True
            if needle in (_field(fields, b"fields") or b""):
                return True
            upper = f"({text(dead_id)}"
        scanned += len(batch)
        if len(batch) < 1000:
            return False
    return False


# -- system ----------------------------------------------------------------------------------------


def system_state(console: Console) -> dict[str, Any]:
    """Redis, the database, stream lengths, the publisher's backlog and every dead-letter stream."""
    cfg, r = console.cfg, console.redis
    state: dict[str, Any] = {}
    try:
        r.ping()
        state["redis"] = {"ok": True, "error": ""}
    except redis.RedisError as exc:
        state["redis"] = {"ok": False, "error": str(exc)}
    try:
        console.store.ping()
        state["database"] = {"ok": True, "error": ""}
    except StoreUnavailable as exc:
        state["database"] = {"ok": False, "error": " ".join(str(exc).split())}
    if not state["redis"]["ok"]:
        return state
    k = console.keys
    streams = {
        "events": k.events,
        "hits": k.hits,
        "crossing_matches": k.crossing_matches,
        "crossing_alerts": k.crossing_alerts,
        "console_acks": k.console_acks,
    }
    state["streams"] = {name: r.xlen(key) for name, key in streams.items()}
    try:
        state["publisher"] = group_lag(r, k.events, cfg.publisher.group)
    except redis.ResponseError:
        state["publisher"] = {"lag": None, "pending": 0}
    dead = {cfg.publisher.group: k.exchange_dead}
    archive = cfg.archive.group
    for kind in ("events", "alerts", "hits"):
        dead[f"{archive}-{kind}"] = k.dead_letters(f"{archive}-{kind}")
    dead[cfg.hits.group] = k.dead_letters(cfg.hits.group)
    notify = cfg.notify
    for sink in [w.name for w in notify.webhooks] + (["mqtt"] if notify.mqtt.enabled else []):
        dead[f"{notify.group}-{sink}"] = k.dead_letters(f"{notify.group}-{sink}")
    state["dead_letters"] = {group: r.xlen(key) for group, key in dead.items()}
    return state


async def health(console: Console) -> dict[str, Any]:
    """`anpr run`'s /health, or why it could not be read."""
    url = console.cfg.console.health_url
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            resp = await client.get(url)
        doc = resp.json()
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return {"reachable": True, "http_status": resp.status_code, "doc": doc, "error": ""}
    except (httpx.HTTPError, ValueError) as exc:
        return {"reachable": False, "http_status": None, "doc": {}, "error": f"{type(exc).__name__}: {exc}"}
