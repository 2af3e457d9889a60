"""Cross-border matching: pure logic driven by a fake clock, then the worker on a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from anpr.config import MatchingConfig
from anpr.exchange.matching import CrossingAlert, Matcher, MatcherWorker, plate_similarity
from anpr.exchange.publisher import Publisher
from anpr.exchange.transport import HttpTransport
from anpr.redis_client import connect
from anpr.schema import Direction, PlateEvent

if TYPE_CHECKING:
    from conftest import Exchange, ThreadReceiver

    EventFactory = Callable[..., PlateEvent]

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
CFG = MatchingConfig(window_minutes=30, clock_tolerance_s=60, report_lag_s=300)


Make = Callable[..., PlateEvent]


@pytest.fixture
def exit_(event_factory: EventFactory) -> Make:
    """A partner exit event: exit_(plate, at, i=0)."""
    return lambda plate, at, i=0: event_factory(i, plate=plate, direction=Direction.EXIT, first_seen=at)


@pytest.fixture
def entry(event_factory: EventFactory) -> Make:
    """One of our entry events: entry(plate, at, i=0)."""
    return lambda plate, at, i=0: event_factory(
        i, plate=plate, direction=Direction.ENTRY, first_seen=at, site="md-criva"
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("AA1234BC", "AA1234BC", "exact"),
        ("aa 1234-bc", "AA1234BC", "exact"),
        ("AA1234BC", "AA1Z34BC", "confusable"),  # 2/Z
        ("AA1234BC", "AA1234B0", None),  # C/0 is not a confusion OCR makes
        ("AA1234BO", "AA1Z34B0", None),  # two confusable characters: too far
        ("AA1234BC", "AA12348C", "confusable"),  # B/8
        ("ABC123", "ABC1234", None),
        ("OBC123", "0BC123", "confusable"),
    ],
)
def test_plate_similarity(a: str, b: str, expected: str | None) -> None:
    assert plate_similarity(a, b, confusable=True) == expected
    assert plate_similarity(a, b, confusable=False) == (expected if expected == "exact" else None)


def test_exit_then_entry_within_window_is_a_match(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    assert m.add_exit(exit_("AA1234BC", T0)) is None
    match = m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=12)))
    assert match is not None
    assert (match.exact, match.transit_s, match.exit_site, match.entry_site) == (True, 720.0, "ua-porubne", "md-criva")
    assert m.due_alerts(T0 + timedelta(hours=2)) == []  # matched passes never alert


def test_order_of_arrival_does_not_matter(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    assert m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=5))) is None  # partner's message is late
    match = m.add_exit(exit_("AA1234BC", T0))
    assert match is not None and match.transit_s == 300.0


def test_one_confusable_character_matches_but_an_exact_plate_wins(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_exit(exit_("AA1234BC", T0))
    m.add_exit(exit_("AA1234BX", T0, i=1))
    match = m.add_entry(entry("AA1Z34BC", T0 + timedelta(minutes=3)))  # OCR read 2 as Z
    assert match is not None and not match.exact and match.entry_plate == "AA1Z34BC"

    m = Matcher(CFG)
    m.add_entry(entry("AA1Z34BC", T0 + timedelta(minutes=3)))
    m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=20), i=1))
    match = m.add_exit(exit_("AA1234BC", T0))
    assert match is not None and match.exact and match.transit_s == 1200.0  # exact beats closer-in-time


def test_confusable_tolerance_can_be_turned_off(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG.model_copy(update={"confusable": False}))
    m.add_exit(exit_("AA1234BC", T0))
    assert m.add_entry(entry("AA1Z34BC", T0 + timedelta(minutes=3))) is None


@pytest.mark.parametrize(
    ("entry_after", "matches"),
    [
        (timedelta(minutes=30), True),
        (timedelta(minutes=30, seconds=1), False),
        (timedelta(seconds=-60), True),  # entry clock a minute behind: tolerated
        (timedelta(seconds=-61), False),
    ],
)
def test_time_window(entry_after: timedelta, matches: bool, exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_exit(exit_("AA1234BC", T0))
    assert (m.add_entry(entry("AA1234BC", T0 + entry_after)) is not None) is matches


def test_each_pass_matches_once(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_exit(exit_("AA1234BC", T0))
    assert m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=1))) is not None
    assert m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=2), i=1)) is None
    assert m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=1))) is None  # same event again


def test_never_entered_alert_waits_for_window_and_lag_and_is_raised_once(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_exit(exit_("AA1234BC", T0))
    due = T0 + timedelta(minutes=30, seconds=300)
    assert m.due_alerts(due - timedelta(seconds=1)) == []
    [alert] = m.due_alerts(due)
    assert (alert.kind, alert.plate, alert.site, alert.seen_at) == ("exited_not_entered", "AA1234BC", "ua-porubne", T0)
    assert m.due_alerts(due + timedelta(minutes=5)) == []


def test_entered_without_exit_alert_waits_for_the_partners_lag(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_entry(entry("AA1234BC", T0))
    due = T0 + timedelta(seconds=60 + 300)
    assert m.due_alerts(due - timedelta(seconds=1)) == []
    assert [a.kind for a in m.due_alerts(due)] == ["entered_without_exit"]


def test_late_event_still_matches_after_its_alert(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG)
    m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=10)))
    assert [a.kind for a in m.due_alerts(T0 + timedelta(hours=1))] == ["entered_without_exit"]
    assert m.add_exit(exit_("AA1234BC", T0)) is not None  # the partner's message after an outage


def test_passes_older_than_retention_are_forgotten(exit_: Make, entry: Make) -> None:
    m = Matcher(CFG.model_copy(update={"retention_hours": 1}))
    m.add_exit(exit_("AA1234BC", T0))
    assert len(m.due_alerts(T0 + timedelta(hours=2))) == 1
    assert m.add_entry(entry("AA1234BC", T0 + timedelta(minutes=5))) is None  # nothing left to match


def test_worker_writes_matches_and_alerts_once_across_restarts(
    exchange: Exchange, thread_receiver: Callable[..., ThreadReceiver], exit_: Make, entry: Make
) -> None:
    # The partner's exits arrive through the real publisher and receiver (one Redis prefix plays both
    # sides); our entries are then written to the local events stream.
    now = time.time()
    t0 = datetime.fromtimestamp(now, UTC) - timedelta(minutes=40)
    exits = [exit_("AA1234BC", t0, 1), exit_("BC7777XA", t0, 2)]
    entries = [entry("AA1Z34BC", t0 + timedelta(minutes=15), 3), entry("MD0001AA", t0 + timedelta(minutes=1), 4)]
    cfg = exchange.config(matching={"window_minutes": 30, "report_lag_s": 60})
    exchange.add_events(exits)
    with thread_receiver(cfg):
        Publisher(cfg, connect(cfg.redis), HttpTransport(cfg.publisher), exchange.signer()).run(burst=True)
    exchange.add_events(entries)
    assert len(exchange.inbox_ids()) == 2

    clock = {"now": now - 20 * 60}  # t0 + 20 min: the unmatched exit is not overdue yet

    def run_worker() -> list[tuple[str, str]]:
        MatcherWorker(cfg, connect(cfg.redis), clock=lambda: clock["now"]).run(burst=True)
        alerts = [
            CrossingAlert.model_validate_json(f[b"alert"]) for _, f in exchange.r.xrange(exchange.keys.crossing_alerts)
        ]
        return [(a.kind, a.plate) for a in alerts]

    # The entry with no exit is overdue after 1 min clock tolerance + 1 min lag.
    assert run_worker() == [("entered_without_exit", "MD0001AA")]
    matches = [json.loads(f[b"match"]) for _, f in exchange.r.xrange(exchange.keys.crossing_matches)]
    assert [(m["exit_plate"], m["entry_plate"], m["exact"]) for m in matches] == [("AA1234BC", "AA1Z34BC", False)]
    # The exit never followed by an entry is overdue after the 30 min window + 1 min lag.
    clock["now"] = now
    assert run_worker() == [("entered_without_exit", "MD0001AA"), ("exited_not_entered", "BC7777XA")]
    # A restarted worker replays both streams and writes nothing twice.
    clock["now"] = now + 3600
    assert len(run_worker()) == 2
    assert exchange.r.xlen(exchange.keys.crossing_matches) == 1
