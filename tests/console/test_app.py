"""The console's web app through HTTP: sessions, roles, CSRF, pages, search, acks, live stream, catalogues.

Starlette's TestClient on a real store (SQLite; PostgreSQL where the SQL differs) and the shared Redis
under a key prefix of the test's own. The live stream is read from a real uvicorn server, as a browser
would. Real-browser tests are in test_browser.py.
"""

from __future__ import annotations

import csv
import gettext
import io
import json
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis
import sqlalchemy as sa
import uvicorn
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from starlette.applications import Starlette
from support import free_port, make_event

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; httpx is what this project installs.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from anpr.config import REPO_ROOT, AnprConfig, load_config
from anpr.console.accounts import Role
from anpr.console.app import Console, make_app
from anpr.console.i18n import LOCALE_DIR
from anpr.history_cli import EXPORT_COLUMNS
from anpr.keys import Keys
from anpr.redis_client import connect
from anpr.schema import Hit, MatchMode, PlateEvent, Severity, WatchlistEntry
from anpr.store import EventRecord, Store, audit_log

REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "correct-horse-battery"
USERS = {"officer": Role.OFFICER, "super": Role.SUPERVISOR, "admin": Role.ADMIN}
BASE = "https://testserver"  # cookies are Secure (console.secure_cookies defaults to true)
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"

PAGES = [
    "/",
    "/hits",
    "/search",
    "/search?plate=AA0001BC",
    "/search.csv",
    "/events/some-event",
    "/watchlists",
    "/system",
    "/audit",
    f"/crops/{'a' * 64}.jpg",
]
API = [
    ("GET", "/api/stream"),
    ("GET", "/api/hits?unacked=1"),
    ("GET", "/api/lanes"),
    ("GET", "/api/events?plate=AA0001BC"),
    ("POST", "/api/hits/abc/ack"),
]


@dataclass
class Env:
    cfg: AnprConfig
    store: Store
    redis: redis.Redis
    keys: Keys
    app: Starlette
    console: Console
    browser: Callable[[str | None], TestClient]


def _config(tmp_path: Path, prefix: str, store_url: str | None = None) -> AnprConfig:
    return load_config(
        None,
        redis={"url": REDIS_URL, "prefix": prefix},
        store={"url": store_url, "data_dir": str(tmp_path / "store")},
        console={"health_url": f"http://127.0.0.1:{free_port()}/health", "page_size": 10},
        cameras=[
            {"name": "cam1", "source": "unused.mp4", "lane": "l1"},
            {"name": "cam2", "source": "unused.mp4", "lane": "l2"},
        ],
    )


@pytest.fixture
def env_factory(tmp_path: Path, keys: Keys) -> Iterator[Callable[[str | None], Env]]:
    opened: list[tuple[Store, redis.Redis, list[TestClient]]] = []

    def make(store_url: str | None = None) -> Env:
        cfg = _config(tmp_path, keys.prefix, store_url)
        store = Store.from_config(cfg.store)
        r = connect(cfg.redis)
        app = make_app(cfg, store, r)
        console: Console = app.state.console
        for name, role in USERS.items():
            console.accounts.add_user(name, role, PASSWORD)
        clients: list[TestClient] = []
        opened.append((store, r, clients))

        def browser(user: str | None = None) -> TestClient:
            tc = TestClient(app, base_url=BASE, follow_redirects=False)
            tc.__enter__()
            clients.append(tc)
            if user is not None:
                login(tc, user)
            return tc

        return Env(cfg, store, r, keys, app, console, browser)

    yield make
    for store, r, clients in opened:
        for tc in clients:
            tc.__exit__(None, None, None)
        r.close()
        store.close()


@pytest.fixture
def env(env_factory: Callable[[str | None], Env]) -> Env:
    return env_factory(None)


def login(tc: TestClient, user: str, password: str = PASSWORD) -> httpx.Response:
    form = tc.get("/login")
    assert form.status_code == 200
    token = tc.cookies.get("anpr_csrf_login")
    assert token and f'value="{token}"' in form.text
    return tc.post("/login", data={"username": user, "password": password, "csrf": token})


def csrf_of(tc: TestClient) -> str:
    page = tc.get("/hits")
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert m, page.text[:500]
    return m.group(1)


def event(i: int, plate: str | None = None, lane: str = "l1", **kw: Any) -> PlateEvent:
    ev = make_event(i, plate=plate)
    data = ev.model_dump()
    data.update(lane=lane, event_id=PlateEvent.make_id(ev.site, lane, ev.plate, ev.first_seen), **kw)
    return PlateEvent(**data)


