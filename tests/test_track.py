"""Tracker and vote: scripted cars drive the real two-phase loop (associate -> OCR -> add_read -> flush)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from anpr.config import LaneConfig, TrackerConfig
from anpr.schema import Box, Direction, PlateDetection, PlateEvent, PlateResult, Side
from anpr.track import Emission, Tracker, similar, vote

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
LANE = LaneConfig(site="palanca", lane="in1", camera="cam1", approach_direction="entry")
FPS = 5


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plate_box(cx: float, cy: float, width: float) -> Box:
    h = width / 4.5  # EU plate aspect
    return Box(cx - width / 2, cy - h / 2, cx + width / 2, cy + h / 2)


def result(text: str, conf: float = 0.9, box: Box | None = None, country: str | None = "UA") -> PlateResult:
    return PlateResult(box or plate_box(0, 0, 100), 0.9, text, conf, (conf,) * len(text), country, text)


@dataclass
class Car:
    """A plate in view from `start` for `seconds`; OCR returns `reads[k]` for its k-th read (last repeats)."""

    reads: list[str | None]
    start: float
    seconds: float
    y: tuple[float, float] = (200.0, 700.0)  # centre y at start and end: growing = approaching
    width: tuple[float, float] = (80.0, 160.0)
    x: float = 640.0
    conf: float = 0.9
    confs: list[float] = field(default_factory=list)  # per read, instead of `conf` (last repeats)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # detector misses / occlusions
    n_read: int = 0

    def box_at(self, t: float) -> Box | None:
        if not self.start <= t <= self.start + self.seconds or any(a <= t < b for a, b in self.gaps):
            return None
        f = (t - self.start) / self.seconds
        return plate_box(
            self.x, self.y[0] + (self.y[1] - self.y[0]) * f, self.width[0] + (self.width[1] - self.width[0]) * f
        )

    def ocr(self, box: Box) -> PlateResult | None:
        text = self.reads[min(self.n_read, len(self.reads) - 1)]
        conf = self.confs[min(self.n_read, len(self.confs) - 1)] if self.confs else self.conf
        self.n_read += 1
        return result(text, conf, box) if text else None


def drive(
    cars: list[Car], cfg: TrackerConfig | None = None, lane: LaneConfig = LANE, tracker: Tracker | None = None
) -> list[tuple[float, Emission]]:
    """Replay the cars frame by frame (through `tracker` if given); every emission with the time it came out."""
    tracker = tracker or Tracker(cfg or TrackerConfig(), lane)
    end = max(c.start + c.seconds for c in cars)
    out: list[tuple[float, Emission]] = []
    for k in range(round(end * FPS) + 1):
        t = k / FPS
        visible = [(c, b) for c in cars if (b := c.box_at(t)) is not None]
        detections = [PlateDetection(b, 0.9) for _, b in visible]
        for (car, b), a in zip(visible, tracker.associate(at(t), detections, [1.0] * len(visible)), strict=True):
            if a.should_read:
                tracker.add_read(a.track_id, at(t), car.ocr(b), plate_jpeg=f"jpeg@{t}".encode())
        out += [(t, e) for e in tracker.flush(at(t))]
    out += [(end + 2, e) for e in tracker.flush(at(end + 2))]
    out += [(end + 2, e) for e in tracker.flush(at(end + 2), final=True)]
    return out


def plates(out: list[tuple[float, Emission]]) -> list[str]:
    return [e.event.plate for _, e in out]


UA, UA2 = "AA1234BB", "BC5678AX"


@pytest.mark.parametrize(
    ("cars", "expected"),
    [
        pytest.param(
            [Car([UA, "AA1Z34BB", UA, UA, "AA12348B", UA], 0, 4)], [UA], id="one pass, minority misreads outvoted"
        ),
        pytest.param([Car([UA], 0, 300, y=(600, 600), width=(150, 150))], [UA], id="stopped at the booth 5 min"),
        pytest.param(
            [Car([UA], 0, 300, y=(600, 600), width=(150, 150), gaps=[(60, 65), (120, 130), (200, 290)])],
            [UA],
            id="stopped, track broken by occlusions",
        ),
        pytest.param([Car([UA], 0, 20), Car(["AA1234B8"], 25, 20)], [UA], id="one-char variant after a break"),
        pytest.param([Car([UA], 0, 4), Car([UA2], 10, 4)], [UA, UA2], id="two cars one after another"),
        pytest.param([Car([UA], 0, 4, x=300), Car([UA2], 0.4, 4, x=1000)], [UA, UA2], id="two cars side by side"),
        pytest.param([Car([UA], 0, 4), Car([UA], 200, 4)], [UA, UA], id="same car back after dedup window"),
        pytest.param([Car([None], 0, 4)], [], id="never legible: no event"),
        pytest.param([Car([None, None, UA], 0, 4)], [UA], id="legible only when closer"),
    ],
)
def test_passes_become_events(cars: list[Car], expected: list[str]) -> None:
    assert plates(drive(cars)) == expected


def test_event_fields() -> None:
    car = Car([UA, UA, UA], 0, 4, conf=0.95)
    out = drive([car], TrackerConfig(early_min_reads=50))
    [(_, em)] = out
    ev = em.event
    assert ev.event_id == PlateEvent.make_id("palanca", "in1", UA, at(0))
    assert (ev.site, ev.lane, ev.camera, ev.country, ev.linked_event_id) == ("palanca", "in1", "cam1", "UA", None)
    assert (ev.first_seen, ev.last_seen) == (at(0), at(4))
    assert ev.reads == 8  # max_reads: the plate grew past read_gain eight times
    assert ev.confidence == pytest.approx(0.95) and ev.char_confidences == [pytest.approx(0.95)] * 8
    best_t = (ev.best_seen - T0).total_seconds()
    assert em.plate_jpeg == f"jpeg@{best_t}".encode()  # the crop of the read the event came from
    assert ev.box == car.box_at(best_t).as_int_list()  # type: ignore[union-attr]
    assert PlateEvent.model_validate_json(ev.model_dump_json()) == ev


@pytest.mark.parametrize(
    ("approach", "y", "width", "direction", "side"),
    [
        ("entry", (200, 700), (80, 160), Direction.ENTRY, Side.FRONT),
        ("entry", (700, 200), (160, 80), Direction.EXIT, Side.REAR),
        ("exit", (200, 700), (80, 160), Direction.EXIT, Side.FRONT),
        ("exit", (700, 200), (160, 80), Direction.ENTRY, Side.REAR),
        ("entry", (400, 400), (80, 160), Direction.ENTRY, Side.FRONT),  # straight at the camera: only grows
        ("exit", (400, 400), (160, 80), Direction.ENTRY, Side.REAR),  # straight away from it: only shrinks
        ("entry", (400, 402), (100, 101), Direction.UNKNOWN, Side.UNKNOWN),  # jitter is not motion
    ],
)
def test_direction_and_side_from_motion(
    approach: str, y: tuple[float, float], width: tuple[float, float], direction: Direction, side: Side
) -> None:
    lane = LANE.model_copy(update={"approach_direction": approach})
    [(_, em)] = drive([Car([UA], 0, 4, y=y, width=width)], TrackerConfig(early_min_reads=50), lane)
    assert (em.event.direction, em.side) == (direction, side)


@pytest.mark.parametrize(
    ("conf", "cfg", "emitted_at"),
    [
        (0.95, TrackerConfig(), 2.0),  # confident at its 3rd read: one look a second (reread_s) until then
        (0.95, TrackerConfig(reread_s=0), 3.2),  # better crops only: the plate gains +15% area every ~1.6 s
        (0.5, TrackerConfig(), 5.0),  # never confident: max_delay_s after first sight
        (0.5, TrackerConfig(max_delay_s=2), 2.0),
        (0.95, TrackerConfig(early_confidence=1.0, max_delay_s=600), 21.6),  # waits for the end of the track
    ],
)
def test_early_emit_once(conf: float, cfg: TrackerConfig, emitted_at: float) -> None:
    out = drive([Car([UA], 0, 20, conf=conf)], cfg)
    assert [t for t, _ in out] == [pytest.approx(emitted_at, abs=0.41)]


@pytest.mark.parametrize(
    ("widths", "sharpness", "max_reads", "expected"),
    [
        ([100, 100, 100, 100], [1, 1, 1, 1], 8, [True, False, False, False]),
        ([100, 100, 100], [1, 2, 2.1], 8, [True, True, False]),  # sharper crop of the same size
        ([100, 104, 108, 112], [1, 1, 1, 1], 8, [True, False, True, False]),  # +15% area needed
        ([100, 120, 140, 160, 180], [1] * 5, 3, [True, True, True, False, False]),  # budget per track
        ([100, 80, 60], [1, 1, 1], 8, [True, False, False]),  # receding: smaller crops are not read
    ],
)
def test_ocr_only_on_better_crops(
    widths: list[float], sharpness: list[float], max_reads: int, expected: list[bool]
) -> None:
    tracker = Tracker(TrackerConfig(max_reads=max_reads), LANE)
    flags = []
    for i, (w, s) in enumerate(zip(widths, sharpness, strict=True)):
        [a] = tracker.associate(at(i / FPS), [PlateDetection(plate_box(640, 400, w), 0.9)], [s])
        assert a.track_id == 1
        flags.append(a.should_read)
    assert flags == expected


@pytest.mark.parametrize(("reread_s", "looks_after"), [(0.0, []), (1.0, [1.8, 2.8, 3.8])])
def test_after_the_pass_is_emitted_only_a_look_a_reread_s(reread_s: float, looks_after: list[float]) -> None:
    tracker = Tracker(TrackerConfig(max_delay_s=1, reread_s=reread_s), LANE)
    looks = []
    for i in range(20):
        t = i / FPS
        [a] = tracker.associate(at(t), [PlateDetection(plate_box(640, 400, 100 + 10 * i), 0.9)], [1.0])
        if a.should_read:
            tracker.add_read(a.track_id, at(t), result(UA, 0.5))  # never confident
            looks.append(t)
        emitted = tracker.flush(at(t))
        if i == 5:
            assert plates([(0, e) for e in emitted]) == [UA]
    # After the emit at 1.0 s, the decided track is only looked at (another vehicle in its place?),
    # a second apart; reads of its own plate change nothing.
    assert [t for t in looks if t > 1.0] == pytest.approx(looks_after)
    assert tracker.flush(at(100), final=True) == []


@pytest.mark.parametrize(
    ("reread_s", "expected"),
    [(1.0, [UA, UA2]), (0.0, [UA])],  # without the look, the second car is lost in the first one's track
)
def test_next_car_in_the_decided_plates_place_is_a_new_pass(reread_s: float, expected: list[str]) -> None:
    """The first car leaves the booth and the next pulls up to the same place within `lost_after_s`:
    the box continues the first car's decided track, and only a look at the crop tells."""
    first = Car([UA], 0, 8, y=(500, 600), width=(150, 150), conf=0.95)  # drove up to the booth
    second = Car([UA2], 8.2, 8, y=(600, 600), width=(150, 150), conf=0.95)
    tracker = Tracker(TrackerConfig(reread_s=reread_s), LANE)
    assert plates(drive([first, second], tracker=tracker)) == expected
    assert tracker.stats.replaced == len(expected) - 1


