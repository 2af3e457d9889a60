"""Watchlist matching and the CSV files officers import and export.

`WatchlistIndex` answers "which entries does this read hit?" for every plate event, so it must
not scan the list: exact plates and confusable keys are dict look-ups, and one-edit entries sit
in a symmetric-deletion index (each key and its one-deletions), which finds every key within
one insertion, deletion or replacement of the read with a handful of look-ups.

`parse_csv` is all-or-nothing: a list with one bad row is a list somebody has to fix, and
loading the rest would hide that the fixed row is missing.
"""

from __future__ import annotations

import csv
import io
import string
import uuid
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar

from pydantic import ValidationError
from rapidfuzz.distance import Levenshtein

from anpr.plates import confusable_key, normalise
from anpr.schema import Direction, ListSource, MatchMode, PlateEvent, Severity, WatchlistEntry, utc_now

# A read shorter than this never hits a one-edit entry by an edit: a 3-character read is one
# edit away from thousands of short plates, and such reads are mostly fragments (a crop cut by
# the frame, a sticker), so an edit match on them would be a false hit nearly every time.
MIN_EDIT_READ = 4

_SEVERITY_RANK = {Severity.STOP: 0, Severity.CHECK: 1, Severity.INFO: 2}


def _deletions(key: str) -> set[str]:
    """`key` with one character dropped, every way."""
    return {key[:i] + key[i + 1 :] for i in range(len(key))}


class WatchlistIndex:
    """Every entry of a watchlist, indexed for matching one plate event at a time."""

    def __init__(self, entries: Iterable[WatchlistEntry]) -> None:
        self._by_plate: dict[str, list[WatchlistEntry]] = {}
        self._by_key: dict[str, list[WatchlistEntry]] = {}
        # key or one-deletion of a key -> (the entry's key, entry), one-edit entries only
        self._by_deletion: dict[str, list[tuple[str, WatchlistEntry]]] = {}
        ids: set[str] = set()
        for entry in entries:
            if entry.entry_id in ids:
                # Hits are raised once per event and entry id: two entries under one id would
                # hide each other.
                raise ValueError(f"duplicate watchlist entry_id {entry.entry_id!r}")
            ids.add(entry.entry_id)
            self._by_plate.setdefault(entry.plate, []).append(entry)
            if entry.mode is MatchMode.EXACT:
                continue
            key = confusable_key(entry.plate)
            self._by_key.setdefault(key, []).append(entry)
            if entry.mode is MatchMode.ONE_EDIT:
                for probe in {key} | _deletions(key):
                    self._by_deletion.setdefault(probe, []).append((key, entry))
        self._size = len(ids)

    def __len__(self) -> int:
        return self._size

    def match(self, event: PlateEvent) -> list[tuple[WatchlistEntry, MatchMode]]:
        """Entries in force for this pass that its plate hits, with how each matched.

        Each entry comes once, as its closest match (exact before confusable before one edit),
        most urgent first (stop, check, info), then by entry_id.
        """
        plate = normalise(event.plate)
        found: dict[str, tuple[WatchlistEntry, MatchMode]] = {}
        for entry in self._by_plate.get(plate, ()):
            found[entry.entry_id] = (entry, MatchMode.EXACT)
        key = confusable_key(plate)
        for entry in self._by_key.get(key, ()):
            found.setdefault(entry.entry_id, (entry, MatchMode.CONFUSABLE))
        if len(plate) >= MIN_EDIT_READ:
            for probe in {key} | _deletions(key):
                for entry_key, entry in self._by_deletion.get(probe, ()):
                    if entry.entry_id not in found and Levenshtein.distance(key, entry_key, score_cutoff=1) <= 1:
                        found[entry.entry_id] = (entry, MatchMode.ONE_EDIT)
        hits = [(e, how) for e, how in found.values() if e.applies(event.best_seen, event.lane, event.direction)]
        hits.sort(key=lambda hit: (_SEVERITY_RANK[hit[0].severity], hit[0].entry_id))
        return hits


# -- CSV ---------------------------------------------------------------------------------------

