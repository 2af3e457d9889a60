"""The officers' web console: live lanes and hits, search, events, watchlists, system state, audit log.

One Starlette app over the store, Redis and anpr.console.accounts; `anpr console` serves it with uvicorn.

- Every page but /login and /static needs a session: the `anpr_session` cookie (HttpOnly, SameSite=Strict)
  holds a random token whose hash the accounts table keeps. Without one a page redirects to the login
  form and an /api call answers 401, so a script never mistakes a login page for data.
- Every POST carries the session's CSRF token (form field `csrf` or header `X-CSRF-Token`); SameSite alone
  does not cover older browsers or a sibling site. The login form, before any session, uses a
  double-submit cookie instead.
- Live updates are Server-Sent Events read with XREAD BLOCK from the events, hits and acks streams, so a
  hit reaches every open console within milliseconds of the matcher, not after the archive stored it.
  Each SSE message carries the stream ids read so far; a reconnecting browser sends the last one back
  (Last-Event-ID) and misses nothing. A page starts its stream from the stream ids it was rendered at.
- Pages are rendered in the reader's language (anpr.console.i18n). Times go out as UTC in
  <time datetime> elements; console.js shows them in the browser's time zone and sends that zone's
  offset with forms, so the times an officer types are read as local times.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import io
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import anyio
import httpx
import jinja2
import redis
import redis.asyncio as aioredis
import sqlalchemy as sa
import uvicorn
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anpr.config import AnprConfig
from anpr.console.accounts import Accounts, Role, Session
from anpr.console.audit import AuditLog
from anpr.console.i18n import HERE, LANGUAGE_NAMES, LANGUAGES, N_, environment, gettext, js_messages, pick_language
from anpr.history_cli import EXPORT_COLUMNS
from anpr.keys import Keys
from anpr.plates import confusable_key, normalise
from anpr.schema import (
    CrossingMatch,
    Direction,
    Hit,
    ListSource,
    MatchMode,
    PlateEvent,
    Severity,
    WatchlistEntry,
    utc_now,
)
from anpr.store import (
    DISPOSITIONS,
    EventQuery,
    Store,
    StoreUnavailable,
    crossing_alerts,
    one_edit_neighbourhood,
    watchlist_entries,
)
from anpr.store import events as events_table
from anpr.store import hits as hits_table
from anpr.streams import group_lag, text
from anpr.watchlist import WatchlistImportError, parse_csv

SESSION_COOKIE = "anpr_session"
LOGIN_CSRF_COOKIE = "anpr_csrf_login"
LANGUAGE_COOKIE = "anpr_lang"
SESSION_SCOPE_KEY = "anpr.session"
MAX_BODY_BYTES = 5 * 1024 * 1024  # a watchlist CSV of ~50 000 rows
ACK_WAIT_S = 3.0  # how long an ack waits for the archive to store a hit seen only on the stream so far
SSE_BLOCK_MS = 15_000  # one XREAD; a keep-alive comment goes out after each empty one
SSE_RECHECK_S = 60.0  # a stream re-checks its session this often: a disabled user's stream ends
RECENT_HITS = 200  # hits read back from the stream for the Hits page (the archive may lag)
RECENT_EVENTS = 300  # events read back from the stream for the Lanes page
ACK_STREAM_MAXLEN = 10_000
SCAN_LIMIT = 20_000  # stream entries searched for an event's crossing match or dead letter
ALERTS_PER_EVENT = 50
_STREAM_ID = re.compile(r"^\d+-\d+$")
_SEVERITY_RANK = {Severity.STOP: 0, Severity.CHECK: 1, Severity.INFO: 2}
_SHA_JPG = re.compile(r"^crops/[0-9a-f]{2}/([0-9a-f]{64})\.jpg$")

T = TypeVar("T")

# Messages shown after a redirect, by the code in ?done=.
_DONE = {
    "added": N_("Watchlist entry added."),
    "edited": N_("Watchlist entry changed."),
    "expired": N_("Watchlist entry expired."),
    "imported": N_("Watchlist imported."),
}


# -- small helpers ---------------------------------------------------------------------------------


async def run_sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking call (database, sync Redis) in a worker thread, off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def session_of(request: Request) -> Session:
    """The session the guard attached; only routes behind the guard call this."""
    sess: Session | None = request.scope.get(SESSION_SCOPE_KEY)
    if sess is None:
        raise HTTPException(401)
    return sess


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def safe_next(target: str | None) -> str:
    """Only a path of this site: an open redirect would let a link log an officer into someone else's page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_tag(moment: datetime | None) -> Markup:
    """A UTC time the browser rewrites into its own zone (console.js); readable as UTC without script."""
    if moment is None:
        return Markup("")
    utc = moment.astimezone(UTC)
    return Markup('<time datetime="{}">{} UTC</time>').format(iso(utc), utc.strftime("%Y-%m-%d %H:%M:%S"))


def crop_url(ref: str | None) -> str | None:
    """/crops/<sha>.jpg for a stored crop reference ("crops/ab/<sha>.jpg"), else None."""
    m = _SHA_JPG.match(ref or "")
    return f"/crops/{m.group(1)}.jpg" if m else None


def pass_image(ev: PlateEvent) -> str | None:
    """A stored crop, or the copy in Redis while the archive has not stored the event."""
    return crop_url(ev.plate_image) or (f"/events/{ev.event_id}/plate.jpg" if ev.plate_image else None)


