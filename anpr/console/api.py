"""The console's JSON API under /api: hits and their acknowledgement, lanes, event search.

Answers 401/403/404/503 as JSON (see app.py and web.py), so a script never mistakes a page for data.
"""

from __future__ import annotations

import json
import time
from itertools import islice
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from anpr.console import data
from anpr.console.i18n import N_
from anpr.console.web import Console, Routes, client_ip, iso, run_sync, session_of
from anpr.schema import utc_now
from anpr.store import DISPOSITIONS
from anpr.store import hits as hits_table

ACK_WAIT_S = 3.0  # how long an ack waits for the archive to store a hit seen only on the stream so far
ACK_STREAM_MAXLEN = 10_000


def api_hits(console: Console, request: Request) -> Response:
    unacked = request.query_params.get("unacked") in ("1", "true", "yes")
    return JSONResponse({"hits": [v.as_json() for v in data.hit_views(console, unacked_only=unacked)]})


def _hit_state(console: Console, hit_id: str) -> Any:
    with console.store.engine.connect() as conn:
        return conn.execute(
            sa.select(hits_table.c.acked_at, hits_table.c.acked_by).where(hits_table.c.hit_id == hit_id)
        ).first()


def ack(console: Console, hit_id: str, by: str, note: str, disposition: str, ip: str) -> tuple[int, dict[str, Any]]:
    """Store the acknowledgement, tell every console, audit it; (status, JSON body)."""
    deadline = time.monotonic() + ACK_WAIT_S
    on_stream: bool | None = None
    while not console.store.ack_hit(hit_id, by, note, disposition=disposition):
        state = _hit_state(console, hit_id)
        if state is not None and state.acked_at is not None:
            return 409, {
                "error": "already acknowledged",
                "message_id": "already",
                "by": state.acked_by,
                "at": iso(state.acked_at),
            }
        if state is None:
            if on_stream is None:
                on_stream = any(h.hit_id == hit_id for h in data.recent_stream_hits(console, 1000))
            if not on_stream:
                return 404, {"error": "no such hit", "message_id": "unknown"}
            if time.monotonic() >= deadline:
                return 409, {"error": "not stored yet", "message_id": "not_stored"}
        time.sleep(0.1)
    done = {"hit_id": hit_id, "by": by, "at": iso(utc_now()), "disposition": disposition, "note": note}
    console.redis.xadd(console.keys.console_acks, {"ack": json.dumps(done)}, maxlen=ACK_STREAM_MAXLEN, approximate=True)
    console.audit.record(by, "hit_ack", hit_id, {"disposition": disposition, "note": note}, ip)
    return 200, done


async def api_ack(console: Console, request: Request) -> Response:
    sess = session_of(request)
    hit_id = request.path_params["hit_id"]
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"error": 'JSON body required: {"disposition", "note"}'}, status_code=400)
    disposition, note = body.get("disposition"), body.get("note") or ""
    if disposition not in DISPOSITIONS or not isinstance(note, str):
        return JSONResponse(
            {"error": f"disposition must be one of {', '.join(DISPOSITIONS)}; note a string"}, status_code=400
        )
    status, out = await run_sync(
        ack, console, hit_id, sess.user.name, note.strip()[:2000], disposition, client_ip(request)
    )
    messages = {
        "already": N_("Already acknowledged by %(by)s."),
        "not_stored": N_("This hit is not stored yet (the archive is behind). Try again in a few seconds."),
        "unknown": N_("No such hit."),
    }
    if status != 200:
        out["message"] = console.t(request, messages[out["message_id"]], by=out.get("by") or "")
    return JSONResponse(out, status_code=status)


def api_lanes(console: Console, request: Request) -> Response:
    return JSONResponse(
        {lane: [ev.model_dump(mode="json") for ev in evs] for lane, evs in data.lane_view(console).items()}
    )


def api_events(console: Console, request: Request) -> Response:
    sess = session_of(request)
    params = data.parse_search(console, request)
    if params.query is None:
        return JSONResponse({"error": "bad query", "errors": params.errors}, status_code=400)
    size = console.cfg.console.page_size
    offset = (params.page - 1) * size
    found = list(islice(data.matching_events(console, params.query, params.hit), offset, offset + size + 1))
    console.audit.record(sess.user.name, "search", "events", data.search_detail(params), client_ip(request))
    return JSONResponse(
        {
            "events": [ev.model_dump(mode="json") for ev in found[:size]],
            "page": params.page,
            "more": len(found) > size,
        }
    )


ROUTES: Routes = [
    ("/api/hits", "GET", api_hits),
    ("/api/hits/{hit_id}/ack", "POST", api_ack),
    ("/api/lanes", "GET", api_lanes),
    ("/api/events", "GET", api_events),
]