def hit_for(ev: PlateEvent, severity: Severity = Severity.CHECK, entry_id: str = "e1") -> Hit:
    entry = WatchlistEntry(entry_id=entry_id, plate=ev.plate, severity=severity, added_by="super")
    return Hit(
        hit_id=Hit.make_id(ev.event_id, entry_id),
        matched_as=MatchMode.EXACT,
        raised_at=ev.best_seen + timedelta(seconds=1),
        event=ev,
        entry=entry,
    )


def audit_actions(store: Store) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(audit_log.c.actor, audit_log.c.action, audit_log.c.target).order_by(audit_log.c.id)
        )
        return [(r.actor, r.action, r.target) for r in rows]


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-event-id="([^"]+)"', html)


# -- sessions, roles, CSRF -------------------------------------------------------------------------


def test_every_page_redirects_to_login_without_a_session(env: Env) -> None:
    tc = env.browser(None)
    for path in PAGES:
        resp = tc.get(path)
        assert resp.status_code == 303, path
        location = resp.headers["location"]
        assert location.startswith("/login?next="), (path, location)
        assert httpx.URL(location).params["next"] == path
    # A forged session cookie is no session.
    tc.cookies.set("anpr_session", "forged", domain="testserver")
    assert tc.get("/").status_code == 303
    assert tc.get("/login").status_code == 200
    assert tc.get("/static/console.js").status_code == 200


def test_every_api_call_is_401_without_a_session(env: Env) -> None:
    tc = env.browser(None)
    for method, path in API:
        resp = tc.request(method, path, json={"disposition": "checked"} if method == "POST" else None)
        assert resp.status_code == 401, path
        assert resp.json() == {"error": "login required"}


