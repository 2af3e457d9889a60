"""/api/stream: Server-Sent Events of passes, hits and acks, read with XREAD BLOCK as they are written.

A hit reaches every open console within milliseconds of the matcher, not after the archive stored it.
Each message carries the stream ids read so far; a reconnecting browser sends the last one back
(Last-Event-ID) and misses nothing.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from anpr.console import data
from anpr.console.web import SESSION_COOKIE, Console, Routes, run_sync
from anpr.streams import text

SSE_BLOCK_MS = 15_000  # one XREAD; a keep-alive comment goes out after each empty one
SSE_RECHECK_S = 60.0  # a stream re-checks its session this often: a disabled user's stream ends


def async_client(r: redis.Redis, socket_timeout: float) -> aioredis.Redis:
    """An asyncio client to the same server as `r` (TCP, TLS or unix socket), for blocking stream reads."""
    kw = r.connection_pool.connection_kwargs
    common: dict[str, Any] = {
        "db": kw.get("db", 0),
        "username": kw.get("username"),
        "password": kw.get("password"),
        "socket_connect_timeout": kw.get("socket_connect_timeout") or 5.0,
        "socket_timeout": socket_timeout,
    }
    if "path" in kw:
        return aioredis.Redis(unix_socket_path=kw["path"], **common)
    if issubclass(r.connection_pool.connection_class, redis.SSLConnection):
        common["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname"):
            if name in kw:
                common[name] = kw[name]
    return aioredis.Redis(host=kw.get("host", "localhost"), port=kw.get("port", 6379), **common)


def _resume_ids(value: str, wanted: list[str]) -> dict[str, str]:
    """The stream ids of a Last-Event-ID ("pass=1-0;hit=2-0") or of a page's stream_from."""
    out: dict[str, str] = {}
    for part in value.split(";"):
        kind, _, entry_id = part.partition("=")
        if kind in wanted and data.STREAM_ID.match(entry_id):
            out[kind] = entry_id
    return out


async def api_stream(console: Console, request: Request) -> Response:
    """Server-Sent Events: `pass`, `hit` and `ack`, read from their streams as they are written."""
    token = request.cookies.get(SESSION_COOKIE, "")
    streams = data.sse_streams(console)
    wanted = [k for k in request.query_params.get("kinds", "pass,hit,ack").split(",") if k in streams]
    if not wanted:
        return JSONResponse({"error": "kinds: pass, hit and/or ack"}, status_code=400)
    start = _resume_ids(request.headers.get("last-event-id") or request.query_params.get("from", ""), wanted)
    missing = [k for k in wanted if k not in start]
    if missing:
        tops = await run_sync(lambda: {k: data.stream_top(console, streams[k]) for k in missing})
        start.update(tops)
    by_stream = {streams[k]: k for k in wanted}
    fields = {"pass": b"event", "hit": b"hit", "ack": b"ack"}

    async def events() -> Any:
        client = async_client(console.redis, socket_timeout=SSE_BLOCK_MS / 1000 + 10)
        ids = {streams[k]: start[k] for k in wanted}
        checked = time.monotonic()
        try:
            yield "retry: 1000\n\n"
            while True:
                reply: Any = await client.xread(ids, block=SSE_BLOCK_MS, count=200)  # type: ignore[arg-type]
                if not reply:
                    yield ": keep-alive\n\n"
                for stream, entries in reply or []:
                    kind = by_stream[text(stream)]
                    for entry_id, entry_fields in entries:
                        ids[streams[kind]] = text(entry_id)
                        payload = entry_fields.get(fields[kind])
                        if not payload:
                            continue
                        resume = ";".join(f"{k}={ids[streams[k]]}" for k in wanted)
                        lines = "".join(f"data: {line}\n" for line in text(payload).split("\n"))
                        yield f"id: {resume}\nevent: {kind}\n{lines}\n"
                if time.monotonic() - checked > SSE_RECHECK_S:
                    checked = time.monotonic()
                    if await console.session(token) is None:
                        return
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


ROUTES: Routes = [("/api/stream", "GET", api_stream)]