@pytest.mark.parametrize(
    ("later", "conf"),
    [("AA1234B8", 0.95), ("BC5678AX", 0.6)],  # one character off; another text but unsure
)
def test_a_decided_pass_does_not_split_on_a_misread(later: str, conf: float) -> None:
    car = Car([UA, UA, UA, later], 0, 20, y=(600, 600), width=(150, 150), confs=[0.95, 0.95, 0.95, conf])
    tracker = Tracker(TrackerConfig(), LANE)
    out = drive([car], tracker=tracker)
    assert plates(out) == [UA] and car.n_read > 5  # decided after 3 reads, then looked at each second
    assert tracker.stats.replaced == 0  # not split (a split of the look-alike would fold as a duplicate)


def test_a_stopped_plate_is_read_a_reread_s_until_confident() -> None:
    # Never better (same box, same sharpness): one look a second, and none once confident.
    car = Car([None, UA, UA, UA], 0, 20, y=(600, 600), width=(150, 150), conf=0.95)
    [(_, em)] = drive([car], TrackerConfig(reread_s=1.0))
    assert em.event.plate == UA and em.event.reads == 3  # at 1, 2 and 3 s: the first crop was illegible
    assert car.n_read == 21  # then looked at once a second, in case another plate takes its place


@pytest.mark.parametrize(
    ("reads", "text"),
    [
        # (text, confidence, cut by the frame's edge) in read order
        ([("IS27RV", 0.99, True), ("IS27RVT", 0.97, False)], "IS27RVT"),  # the cut read is part of the whole
        ([("IS27RV", 0.99, False), ("IS27RVT", 0.97, False)], "IS27RV"),  # not cut: it votes
        ([("BH4315XT", 0.99, True), ("A315XT", 0.95, False)], "BH4315XT"),  # the edge cut nothing: it votes
        ([("IS27RV", 0.99, True)], "IS27RV"),  # nothing better: the cut read is the event
    ],
)
def test_reads_of_crops_cut_by_the_frame_edge(reads: list[tuple[str, float, bool]], text: str) -> None:
    tracker = Tracker(TrackerConfig(max_reads=10, read_gain=0), LANE)
    for i, (read, conf, cut) in enumerate(reads):
        [a] = tracker.associate(at(i / FPS), [PlateDetection(plate_box(640, 400 - 10 * i, 100), 0.9)], [1.0 + i])
        assert a.should_read
        tracker.add_read(a.track_id, at(i / FPS), result(read, conf), cut=cut)
    assert plates([(0, e) for e in tracker.flush(at(100), final=True)]) == [text]