def test_login_logout_and_bad_passwords(env: Env) -> None:
    tc = env.browser(None)
    bad = login(tc, "officer", "not-the-password")
    assert bad.status_code == 401
    assert 'class="flash-error"' in bad.text
    assert "anpr_session" not in tc.cookies

    ok = login(tc, "officer")
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "anpr_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=strict" in cookie.lower()
    page = tc.get("/")
    assert page.status_code == 200
    assert '<span id="whoami">officer</span>' in page.text

    token = csrf_of(tc)
    out = tc.post("/logout", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert tc.get("/").status_code == 303
    actions = audit_actions(env.store)
    assert ("officer", "login_failed", "officer") in actions
    assert ("officer", "login", "officer") in actions
    assert ("officer", "logout", "officer") in actions


def test_login_follows_next_but_only_within_the_site(env: Env) -> None:
    tc = env.browser(None)
    tc.get("/login?next=/hits")
    token = tc.cookies.get("anpr_csrf_login")
    resp = tc.post("/login?next=/hits", data={"username": "officer", "password": PASSWORD, "csrf": token})
    assert resp.headers["location"] == "/hits"
    tc2 = env.browser(None)
    tc2.get("/login")
    token = tc2.cookies.get("anpr_csrf_login")
    data = {"username": "officer", "password": PASSWORD, "csrf": token, "next": "//evil.example/x"}
    assert tc2.post("/login", data=data).headers["location"] == "/"


def test_the_login_form_needs_its_double_submit_token(env: Env) -> None:
    tc = env.browser(None)
    tc.get("/login")
    resp = tc.post("/login", data={"username": "officer", "password": PASSWORD, "csrf": "guessed"})
    assert resp.status_code == 403
    assert "anpr_session" not in tc.cookies


def test_sixth_login_is_refused_even_with_the_right_password(env: Env) -> None:
    tc = env.browser(None)
    for _ in range(env.cfg.console.max_login_failures):
        assert login(tc, "officer", "wrong-password-1").status_code == 401
    refused = login(tc, "officer")
    assert refused.status_code == 429
    assert 'class="flash-error"' in refused.text
    assert "anpr_session" not in tc.cookies


def test_posts_without_the_csrf_token_are_403(env: Env) -> None:
    tc = env.browser("admin")
    token = csrf_of(tc)
    for path, data in [
        ("/logout", {}),
        ("/language", {"language": "ro"}),
        ("/watchlists", {"plate": "AA1234BB"}),
        ("/watchlists/x/expire", {}),
    ]:
        assert tc.post(path, data=data).status_code == 403, path
        assert tc.post(path, data={**data, "csrf": "wrong" + token}).status_code == 403, path
    ack = tc.post("/api/hits/abc/ack", json={"disposition": "checked"})
    assert ack.status_code == 403
    assert (
        tc.post("/api/hits/abc/ack", json={"disposition": "checked"}, headers={"X-CSRF-Token": "no"}).status_code == 403
    )
    assert env.store.entries() == []
    # Still logged in: none of the refused POSTs did anything.
    assert tc.get("/").status_code == 200


def test_roles(env: Env) -> None:
    officer, supervisor, admin = env.browser("officer"), env.browser("super"), env.browser("admin")
    assert officer.get("/watchlists").status_code == 403
    assert officer.get("/audit").status_code == 403
    token = csrf_of(officer)
    assert officer.post("/watchlists", data={"csrf": token, "plate": "AA1234BB"}).status_code == 403
    assert env.store.entries() == []
    assert 'data-nav="watchlists"' not in officer.get("/").text
    assert supervisor.get("/watchlists").status_code == 200
    assert supervisor.get("/audit").status_code == 403
    assert admin.get("/watchlists").status_code == 200
    audit = admin.get("/audit", params={"verify": "1"})
    assert audit.status_code == 200
    assert '<p class="flash-ok" id="audit-check">' in audit.text
    assert re.search(r'data-audit-id="\d+"', audit.text)


# -- search and export -----------------------------------------------------------------------------


def _search_data(store: Store) -> dict[str, PlateEvent]:
    evs = {
        "bh": event(1, "BH2741KX"),
        "bh_later": event(2, "BH2741KX", lane="l2"),
        "b8": event(3, "B82741KX"),  # a confusable read of the same plate
        "other": event(4, "AA0001BC"),
        "one_off": event(5, "BH2741K"),  # one character lost
    }
    store.save_events([EventRecord(ev, JPEG) for ev in evs.values()])
    store.save_hits([hit_for(evs["bh_later"])])
    return evs


def test_search_by_cyrillic_plate_fuzzy_and_hit_filter(
    env_factory: Callable[[str | None], Env], store_url: str | None
) -> None:
    env = env_factory(store_url)
    evs = _search_data(env.store)
    tc = env.browser("officer")

    exact = tc.get("/search", params={"plate": "вн 2741 кх"})
    assert exact.status_code == 200
    assert row_ids(exact.text) == [evs["bh_later"].event_id, evs["bh"].event_id]
    assert ">BH2741KX</a>" in exact.text

    fuzzy = tc.get("/search", params={"plate": "ВН2741КХ", "fuzzy": "1"})
    assert set(row_ids(fuzzy.text)) == {evs[k].event_id for k in ("bh", "bh_later", "b8", "one_off")}

    with_hit = tc.get("/search", params={"plate": "ВН2741КХ", "fuzzy": "1", "hit": "yes"})
    assert row_ids(with_hit.text) == [evs["bh_later"].event_id]
    without = tc.get("/search", params={"plate": "ВН2741КХ", "fuzzy": "1", "hit": "no"})
    assert set(row_ids(without.text)) == {evs[k].event_id for k in ("bh", "b8", "one_off")}

    lane = tc.get("/search", params={"plate": "BH2741KX", "lane": "l2"})
    assert row_ids(lane.text) == [evs["bh_later"].event_id]
    assert tc.get("/search", params={"plate": "BH2741KX", "country": "MD"}).text.count("<tr data-event-id") == 0
    # Times typed in the browser's zone: UTC+3 (getTimezoneOffset -180); bh is seen 08:00:02 UTC, 11:00:02 local.
    local = tc.get(
        "/search",
        params={"plate": "BH2741KX", "since": "2025-06-01T11:00", "until": "2025-06-01T11:00:03", "tz": "-180"},
    )
    assert row_ids(local.text) == [evs["bh"].event_id]

    api = tc.get("/api/events", params={"plate": "вн2741кх"})
    assert [e["event_id"] for e in api.json()["events"]] == [evs["bh_later"].event_id, evs["bh"].event_id]
    assert ("officer", "search", "events") in audit_actions(env.store)


def test_search_rejects_bad_input_with_a_message(env: Env) -> None:
    tc = env.browser("officer")
    for params in ({"plate": "---"}, {"since": "yesterday"}, {"country": "Ukraine"}, {"lane": "nowhere"}):
        resp = tc.get("/search", params=params)
        assert resp.status_code == 400, params
        assert 'class="flash-error"' in resp.text
        assert "<tr data-event-id" not in resp.text
    assert tc.get("/api/events", params={"since": "yesterday"}).status_code == 400


def test_search_pages(env: Env) -> None:
    evs = [event(i, f"AB{i:04d}CD") for i in range(25)]
    env.store.save_events([EventRecord(ev) for ev in evs])
    tc = env.browser("officer")
    newest_first = [ev.event_id for ev in reversed(evs)]
    first = tc.get("/search", params={"lane": "l1"})
    assert row_ids(first.text) == newest_first[:10]
    assert 'id="next-page"' in first.text and 'id="prev-page"' not in first.text
    next_url = re.search(r'id="next-page"[^>]*href="([^"]+)"', first.text)
    assert next_url
    second = tc.get(next_url.group(1).replace("&amp;", "&"))
    assert row_ids(second.text) == newest_first[10:20]
    third = tc.get("/search", params={"lane": "l1", "page": "3"})
    assert row_ids(third.text) == newest_first[20:]
    assert 'id="next-page"' not in third.text and 'id="prev-page"' in third.text


def test_csv_export_of_the_search(env: Env) -> None:
    evs = _search_data(env.store)
    tc = env.browser("officer")
    page = tc.get("/search", params={"plate": "ВН2741КХ", "fuzzy": "1"})
    link = re.search(r'id="export-csv"[^>]*href="([^"]+)"', page.text)
    assert link
    resp = tc.get(link.group(1).replace("&amp;", "&"))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(rows[0]) == EXPORT_COLUMNS
    assert {r["event_id"] for r in rows} == {evs[k].event_id for k in ("bh", "bh_later", "b8", "one_off")}
    first = next(r for r in rows if r["event_id"] == evs["bh"].event_id)
    assert first["plate"] == "BH2741KX" and first["lane"] == "l1" and first["linked_event_id"] == ""
    assert first["plate_image"].startswith("crops/")
    only_hits = tc.get("/search.csv", params={"plate": "BH2741KX", "hit": "yes"})
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(only_hits.text))] == [evs["bh_later"].event_id]
    assert ("officer", "export", "events") in audit_actions(env.store)