COLUMNS: tuple[str, ...] = (
    "plate",
    "mode",
    "reason",
    "severity",
    "valid_from",
    "valid_until",
    "lanes",
    "directions",
    "source",
    "entry_id",
)
_LIST_SEPARATORS = (";", "|")
# What a plate may be typed with: Latin letters, digits, separators, and the Cyrillic letters that
# look like Latin ones (a Ukrainian plate typed on a Cyrillic keyboard); `normalise` makes them Latin.
_CYRILLIC_LOOKALIKES = "\u0410\u0412\u0421\u0415\u041d\u0406\u041a\u041c\u041e\u0420\u0422\u0425"
_PLATE_CHARS = frozenset(
    string.ascii_letters + string.digits + " -." + _CYRILLIC_LOOKALIKES + _CYRILLIC_LOOKALIKES.lower()
)

_E = TypeVar("_E", bound=StrEnum)


class WatchlistImportError(ValueError):
    """Every problem of a watchlist file, one `line N: field: message` each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class _RowError(Exception):
    """One field's problem, raised by a field parser and turned into a `line N: field: ...` error."""


def _enum(kind: type[_E]) -> Callable[[str], _E]:
    def parse(value: str) -> _E:
        try:
            return kind(value.lower().replace("-", "_"))
        except ValueError:
            raise _RowError(f"{value!r} is not one of {', '.join(m.value for m in kind)}") from None

    return parse