@pytest.mark.parametrize(
    ("still_s", "wait_s", "emitted_at", "direction"),
    [
        (10, 60, 10, Direction.ENTRY),  # waited at the booth when first seen: sent once it moves
        (80, 60, 60, Direction.UNKNOWN),  # never moved within direction_wait_s: sent without
        (10, 0, 2, Direction.UNKNOWN),  # 0: no waiting: sent once confident (three looks a second apart)
    ],
)
def test_early_emit_waits_for_the_direction(
    still_s: float, wait_s: float, emitted_at: float, direction: Direction
) -> None:
    tracker = Tracker(TrackerConfig(max_delay_s=5, direction_wait_s=wait_s), LANE)
    out: list[tuple[float, Emission]] = []
    for i in range(int((still_s + 4) * FPS)):
        t = i / FPS
        y = 300 + max(0.0, t - still_s) * 100  # standing, then driving down the image (approaching)
        [a] = tracker.associate(at(t), [PlateDetection(plate_box(640, y, 120), 0.9)], [1.0])
        if a.should_read:
            tracker.add_read(a.track_id, at(t), result(UA, 0.99))
        out += [(t, e) for e in tracker.flush(at(t))]
    out += [(100.0, e) for e in tracker.flush(at(100), final=True)]
    [(t, e)] = out
    assert e.event.direction is direction
    assert emitted_at <= t < emitted_at + 1.5


