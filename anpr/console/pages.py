"""The console's HTML pages: login, lanes, hits, search and its CSV export, an event, watchlists, system, audit."""

from __future__ import annotations

import contextlib
import csv
import io
import secrets
from collections.abc import Iterator
from itertools import islice
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from anpr.console import data
from anpr.console.accounts import Role
from anpr.console.i18n import LANGUAGES, N_
from anpr.console.web import (
    LANGUAGE_COOKIE,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Console,
    Routes,
    client_ip,
    crop_url,
    iso,
    local_to_utc,
    plain,
    run_sync,
    session_of,
    tz_offset,
)
from anpr.history_cli import EXPORT_COLUMNS
from anpr.schema import ListSource, MatchMode, PlateEvent, Severity, utc_now
from anpr.store import DISPOSITIONS, watchlist_entries
from anpr.watchlist import WatchlistImportError, parse_csv

# -- login, logout, language -----------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """Only a path of this site: an open redirect would let a link log an officer into someone else's page."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _cookie(
    console: Console, response: Response, name: str, value: str, path: str = "/", max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=console.cfg.console.secure_cookies,
    )


async def login_page(console: Console, request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and await console.session(token):
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    lang = request.query_params.get("lang")
    return _login_form(console, request, status_code=200, language=lang if lang in LANGUAGES else None)


def _login_form(
    console: Console,
    request: Request,
    status_code: int,
    error: str = "",
    username: str = "",
    language: str | None = None,
) -> Response:
    csrf = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = console.render(
        request,
        "login.html",
        status_code,
        language,
        login_csrf=csrf,
        error=error,
        username=username,
        next=safe_next(request.query_params.get("next")),
    )
    _cookie(console, response, LOGIN_CSRF_COOKIE, csrf, path="/login")
    if language is not None:
        _cookie(console, response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
    return response


async def login_submit(console: Console, request: Request) -> Response:
    form = await request.form()
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    given = str(form.get("csrf") or "")
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    t = console.t
    if not cookie or not given or not secrets.compare_digest(cookie.encode(), given.encode()):
        return _login_form(
            console, request, 403, t(request, N_("The login form has expired; please try again.")), username
        )
    if not username or not password:
        return _login_form(console, request, 401, t(request, N_("Enter your user name and password.")), username)
    result = await run_sync(console.accounts.login, username, password, client_ip(request))
    if result.outcome != "ok" or result.token is None or result.session is None:
        message = {
            "throttled": N_("Too many failed logins for this user. Try again later or ask an administrator."),
            "disabled": N_("This account is disabled."),
        }.get(result.outcome, N_("Wrong user name or password."))
        status = 429 if result.outcome == "throttled" else 401
        return _login_form(console, request, status, t(request, message), username)
    target = safe_next(str(form.get("next") or request.query_params.get("next") or "/"))
    response = RedirectResponse(target, status_code=303)
    _cookie(console, response, SESSION_COOKIE, result.token)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    if result.session.user.language:
        _cookie(console, response, LANGUAGE_COOKIE, result.session.user.language, max_age=365 * 86400)
    return response


async def logout(console: Console, request: Request) -> Response:
    sess = session_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    await run_sync(console.accounts.logout, token)
    await run_sync(console.audit.record, sess.user.name, "logout", sess.user.name, {}, client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=console.cfg.console.secure_cookies, httponly=True)
    return response


async def set_language(console: Console, request: Request) -> Response:
    sess = session_of(request)
    form = await request.form()
    language = str(form.get("language") or "")
    if language not in LANGUAGES:
        return plain(400, f"language must be one of {', '.join(LANGUAGES)}")
    await run_sync(console.accounts.set_language, sess.user.name, language)
    await run_sync(
        console.audit.record, sess.user.name, "language", sess.user.name, {"language": language}, client_ip(request)
    )
    back = safe_next(str(form.get("next") or "/"))
    response = RedirectResponse(back, status_code=303)
    _cookie(console, response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
    return response


# -- lanes, hits, search ---------------------------------------------------------------------------


def lanes_page(console: Console, request: Request) -> Response:
    stream_from = data.stream_from(console, ("pass", "hit", "ack"))
    return console.render(
        request,
        "lanes.html",
        lanes=data.lane_view(console),
        nav="lanes",
        stream_from=stream_from,
        stream_kinds="pass,hit,ack",
        lane_history=console.cfg.console.lane_history,
    )


def hits_page(console: Console, request: Request) -> Response:
    stream_from = data.stream_from(console, ("hit", "ack"))
    return console.render(
        request,
        "hits.html",
        hits=data.hit_views(console),
        nav="hits",
        stream_from=stream_from,
        dispositions=DISPOSITIONS,
    )


def search_page(console: Console, request: Request) -> Response:
    sess = session_of(request)
    params = data.parse_search(console, request)
    size = console.cfg.console.page_size
    results: list[PlateEvent] = []
    more = False
    with_hits: set[str] = set()
    if params.query is not None and params.submitted:
        offset = (params.page - 1) * size
        results = list(islice(data.matching_events(console, params.query, params.hit), offset, offset + size + 1))
        more = len(results) > size
        results = results[:size]
        with_hits = data.event_ids_with_hits(console, [e.event_id for e in results])
        console.audit.record(sess.user.name, "search", "events", data.search_detail(params), client_ip(request))
    query = {k: v for k, v in params.raw.items() if v and k != "page"}
    return console.render(
        request,
        "search.html",
        400 if params.errors else 200,
        nav="search",
        form=params.raw,
        fuzzy=params.raw["fuzzy"] in ("1", "on", "true", "yes"),
        hit=params.hit,
        lanes=console.lanes,
        results=results,
        with_hits=with_hits,
        submitted=params.submitted and params.query is not None,
        errors=params.errors,
        page=params.page,
        prev_url=f"/search?{urlencode({**query, 'page': params.page - 1})}" if params.page > 1 else "",
        next_url=f"/search?{urlencode({**query, 'page': params.page + 1})}" if more else "",
        export_url=f"/search.csv?{urlencode(query)}",
    )


def search_csv(console: Console, request: Request) -> Response:
    sess = session_of(request)
    params = data.parse_search(console, request)
    if params.query is None:
        return plain(400, "; ".join(params.errors))
    console.audit.record(sess.user.name, "export", "events", data.search_detail(params), client_ip(request))
    query, hit = params.query, params.hit

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, EXPORT_COLUMNS)
        writer.writeheader()
        for n, ev in enumerate(data.matching_events(console, query, hit), 1):
            row = ev.model_dump(mode="json")
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in EXPORT_COLUMNS})
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


