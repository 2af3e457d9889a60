"""The history commands: archive, watchlists, hits, alerts, notifications, search and export.

Thin shells over anpr.store, anpr.archive, anpr.hits, anpr.watchlist and anpr.notify. Bad input
(a date, a CSV row, a lane) is one line naming what to fix and exit status 2; a database that
cannot be reached is one line and exit status 1.
"""

from __future__ import annotations

import csv
import getpass
import json
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from anpr.config import AnprConfig, ConfigError, load_config
from anpr.schema import Direction

if TYPE_CHECKING:
    from anpr.store import Store

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (configs/*.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line")]
ByOpt = Annotated[str | None, typer.Option("--by", help="who does it (default: the login name)")]
SinceOpt = Annotated[
    str | None, typer.Option(help="from this time: ISO date/time (UTC if no zone) or an age like 30m, 12h, 7d")
]
UntilOpt = Annotated[str | None, typer.Option(help="before this time (same forms as --since)")]
LimitOpt = Annotated[int, typer.Option(min=1, help="newest N")]
FuzzyOpt = Annotated[bool, typer.Option(help="also look-alikes (O/0, B/8) and one character off")]
LaneOpt = Annotated[str | None, typer.Option(help="only this lane")]
DirectionOpt = Annotated[Direction | None, typer.Option(help="entry | exit | unknown")]
CountryOpt = Annotated[str | None, typer.Option(help="ISO code, e.g. UA")]

_AGE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def bad(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise (status 2: the input needs fixing)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def parse_when(text: str | None, option: str) -> datetime | None:
    """An ISO date or time (naive = UTC), or an age back from now ("12h")."""
    if text is None:
        return None
    if m := _AGE.match(text.strip()):
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad(
            f"{option} {text!r} is not a date, a time or an age (e.g. 2026-12-01, 2026-12-01T08:00, 12h)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _config(path: Path | None) -> AnprConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@contextmanager
def opened(cfg: AnprConfig) -> Iterator[Store]:
    """The store, or a one-line error (exit 1) when its database cannot be reached."""
    from anpr.store import Store, StoreUnavailable

    try:
        store = Store.from_config(cfg.store)
    except StoreUnavailable as exc:
        typer.echo(f"error: store unavailable ({cfg.store.sqlalchemy_url.split('@')[-1]}): {_line(exc)}", err=True)
        raise typer.Exit(1) from None
    try:
        yield store
    except StoreUnavailable as exc:
        typer.echo(f"error: store unavailable: {_line(exc)}", err=True)
        raise typer.Exit(1) from None
    finally:
        store.close()


def _line(exc: Exception) -> str:
    """A driver's message on one line (psycopg adds hints on the next)."""
    return " ".join(str(exc).split())


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _who(by: str | None) -> str:
    return by or getpass.getuser()


def _console() -> Console:
    return Console(width=None if Console().is_terminal else 200)


def _t(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def register(app: typer.Typer, events_app: typer.Typer) -> None:
    """Add the history commands to the `anpr` app (and `search`/`export` to `anpr events`)."""
    watchlist_app = typer.Typer(no_args_is_help=True, help="Watchlists: plates officers want to know about.")
    hits_app = typer.Typer(no_args_is_help=True, help="Watchlist hits: the matcher, the list, acknowledgements.")
    alerts_app = typer.Typer(no_args_is_help=True, help="Crossing alerts of the exchange matcher.")
    store_app = typer.Typer(no_args_is_help=True, help="The durable store: migrations, retention.")
    app.add_typer(watchlist_app, name="watchlist")
    app.add_typer(hits_app, name="hits")
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(store_app, name="store")

    # -- workers ---------------------------------------------------------------------------------

    @app.command("archive")
    def archive(
        burst: Annotated[bool, typer.Option(help="store what is in the streams, then exit")] = False,
        config: ConfigOpt = None,
    ) -> None:
        """Store every event (with its crops), crossing alert and hit from their streams, exactly once."""
        from anpr.archive import run_archive

        cfg = _config(config)
        try:
            workers = run_archive(cfg, _stop_on_signals(), burst=burst)
        except ConfigError as exc:
            raise bad(str(exc)) from None
        if burst:
            typer.echo(" ".join(f"{w.kind}={w.stored}" for w in workers))

    @hits_app.command("run")
    def hits_run(
        burst: Annotated[bool, typer.Option(help="match what is in the events stream, then exit")] = False,
        config: ConfigOpt = None,
    ) -> None:
        """Match every new event against the active watchlists; hits go to the hits stream."""
        from anpr.hits import HitMatcher
        from anpr.redis_client import connect

        cfg = _config(config)
        with opened(cfg) as store:
            try:
                matcher = HitMatcher(cfg, connect(cfg.redis), store, _stop_on_signals())
            except ConfigError as exc:
                raise bad(str(exc)) from None
            matcher.run(burst=burst)
        if burst:
            typer.echo(f"hits={matcher.hits}")

    @app.command("notify")
    def notify(
        burst: Annotated[bool, typer.Option(help="send what is in the streams, then exit")] = False,
        config: ConfigOpt = None,
    ) -> None:
        """Send hits, crossing alerts and (notify.events) every event to MQTT and the webhooks."""
        from anpr.notify import run_notifiers

        cfg = _config(config)
        try:
            run_notifiers(cfg, _stop_on_signals(), burst=burst)
        except ConfigError as exc:
            raise bad(str(exc)) from None

    # -- watchlists ------------------------------------------------------------------------------

    @watchlist_app.command("add")
    def watchlist_add(
        plate: Annotated[str, typer.Argument(help="as printed; Cyrillic look-alikes are fine")],
        mode: Annotated[str, typer.Option(help="exact | confusable | one_edit")] = "confusable",
        severity: Annotated[str, typer.Option(help="info | check | stop")] = "check",
        reason: Annotated[str, typer.Option(help="why it is listed")] = "",
        valid_from: SinceOpt = None,
        valid_until: Annotated[str | None, typer.Option(help="until this time (ISO date or time)")] = None,
        lane: Annotated[list[str] | None, typer.Option(help="only in this lane (repeat for more)")] = None,
        direction: Annotated[list[str] | None, typer.Option(help="entry | exit (repeat for both)")] = None,
        source: Annotated[str, typer.Option(help="customs | partner | police")] = "customs",
        by: ByOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Add one plate to the watchlist; prints its entry id."""
        from anpr.watchlist import WatchlistImportError, parse_csv

        cfg = _config(config)
        row = {
            "plate": plate,
            "mode": mode,
            "severity": severity,
            "reason": reason,
            "valid_from": valid_from or "",
            "valid_until": valid_until or "",
            "lanes": ";".join(lane or []),
            "directions": ";".join(direction or []),
            "source": source,
        }
        buf = _csv_text([row])
        try:
            (entry,) = parse_csv(buf, _who(by), known_lanes=_known_lanes(cfg))
        except WatchlistImportError as exc:
            raise bad("; ".join(e.split(": ", 1)[1] for e in exc.errors)) from None
        with opened(cfg) as store:
            store.add_entries([entry])
        typer.echo(entry.entry_id)

    @watchlist_app.command("remove")
    def watchlist_remove(entry_id: str, by: ByOpt = None, config: ConfigOpt = None) -> None:
        """Remove an entry (it stays in the history, marked removed, with who removed it)."""
        with opened(_config(config)) as store:
            if not store.remove_entry(entry_id, _who(by)):
                raise bad(f"no active watchlist entry {entry_id!r} (see `anpr watchlist list`)")

    @watchlist_app.command("list")
    def watchlist_list(
        removed: Annotated[bool, typer.Option("--all", help="include removed entries")] = False,
        as_json: JsonOpt = False,
        config: ConfigOpt = None,
    ) -> None:
        """List the watchlist entries."""
        with opened(_config(config)) as store:
            entries = store.entries(include_removed=removed)
        if as_json:
            for e in entries:
                print(e.model_dump_json())
            return
        table = Table("entry", "plate", "mode", "severity", "valid", "lanes", "directions", "source", "reason", "by")
        for e in entries:
            table.add_row(
                e.entry_id,
                e.plate,
                e.mode.value,
                e.severity.value,
                f"{_t(e.valid_from)}..{_t(e.valid_until)}" if e.valid_from or e.valid_until else "always",
                ",".join(e.lanes) or "all",
                ",".join(d.value for d in e.directions) or "both",
                e.source.value,
                e.reason,
                e.added_by,
            )
        _console().print(table)

    @watchlist_app.command("import")
    def watchlist_import(
        file: Annotated[Path, typer.Argument(help="CSV: plate,mode,reason,severity,valid_from,valid_until,lanes,...")],
        by: ByOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Add every row of a CSV file, or none: each bad row is reported with its line number."""
        from anpr.watchlist import WatchlistImportError, parse_csv

        cfg = _config(config)
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise bad(f"cannot read {file}: {exc}") from None
        try:
            entries = parse_csv(text, _who(by), known_lanes=_known_lanes(cfg))
        except WatchlistImportError as exc:
            typer.echo(f"error: {file}: {len(exc.errors)} bad rows, nothing imported", err=True)
            for line in exc.errors:
                typer.echo(f"  {file}: {line}", err=True)
            raise typer.Exit(2) from None
        with opened(cfg) as store:
            try:
                store.add_entries(entries)
            except ValueError as exc:
                raise bad(f"{file}: {exc}; nothing imported") from None
        typer.echo(f"imported {len(entries)} entries")

    @watchlist_app.command("export")
    def watchlist_export(
        output: Annotated[Path | None, typer.Argument(help="CSV file to write (default: standard output)")] = None,
        config: ConfigOpt = None,
    ) -> None:
        """Write the active entries as CSV, in the form `import` reads."""
        from anpr.watchlist import to_csv

        with opened(_config(config)) as store:
            text = to_csv(store.entries())
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")

    # -- hits and alerts -------------------------------------------------------------------------

    @hits_app.command("list")
    def hits_list(
        unacked: Annotated[bool, typer.Option("--unacked", help="only hits nobody acknowledged")] = False,
        since: SinceOpt = None,
        limit: LimitOpt = 100,
        as_json: JsonOpt = False,
        config: ConfigOpt = None,
    ) -> None:
        """The newest watchlist hits."""
        cfg = _config(config)
        start = parse_when(since, "--since")
        with opened(cfg) as store:
            hits = store.list_hits(unacked=unacked, since=start, limit=limit)
        if as_json:
            for h in hits:
                out = h.hit.model_dump(mode="json")
                out["ack"] = (
                    {"at": _t(h.acked_at), "by": h.acked_by, "note": h.ack_note, "disposition": h.disposition}
                    if h.acked_at
                    else None
                )
                print(json.dumps(out, ensure_ascii=False))
            return
        table = Table("hit", "seen", "lane", "dir", "plate", "listed", "as", "severity", "reason", "acked")
        for h in hits:
            ev, en = h.hit.event, h.hit.entry
            table.add_row(
                h.hit.hit_id,
                _t(ev.best_seen),
                ev.lane,
                ev.direction.value,
                ev.plate,
                en.plate,
                h.hit.matched_as.value,
                en.severity.value,
                en.reason,
                f"{h.acked_by} {_t(h.acked_at)}" if h.acked_at else "",
            )
        _console().print(table)

    @hits_app.command("ack")
    def hits_ack(
        hit_id: str,
        disposition: Annotated[str | None, typer.Option(help="checked | stopped | false_match")] = None,
        note: Annotated[str, typer.Option(help="what was done")] = "",
        by: ByOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        """Acknowledge a hit."""
        from anpr.store import DISPOSITIONS

        if disposition is not None and disposition not in DISPOSITIONS:
            raise bad(f"--disposition {disposition!r} is not one of {', '.join(DISPOSITIONS)}")
        with opened(_config(config)) as store:
            if not store.ack_hit(hit_id, _who(by), note, disposition):
                raise bad(f"no unacknowledged hit {hit_id!r} (see `anpr hits list --unacked`)")

    @alerts_app.command("list")
    def alerts_list(
        unacked: Annotated[bool, typer.Option("--unacked", help="only alerts nobody acknowledged")] = False,
        since: SinceOpt = None,
        limit: LimitOpt = 100,
        as_json: JsonOpt = False,
        config: ConfigOpt = None,
    ) -> None:
        """The newest crossing alerts (exit without entry, entry without exit)."""
        cfg = _config(config)
        start = parse_when(since, "--since")
        with opened(cfg) as store:
            alerts = store.list_alerts(unacked=unacked, since=start, limit=limit)
        if as_json:
            for a in alerts:
                print(a.alert.model_dump_json())
            return
        table = Table("alert", "kind", "plate", "site", "seen", "raised", "detail", "acked")
        for a in alerts:
            al = a.alert
            table.add_row(
                al.alert_id,
                al.kind,
                al.plate,
                al.site,
                _t(al.seen_at),
                _t(al.raised_at),
                al.detail,
                f"{a.acked_by} {_t(a.acked_at)}" if a.acked_at else "",
            )
        _console().print(table)

    @alerts_app.command("ack")
    def alerts_ack(alert_id: str, by: ByOpt = None, config: ConfigOpt = None) -> None:
        """Acknowledge a crossing alert."""
        with opened(_config(config)) as store:
            if not store.ack_alert(alert_id, _who(by)):
                raise bad(f"no unacknowledged alert {alert_id!r} (see `anpr alerts list --unacked`)")

    # -- the store -------------------------------------------------------------------------------

    @store_app.command("migrate")
    def store_migrate(config: ConfigOpt = None) -> None:
        """Create or upgrade the database schema (the archive and every command do it too)."""
        with opened(_config(config)):
            pass
        typer.echo("store schema is current")

    @store_app.command("retention")
    def store_retention(config: ConfigOpt = None) -> None:
        """Run the retention job once (the archive runs it every store.retention.every_s)."""
        from anpr.archive import enforce_retention

        cfg = _config(config)
        with opened(cfg) as store:
            deleted = enforce_retention(store, cfg)
        typer.echo(" ".join(f"{k}={n}" for k, n in deleted.items()))

    # -- search and export -----------------------------------------------------------------------

    @events_app.command("search")
    def events_search(
        plate: Annotated[str | None, typer.Argument(help="plate as printed (Cyrillic fine); omit for all")] = None,
        fuzzy: FuzzyOpt = False,
        since: SinceOpt = None,
        until: UntilOpt = None,
        lane: LaneOpt = None,
        direction: DirectionOpt = None,
        country: CountryOpt = None,
        limit: LimitOpt = 100,
        as_json: JsonOpt = False,
        config: ConfigOpt = None,
    ) -> None:
        """Find stored events by plate, time, lane, direction and country (newest first)."""
        cfg = _config(config)
        query = _query(plate, fuzzy, since, until, lane, direction, country, limit)
        with opened(cfg) as store:
            events = store.search_events(query)
        if as_json:
            for ev in events:
                print(ev.model_dump_json())
            return
        table = Table("seen", "site", "lane", "dir", "plate", "country", "conf", "reads", "event")
        for ev in events:
            table.add_row(
                _t(ev.best_seen),
                ev.site,
                ev.lane,
                ev.direction.value,
                ev.plate,
                ev.country or "",
                f"{ev.confidence:.2f}",
                str(ev.reads),
                ev.event_id,
            )
        _console().print(table)
        typer.echo(
            f"{len(events)} events" + (f" (the newest {limit}; see --limit)" if len(events) == limit else ""), err=True
        )

    @events_app.command("export")
    def events_export(
        plate: Annotated[str | None, typer.Argument(help="plate as printed; omit for every event")] = None,
        fuzzy: FuzzyOpt = False,
        since: SinceOpt = None,
        until: UntilOpt = None,
        lane: LaneOpt = None,
        direction: DirectionOpt = None,
        country: CountryOpt = None,
        fmt: Annotated[Literal["csv", "jsonl"], typer.Option("--format", help="csv or jsonl")] = "csv",
        output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: standard output)")] = None,
        config: ConfigOpt = None,
    ) -> None:
        """Write every matching stored event (newest first) as CSV or JSON lines."""
        cfg = _config(config)
        query = _query(plate, fuzzy, since, until, lane, direction, country, None)
        out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        n = 0
        try:
            with opened(cfg) as store:
                writer = csv.DictWriter(out, EXPORT_COLUMNS) if fmt == "csv" else None
                if writer:
                    writer.writeheader()
                for ev in store.iter_events(query):
                    if writer:
                        writer.writerow(_export_row(ev.model_dump(mode="json")))
                    else:
                        out.write(ev.model_dump_json() + "\n")
                    n += 1
        finally:
            if output:
                out.close()
        typer.echo(f"exported {n} events", err=True)


EXPORT_COLUMNS = [
    "event_id",
    "site",
    "lane",
    "camera",
    "direction",
    "plate",
    "country",
    "confidence",
    "first_seen",
    "best_seen",
    "last_seen",
    "reads",
    "plate_image",
    "vehicle_image",
    "linked_event_id",
]


def _export_row(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) if data.get(k) is not None else "" for k in EXPORT_COLUMNS}


def _query(
    plate: str | None,
    fuzzy: bool,
    since: str | None,
    until: str | None,
    lane: str | None,
    direction: Direction | None,
    country: str | None,
    limit: int | None,
) -> Any:
    from anpr.plates import normalise
    from anpr.store import EventQuery

    if plate is not None and not normalise(plate):
        raise bad(f"plate {plate!r} has no letters or digits")
    if fuzzy and plate is None:
        raise bad("--fuzzy needs a PLATE")
    if country is not None and not re.fullmatch(r"[A-Za-z]{2}", country):
        raise bad(f"--country {country!r} is not a two-letter ISO code")
    return EventQuery(
        plate=plate,
        fuzzy=fuzzy,
        since=parse_when(since, "--since"),
        until=parse_when(until, "--until"),
        lane=lane,
        direction=direction,
        country=country.upper() if country else None,
        limit=limit,
    )


def _known_lanes(cfg: AnprConfig) -> set[str] | None:
    """The lanes of the configured cameras; None (no check) when the config names no cameras."""
    return {c.lane or c.name for c in cfg.cameras} or None


def _csv_text(rows: list[dict[str, str]]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