def _local_input(moment: datetime | None) -> str:
    """A datetime-local value in UTC (console.js turns it into the browser's zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def entry_values(e: WatchlistEntry) -> dict[str, Any]:
    """An entry as its edit form shows it."""
    return {
        "plate": e.plate,
        "mode": e.mode.value,
        "severity": e.severity.value,
        "source": e.source.value,
        "reason": e.reason,
        "valid_from": _local_input(e.valid_from),
        "valid_until": _local_input(e.valid_until),
        "valid_from_iso": iso(e.valid_from),
        "valid_until_iso": iso(e.valid_until),
        "lanes": list(e.lanes),
        "directions": [d.value for d in e.directions],
    }


def entry_form_values(form: dict[str, Any]) -> dict[str, Any]:
    """The add form: empty, or as the user sent it when it had a mistake."""
    return {
        "plate": form.get("plate", ""),
        "mode": form.get("mode", MatchMode.CONFUSABLE.value),
        "severity": form.get("severity", Severity.CHECK.value),
        "source": form.get("source", ListSource.CUSTOMS.value),
        "reason": form.get("reason", ""),
        "valid_from": form.get("valid_from", ""),
        "valid_until": form.get("valid_until", ""),
        "valid_from_iso": "",
        "valid_until_iso": "",
        "lanes": form.get("lanes", []),
        "directions": form.get("directions", []),
    }


def form_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["lanes"] = [str(v) for v in form.getlist("lanes")]
    values["directions"] = [str(v) for v in form.getlist("directions")]
    return values


def local_to_utc(value: str, offset_min: int | None) -> datetime:
    """A datetime-local value typed in the browser's zone (`offset_min` as JS getTimezoneOffset) in UTC.

    A value with its own zone keeps it; without an offset from the browser the value is taken as UTC.
    ValueError when it is no date or time.
    """
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    return (moment + timedelta(minutes=offset_min or 0)).replace(tzinfo=UTC)


def tz_offset(form: Any) -> int | None:
    raw = str(form.get("tz") or "").strip()
    if re.fullmatch(r"-?\d{1,4}", raw) and abs(int(raw)) <= 14 * 60:
        return int(raw)
    return None


def newer(a: str, b: str) -> bool:
    """Stream id a is after b."""
    ams, aseq = (int(x) for x in a.split("-"))
    bms, bseq = (int(x) for x in b.split("-"))
    return (ams, aseq) > (bms, bseq)


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


def _field(fields: Any, name: bytes) -> bytes | None:
    value = fields.get(name)
    return value if isinstance(value, bytes) else None


# -- views of hits ---------------------------------------------------------------------------------


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


# -- the guard: sessions, CSRF, security headers ---------------------------------------------------


class Guard:
    """Pure ASGI middleware (it must not buffer the event stream): session, roles' entry point, CSRF."""

    PUBLIC_PREFIXES = ("/static/",)
    PUBLIC_PATHS = ("/login",)

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        path: str = scope["path"]
        if path in self.PUBLIC_PATHS or path.startswith(self.PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = request.cookies.get(SESSION_COOKIE)
        try:
            sess = await self.console.session(token) if token else None
        except StoreUnavailable:
            await plain(503, "the database cannot be reached")(scope, receive, send)
            return
        if sess is None:
            if path.startswith("/api/"):
                response: Response = JSONResponse({"error": "login required"}, status_code=401)
            else:
                target = path + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            await response(scope, receive, send)
            return
        scope[SESSION_SCOPE_KEY] = sess
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        header = request.headers.get("x-csrf-token")
        if header is not None:
            ok = secrets.compare_digest(header.encode(), sess.csrf.encode())
        else:
            body = await self._body(receive)
            if body is None:
                await plain(413, "request too large")(scope, receive, send)
                return
            receive = self._replay(body)
            try:
                form = await Request(scope, self._replay(body)).form()
            except Exception:  # a malformed body carries no token either
                ok = False
            else:
                given = form.get("csrf")
                ok = isinstance(given, str) and secrets.compare_digest(given.encode(), sess.csrf.encode())
                await form.close()
        if not ok:
            await self.console.forbidden(request, N_("The form has expired or did not come from this console."))(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _body(receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes) -> Receive:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await anyio.sleep_forever()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


# No inline script or style anywhere: the page's data travels in <script type="application/json">, so an
# injected <script> or on* attribute never runs, and nothing is eval'ed. (Browser tests drive the page with
# bypass_csp, as automation must.)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def plain(status: int, message: str) -> Response:
    return Response(message, status_code=status, media_type="text/plain; charset=utf-8")


# -- the console -----------------------------------------------------------------------------------


class Console:
    """Routes and their helpers over one store, one Redis client and the accounts."""

    def __init__(self, cfg: AnprConfig, store: Store, r: redis.Redis) -> None:
        self.cfg = cfg
        self.store = store
        self.redis = r
        self.keys = Keys(cfg.redis.prefix)
        self.audit = AuditLog(store)
        self.accounts = Accounts(store, cfg.console, self.audit)
        self.lanes: list[str] = list(dict.fromkeys(c.lane or c.name for c in cfg.cameras))

    async def session(self, token: str) -> Session | None:
        return await run_sync(self.accounts.session, token)

    # -- rendering ---------------------------------------------------------------------------------

    def language(self, request: Request, sess: Session | None) -> str:
        return pick_language(
            sess.user.language if sess else None,
            request.cookies.get(LANGUAGE_COOKIE),
            self.cfg.console.default_language,
        )

    def env(self, language: str) -> jinja2.Environment:
        env = environment(language)
        env.filters["when"] = time_tag
        env.filters["crop"] = crop_url
        env.globals.update(iso=iso, pass_image=pass_image, new_entry=entry_form_values, edit_entry=entry_values)
        return env

    def render(
        self, request: Request, template: str, status_code: int = 200, language: str | None = None, **context: Any
    ) -> HTMLResponse:
        sess: Session | None = request.scope.get(SESSION_SCOPE_KEY)
        language = language or self.language(request, sess)
        done = request.query_params.get("done", "")
        user = sess.user if sess else None
        base: dict[str, Any] = {
            "user": user,
            "csrf": sess.csrf if sess else "",
            "lang": language,
            "languages": LANGUAGE_NAMES,
            "js_messages": js_messages(language),
            "path": request.url.path,
            "full_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "can_edit_watchlists": bool(user and user.role.at_least(Role.SUPERVISOR)),
            "is_admin": bool(user and user.role.at_least(Role.ADMIN)),
            "done_message": gettext(language, _DONE[done]) if done in _DONE else "",
            "stream_from": "",
            "stream_kinds": "hit,ack",
            "errors": [],
            "nav": "",
        }
        base.update(context)
        html = self.env(language).get_template(template).render(**base)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    def t(self, request: Request, message: str, **params: Any) -> str:
        return gettext(self.language(request, request.scope.get(SESSION_SCOPE_KEY)), message, **params)

    def forbidden(self, request: Request, message: str = N_("Your role does not allow this page.")) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "forbidden", "message": self.t(request, message)}, status_code=403)
        return self.render(request, "error.html", 403, title=N_("Forbidden"), message=self.t(request, message))

    def not_found(self, request: Request, message: str = N_("Nothing found here.")) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not found", "message": self.t(request, message)}, status_code=404)
        return self.render(request, "error.html", 404, title=N_("Not found"), message=self.t(request, message))

    def require(self, request: Request, role: Role) -> Session | Response:
        sess = session_of(request)
        return sess if sess.user.role.at_least(role) else self.forbidden(request)

    # -- streams -----------------------------------------------------------------------------------

    def _stream_top(self, stream: str) -> str:
        last: Any = self.redis.xrevrange(stream, count=1)
        return text(last[0][0]) if last else "0-0"

    def stream_from(self, kinds: Iterable[str]) -> str:
        """Where a page's live stream starts: the streams' newest ids now, so nothing after the render is missed."""
        streams = self._sse_streams()
        return ";".join(f"{k}={self._stream_top(streams[k])}" for k in kinds)

    def _sse_streams(self) -> dict[str, str]:
        return {"pass": self.keys.events, "hit": self.keys.hits, "ack": self.keys.console_acks}

    def recent_stream_hits(self, count: int = RECENT_HITS) -> list[Hit]:
        out = []
        entries: Any = self.redis.xrevrange(self.keys.hits, count=count)
        for _id, fields in entries:
            raw = _field(fields, b"hit")
            if raw is None:
                continue
            with contextlib.suppress(ValueError):
                out.append(Hit.model_validate_json(raw))
        return out

    def recent_stream_events(self, count: int = RECENT_EVENTS) -> list[PlateEvent]:
        out = []
        entries: Any = self.redis.xrevrange(self.keys.events, count=count)
        for _id, fields in entries:
            raw = _field(fields, b"event")
            if raw is None:
                continue
            with contextlib.suppress(ValueError):
                out.append(PlateEvent.model_validate_json(raw))
        return out

    # -- hits --------------------------------------------------------------------------------------

    def hit_views(self, unacked_only: bool = False) -> list[HitView]:
        """Stored hits (every unacknowledged one, the newest acknowledged) and those still only on the stream."""
        found: dict[str, HitView] = {}
        stored = self.store.list_hits(unacked=True, limit=1000)
        if not unacked_only:
            stored += self.store.list_hits(limit=100)
        for sh in stored:
            found[sh.hit.hit_id] = HitView(sh.hit, True, sh.acked_at, sh.acked_by, sh.ack_note, sh.disposition)
        stream_only = [h for h in self.recent_stream_hits() if h.hit_id not in found]
        if stream_only:
            with self.store.engine.connect() as conn:
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

    def _hit_state(self, hit_id: str) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(
                sa.select(hits_table.c.acked_at, hits_table.c.acked_by).where(hits_table.c.hit_id == hit_id)
            ).first()

    def ack(self, hit_id: str, by: str, note: str, disposition: str, ip: str) -> tuple[int, dict[str, Any]]:
        """Store the acknowledgement, tell every console, audit it; (status, JSON body)."""
        deadline = time.monotonic() + ACK_WAIT_S
        on_stream: bool | None = None
        while not self.store.ack_hit(hit_id, by, note, disposition=disposition):
            state = self._hit_state(hit_id)
            if state is not None and state.acked_at is not None:
                return 409, {
                    "error": "already acknowledged",
                    "message_id": "already",
                    "by": state.acked_by,
                    "at": iso(state.acked_at),
                }
            if state is None:
                if on_stream is None:
                    on_stream = any(h.hit_id == hit_id for h in self.recent_stream_hits(1000))
                if not on_stream:
                    return 404, {"error": "no such hit", "message_id": "unknown"}
                if time.monotonic() >= deadline:
                    return 409, {"error": "not stored yet", "message_id": "not_stored"}
            time.sleep(0.1)
        ack = {"hit_id": hit_id, "by": by, "at": iso(utc_now()), "disposition": disposition, "note": note}
        self.redis.xadd(self.keys.console_acks, {"ack": json.dumps(ack)}, maxlen=ACK_STREAM_MAXLEN, approximate=True)
        self.audit.record(by, "hit_ack", hit_id, {"disposition": disposition, "note": note}, ip)
        return 200, ack

    # -- search ------------------------------------------------------------------------------------

    def parse_search(self, request: Request) -> SearchParams:
        names = ("plate", "fuzzy", "since", "until", "lane", "direction", "country", "hit", "tz", "page")
        raw = {n: request.query_params.get(n, "").strip() for n in names}
        errors: list[str] = []
        plate = raw["plate"] or None
        if plate is not None and not normalise(plate):
            errors.append(self.t(request, N_("The plate %(plate)s has no letters or digits."), plate=plate))
        fuzzy = raw["fuzzy"] in ("1", "on", "true", "yes")
        offset = tz_offset(raw)
        when: dict[str, datetime | None] = {}
        for name in ("since", "until"):
            when[name] = None
            if raw[name]:
                try:
                    when[name] = local_to_utc(raw[name], offset)
                except ValueError:
                    errors.append(self.t(request, N_("%(value)s is not a date and time."), value=raw[name]))
        lane = raw["lane"] or None
        if lane is not None and self.lanes and lane not in self.lanes:
            errors.append(self.t(request, N_("Unknown lane %(lane)s."), lane=lane))
        direction: Direction | None = None
        if raw["direction"]:
            try:
                direction = Direction(raw["direction"])
            except ValueError:
                errors.append(self.t(request, N_("Unknown direction %(value)s."), value=raw["direction"]))
        country = raw["country"].upper() or None
        if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
            errors.append(self.t(request, N_("The country must be a two-letter code, such as UA.")))
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

    def _event_ids_with_hits(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        with self.store.engine.connect() as conn:
            return set(conn.scalars(sa.select(hits_table.c.event_id).where(hits_table.c.event_id.in_(ids)).distinct()))

    def matching_events(self, q: EventQuery, hit: str) -> Iterator[PlateEvent]:
        """Every event of the query, newest first, that has a stored hit (yes), has none (no), or either."""
        if hit == "yes":
            yield from self._events_with_hits(q)
            return
        if hit == "any":
            yield from self.store.iter_events(q, chunk=500)
            return
        source = self.store.iter_events(q, chunk=500)
        while chunk := list(islice(source, 500)):
            with_hits = self._event_ids_with_hits([e.event_id for e in chunk])
            yield from (e for e in chunk if e.event_id not in with_hits)

    def _events_with_hits(self, q: EventQuery) -> Iterator[PlateEvent]:
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
        with self.store.engine.connect() as conn:
            ids = list(conn.scalars(stmt))
        keys = one_edit_neighbourhood(confusable_key(q.plate)) if q.plate is not None and q.fuzzy else None
        for event_id in ids:
            ev = self.store.get_event(event_id)
            if ev is None:  # the event aged out before its hit
                continue
            if keys is not None and confusable_key(ev.plate) not in keys:
                continue
            if q.country is not None and ev.country != q.country:
                continue
            yield ev

    # -- events ------------------------------------------------------------------------------------

    def find_event(self, event_id: str) -> tuple[PlateEvent | None, bool]:
        """The event from the store, else from the stream while the archive has not stored it; (event, stored)."""
        ev = self.store.get_event(event_id)
        if ev is not None:
            return ev, True
        entry = self.redis.get(self.keys.event_seen(event_id))
        if isinstance(entry, bytes) and _STREAM_ID.match(text(entry)):
            found: Any = self.redis.xrange(self.keys.events, min=text(entry), max=text(entry), count=1)
            for _id, fields in found:
                raw = _field(fields, b"event")
                if raw is not None:
                    with contextlib.suppress(ValueError):
                        return PlateEvent.model_validate_json(raw), False
        return None, False

    def linked_events(self, event_id: str) -> list[tuple[str, str, datetime]]:
        """Events (trailers) whose linked_event_id is this one: (event_id, plate, best_seen)."""
        c = events_table.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.event_id, c.plate, c.best_seen).where(c.linked_event_id == event_id).order_by(c.best_seen)
            ).all()
        return [(r.event_id, r.plate, r.best_seen) for r in rows]

    def event_hits(self, event_id: str) -> list[HitView]:
        c = hits_table.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.payload, c.acked_at, c.acked_by, c.ack_note, c.disposition).where(c.event_id == event_id)
            ).all()
        found = {
            (h := Hit.model_validate(r.payload)).hit_id: HitView(
                h, True, r.acked_at, r.acked_by, r.ack_note, r.disposition
            )
            for r in rows
        }
        for h in self.recent_stream_hits():
            if h.event.event_id == event_id and h.hit_id not in found:
                found[h.hit_id] = HitView(h, False)
        return sorted(found.values(), key=HitView.sort_key)

    def event_alerts(self, event_id: str) -> list[dict[str, Any]]:
        c = crossing_alerts.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(crossing_alerts)
                .where(c.event_id == event_id)
                .order_by(c.raised_at.desc())
                .limit(ALERTS_PER_EVENT)
            ).all()
        return [dict(r._mapping) for r in rows]

    def crossing_matches(self, event_id: str) -> tuple[list[CrossingMatch], bool]:
        """Matches naming this event among the newest SCAN_LIMIT of the stream; (matches, whole stream searched)."""
        found: list[CrossingMatch] = []
        upper = "+"
        scanned = 0
        needle = event_id.encode()
        while scanned < SCAN_LIMIT:
            batch: Any = self.redis.xrevrange(self.keys.crossing_matches, max=upper, count=1000)
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

    def delivery(self, event_id: str) -> tuple[str, str]:
        """(delivered | pending | dead-lettered | unknown, why unknown): where the publisher stands with this event.

        From the event's stream entry id (kept with a TTL by the event sink): in the publisher's
        dead letters, in its pending list (handed out, not acknowledged), or after its last-delivered id
        (not read yet) it is not delivered; read and acknowledged it is. Without the entry id ("gone") or
        without a publisher group on the stream ("no_publisher"), nobody can tell.
        """
        raw = self.redis.get(self.keys.event_seen(event_id))
        entry_id = text(raw) if isinstance(raw, bytes) and _STREAM_ID.match(text(raw)) else None
        if self._dead_lettered(event_id, entry_id):
            return "dead-lettered", ""
        if entry_id is None:
            return "unknown", "gone"
        group = self.cfg.publisher.group
        try:
            groups: Any = self.redis.xinfo_groups(self.keys.events)
        except redis.ResponseError:  # no stream
            return "unknown", "gone"
        info = next((g for g in groups if text(g["name"]) == group), None)
        if info is None:
            return "unknown", "no_publisher"
        if self.redis.xpending_range(self.keys.events, group, min=entry_id, max=entry_id, count=1):
            return "pending", ""
        last = text(info.get("last-delivered-id", b"0-0"))
        return ("pending" if newer(entry_id, last) else "delivered"), ""

    def _dead_lettered(self, event_id: str, entry_id: str | None) -> bool:
        needle = event_id.encode()
        upper, scanned = "+", 0
        while scanned < SCAN_LIMIT:
            batch: Any = self.redis.xrevrange(self.keys.exchange_dead, max=upper, count=1000)
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

    # -- lanes -------------------------------------------------------------------------------------

    def lane_view(self) -> dict[str, list[PlateEvent]]:
        """The latest passes of each lane: the store, and the stream for what the archive has not stored yet."""
        n = self.cfg.console.lane_history
        recent = self.recent_stream_events(max(RECENT_EVENTS, n * max(1, len(self.lanes)) * 3))
        lanes = list(self.lanes)
        for ev in recent:
            if ev.lane not in lanes:
                lanes.append(ev.lane)
        out: dict[str, list[PlateEvent]] = {}
        for lane in lanes:
            merged = {ev.event_id: ev for ev in recent if ev.lane == lane}
            merged.update({ev.event_id: ev for ev in self.store.search_events(EventQuery(lane=lane, limit=n))})
            out[lane] = sorted(merged.values(), key=lambda e: (e.best_seen, e.event_id), reverse=True)[:n]
        return out

    # -- system ------------------------------------------------------------------------------------

    def system_state(self) -> dict[str, Any]:
        """Redis, the database, stream lengths, the publisher's backlog and every dead-letter stream."""
        state: dict[str, Any] = {}
        try:
            self.redis.ping()
            state["redis"] = {"ok": True, "error": ""}
        except redis.RedisError as exc:
            state["redis"] = {"ok": False, "error": str(exc)}
        try:
            self.store.ping()
            state["database"] = {"ok": True, "error": ""}
        except StoreUnavailable as exc:
            state["database"] = {"ok": False, "error": " ".join(str(exc).split())}
        if not state["redis"]["ok"]:
            return state
        k = self.keys
        streams = {
            "events": k.events,
            "hits": k.hits,
            "crossing_matches": k.crossing_matches,
            "crossing_alerts": k.crossing_alerts,
            "console_acks": k.console_acks,
        }
        state["streams"] = {name: self.redis.xlen(key) for name, key in streams.items()}
        try:
            state["publisher"] = group_lag(self.redis, k.events, self.cfg.publisher.group)
        except redis.ResponseError:
            state["publisher"] = {"lag": None, "pending": 0}
        dead = {self.cfg.publisher.group: k.exchange_dead}
        archive = self.cfg.archive.group
        for kind in ("events", "alerts", "hits"):
            dead[f"{archive}-{kind}"] = k.dead_letters(f"{archive}-{kind}")
        dead[self.cfg.hits.group] = k.dead_letters(self.cfg.hits.group)
        notify = self.cfg.notify
        for sink in [w.name for w in notify.webhooks] + (["mqtt"] if notify.mqtt.enabled else []):
            dead[f"{notify.group}-{sink}"] = k.dead_letters(f"{notify.group}-{sink}")
        state["dead_letters"] = {group: self.redis.xlen(key) for group, key in dead.items()}
        return state

    async def health(self) -> dict[str, Any]:
        """`anpr run`'s /health, or why it could not be read."""
        url = self.cfg.console.health_url
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                resp = await client.get(url)
            doc = resp.json()
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return {"reachable": True, "http_status": resp.status_code, "doc": doc, "error": ""}
        except (httpx.HTTPError, ValueError) as exc:
            return {"reachable": False, "http_status": None, "doc": {}, "error": f"{type(exc).__name__}: {exc}"}

    # -- routes: login, logout, language ---------------------------------------------------------

    def _cookie(self, response: Response, name: str, value: str, path: str = "/", max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=self.cfg.console.secure_cookies,
        )

    async def login_page(self, request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token and await self.session(token):
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        lang = request.query_params.get("lang")
        return self._login_form(request, status_code=200, language=lang if lang in LANGUAGES else None)

    def _login_form(
        self, request: Request, status_code: int, error: str = "", username: str = "", language: str | None = None
    ) -> Response:
        csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = self.render(
            request,
            "login.html",
            status_code,
            language,
            login_csrf=csrf,
            error=error,
            username=username,
            next=safe_next(request.query_params.get("next")),
        )
        self._cookie(response, LOGIN_CSRF_COOKIE, csrf, path="/login")
        if language is not None:
            self._cookie(response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
        return response

    async def login_submit(self, request: Request) -> Response:
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        given = str(form.get("csrf") or "")
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        if not cookie or not given or not secrets.compare_digest(cookie.encode(), given.encode()):
            return self._login_form(
                request, 403, self.t(request, N_("The login form has expired; please try again.")), username
            )
        if not username or not password:
            return self._login_form(request, 401, self.t(request, N_("Enter your user name and password.")), username)
        result = await run_sync(self.accounts.login, username, password, client_ip(request))
        if result.outcome != "ok" or result.token is None or result.session is None:
            message = {
                "throttled": N_("Too many failed logins for this user. Try again later or ask an administrator."),
                "disabled": N_("This account is disabled."),
            }.get(result.outcome, N_("Wrong user name or password."))
            status = 429 if result.outcome == "throttled" else 401
            return self._login_form(request, status, self.t(request, message), username)
        target = safe_next(str(form.get("next") or request.query_params.get("next") or "/"))
        response = RedirectResponse(target, status_code=303)
        self._cookie(response, SESSION_COOKIE, result.token)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        if result.session.user.language:
            self._cookie(response, LANGUAGE_COOKIE, result.session.user.language, max_age=365 * 86400)
        return response

    async def logout(self, request: Request) -> Response:
        sess = session_of(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        await run_sync(self.accounts.logout, token)
        await run_sync(self.audit.record, sess.user.name, "logout", sess.user.name, {}, client_ip(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self.cfg.console.secure_cookies, httponly=True)
        return response

    async def set_language(self, request: Request) -> Response:
        sess = session_of(request)
        form = await request.form()
        language = str(form.get("language") or "")
        if language not in LANGUAGES:
            return plain(400, f"language must be one of {', '.join(LANGUAGES)}")
        await run_sync(self.accounts.set_language, sess.user.name, language)
        await run_sync(
            self.audit.record, sess.user.name, "language", sess.user.name, {"language": language}, client_ip(request)
        )
        back = safe_next(str(form.get("next") or "/"))
        response = RedirectResponse(back, status_code=303)
        self._cookie(response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
        return response

    # -- routes: pages -----------------------------------------------------------------------------

    def lanes_page(self, request: Request) -> Response:
        stream_from = self.stream_from(("pass", "hit", "ack"))
        return self.render(
            request,
            "lanes.html",
            lanes=self.lane_view(),
            nav="lanes",
            stream_from=stream_from,
            stream_kinds="pass,hit,ack",
            lane_history=self.cfg.console.lane_history,
        )

    def hits_page(self, request: Request) -> Response:
        stream_from = self.stream_from(("hit", "ack"))
        return self.render(
            request,
            "hits.html",
            hits=self.hit_views(),
            nav="hits",
            stream_from=stream_from,
            dispositions=DISPOSITIONS,
        )

    def search_page(self, request: Request) -> Response:
        sess = session_of(request)
        params = self.parse_search(request)
        size = self.cfg.console.page_size
        results: list[PlateEvent] = []
        more = False
        with_hits: set[str] = set()
        if params.query is not None and params.submitted:
            offset = (params.page - 1) * size
            results = list(islice(self.matching_events(params.query, params.hit), offset, offset + size + 1))
            more = len(results) > size
            results = results[:size]
            with_hits = self._event_ids_with_hits([e.event_id for e in results])
            self.audit.record(sess.user.name, "search", "events", self._search_detail(params), client_ip(request))
        query = {k: v for k, v in params.raw.items() if v and k != "page"}
        return self.render(
            request,
            "search.html",
            400 if params.errors else 200,
            nav="search",
            form=params.raw,
            fuzzy=params.raw["fuzzy"] in ("1", "on", "true", "yes"),
            hit=params.hit,
            lanes=self.lanes,
            results=results,
            with_hits=with_hits,
            submitted=params.submitted and params.query is not None,
            errors=params.errors,
            page=params.page,
            prev_url=f"/search?{urlencode({**query, 'page': params.page - 1})}" if params.page > 1 else "",
            next_url=f"/search?{urlencode({**query, 'page': params.page + 1})}" if more else "",
            export_url=f"/search.csv?{urlencode(query)}",
        )

    @staticmethod
    def _search_detail(params: SearchParams) -> dict[str, Any]:
        detail: dict[str, Any] = {k: v for k, v in params.raw.items() if v and k != "tz"}
        q = params.query
        if q is not None:
            detail["since_utc"] = iso(q.since) or None
            detail["until_utc"] = iso(q.until) or None
        return {k: v for k, v in detail.items() if v is not None}

    def search_csv(self, request: Request) -> Response:
        sess = session_of(request)
        params = self.parse_search(request)
        if params.query is None:
            return plain(400, "; ".join(params.errors))
        self.audit.record(sess.user.name, "export", "events", self._search_detail(params), client_ip(request))
        query, hit = params.query, params.hit

        def rows() -> Iterator[str]:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, EXPORT_COLUMNS)
            writer.writeheader()
            for n, ev in enumerate(self.matching_events(query, hit), 1):
                data = ev.model_dump(mode="json")
                writer.writerow({k: "" if data.get(k) is None else data[k] for k in EXPORT_COLUMNS})
                if n % 200 == 0:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()

        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="anpr-events-{stamp}.csv"'},
        )

    def event_page(self, request: Request) -> Response:
        sess = session_of(request)
        event_id = request.path_params["event_id"]
        ev, stored = self.find_event(event_id)
        if ev is None:
            return self.not_found(request, N_("No such event."))
        self.audit.record(sess.user.name, "event_view", event_id, {}, client_ip(request))
        matches, complete = self.crossing_matches(event_id)
        linked_event = self.store.get_event(ev.linked_event_id) if ev.linked_event_id else None
        reads = [(ch, conf) for ch, conf in zip(ev.plate, ev.char_confidences, strict=False)]
        return self.render(
            request,
            "event.html",
            nav="",
            ev=ev,
            stored=stored,
            reads=reads,
            plate_crop=crop_url(ev.plate_image) or (None if stored else f"/events/{ev.event_id}/plate.jpg"),
            vehicle_crop=crop_url(ev.vehicle_image) or (None if stored else f"/events/{ev.event_id}/vehicle.jpg"),
            linked_event=linked_event,
            trailers=self.linked_events(event_id),
            delivery=self.delivery(event_id),
            publisher_group=self.cfg.publisher.group,
            matches=matches,
            matches_complete=complete,
            alerts=self.event_alerts(event_id),
            hits=self.event_hits(event_id),
            dispositions=DISPOSITIONS,
        )

    def event_image(self, request: Request) -> Response:
        """An event's crop: the stored file, or Redis's copy (with a TTL) while the archive has not stored it."""
        event_id, kind = request.path_params["event_id"], request.path_params["kind"]
        if kind not in ("plate", "vehicle"):
            return self.not_found(request)
        ev = self.store.get_event(event_id)
        if ev is not None:
            url = crop_url(ev.plate_image if kind == "plate" else ev.vehicle_image)
            if url:
                return RedirectResponse(url, status_code=302)
        key = self.keys.plate_image(event_id) if kind == "plate" else self.keys.vehicle_image(event_id)
        blob = self.redis.get(key)
        if not isinstance(blob, bytes):
            return self.not_found(request)
        return Response(blob, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    def crop(self, request: Request) -> Response:
        try:
            path = self.store.crop_path(request.path_params["sha"])
        except ValueError:
            return self.not_found(request)
        if not path.is_file():
            return self.not_found(request)
        # Named by its content: it never changes.
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=31536000"})

    async def system_page(self, request: Request) -> Response:
        state, health = await run_sync(self.system_state), await self.health()
        return self.render(
            request, "system.html", nav="system", state=state, health=health, health_url=self.cfg.console.health_url
        )

    def audit_page(self, request: Request) -> Response:
        sess = self.require(request, Role.ADMIN)
        if isinstance(sess, Response):
            return sess
        q = request.query_params
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        actor, action = q.get("actor", "").strip() or None, q.get("action", "").strip() or None
        rows = self.audit.rows(limit=100, before_id=before, actor=actor, action=action)
        check = self.audit.verify() if q.get("verify") else None
        older = ""
        if len(rows) == 100:
            filters = {k: v for k, v in (("actor", actor), ("action", action)) if v}
            older = "/audit?" + urlencode({**filters, "before": rows[-1].id})
        return self.render(
            request,
            "audit.html",
            nav="audit",
            rows=rows,
            check=check,
            actor=actor or "",
            action=action or "",
            older=older,
        )

    # -- routes: watchlists ----------------------------------------------------------------------

    def _watchlist_page(
        self,
        request: Request,
        status_code: int = 200,
        errors: list[str] | None = None,
        import_errors: list[str] | None = None,
        form: dict[str, Any] | None = None,
    ) -> Response:
        show_removed = request.query_params.get("all") == "1"
        entries = self.store.entries(include_removed=show_removed)
        removed: dict[str, Any] = {}
        if show_removed:
            c = watchlist_entries.c
            with self.store.engine.connect() as conn:
                removed = {
                    r.entry_id: r
                    for r in conn.execute(
                        sa.select(c.entry_id, c.removed_at, c.removed_by).where(c.removed_at.is_not(None))
                    )
                }
        return self.render(
            request,
            "watchlists.html",
            status_code,
            nav="watchlists",
            entries=entries,
            removed=removed,
            show_removed=show_removed,
            errors=errors or [],
            import_errors=import_errors or [],
            form=form or {},
            lanes=self.lanes,
            modes=[m.value for m in MatchMode],
            severities=[s.value for s in Severity],
            sources=[s.value for s in ListSource],
        )

    async def watchlists_page(self, request: Request) -> Response:
        sess = self.require(request, Role.SUPERVISOR)
        if isinstance(sess, Response):
            return sess
        return await run_sync(self._watchlist_page, request)

    def _entry_from_form(self, form: FormData, by: str) -> Any:
        """One entry from the add/edit form, through the same parser as the CSV import; WatchlistImportError."""
        offset = tz_offset(form)
        row: dict[str, str] = {
            "plate": str(form.get("plate") or ""),
            "mode": str(form.get("mode") or "confusable"),
            "severity": str(form.get("severity") or "check"),
            "reason": str(form.get("reason") or ""),
            "source": str(form.get("source") or "customs"),
            "lanes": ";".join(str(v) for v in form.getlist("lanes") if str(v)),
            "directions": ";".join(str(v) for v in form.getlist("directions") if str(v)),
        }
        for name in ("valid_from", "valid_until"):
            value = str(form.get(name) or "").strip()
            if value:
                with contextlib.suppress(ValueError):  # the parser names it
                    value = iso(local_to_utc(value, offset))
            row[name] = value
        buf = io.StringIO()
        writer = csv.DictWriter(buf, list(row))
        writer.writeheader()
        writer.writerow(row)
        (entry,) = parse_csv(buf.getvalue(), by, known_lanes=set(self.lanes) or None)
        return entry

    @staticmethod
    def _field_errors(exc: WatchlistImportError) -> list[str]:
        """'line 2: plate: ...' of a one-row form is only 'plate: ...'."""
        return [e.split(": ", 1)[1] if e.startswith("line ") else e for e in exc.errors]

    async def watchlist_add(self, request: Request) -> Response:
        sess = self.require(request, Role.SUPERVISOR)
        if isinstance(sess, Response):
            return sess
        form = await request.form()
        try:
            entry = self._entry_from_form(form, sess.user.name)
            await run_sync(self.store.add_entries, [entry])
        except WatchlistImportError as exc:
            return await run_sync(self._watchlist_page, request, 400, self._field_errors(exc), None, form_values(form))
        except ValueError as exc:
            return await run_sync(self._watchlist_page, request, 400, [str(exc)], None, form_values(form))
        await run_sync(
            self.audit.record,
            sess.user.name,
            "watchlist_add",
            entry.entry_id,
            entry.model_dump(mode="json"),
            client_ip(request),
        )
        return RedirectResponse("/watchlists?done=added", status_code=303)

    async def watchlist_edit(self, request: Request) -> Response:
        """A changed entry is a new entry (ids are never reused, so each version keeps who listed it) and the
        old one expired; the new one is added first, so the plate is never off the list in between."""
        sess = self.require(request, Role.SUPERVISOR)
        if isinstance(sess, Response):
            return sess
        old_id = request.path_params["entry_id"]
        form = await request.form()
        active = {e.entry_id: e for e in await run_sync(self.store.entries)}
        old = active.get(old_id)
        if old is None:
            return self.not_found(request, N_("No such active watchlist entry."))
        try:
            entry = self._entry_from_form(form, sess.user.name)
            await run_sync(self.store.add_entries, [entry])
        except WatchlistImportError as exc:
            return await run_sync(self._watchlist_page, request, 400, self._field_errors(exc))
        except ValueError as exc:
            return await run_sync(self._watchlist_page, request, 400, [str(exc)])
        await run_sync(self.store.remove_entry, old_id, sess.user.name)
        await run_sync(
            self.audit.record,
            sess.user.name,
            "watchlist_edit",
            old_id,
            {"replaced_by": entry.entry_id, "old": old.model_dump(mode="json"), "new": entry.model_dump(mode="json")},
            client_ip(request),
        )
        return RedirectResponse("/watchlists?done=edited", status_code=303)

    async def watchlist_expire(self, request: Request) -> Response:
        sess = self.require(request, Role.SUPERVISOR)
        if isinstance(sess, Response):
            return sess
        entry_id = request.path_params["entry_id"]
        if not await run_sync(self.store.remove_entry, entry_id, sess.user.name):
            return self.not_found(request, N_("No such active watchlist entry."))
        await run_sync(self.audit.record, sess.user.name, "watchlist_expire", entry_id, {}, client_ip(request))
        return RedirectResponse("/watchlists?done=expired", status_code=303)

    async def watchlist_import(self, request: Request) -> Response:
        sess = self.require(request, Role.SUPERVISOR)
        if isinstance(sess, Response):
            return sess
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return await run_sync(
                self._watchlist_page, request, 400, [self.t(request, N_("Choose a CSV file to import."))]
            )
        data = await upload.read()
        try:
            content = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return await run_sync(
                self._watchlist_page, request, 400, [self.t(request, N_("The file is not UTF-8 text."))]
            )
        try:
            entries = parse_csv(content, sess.user.name, known_lanes=set(self.lanes) or None)
            await run_sync(self.store.add_entries, entries)
        except WatchlistImportError as exc:
            return await run_sync(
                self._watchlist_page,
                request,
                400,
                [self.t(request, N_("Nothing was imported: %(n)s problems, listed by line."), n=len(exc.errors))],
                exc.errors,
            )
        except ValueError as exc:
            return await run_sync(self._watchlist_page, request, 400, [str(exc)])
        await run_sync(
            self.audit.record,
            sess.user.name,
            "watchlist_import",
            upload.filename or "",
            {"entries": len(entries), "entry_ids": [e.entry_id for e in entries][:1000]},
            client_ip(request),
        )
        return RedirectResponse("/watchlists?done=imported", status_code=303)

    # -- routes: API -------------------------------------------------------------------------------

    def api_hits(self, request: Request) -> Response:
        unacked = request.query_params.get("unacked") in ("1", "true", "yes")
        return JSONResponse({"hits": [v.as_json() for v in self.hit_views(unacked_only=unacked)]})

    async def api_ack(self, request: Request) -> Response:
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
            self.ack, hit_id, sess.user.name, note.strip()[:2000], disposition, client_ip(request)
        )
        messages = {
            "already": N_("Already acknowledged by %(by)s."),
            "not_stored": N_("This hit is not stored yet (the archive is behind). Try again in a few seconds."),
            "unknown": N_("No such hit."),
        }
        if status != 200:
            out["message"] = self.t(request, messages[out["message_id"]], by=out.get("by") or "")
        return JSONResponse(out, status_code=status)

    def api_lanes(self, request: Request) -> Response:
        return JSONResponse(
            {lane: [ev.model_dump(mode="json") for ev in evs] for lane, evs in self.lane_view().items()}
        )

    def api_events(self, request: Request) -> Response:
        sess = session_of(request)
        params = self.parse_search(request)
        if params.query is None:
            return JSONResponse({"error": "bad query", "errors": params.errors}, status_code=400)
        size = self.cfg.console.page_size
        offset = (params.page - 1) * size
        found = list(islice(self.matching_events(params.query, params.hit), offset, offset + size + 1))
        self.audit.record(sess.user.name, "search", "events", self._search_detail(params), client_ip(request))
        return JSONResponse(
            {
                "events": [ev.model_dump(mode="json") for ev in found[:size]],
                "page": params.page,
                "more": len(found) > size,
            }
        )

    async def api_stream(self, request: Request) -> Response:
        """Server-Sent Events: `pass`, `hit` and `ack`, read from their streams as they are written."""
        token = request.cookies.get(SESSION_COOKIE, "")
        streams = self._sse_streams()
        wanted = [k for k in request.query_params.get("kinds", "pass,hit,ack").split(",") if k in streams]
        if not wanted:
            return JSONResponse({"error": "kinds: pass, hit and/or ack"}, status_code=400)
        start = self._resume_ids(request.headers.get("last-event-id") or request.query_params.get("from", ""), wanted)
        missing = [k for k in wanted if k not in start]
        if missing:
            tops = await run_sync(lambda: {k: self._stream_top(streams[k]) for k in missing})
            start.update(tops)
        by_stream = {streams[k]: k for k in wanted}
        fields = {"pass": b"event", "hit": b"hit", "ack": b"ack"}

        async def events() -> Any:
            client = async_client(self.redis, socket_timeout=SSE_BLOCK_MS / 1000 + 10)
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
                            data = entry_fields.get(fields[kind])
                            if not data:
                                continue
                            resume = ";".join(f"{k}={ids[streams[k]]}" for k in wanted)
                            lines = "".join(f"data: {line}\n" for line in text(data).split("\n"))
                            yield f"id: {resume}\nevent: {kind}\n{lines}\n"
                    if time.monotonic() - checked > SSE_RECHECK_S:
                        checked = time.monotonic()
                        if await self.session(token) is None:
                            return
            finally:
                with anyio.CancelScope(shield=True):
                    await client.aclose()

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @staticmethod
    def _resume_ids(value: str, wanted: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in value.split(";"):
            kind, _, entry_id = part.partition("=")
            if kind in wanted and _STREAM_ID.match(entry_id):
                out[kind] = entry_id
        return out


def _wrap(fn: Callable[[Request], Any], console: Console) -> Callable[[Request], Awaitable[Response]]:
    """Sync routes run in a worker thread; a database or Redis outage becomes a 503 page, not a trace."""

    async def endpoint(request: Request) -> Response:
        try:
            if inspect.iscoroutinefunction(fn):
                response: Response = await fn(request)
                return response
            return await run_sync(fn, request)
        except (StoreUnavailable, redis.RedisError) as exc:
            what = (
                N_("The database cannot be reached.")
                if isinstance(exc, StoreUnavailable)
                else N_("Redis cannot be reached.")
            )
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "unavailable", "message": console.t(request, what)}, status_code=503)
            return console.render(request, "error.html", 503, title=N_("Unavailable"), message=console.t(request, what))

    return endpoint


def make_app(cfg: AnprConfig, store: Store, redis: redis.Redis) -> Starlette:
    """The console over an open store and Redis client (the caller closes them)."""
    console = Console(cfg, store, redis)
    w = functools.partial(_wrap, console=console)
    routes = [
        Route("/login", w(console.login_page), methods=["GET"]),
        Route("/login", w(console.login_submit), methods=["POST"]),
        Route("/logout", w(console.logout), methods=["POST"]),
        Route("/language", w(console.set_language), methods=["POST"]),
        Route("/", w(console.lanes_page), methods=["GET"]),
        Route("/hits", w(console.hits_page), methods=["GET"]),
        Route("/search", w(console.search_page), methods=["GET"]),
        Route("/search.csv", w(console.search_csv), methods=["GET"]),
        Route("/events/{event_id}", w(console.event_page), methods=["GET"]),
        Route("/events/{event_id}/{kind}.jpg", w(console.event_image), methods=["GET"]),
        Route("/watchlists", w(console.watchlists_page), methods=["GET"]),
        Route("/watchlists", w(console.watchlist_add), methods=["POST"]),
        Route("/watchlists/import", w(console.watchlist_import), methods=["POST"]),
        Route("/watchlists/{entry_id}/edit", w(console.watchlist_edit), methods=["POST"]),
        Route("/watchlists/{entry_id}/expire", w(console.watchlist_expire), methods=["POST"]),
        Route("/system", w(console.system_page), methods=["GET"]),
        Route("/audit", w(console.audit_page), methods=["GET"]),
        Route("/crops/{sha}.jpg", w(console.crop), methods=["GET"]),
        Route("/api/stream", w(console.api_stream), methods=["GET"]),
        Route("/api/hits", w(console.api_hits), methods=["GET"]),
        Route("/api/hits/{hit_id}/ack", w(console.api_ack), methods=["POST"]),
        Route("/api/lanes", w(console.api_lanes), methods=["GET"]),
        Route("/api/events", w(console.api_events), methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def unknown(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return console.not_found(request)
        if status == 405:
            return plain(405, "method not allowed")
        return plain(status, "error")

    app = Starlette(routes=routes, exception_handlers={HTTPException: unknown})
    app.add_middleware(Guard, console=console)
    app.state.console = console
    return app


def serve(cfg: AnprConfig) -> None:
    """`anpr console`: the app on cfg.console.host:port, HTTPS when a certificate is configured."""
    from anpr.redis_client import connect

    store = Store.from_config(cfg.store)
    r = connect(cfg.redis)
    try:
        c = cfg.console
        uvicorn.run(
            make_app(cfg, store, r),
            host=c.host,
            port=c.port,
            ssl_certfile=str(c.tls_certfile) if c.tls_certfile else None,
            ssl_keyfile=str(c.tls_keyfile) if c.tls_keyfile else None,
            proxy_headers=False,
            server_header=False,
            # Event streams never end by themselves: cut them on shutdown after this.
            timeout_graceful_shutdown=2,
            log_level="info",
        )
    finally:
        r.close()
        store.close()