# -- events ----------------------------------------------------------------------------------------


def _stream_event(env: Env, ev: PlateEvent) -> str:
    """XADD an event as the event sink does (with its seen marker holding the entry id)."""
    entry_id = env.redis.xadd(env.keys.events, {"event": ev.model_dump_json()})
    env.redis.set(env.keys.event_seen(ev.event_id), entry_id, ex=3600)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def test_event_page(env: Env) -> None:
    tractor = event(1, "BH2741KX")
    trailer = event(2, "BH1234XT", linked_event_id=tractor.event_id)
    env.store.save_events([EventRecord(tractor, JPEG, JPEG + b"v"), EventRecord(trailer, JPEG + b"t")])
    env.store.save_hits([hit_for(tractor, Severity.STOP)])
    tc = env.browser("officer")

    page = tc.get(f"/events/{tractor.event_id}")
    assert page.status_code == 200
    crop = re.search(r'<img id="plate-crop" src="(/crops/[0-9a-f]{64}\.jpg)"', page.text)
    assert crop and 'id="vehicle-crop"' in page.text
    image = tc.get(crop.group(1))
    assert image.status_code == 200 and image.content == JPEG and image.headers["content-type"] == "image/jpeg"
    assert 'id="reads"' in page.text
    linked = page.text[page.text.index('id="linked"') :]
    assert f'href="/events/{trailer.event_id}"' in linked[: linked.index("</section>")]
    assert f'data-hit-id="{Hit.make_id(tractor.event_id, "e1")}"' in page.text
    assert 'id="delivery" data-status="unknown"' in page.text  # never on the stream here
    back = tc.get(f"/events/{trailer.event_id}").text
    assert f'href="/events/{tractor.event_id}"' in back
    assert ("officer", "event_view", tractor.event_id) in audit_actions(env.store)
    assert tc.get("/events/nothing-here").status_code == 404
    assert tc.get(f"/crops/{'0' * 64}.jpg").status_code == 404
    assert tc.get("/crops/..%2f..%2fetc.jpg").status_code == 404


def test_event_delivery_to_the_partner(env: Env) -> None:
    r, keys, group = env.redis, env.keys, env.cfg.publisher.group
    evs = [event(i, f"AC{i:04d}EF") for i in range(4)]
    ids = [_stream_event(env, ev) for ev in evs]
    tc = env.browser("officer")
    no_publisher = tc.get(f"/events/{evs[0].event_id}").text
    assert 'id="delivery" data-status="unknown"' in no_publisher and f"<code>{group}</code>" in no_publisher
    r.xgroup_create(keys.events, group, id="0")
    r.xreadgroup(group, "pub", {keys.events: ">"}, count=3)  # evs 0-2 handed out, ev 3 not read yet
    r.xack(keys.events, group, ids[0], ids[1])
    r.xadd(keys.exchange_dead, {"source_stream": keys.events, "source_id": ids[1], "reason": "refused", "fields": "{}"})

    def status(ev: PlateEvent) -> str:
        m = re.search(r'id="delivery" data-status="([^"]+)"', tc.get(f"/events/{ev.event_id}").text)
        assert m
        return m.group(1)

    # Stream-only events (not archived yet) show too.
    assert [status(ev) for ev in evs] == ["delivered", "dead-lettered", "pending", "pending"]
    r.delete(keys.event_seen(evs[0].event_id))
    env.store.save_events([EventRecord(evs[0])])
    assert status(evs[0]) == "unknown"


