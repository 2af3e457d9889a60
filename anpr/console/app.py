"""The officers' web console: live lanes and hits, search, events, watchlists, system state, audit log.

One Starlette app over the store, Redis and anpr.console.accounts; `anpr console` serves it with uvicorn.
The routes are in pages.py (HTML), api.py (JSON) and live.py (the event stream), over the reads of data.py
and the shared state and rendering of web.py; this module adds the guard and assembles them.

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

import inspect
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import anyio
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anpr.config import AnprConfig
from anpr.console import api, live, pages
from anpr.console.i18n import HERE, N_
from anpr.console.web import SESSION_COOKIE, SESSION_SCOPE_KEY, Console, Handler, plain, run_sync
from anpr.store import Store, StoreUnavailable

MAX_BODY_BYTES = 5 * 1024 * 1024  # a watchlist CSV of ~50 000 rows


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


def _wrap(fn: Handler, console: Console) -> Callable[[Request], Awaitable[Response]]:
    """Sync routes run in a worker thread; a database or Redis outage becomes a 503 page, not a trace."""

    async def endpoint(request: Request) -> Response:
        try:
            if inspect.iscoroutinefunction(fn):
                response: Response = await fn(console, request)
                return response
            return await run_sync(fn, console, request)
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
    routes: list[Route | Mount] = [
        Route(path, _wrap(fn, console), methods=[method])
        for path, method, fn in pages.ROUTES + live.ROUTES + api.ROUTES
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))

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
