"""What every console route shares: the Console state, rendering in the reader's language, errors, small helpers.

The lowest layer of the console: data.py, pages.py, api.py and live.py import from here, app.py assembles
them, so nothing imports app.py back.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import jinja2
import redis
from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from anpr.config import AnprConfig
from anpr.console.accounts import Accounts, Role, Session
from anpr.console.audit import AuditLog
from anpr.console.i18n import LANGUAGE_NAMES, N_, environment, gettext, js_messages, pick_language
from anpr.keys import Keys
from anpr.schema import ListSource, MatchMode, PlateEvent, Severity, WatchlistEntry
from anpr.store import Store

SESSION_COOKIE = "anpr_session"
LOGIN_CSRF_COOKIE = "anpr_csrf_login"
LANGUAGE_COOKIE = "anpr_lang"
SESSION_SCOPE_KEY = "anpr.session"
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


def plain(status: int, message: str) -> Response:
    return Response(message, status_code=status, media_type="text/plain; charset=utf-8")


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


# -- the console's state ---------------------------------------------------------------------------


class Console:
    """One store, one Redis client and the accounts, and how a page is rendered for its reader."""

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


# A route: (path, method, handler). Sync handlers run in a worker thread (app.py wraps them).
Handler = Callable[[Console, Request], Any]
Routes = list[tuple[str, str, Handler]]