# -- one event, crops ------------------------------------------------------------------------------


def event_page(console: Console, request: Request) -> Response:
    sess = session_of(request)
    event_id = request.path_params["event_id"]
    ev, stored = data.find_event(console, event_id)
    if ev is None:
        return console.not_found(request, N_("No such event."))
    console.audit.record(sess.user.name, "event_view", event_id, {}, client_ip(request))
    matches, complete = data.crossing_matches(console, event_id)
    linked_event = console.store.get_event(ev.linked_event_id) if ev.linked_event_id else None
    reads = [(ch, conf) for ch, conf in zip(ev.plate, ev.char_confidences, strict=False)]
    return console.render(
        request,
        "event.html",
        nav="",
        ev=ev,
        stored=stored,
        reads=reads,
        plate_crop=crop_url(ev.plate_image) or (None if stored else f"/events/{ev.event_id}/plate.jpg"),
        vehicle_crop=crop_url(ev.vehicle_image) or (None if stored else f"/events/{ev.event_id}/vehicle.jpg"),
        linked_event=linked_event,
        trailers=data.linked_events(console, event_id),
        delivery=data.delivery(console, event_id),
        publisher_group=console.cfg.publisher.group,
        matches=matches,
        matches_complete=complete,
        alerts=data.event_alerts(console, event_id),
        hits=data.event_hits(console, event_id),
        dispositions=DISPOSITIONS,
    )


def event_image(console: Console, request: Request) -> Response:
    """An event's crop: the stored file, or Redis's copy (with a TTL) while the archive has not stored it."""
    event_id, kind = request.path_params["event_id"], request.path_params["kind"]
    if kind not in ("plate", "vehicle"):
        return console.not_found(request)
    ev = console.store.get_event(event_id)
    if ev is not None:
        url = crop_url(ev.plate_image if kind == "plate" else ev.vehicle_image)
        if url:
            return RedirectResponse(url, status_code=302)
    key = console.keys.plate_image(event_id) if kind == "plate" else console.keys.vehicle_image(event_id)
    blob = console.redis.get(key)
    if not isinstance(blob, bytes):
        return console.not_found(request)
    return Response(blob, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})


