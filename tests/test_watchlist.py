"""Watchlist matching (modes, windows, lanes, directions, order, scale) and the CSV import/export."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from anpr.plates import confusable_key, edit_distance
from anpr.schema import Direction, ListSource, MatchMode, PlateEvent, Severity, WatchlistEntry
from anpr.watchlist import MIN_EDIT_READ, WatchlistImportError, WatchlistIndex, parse_csv, to_csv

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# Cyrillic capitals, spelt as escapes: in source they look like Latin (А, В, Е, К, Н, Т).
CYR_A, CYR_B, CYR_E, CYR_K, CYR_H, CYR_T = "\u0410", "\u0412", "\u0415", "\u041a", "\u041d", "\u0422"


def entry(
    plate: str, mode: MatchMode = MatchMode.CONFUSABLE, entry_id: str | None = None, **kw: object
) -> WatchlistEntry:
    return WatchlistEntry.model_validate(
        {"entry_id": entry_id or f"id-{plate}-{mode.value}", "plate": plate, "mode": mode, "added_by": "t", **kw}
    )


def event(plate: str, at: datetime = T0, lane: str = "L1", direction: Direction = Direction.ENTRY) -> PlateEvent:
    return PlateEvent(
        event_id=f"ev-{plate}",
        site="S",
        lane=lane,
        camera="c1",
        direction=direction,
        plate=plate,
        confidence=0.9,
        first_seen=at,
        last_seen=at,
        best_seen=at,
        reads=3,
        box=[0, 0, 10, 5],
    )


def matched(
    index: WatchlistIndex, plate: str, at: datetime = T0, lane: str = "L1", direction: Direction = Direction.ENTRY
) -> list[tuple[str, MatchMode]]:
    return [(e.entry_id, how) for e, how in index.match(event(plate, at, lane, direction))]


# -- matching modes ------------------------------------------------------------------------------


def test_exact_entry_matches_only_the_same_plate() -> None:
    index = WatchlistIndex([entry("AB1234CD", MatchMode.EXACT, "x")])
    assert matched(index, "AB1234CD") == [("x", MatchMode.EXACT)]
    assert matched(index, "A81234CD") == []  # B read as 8: a confusable read is not the plate
    assert matched(index, "AB1234C") == []


def test_confusable_entry_matches_look_alikes_but_not_edits() -> None:
    index = WatchlistIndex([entry("AB1234CD", MatchMode.CONFUSABLE, "c")])
    assert matched(index, "AB1234CD") == [("c", MatchMode.EXACT)]
    assert matched(index, "A81234C0") == [("c", MatchMode.CONFUSABLE)]  # B/8 and D/0
    assert matched(index, "AB1234CE") == []  # replaced by a letter that looks nothing like it
    assert matched(index, "AB12345CD") == []
    assert matched(index, "AB124CD") == []


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("AB1234CD", MatchMode.EXACT),
        ("A81234CD", MatchMode.CONFUSABLE),
        ("AB1234CE", MatchMode.ONE_EDIT),  # replaced
        ("AB12345CD", MatchMode.ONE_EDIT),  # inserted
        ("XAB1234CD", MatchMode.ONE_EDIT),  # inserted at the front
        ("AB124CD", MatchMode.ONE_EDIT),  # dropped
        ("AB1234C", MatchMode.ONE_EDIT),  # dropped at the end
        ("A812340", MatchMode.ONE_EDIT),  # confusables and a dropped character together
        ("AB1234EE", None),  # two replaced
        ("AB2134CD", None),  # two swapped: a transposition is two edits
        ("AB12CD", None),  # two dropped
    ],
)
def test_one_edit_entry(read: str, expected: MatchMode | None) -> None:
    index = WatchlistIndex([entry("AB1234CD", MatchMode.ONE_EDIT, "o")])
    assert matched(index, read) == ([("o", expected)] if expected else [])


def test_short_reads_never_match_by_an_edit() -> None:
    index = WatchlistIndex([entry("AB1", MatchMode.ONE_EDIT, "short"), entry("AB12", MatchMode.ONE_EDIT, "four")])
    assert MIN_EDIT_READ == 4
    assert matched(index, "AB1") == [("short", MatchMode.EXACT)]
    assert matched(index, "A81") == [("short", MatchMode.CONFUSABLE)]
    assert matched(index, "AB7") == []  # one replaced, but a 3-character read: no edit match
    assert matched(index, "AB") == []  # one dropped from AB1 (and two from AB12)
    # A 4-character read may match by an edit, also an entry shorter than that.
    assert sorted(matched(index, "AB1X")) == [("four", MatchMode.ONE_EDIT), ("short", MatchMode.ONE_EDIT)]
    assert matched(index, "AB13") == [("four", MatchMode.ONE_EDIT), ("short", MatchMode.ONE_EDIT)]


def test_cyrillic_plate_typed_in_csv_matches_the_latin_read() -> None:
    text = f"plate,mode\n{CYR_A}{CYR_A} 1234 {CYR_B}{CYR_E},exact\n{CYR_K.lower()}{CYR_H.lower()}-77-{CYR_T},exact\n"
    entries = parse_csv(text, "officer")
    assert [e.plate for e in entries] == ["AA1234BE", "KH77T"]
    index = WatchlistIndex(entries)
    assert matched(index, "AA1234BE") == [(entries[0].entry_id, MatchMode.EXACT)]
    assert matched(index, "KH77T") == [(entries[1].entry_id, MatchMode.EXACT)]


# -- when an entry applies ---------------------------------------------------------------------


def test_validity_window() -> None:
    start, end = T0, T0 + timedelta(days=2)
    index = WatchlistIndex([entry("AB1234CD", entry_id="w", valid_from=start, valid_until=end)])
    assert matched(index, "AB1234CD", at=start - timedelta(seconds=1)) == []
    assert matched(index, "AB1234CD", at=start) == [("w", MatchMode.EXACT)]
    assert matched(index, "AB1234CD", at=end - timedelta(microseconds=1)) == [("w", MatchMode.EXACT)]
    assert matched(index, "AB1234CD", at=end) == []


def test_lanes_and_directions() -> None:
    index = WatchlistIndex(
        [
            entry("AB1234CD", entry_id="lanes", lanes=["L1", "L2"]),
            entry("AB1234CD", entry_id="exit", directions=[Direction.EXIT]),
            entry("AB1234CD", entry_id="all"),
        ]
    )
    assert [i for i, _ in matched(index, "AB1234CD", lane="L1", direction=Direction.ENTRY)] == ["all", "lanes"]
    assert [i for i, _ in matched(index, "AB1234CD", lane="L3", direction=Direction.ENTRY)] == ["all"]
    assert [i for i, _ in matched(index, "AB1234CD", lane="L2", direction=Direction.EXIT)] == ["all", "exit", "lanes"]
    assert [i for i, _ in matched(index, "AB1234CD", lane="L3", direction=Direction.UNKNOWN)] == ["all"]


def test_order_by_severity_then_id_and_each_entry_once() -> None:
    entries = [
        entry("AB1234CD", MatchMode.ONE_EDIT, "b-info", severity=Severity.INFO),
        entry("AB1234CD", MatchMode.ONE_EDIT, "a-info", severity=Severity.INFO),
        entry("A81234CD", MatchMode.CONFUSABLE, "z-stop", severity=Severity.STOP),
        entry("AB1234CD", MatchMode.EXACT, "c-check", severity=Severity.CHECK),
        entry("AB1234C", MatchMode.ONE_EDIT, "a-stop", severity=Severity.STOP),
        entry("ZZ9999", MatchMode.ONE_EDIT, "other", severity=Severity.STOP),
    ]
    index = WatchlistIndex(entries)
    assert len(index) == 6
    # AB1234CD hits the one-edit entries through the plate, the key and the deletion index: once each.
    assert matched(index, "AB1234CD") == [
        ("a-stop", MatchMode.ONE_EDIT),
        ("z-stop", MatchMode.CONFUSABLE),
        ("c-check", MatchMode.EXACT),
        ("a-info", MatchMode.EXACT),
        ("b-info", MatchMode.EXACT),
    ]


def test_duplicate_entry_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="dup"):
        WatchlistIndex([entry("AB1234", entry_id="dup"), entry("CD5678", entry_id="dup")])
    assert len(WatchlistIndex([])) == 0
    assert WatchlistIndex([]).match(event("AB1234")) == []


# -- scale: the index against a brute-force reference ---------------------------------------------

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _reference(entry: WatchlistEntry, read: str) -> MatchMode | None:
    """The matching rules applied to one entry, the slow way."""
    if read == entry.plate:
        return MatchMode.EXACT
    if entry.mode is MatchMode.EXACT:
        return None
    read_key, entry_key = confusable_key(read), confusable_key(entry.plate)
    if read_key == entry_key:
        return MatchMode.CONFUSABLE
    if entry.mode is MatchMode.ONE_EDIT and len(read) >= 4 and edit_distance(read_key, entry_key) <= 1:
        return MatchMode.ONE_EDIT
    return None


def _mutate(plate: str, rng: random.Random) -> str:
    """A read of `plate` as OCR might make it: as is, look-alikes swapped, one char off, or worse."""
    swaps = {"0": "O", "O": "0", "8": "B", "B": "8", "1": "I", "I": "1", "5": "S", "S": "5", "2": "Z", "Z": "2"}
    kind = rng.randrange(6)
    i = rng.randrange(len(plate))
    if kind == 0:
        return plate
    if kind == 1:
        return "".join(swaps.get(c, c) for c in plate)
    if kind == 2:
        return plate[:i] + rng.choice(_ALPHABET) + plate[i + 1 :]
    if kind == 3:
        return plate[:i] + rng.choice(_ALPHABET) + plate[i:]
    if kind == 4:
        return (plate[:i] + plate[i + 1 :]) or plate
    return plate[:i] + rng.choice(_ALPHABET) * 2 + plate[i + 2 :]


@pytest.mark.slow
def test_hundred_thousand_entries_match_like_brute_force() -> None:
    rng = random.Random(20250301)
    lanes, directions = ["L1", "L2", "L3"], [Direction.ENTRY, Direction.EXIT]
    entries: list[WatchlistEntry] = []
    plates: list[str] = []
    for i in range(100_000):
        # Plates drawn from a small alphabet now and then, so several entries share a key or plate.
        alphabet = "AB018" if i % 50 == 0 else _ALPHABET
        plate = plates[rng.randrange(len(plates))] if plates and i % 97 == 0 else ""
        plate = plate or "".join(rng.choices(alphabet, k=rng.randint(2, 9)))
        plates.append(plate)
        start = T0 + timedelta(hours=rng.randint(-48, 24)) if rng.random() < 0.2 else None
        until = T0 + timedelta(hours=rng.randint(25, 48)) if rng.random() < 0.2 else None
        entries.append(
            entry(
                plate,
                rng.choice(list(MatchMode)),
                f"e{i:06d}",
                severity=rng.choice(list(Severity)),
                valid_from=start,
                valid_until=until,
                lanes=rng.sample(lanes, rng.randint(0, 2)),
                directions=rng.sample(directions, rng.randint(0, 1)),
            )
        )
    index = WatchlistIndex(entries)
    assert len(index) == len(entries)

    events = []
    for n in range(400):
        read = _mutate(rng.choice(plates), rng) if n % 4 else "".join(rng.choices(_ALPHABET, k=rng.randint(1, 9)))
        at = T0 + timedelta(hours=rng.randint(-72, 72))
        events.append(
            event(read, at=at, lane=rng.choice(lanes), direction=rng.choice([*directions, Direction.UNKNOWN]))
        )

    # Every rule needs the confusable keys within one edit: rapidfuzz's full distance matrix
    # (a linear scan, unlike the index) narrows the 100,000 entries to those for the slow rules.
    entry_keys = [confusable_key(p) for p in plates]
    distances = process.cdist(
        [confusable_key(ev.plate) for ev in events],
        entry_keys,
        scorer=Levenshtein.distance,
        score_cutoff=1,
        dtype=np.uint8,
        workers=-1,
    )
    by_mode = {mode: 0 for mode in MatchMode}
    for ev, row in zip(events, distances, strict=True):
        expected = []
        for j in np.flatnonzero(row <= 1):
            candidate = entries[j]
            how = _reference(candidate, ev.plate)
            if how is not None and candidate.applies(ev.best_seen, ev.lane, ev.direction):
                expected.append((candidate, how))
        expected.sort(key=lambda hit: ({"stop": 0, "check": 1, "info": 2}[hit[0].severity], hit[0].entry_id))
        got = index.match(ev)
        assert [(e.entry_id, how) for e, how in got] == [(e.entry_id, how) for e, how in expected], ev.plate
        for _, how in got:
            by_mode[how] += 1
    # The comparison means something only if every kind of match happened.
    assert all(count >= 5 for count in by_mode.values()), by_mode


# -- CSV import -----------------------------------------------------------------------------------


def test_parse_excel_file_with_bom_semicolons_and_blank_lines() -> None:
    text = (
        "\ufeffSeverity;PLATE;Lanes;Directions;Mode;Source;Reason;Valid_From;Valid_Until;Entry_ID\r\n"
        "\r\n"
        "stop;ab 1234-cd;L1|L2;entry|EXIT;One_Edit;police;stolen;2025-03-01;2025-03-31;e1\r\n"
        ";;;;;;;;;\r\n"
        'info;XY.987;"L3;L1";;exact;partner;"long; reason";2025-03-01T08:30;2025-03-02T10:00+02:00;\r\n'
    )
    now = datetime(2025, 2, 1, tzinfo=UTC)
    first, second = parse_csv(text, "officer7", known_lanes={"L1", "L2", "L3"}, now=now)
    assert first.model_dump(exclude={"added_at", "valid_from", "valid_until"}) == {
        "schema_version": 1,
        "entry_id": "e1",
        "plate": "AB1234CD",
        "mode": MatchMode.ONE_EDIT,
        "reason": "stolen",
        "severity": Severity.STOP,
        "lanes": ["L1", "L2"],
        "directions": [Direction.ENTRY, Direction.EXIT],
        "source": ListSource.POLICE,
        "added_by": "officer7",
    }
    assert first.added_at == now
    assert first.valid_from == datetime(2025, 3, 1, tzinfo=UTC)
    assert first.valid_until == datetime(2025, 4, 1, tzinfo=UTC)  # the end of 31 March
    assert second.plate == "XY987"
    assert second.lanes == ["L3", "L1"]
    assert second.reason == "long; reason"
    assert second.valid_from == datetime(2025, 3, 1, 8, 30, tzinfo=UTC)  # no zone: UTC
    assert second.valid_until == datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
    assert re.fullmatch(r"[0-9a-f]{32}", second.entry_id)


def test_parse_defaults_and_comma_delimiter() -> None:
    entries = parse_csv("plate,lanes\nAB1234,L1;L2\nCD5678,\n\n", "officer")
    assert [e.lanes for e in entries] == [["L1", "L2"], []]
    e = entries[1]
    assert (e.mode, e.severity, e.source, e.reason, e.directions) == (
        MatchMode.CONFUSABLE,
        Severity.CHECK,
        ListSource.CUSTOMS,
        "",
        [],
    )
    assert e.valid_from is None and e.valid_until is None
    assert entries[0].entry_id != entries[1].entry_id
    assert all(re.fullmatch(r"[0-9a-f]{32}", x.entry_id) for x in entries)
    assert parse_csv("plate\n", "officer") == []
    # One day: valid from its midnight to the next.
    (day,) = parse_csv("plate,valid_from,valid_until\nAB1234,2025-03-01,2025-03-01\n", "officer")
    assert day.valid_until is not None and day.valid_from is not None
    assert day.valid_until - day.valid_from == timedelta(days=1)


def _errors(text: str, known_lanes: set[str] | None = None) -> list[str]:
    with pytest.raises(WatchlistImportError) as info:
        parse_csv(text, "officer", known_lanes=known_lanes)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def test_header_errors() -> None:
    assert _errors("mode,reason\nexact,x\n") == [
        "line 1: header: no 'plate' column (the first line must name the columns)"
    ]
    assert _errors("") == ["line 1: header: no 'plate' column (the first line must name the columns)"]
    errors = _errors("plate,colour,mode,Mode\nAB1234,red,exact,exact\n")
    assert errors[0].startswith("line 1: header: unknown column 'colour'")
    assert errors[1] == "line 1: header: column 'mode' appears more than once"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("AB\u04161234", ["line 3: plate: 'Ж' not allowed"]),
        ("\u00c4B1234", ["line 3: plate: 'Ä' not allowed"]),
        ("AB@12#34", ["line 3: plate: '#', '@' not allowed"]),
        ("A-", ["line 3: plate: 'A-' has 1 letters and digits, must have 2 to 16"]),
        ("A" * 17, ["line 3: plate: 'AAAAAAAAAAAAAAAAA' has 17 letters and digits"]),
        (",exact", ["line 3: plate: missing"]),
        ("AB1234,fuzzy", ["line 3: mode: 'fuzzy' is not one of exact, confusable, one_edit"]),
        ("AB1234,,,urgent", ["line 3: severity: 'urgent' is not one of info, check, stop"]),
        ("AB1234,,,,yesterday", ["line 3: valid_from: 'yesterday' is not an ISO date"]),
        ("AB1234,,,,,2025-02-30", ["line 3: valid_until: '2025-02-30' is not an ISO date"]),
        ("AB1234,,,,2025-03-02,2025-03-01", ["line 3: valid_until: '2025-03-01' is not after valid_from '2025-03-02'"]),
        (
            "AB1234,,,,2025-03-01T10:00,2025-03-01T10:00",
            ["line 3: valid_until: '2025-03-01T10:00' is not after valid_from"],
        ),
        ("AB1234,,,,,,L1;L9", ["line 3: lanes: unknown lane 'L9' (known: L1, L2)"]),
        ("AB1234,,,,,,,in", ["line 3: directions: 'in' is not one of entry, exit, unknown"]),
        ("AB1234,,,,,,,,interpol", ["line 3: source: 'interpol' is not one of customs, partner, police"]),
        ("AB1234,,,,,,,,,e1", ["line 3: entry_id: 'e1' already used on line 2"]),
        ("AB1234,,,,,,,,,," + "x" * 65, ["line 3: row: 11 cells, the header names 10"]),
        ("AB1234,,,,,,,,," + "x" * 65, ["line 3: entry_id: String should have at most 64 characters"]),
        ("AB1234,," + "x" * 501, ["line 3: reason: String should have at most 500 characters"]),
        ("AB1234,fuzzy,,urgent", ["line 3: mode: 'fuzzy'", "line 3: severity: 'urgent'"]),
    ],
)
def test_row_errors_name_line_and_field(row: str, expected: list[str]) -> None:
    header = "plate,mode,reason,severity,valid_from,valid_until,lanes,directions,source,entry_id"
    errors = _errors(f"{header}\nCD5678,,,,,,,,,e1\n{row}\n", known_lanes={"L1", "L2"})
    assert len(errors) == len(expected), errors
    for got, want in zip(errors, expected, strict=True):
        assert got.startswith(want), got


def test_every_bad_row_is_reported_and_nothing_is_returned() -> None:
    text = (
        "plate,reason,severity\n"
        "AB1234,fine,stop\n"
        '\n"CD5678","two\nline reason",bad\n'  # line 3 blank, the row spans lines 4-5
        "EF9012,fine,info\n"
        "G\u0416,,\n"  # line 7
    )
    errors = _errors(text)
    assert errors == [
        "line 4: severity: 'bad' is not one of info, check, stop",
        "line 7: plate: 'Ж' not allowed (Latin letters, digits, spaces, '-', '.' and Cyrillic look-alikes only)",
    ]
    # The same file with its bad rows fixed loads all four rows.
    fixed = text.replace(",bad", ",stop").replace("G\u0416", "GH")
    assert [e.plate for e in parse_csv(fixed, "officer")] == ["AB1234", "CD5678", "EF9012", "GH"]


def test_any_lane_without_known_lanes_and_added_by_checked() -> None:
    (e,) = parse_csv("plate,lanes\nAB1234,anything\n", "officer")
    assert e.lanes == ["anything"]
    with pytest.raises(ValueError, match="added_by"):
        parse_csv("plate\nAB1234\n", "")


# -- CSV export ---------------------------------------------------------------------------------


def test_csv_round_trip() -> None:
    kyiv = timezone(timedelta(hours=3))
    entries = [
        entry("AB1234CD", MatchMode.EXACT, "e1"),
        entry(
            "XY987",
            MatchMode.ONE_EDIT,
            "e2",
            reason='stolen, "red" van; see\nfile 12',
            severity=Severity.STOP,
            valid_from=datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=kyiv),
            valid_until=datetime(2025, 4, 1, tzinfo=UTC),
            lanes=["L1", "L2"],
            directions=[Direction.EXIT, Direction.ENTRY],
            source=ListSource.PARTNER,
        ),
        entry("K" + CYR_A + "77", MatchMode.CONFUSABLE, "e3", severity=Severity.INFO, valid_until=T0),
    ]
    text = to_csv(entries)
    assert text.splitlines()[0] == "plate,mode,reason,severity,valid_from,valid_until,lanes,directions,source,entry_id"
    back = parse_csv(text, "someone-else", known_lanes={"L1", "L2"})
    exclude = {"added_by", "added_at"}
    assert [e.model_dump(exclude=exclude) for e in back] == [e.model_dump(exclude=exclude) for e in entries]
    assert back[1].valid_from == datetime(2025, 3, 1, 5, 30, 15, 123456, tzinfo=UTC)
    assert to_csv(back) == text


def test_to_csv_refuses_lane_names_with_a_separator() -> None:
    with pytest.raises(ValueError, match="separator"):
        to_csv([entry("AB1234", lanes=["L1;L2"])])