def test_no_trailer_links_on_one_camera() -> None:
    # Cars queueing bumper to bumper, 0.4 s apart: one camera never sees a truck's two plates
    # (anpr/passes.py links trailers across the lane's cameras), so nothing is linked here.
    out = drive([Car([UA], 0, 4), Car([UA2], 4.4, 4), Car(["KA0001AA"], 8.8, 4)])
    assert plates(out) == [UA, UA2, "KA0001AA"]
    assert [e.event.linked_event_id for _, e in out] == [None, None, None]


def test_final_flush_and_reset() -> None:
    tracker = Tracker(TrackerConfig(), LANE)
    [a] = tracker.associate(at(0), [PlateDetection(plate_box(640, 400, 100), 0.9)], [1.0])
    tracker.add_read(a.track_id, at(0), result(UA, 0.5))
    assert tracker.flush(at(0.5)) == []
    assert plates([(0, e) for e in tracker.flush(at(0.5), final=True)]) == [UA]
    assert tracker.flush(at(0.6), final=True) == []
    assert tracker.stats.events == 1
    tracker.reset()
    assert tracker.stats.events == 0
    [a] = tracker.associate(at(1), [PlateDetection(plate_box(640, 400, 100), 0.9)], [1.0])
    tracker.add_read(a.track_id, at(1), result(UA, 0.5))
    assert len(tracker.flush(at(1), final=True)) == 1  # dedup memory went with the reset