def crop(console: Console, request: Request) -> Response:
    try:
        path = console.store.crop_path(request.path_params["sha"])
    except ValueError:
        return console.not_found(request)
    if not path.is_file():
        return console.not_found(request)
    # Named by its content: it never changes.
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=31536000"})


# -- system, audit ---------------------------------------------------------------------------------


async def system_page(console: Console, request: Request) -> Response:
    state, health = await run_sync(data.system_state, console), await data.health(console)
    return console.render(
        request, "system.html", nav="system", state=state, health=health, health_url=console.cfg.console.health_url
    )


def audit_page(console: Console, request: Request) -> Response:
    sess = console.require(request, Role.ADMIN)
    if isinstance(sess, Response):
        return sess
    q = request.query_params
    before = int(q["before"]) if q.get("before", "").isdigit() else None
    actor, action = q.get("actor", "").strip() or None, q.get("action", "").strip() or None
    rows = console.audit.rows(limit=100, before_id=before, actor=actor, action=action)
    check = console.audit.verify() if q.get("verify") else None
    older = ""
    if len(rows) == 100:
        filters = {k: v for k, v in (("actor", actor), ("action", action)) if v}
        older = "/audit?" + urlencode({**filters, "before": rows[-1].id})
    return console.render(
        request,
        "audit.html",
        nav="audit",
        rows=rows,
        check=check,
        actor=actor or "",
        action=action or "",
        older=older,
    )


# -- watchlists ------------------------------------------------------------------------------------


def form_values(form: FormData) -> dict[str, Any]:
    """The add form as sent, to show it again with its mistakes."""
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["lanes"] = [str(v) for v in form.getlist("lanes")]
    values["directions"] = [str(v) for v in form.getlist("directions")]
    return values