def _plate(value: str) -> str:
    bad = sorted({c for c in value if c not in _PLATE_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise _RowError(f"{shown} not allowed (Latin letters, digits, spaces, '-', '.' and Cyrillic look-alikes only)")
    plate = normalise(value)
    if not 2 <= len(plate) <= 16:
        raise _RowError(f"{value!r} has {len(plate)} letters and digits, must have 2 to 16")
    return plate


def _when(value: str, end_of_day: bool) -> datetime:
    """An ISO date (midnight UTC; with `end_of_day` the next midnight) or datetime (no zone: UTC)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        return datetime.combine(day + timedelta(days=1 if end_of_day else 0), time(), UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _RowError(f"{value!r} is not an ISO date (2025-03-31) or datetime (2025-03-31T18:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _items(value: str) -> list[str]:
    for sep in _LIST_SEPARATORS[1:]:
        value = value.replace(sep, _LIST_SEPARATORS[0])
    return list(dict.fromkeys(part.strip() for part in value.split(_LIST_SEPARATORS[0]) if part.strip()))


def _header(lines: list[str]) -> tuple[int, str, list[str]]:
    """The line number, delimiter (`,` or `;`) and cells of the header: the first non-blank line.

    The delimiter is the one that splits the header into the most cells with a `plate` among
    them: csv.Sniffer guesses from the data rows too and is fooled by `;` inside lanes.
    """
    number, first = next(((i, line) for i, line in enumerate(lines, 1) if line.strip(" \t\r\n,;")), (1, ""))
    best: tuple[int, str, list[str]] | None = None
    for delimiter in (",", ";"):
        cells = [c.strip().lower() for c in next(csv.reader([first], delimiter=delimiter), [])]
        if "plate" in cells and (best is None or len(cells) > len(best[2])):
            best = number, delimiter, cells
    if best is None:
        raise WatchlistImportError([f"line {number}: header: no 'plate' column (the first line must name the columns)"])
    return best


def parse_csv(
    text: str,
    added_by: str,
    known_lanes: Collection[str] | None = None,
    now: datetime | None = None,
) -> list[WatchlistEntry]:
    """Every row of a watchlist CSV as an entry; raises `WatchlistImportError` listing every bad row.

    The header names the columns (`COLUMNS`, any case and order; only `plate` is required).
    Empty cells take the entry's defaults; lanes and directions are `;`- or `|`-separated.
    `known_lanes`, when given, is what the lanes column may name. Cells are stripped of
    surrounding spaces. A BOM (Excel's UTF-8) and blank lines are ignored.
    """
    if not 1 <= len(added_by) <= 64:
        raise ValueError(f"added_by must have 1 to 64 characters, got {added_by!r}")
    added_at = now or utc_now()
    text = text.removeprefix("\ufeff")
    lines = io.StringIO(text, newline="").readlines()
    header_line, delimiter, header = _header(lines)
    errors: list[str] = []
    for name in sorted({c for c in header if c not in COLUMNS}):
        errors.append(f"line {header_line}: header: unknown column {name!r} (known: {', '.join(COLUMNS)})")
    for name in sorted({c for c in header if header.count(c) > 1 and c in COLUMNS}):
        errors.append(f"line {header_line}: header: column {name!r} appears more than once")

    parsers: dict[str, Callable[[str], object]] = {
        "plate": _plate,
        "mode": _enum(MatchMode),
        "severity": _enum(Severity),
        "source": _enum(ListSource),
        "valid_from": lambda v: _when(v, end_of_day=False),
        "valid_until": lambda v: _when(v, end_of_day=True),
        "directions": lambda v: [_enum(Direction)(d) for d in _items(v)],
        "lanes": lambda v: _lanes(v, known_lanes),
    }
    entries: list[WatchlistEntry] = []
    seen_ids: dict[str, int] = {}
    reader = csv.reader(lines[header_line:], delimiter=delimiter)
    consumed = header_line
    for row in reader:
        # A quoted cell may span lines: errors name the line the row starts on.
        line, consumed = consumed + 1, header_line + reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        row_errors, entry = _row(row, header, line, parsers, added_by, added_at, seen_ids)
        if entry is not None:
            entries.append(entry)
        errors.extend(row_errors)
    if errors:
        raise WatchlistImportError(errors)
    return entries


def _lanes(value: str, known_lanes: Collection[str] | None) -> list[str]:
    lanes = _items(value)
    unknown = [lane for lane in lanes if known_lanes is not None and lane not in known_lanes]
    if unknown:
        known = ", ".join(sorted(known_lanes or ())) or "none"
        raise _RowError(f"unknown lane {', '.join(repr(u) for u in unknown)} (known: {known})")
    return lanes


def _row(
    row: list[str],
    header: list[str],
    line: int,
    parsers: dict[str, Callable[[str], object]],
    added_by: str,
    added_at: datetime,
    seen_ids: dict[str, int],
) -> tuple[list[str], WatchlistEntry | None]:
    """One data row as an entry, or its errors (then no entry)."""
    errors: list[str] = []
    extra = [cell for cell in row[len(header) :] if cell.strip()]
    if extra:
        errors.append(f"line {line}: row: {len(row)} cells, the header names {len(header)}")
    cells = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header) if name in COLUMNS}
    fields: dict[str, object] = {}
    for name, value in cells.items():
        if not value:
            continue
        parse = parsers.get(name)
        try:
            fields[name] = parse(value) if parse else value
        except _RowError as exc:
            errors.append(f"line {line}: {name}: {exc}")
    if not cells.get("plate"):
        errors.append(f"line {line}: plate: missing")
    start, until = fields.get("valid_from"), fields.get("valid_until")
    if isinstance(start, datetime) and isinstance(until, datetime) and until <= start:
        errors.append(
            f"line {line}: valid_until: {cells['valid_until']!r} is not after valid_from {cells['valid_from']!r}"
        )
    entry_id = cells.get("entry_id") or uuid.uuid4().hex
    if entry_id in seen_ids:
        errors.append(f"line {line}: entry_id: {entry_id!r} already used on line {seen_ids[entry_id]}")
    else:
        seen_ids[entry_id] = line
    if errors:
        return errors, None
    try:
        entry = WatchlistEntry.model_validate(
            {**fields, "entry_id": entry_id, "added_by": added_by, "added_at": added_at}
        )
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "row"
            errors.append(f"line {line}: {field}: {err['msg']}")
        return errors, None
    return [], entry


def _iso(moment: datetime | None) -> str:
    if moment is None:
        return ""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def to_csv(entries: Iterable[WatchlistEntry]) -> str:
    """Entries as a CSV `parse_csv` reads back to the same entries (added_by/added_at aside).

    Times are written as UTC datetimes, never dates, so a window comes back to the microsecond.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for e in entries:
        bad = [lane for lane in e.lanes if any(sep in lane for sep in _LIST_SEPARATORS)]
        if bad:
            raise ValueError(f"entry {e.entry_id}: lane names {bad} contain a list separator {_LIST_SEPARATORS}")
        values = {
            "plate": e.plate,
            "mode": e.mode.value,
            "reason": e.reason,
            "severity": e.severity.value,
            "valid_from": _iso(e.valid_from),
            "valid_until": _iso(e.valid_until),
            "lanes": _LIST_SEPARATORS[0].join(e.lanes),
            "directions": _LIST_SEPARATORS[0].join(d.value for d in e.directions),
            "source": e.source.value,
            "entry_id": e.entry_id,
        }
        writer.writerow([values[c] for c in COLUMNS])
    return out.getvalue()