def test_event_shows_the_partners_crossing_and_alerts(env: Env) -> None:
    ours = event(1, "BH2741KX")
    env.store.save_events([EventRecord(ours)])
    match = {
        "match_id": "m1",
        "exact": False,
        "exit_event_id": "md-exit-1",
        "entry_event_id": ours.event_id,
        "exit_plate": "8H2741KX",
        "entry_plate": ours.plate,
        "exit_site": "md-leuseni",
        "entry_site": ours.site,
        "exited_at": "2025-06-01T07:40:00Z",
        "entered_at": "2025-06-01T08:00:01Z",
        "transit_s": 1201.0,
    }
    env.redis.xadd(env.keys.crossing_matches, {"match": json.dumps(match)})
    text = env.browser("officer").get(f"/events/{ours.event_id}").text
    crossing = text[text.index('id="crossing"') :]
    crossing = crossing[: crossing.index("</section>")]
    assert "8H2741KX" in crossing and "md-leuseni" in crossing


# -- hits and acknowledgements ---------------------------------------------------------------------


def test_hits_page_order_and_stream_only_hits(env: Env) -> None:
    info, stop, check, acked = (
        hit_for(event(1, "AA0001AA"), Severity.INFO),
        hit_for(event(2, "AA0002AA"), Severity.STOP),
        hit_for(event(3, "AA0003AA"), Severity.CHECK),
        hit_for(event(4, "AA0004AA"), Severity.STOP),
    )
    env.store.save_hits([info, stop, check, acked])
    env.store.ack_hit(acked.hit_id, "super", "done", disposition="checked")
    fresh = hit_for(event(5, "AA0005AA"), Severity.CHECK)  # only on the stream: the archive lags
    env.redis.xadd(env.keys.hits, {"hit": fresh.model_dump_json()})
    tc = env.browser("officer")
    page = tc.get("/hits").text
    order = re.findall(r'data-hit-id="([^"]+)"', page)
    assert order == [stop.hit_id, fresh.hit_id, check.hit_id, info.hit_id, acked.hit_id]
    assert re.search(rf'data-hit-id="{acked.hit_id}" data-acked="true"', page)
    assert '<span class="acked-by">super</span>' in page
    assert '<span class="severity"' in page and ">stop</span>" in page
    api = tc.get("/api/hits", params={"unacked": "1"}).json()["hits"]
    assert [h["hit"]["hit_id"] for h in api] == order[:-1]
    assert [h["stored"] for h in api] == [True, False, True, True]


def test_ack_stores_tells_every_console_and_audits(env: Env) -> None:
    h = hit_for(event(1, "BH2741KX"), Severity.STOP)
    env.store.save_hits([h])
    tc = env.browser("officer")
    headers = {"X-CSRF-Token": csrf_of(tc)}
    resp = tc.post(f"/api/hits/{h.hit_id}/ack", json={"disposition": "stopped", "note": "driver held"}, headers=headers)
    assert resp.status_code == 200
    body = resp.json()
    assert body["hit_id"] == h.hit_id and body["by"] == "officer" and body["disposition"] == "stopped"
    (stored,) = env.store.list_hits()
    assert (stored.acked_by, stored.ack_note, stored.disposition) == ("officer", "driver held", "stopped")
    ((_, fields),) = env.redis.xrange(env.keys.console_acks)
    assert json.loads(fields[b"ack"]) == body
    assert ("officer", "hit_ack", h.hit_id) in audit_actions(env.store)

    other = env.browser("super")
    again = other.post(
        f"/api/hits/{h.hit_id}/ack", json={"disposition": "checked"}, headers={"X-CSRF-Token": csrf_of(other)}
    )
    assert again.status_code == 409 and again.json()["by"] == "officer"
    assert env.store.list_hits()[0].acked_by == "officer"
    bad = tc.post(f"/api/hits/{h.hit_id}/ack", json={"disposition": "shrug"}, headers=headers)
    assert bad.status_code == 400
    assert tc.post("/api/hits/unknown/ack", json={"disposition": "checked"}, headers=headers).status_code == 404