def _watchlist_page(
    console: Console,
    request: Request,
    status_code: int = 200,
    errors: list[str] | None = None,
    import_errors: list[str] | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    show_removed = request.query_params.get("all") == "1"
    entries = console.store.entries(include_removed=show_removed)
    removed: dict[str, Any] = {}
    if show_removed:
        c = watchlist_entries.c
        with console.store.engine.connect() as conn:
            removed = {
                r.entry_id: r
                for r in conn.execute(
                    sa.select(c.entry_id, c.removed_at, c.removed_by).where(c.removed_at.is_not(None))
                )
            }
    return console.render(
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
        lanes=console.lanes,
        modes=[m.value for m in MatchMode],
        severities=[s.value for s in Severity],
        sources=[s.value for s in ListSource],
    )


async def watchlists_page(console: Console, request: Request) -> Response:
    sess = console.require(request, Role.SUPERVISOR)
    if isinstance(sess, Response):
        return sess
    return await run_sync(_watchlist_page, console, request)


def _entry_from_form(console: Console, form: FormData, by: str) -> Any:
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
    (entry,) = parse_csv(buf.getvalue(), by, known_lanes=set(console.lanes) or None)
    return entry


def _field_errors(exc: WatchlistImportError) -> list[str]:
    """'line 2: plate: ...' of a one-row form is only 'plate: ...'."""
    return [e.split(": ", 1)[1] if e.startswith("line ") else e for e in exc.errors]


async def watchlist_add(console: Console, request: Request) -> Response:
    sess = console.require(request, Role.SUPERVISOR)
    if isinstance(sess, Response):
        return sess
    form = await request.form()
    try:
        entry = _entry_from_form(console, form, sess.user.name)
        await run_sync(console.store.add_entries, [entry])
    except WatchlistImportError as exc:
        return await run_sync(_watchlist_page, console, request, 400, _field_errors(exc), None, form_values(form))
    except ValueError as exc:
        return await run_sync(_watchlist_page, console, request, 400, [str(exc)], None, form_values(form))
    await run_sync(
        console.audit.record,
        sess.user.name,
        "watchlist_add",
        entry.entry_id,
        entry.model_dump(mode="json"),
        client_ip(request),
    )
    return RedirectResponse("/watchlists?done=added", status_code=303)


async def watchlist_edit(console: Console, request: Request) -> Response:
    """A changed entry is a new entry (ids are never reused, so each version keeps who listed it) and the
    old one expired; the new one is added first, so the plate is never off the list in between."""
    sess = console.require(request, Role.SUPERVISOR)
    if isinstance(sess, Response):
        return sess
    old_id = request.path_params["entry_id"]
    form = await request.form()
    active = {e.entry_id: e for e in await run_sync(console.store.entries)}
    old = active.get(old_id)
    if old is None:
        return console.not_found(request, N_("No such active watchlist entry."))
    try:
        entry = _entry_from_form(console, form, sess.user.name)
        await run_sync(console.store.add_entries, [entry])
    except WatchlistImportError as exc:
        return await run_sync(_watchlist_page, console, request, 400, _field_errors(exc))
    except ValueError as exc:
        return await run_sync(_watchlist_page, console, request, 400, [str(exc)])
    await run_sync(console.store.remove_entry, old_id, sess.user.name)
    await run_sync(
        console.audit.record,
        sess.user.name,
        "watchlist_edit",
        old_id,
        {"replaced_by": entry.entry_id, "old": old.model_dump(mode="json"), "new": entry.model_dump(mode="json")},
        client_ip(request),
    )
    return RedirectResponse("/watchlists?done=edited", status_code=303)


async def watchlist_expire(console: Console, request: Request) -> Response:
    sess = console.require(request, Role.SUPERVISOR)
    if isinstance(sess, Response):
        return sess
    entry_id = request.path_params["entry_id"]
    if not await run_sync(console.store.remove_entry, entry_id, sess.user.name):
        return console.not_found(request, N_("No such active watchlist entry."))
    await run_sync(console.audit.record, sess.user.name, "watchlist_expire", entry_id, {}, client_ip(request))
    return RedirectResponse("/watchlists?done=expired", status_code=303)


async def watchlist_import(console: Console, request: Request) -> Response:
    sess = console.require(request, Role.SUPERVISOR)
    if isinstance(sess, Response):
        return sess
    t = console.t
    form = await request.form()
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        return await run_sync(_watchlist_page, console, request, 400, [t(request, N_("Choose a CSV file to import."))])
    content_bytes = await upload.read()
    try:
        content = content_bytes.decode("utf-8-sig")
    except UnicodeDecodeError:
        return await run_sync(_watchlist_page, console, request, 400, [t(request, N_("The file is not UTF-8 text."))])
    try:
        entries = parse_csv(content, sess.user.name, known_lanes=set(console.lanes) or None)
        await run_sync(console.store.add_entries, entries)
    except WatchlistImportError as exc:
        return await run_sync(
            _watchlist_page,
            console,
            request,
            400,
            [t(request, N_("Nothing was imported: %(n)s problems, listed by line."), n=len(exc.errors))],
            exc.errors,
        )
    except ValueError as exc:
        return await run_sync(_watchlist_page, console, request, 400, [str(exc)])
    await run_sync(
        console.audit.record,
        sess.user.name,
        "watchlist_import",
        upload.filename or "",
        {"entries": len(entries), "entry_ids": [e.entry_id for e in entries][:1000]},
        client_ip(request),
    )
    return RedirectResponse("/watchlists?done=imported", status_code=303)


ROUTES: Routes = [
    ("/login", "GET", login_page),
    ("/login", "POST", login_submit),
    ("/logout", "POST", logout),
    ("/language", "POST", set_language),
    ("/", "GET", lanes_page),
    ("/hits", "GET", hits_page),
    ("/search", "GET", search_page),
    ("/search.csv", "GET", search_csv),
    ("/events/{event_id}", "GET", event_page),
    ("/events/{event_id}/{kind}.jpg", "GET", event_image),
    ("/watchlists", "GET", watchlists_page),
    ("/watchlists", "POST", watchlist_add),
    ("/watchlists/import", "POST", watchlist_import),
    ("/watchlists/{entry_id}/edit", "POST", watchlist_edit),
    ("/watchlists/{entry_id}/expire", "POST", watchlist_expire),
    ("/system", "GET", system_page),
    ("/audit", "GET", audit_page),
    ("/crops/{sha}.jpg", "GET", crop),
]