def test_bad_input_is_refused_or_counted() -> None:
    tracker = Tracker(TrackerConfig(), LANE)
    with pytest.raises(ValueError, match="sharpness"):
        tracker.associate(at(0), [PlateDetection(plate_box(640, 400, 100), 0.9)], [])
    [a] = tracker.associate(at(0), [PlateDetection(plate_box(640, 400, 100), 0.9)], [1.0])
    tracker.add_read(a.track_id, at(0), result("aa 12"))
    assert tracker.stats.rejected_reads == 1
    assert tracker.flush(at(0), final=True) == [] and tracker.stats.unread == 1


@pytest.mark.parametrize(
    ("reads", "text", "confidence"),
    [
        ([], None, None),
        ([result(UA, 0.6)], UA, 0.6),
        ([result(UA), result(UA), result("AA1Z34BB")], UA, (7 * 0.9 + 0.6) / 8),
        ([result("AA1Z34BB", 0.3), result("AA1Z34BB", 0.3), result(UA, 0.9)], UA, (7 * 1.5 / 3 + 0.3) / 8),
        ([result(UA), result(UA), result("A1234BB")], UA, 0.6),  # short read disagrees everywhere
        ([result("ABC123", country="MD"), result("ABC128", 0.5, country=None)], "ABC123", None),
    ],
)
def test_vote(reads: list[PlateResult], text: str | None, confidence: float | None) -> None:
    v = vote(reads)
    assert (v.text if v else None) == text
    if v is not None and confidence is not None:
        assert v.confidence == pytest.approx(confidence)
    if v is not None:
        assert reads[v.best].text == text and len(v.char_confidences) == len(text)


def test_vote_country_and_per_char_confidence() -> None:
    v = vote([result("ABC123", country="MD"), result("ABC128", 0.5, country=None)])
    assert v is not None and v.country == "MD"
    assert v.char_confidences == pytest.approx([0.7] * 5 + [0.45])


@pytest.mark.parametrize(
    ("a", "b", "edits", "same"),
    [
        (UA, UA, 0, True),
        (UA, "AA1234B8", 1, True),
        (UA, "AA1234B8", 0, False),
        (UA, "A1234BB", 1, True),  # dropped char
        (UA, "AA1234BBX", 1, True),
        (UA, "AB1234B8", 1, False),
        ("ABC123", UA, 3, False),
    ],
)
def test_similar(a: str, b: str, edits: int, same: bool) -> None:
    assert similar(a, b, edits) is same


SURE, UNSURE_5 = (0.99,) * 8, (0.99,) * 5 + (0.6,) + (0.99,) * 2


@pytest.mark.parametrize(
    ("b", "a_confidences", "b_confidences", "same"),
    [
        ("AA1234B8", SURE, SURE, True),  # B/8 look alike: a misread however sure
        ("AA1235BB", SURE, SURE, False),  # a sure 4 against a sure 5: another plate
        ("AA1235BB", SURE, UNSURE_5, True),  # one of them unsure there: may be a misread
        ("AA1235BB", SURE, (), True),  # no confidences: as unsure
        ("A1234BB", SURE, SURE[:7], True),  # a dropped character
    ],
)
def test_similar_with_confidences(
    b: str, a_confidences: tuple[float, ...], b_confidences: tuple[float, ...], same: bool
) -> None:
    assert similar(UA, b, 1, a_confidences, b_confidences) is same


def test_a_convoy_with_consecutive_plates_is_one_event_each() -> None:
    # A fleet's trucks one after another, plates one sure digit apart: not one truck seen twice.
    trucks = [Car([UA], 0, 4, conf=0.95), Car(["AA1235BB"], 10, 4, conf=0.95), Car([UA], 20, 4, conf=0.95)]
    assert plates(drive(trucks)) == [UA, "AA1235BB"]  # the first truck back within the dedup window: one