def test_ack_of_a_hit_the_archive_has_not_stored_yet(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    late, never = hit_for(event(1, "BH2741KX")), hit_for(event(2, "AA0001BC"))
    for h in (late, never):
        env.redis.xadd(env.keys.hits, {"hit": h.model_dump_json()})
    tc = env.browser("officer")
    headers = {"X-CSRF-Token": csrf_of(tc)}
    # The archive stores the first one while the ack waits for it.
    archive = threading.Timer(0.5, env.store.save_hits, args=([late],))
    archive.start()
    started = time.monotonic()
    resp = tc.post(f"/api/hits/{late.hit_id}/ack", json={"disposition": "checked"}, headers=headers)
    archive.join()
    assert resp.status_code == 200, resp.text
    assert 0.4 < time.monotonic() - started < 3
    assert env.store.list_hits()[0].acked_by == "officer"

    monkeypatch.setattr("anpr.console.api.ACK_WAIT_S", 0.3)
    refused = tc.post(f"/api/hits/{never.hit_id}/ack", json={"disposition": "checked"}, headers=headers)
    assert refused.status_code == 409
    assert refused.json()["error"] == "not stored yet" and refused.json()["message"]
    assert len(env.redis.xrange(env.keys.console_acks)) == 1


# -- the live stream -------------------------------------------------------------------------------


@pytest.fixture
def served(env: Env) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _live_client(env: Env, base: str, user: str) -> httpx.Client:
    """A client holding `user`'s session cookie (not Secure: the test server speaks plain HTTP)."""
    tc = env.browser(user)
    return httpx.Client(base_url=base, cookies={"anpr_session": tc.cookies["anpr_session"]}, timeout=10)


def _read_events(lines: Iterator[str], count: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in current:
                out.append(current)
                if len(out) == count:
                    return out
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = current.get(name, "") + value
    return out


def test_live_stream_of_hits_passes_and_acks(env: Env, served: str) -> None:
    client = _live_client(env, served, "officer")
    h = hit_for(event(1, "BH2741KX"), Severity.STOP)
    ev = event(2, "AA0001BC", lane="l2")
    with client.stream("GET", "/api/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        assert next(lines).startswith("retry:")
        started = time.monotonic()
        env.redis.xadd(env.keys.hits, {"hit": h.model_dump_json()})
        env.redis.xadd(env.keys.events, {"event": ev.model_dump_json()})
        ack = {"hit_id": h.hit_id, "by": "super", "at": "2025-06-01T08:00:00Z", "disposition": "checked", "note": ""}
        env.redis.xadd(env.keys.console_acks, {"ack": json.dumps(ack)})
        got = _read_events(lines, 3)
        assert time.monotonic() - started < 2
    kinds = {e["event"]: e for e in got}
    assert Hit.model_validate_json(kinds["hit"]["data"]) == h
    assert PlateEvent.model_validate_json(kinds["pass"]["data"]) == ev
    assert json.loads(kinds["ack"]["data"]) == ack

    # A reconnecting browser sends the last id back and gets what it missed, nothing twice.
    later = hit_for(event(3, "AA0003AA"))
    env.redis.xadd(env.keys.hits, {"hit": later.model_dump_json()})
    with client.stream("GET", "/api/stream?kinds=hit", headers={"Last-Event-ID": kinds["hit"]["id"]}) as resp:
        (missed,) = _read_events(resp.iter_lines(), 1)
    assert Hit.model_validate_json(missed["data"]).hit_id == later.hit_id
    client.close()


def test_a_page_streams_from_where_it_was_rendered(env: Env, served: str) -> None:
    client = _live_client(env, served, "officer")
    page = client.get("/hits").text
    m = re.search(r'data-stream-from="([^"]*)" data-stream-kinds="([^"]*)"', page)
    assert m and m.group(2) == "hit,ack"
    h = hit_for(event(1, "BH2741KX"))
    env.redis.xadd(env.keys.hits, {"hit": h.model_dump_json()})  # after the render, before the stream opens
    with client.stream("GET", "/api/stream", params={"kinds": m.group(2), "from": m.group(1)}) as resp:
        (got,) = _read_events(resp.iter_lines(), 1)
    assert got["event"] == "hit" and Hit.model_validate_json(got["data"]).hit_id == h.hit_id
    client.close()


# -- lanes and system ------------------------------------------------------------------------------


def test_lanes_page_shows_stored_and_streamed_passes(env: Env) -> None:
    stored = [event(i, f"AB{i:04d}CD") for i in range(3)]
    env.store.save_events([EventRecord(ev, JPEG) for ev in stored])
    streamed = event(10, "CE1234AB", lane="l2", plate_image="x")
    env.redis.xadd(env.keys.events, {"event": streamed.model_dump_json()})
    env.redis.set(env.keys.plate_image(streamed.event_id), JPEG + b"live", ex=60)
    tc = env.browser("officer")
    page = tc.get("/").text
    l1 = page[page.index('data-lane="l1"') : page.index('data-lane="l2"')]
    assert re.findall(r'data-event-id="([^"]+)"', l1) == [ev.event_id for ev in reversed(stored)]
    assert re.findall(r'data-event-id="([^"]+)"', page[page.index('data-lane="l2"') :]) == [streamed.event_id]
    assert tc.get(f"/events/{streamed.event_id}/plate.jpg").content == JPEG + b"live"
    assert tc.get(f"/events/{stored[0].event_id}/plate.jpg").status_code == 302
    lanes = tc.get("/api/lanes").json()
    assert [e["event_id"] for e in lanes["l2"]] == [streamed.event_id]


class _Health(BaseHTTPRequestHandler):
    """A stand-in for `anpr run`'s /health endpoint, serving `doc`."""

    doc: ClassVar[dict[str, Any]] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_system_page(env: Env, tmp_path: Path) -> None:
    tc = env.browser("officer")
    env.redis.xadd(env.keys.exchange_dead, {"reason": "refused"})
    down = tc.get("/system").text
    assert 'id="health-unreachable"' in down
    assert re.search(
        r'data-group="exchange-publisher" class="warn"><th><code>exchange-publisher</code></th><td>1<', down
    )

    _Health.doc = {
        "status": "degraded",
        "problems": ["camera cam2 reconnecting"],
        "workers": {"w0": {"live": True, "fps": 12.5, "latency_p95_ms": 80.0, "restarts": 0}},
        "cameras": {
            "cam1": {"state": "streaming", "process": None},
            "cam2": {"state": "reconnecting", "process": None},
        },
        "spool": {"depth": 7, "error": None},
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cfg = env.cfg.model_copy(
            update={
                "console": env.cfg.console.model_copy(update={"health_url": f"http://127.0.0.1:{server.server_port}/h"})
            }
        )
        app = make_app(cfg, env.store, env.redis)
        with TestClient(app, base_url=BASE, follow_redirects=False) as live:
            login(live, "officer")
            up = live.get("/system").text
    finally:
        server.shutdown()
        thread.join()
    assert 'id="health-unreachable"' not in up
    assert 'data-camera="cam2"' in up and "state-reconnecting" in up
    assert '<strong id="spool-depth">7</strong>' in up
    assert "camera cam2 reconnecting" in up


# -- watchlists ------------------------------------------------------------------------------------


def test_watchlist_add_edit_expire(env: Env) -> None:
    tc = env.browser("super")
    token = csrf_of(tc)
    added = tc.post(
        "/watchlists",
        data={
            "csrf": token,
            "plate": "ВН 2741 КХ",
            "mode": "exact",
            "severity": "stop",
            "reason": "stolen",
            "lanes": ["l1", "l2"],
            "directions": "entry",
            "valid_until": "2030-01-01T12:00",
            "tz": "-120",
        },
    )
    assert added.status_code == 303 and added.headers["location"] == "/watchlists?done=added"
    (entry,) = env.store.entries()
    assert (entry.plate, entry.mode, entry.severity, entry.lanes) == ("BH2741KX", "exact", "stop", ["l1", "l2"])
    assert entry.valid_until == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)  # 12:00 at UTC+2
    assert entry.added_by == "super"
    page = tc.get("/watchlists?done=added").text
    assert 'class="flash-ok"' in page and f'<tr data-entry-id="{entry.entry_id}"' in page

    bad = tc.post("/watchlists", data={"csrf": token, "plate": "ВН 2741 КХ", "lanes": "l9"})
    assert bad.status_code == 400 and "unknown lane" in bad.text
    assert len(env.store.entries()) == 1

    edited = tc.post(
        f"/watchlists/{entry.entry_id}/edit", data={"csrf": token, "plate": "BH2741KX", "severity": "check"}
    )
    assert edited.status_code == 303
    (new,) = env.store.entries()
    assert new.entry_id != entry.entry_id and new.severity == "check" and new.plate == "BH2741KX"
    gone = {e.entry_id for e in env.store.entries(include_removed=True)} - {new.entry_id}
    assert gone == {entry.entry_id}

    expired = tc.post(f"/watchlists/{new.entry_id}/expire", data={"csrf": token})
    assert expired.status_code == 303
    assert env.store.entries() == []
    assert tc.post(f"/watchlists/{new.entry_id}/expire", data={"csrf": token}).status_code == 404
    history = tc.get("/watchlists", params={"all": "1"}).text
    assert history.count('class="removed"') == 2 and "super" in history
    actions = [a for _, a, _ in audit_actions(env.store)]
    for action in ("watchlist_add", "watchlist_edit", "watchlist_expire"):
        assert action in actions


def test_watchlist_import_lists_every_bad_line(env: Env) -> None:
    tc = env.browser("super")
    token = csrf_of(tc)
    text = "plate,severity,lanes\nBH2741KX,stop,l1\nBH 2741,urgent,l1\nAA0001BC,check,l7\n"
    resp = tc.post("/watchlists/import", data={"csrf": token}, files={"file": ("list.csv", text.encode(), "text/csv")})
    assert resp.status_code == 400
    errors = re.search(r'<ul id="import-errors"[^>]*>(.*?)</ul>', resp.text, re.S)
    assert errors
    items = re.findall(r"<li>(.*?)</li>", errors.group(1))
    assert len(items) == 2
    assert items[0].startswith("line 3: severity:") and items[1].startswith("line 4: lanes:")
    assert env.store.entries() == []

    good = "plate,severity\nВН 2741 КХ,stop\nAA0001BC,info\n"
    ok = tc.post("/watchlists/import", data={"csrf": token}, files={"file": ("list.csv", good.encode(), "text/csv")})
    assert ok.status_code == 303
    assert sorted(e.plate for e in env.store.entries()) == ["AA0001BC", "BH2741KX"]
    assert ("super", "watchlist_import", "list.csv") in audit_actions(env.store)


# -- languages -------------------------------------------------------------------------------------


def test_language_switch(env: Env) -> None:
    tc = env.browser("officer")
    assert env.cfg.console.default_language == "uk"
    page = tc.get("/hits").text
    assert '<html lang="uk">' in page and "Збіги" in page
    token = csrf_of(tc)
    resp = tc.post("/language", data={"csrf": token, "language": "ro", "next": "/search"})
    assert resp.status_code == 303 and resp.headers["location"] == "/search"
    ro = tc.get("/search").text
    assert '<html lang="ro">' in ro and "Căutare treceri" in ro
    user = env.console.accounts.get("officer")
    assert user is not None and user.language == "ro"
    # The user's choice follows them to another browser.
    other = env.browser("officer")
    assert '<html lang="ro">' in other.get("/").text
    assert tc.post("/language", data={"csrf": token, "language": "de"}).status_code == 400
    assert ("officer", "language", "officer") in audit_actions(env.store)
    # Before logging in, the login page switches by itself.
    anon = env.browser(None)
    assert '<html lang="en">' in anon.get("/login?lang=en").text
    assert '<html lang="en">' in anon.get("/login").text


# -- catalogues ------------------------------------------------------------------------------------


def _catalogue(path: Path) -> Any:
    with path.open("rb") as f:
        return read_po(f)


def test_every_message_is_translated_into_ukrainian_and_romanian() -> None:
    pot = _catalogue(LOCALE_DIR / "messages.pot")
    msgids = {m.id for m in pot if m.id}
    assert len(msgids) > 100
    for language in ("uk", "ro"):
        po = _catalogue(LOCALE_DIR / language / "LC_MESSAGES" / "messages.po")
        translated = {m.id: m.string for m in po if m.id and not m.fuzzy}
        missing = sorted(i for i in msgids if not translated.get(i))
        assert not missing, f"{language}: untranslated {missing}"
        # Placeholders survive translation.
        for msgid in msgids:
            assert sorted(re.findall(r"%\(\w+\)s", msgid)) == sorted(re.findall(r"%\(\w+\)s", translated[msgid])), msgid


def test_compiled_catalogues_match_their_sources() -> None:
    for language in ("uk", "ro", "en"):
        folder = LOCALE_DIR / language / "LC_MESSAGES"
        po = _catalogue(folder / "messages.po")
        with (folder / "messages.mo").open("rb") as f:
            mo = gettext.GNUTranslations(f)
        for m in po:
            if m.id and m.string and not m.fuzzy:
                assert mo.gettext(m.id) == m.string, f"{language}: {m.id!r} differs in messages.mo: recompile"
        compiled = {k for k in mo._catalog if k}  # type: ignore[attr-defined]
        assert compiled == {m.id for m in po if m.id and m.string and not m.fuzzy}, f"{language}: recompile"


def test_the_template_holds_every_string_of_the_sources() -> None:
    with (REPO_ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found = {msg[2] for msg in extract_from_dir(str(REPO_ROOT), method_map, options_map) if isinstance(msg[2], str)}
    pot = {m.id for m in _catalogue(LOCALE_DIR / "messages.pot") if m.id}
    assert found - pot == set(), "new strings: re-extract messages.pot (anpr/console/i18n.py)"
    assert pot - found == set(), "strings no longer used: re-extract messages.pot"
