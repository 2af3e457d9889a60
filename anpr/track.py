"""Tracking and voting: per-frame plate detections of one lane in, one PlateEvent per vehicle pass out.

The tracker runs in two phases per frame so that OCR runs only where it can help:

1. `associate(ts, detections, sharpness)` continues or starts tracks and flags the crops worth
   reading: the first crop of a track, then crops clearly better (area x sharpness) than the best
   one read so far, at most `max_reads` per track, and one crop every `reread_s` whatever its
   quality. An approaching plate grows every frame, so this reads a handful of ever-larger crops
   instead of every frame; a plate standing at the booth is still read again each `reread_s`.
2. The pipeline OCRs the flagged crops and hands the results to `add_read`. A track that has
   settled on its plate (decided, or confidently voted) is still looked at every `reread_s`: a
   sure read of another plate in its place (the next car pulled up) ends it and starts a new pass.
3. `flush(now)` decides the passes that are over (unseen for `lost_after_s`) or confident enough to
   emit early, votes their text and returns events with the JPEGs of their best read, and the side
   of the vehicle the camera saw (approaching: front plate, receding: rear plate).

Trailers are not linked here: a trailer carries only a rear plate and hides its tractor's, so one
camera never sees both plates of a truck. The lane registry (anpr/passes.py) links them across the
lane's cameras from the side each emission reports.

Pure logic on the caller's timestamps: replay and live cameras run the same code, and the tests
need no clock, Redis or models. All state is in the object; `reset()` forgets it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from anpr.config import LaneConfig, TrackerConfig
from anpr.plates import UNSURE_BELOW, edit_distance, look_alike, part_of
from anpr.schema import Box, Direction, PlateDetection, PlateEvent, PlateResult, Side

# What PlateEvent accepts; a read outside it would make the event invalid, so it is counted and skipped.
_PLATE_TEXT = re.compile(r"^[A-Z0-9]{1,16}$")


@dataclass(frozen=True, slots=True)
class Assignment:
    """A detection continued or started a track; `should_read` asks the pipeline to OCR its crop."""

    track_id: int
    detection: PlateDetection
    should_read: bool


@dataclass(frozen=True, slots=True)
class Emission:
    """A decided pass: the event plus the JPEGs of its best read, as `EventSink.publish` takes them.

    `side` is the end of the vehicle the camera saw, from the plate's motion; the lane registry needs
    it to tell a trailer's plate from a car's, and the event does not carry it.
    """

    event: PlateEvent
    plate_jpeg: bytes | None
    vehicle_jpeg: bytes | None
    side: Side


@dataclass(frozen=True, slots=True)
class Vote:
    """A track's reads combined into one text; `best` indexes the read whose crop shows it best."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    country: str | None
    best: int


@dataclass(slots=True)
class TrackerStats:
    """Counters for the stage's metrics: where tracks went, and what never became an event."""

    tracks: int = 0
    ocr_requests: int = 0
    reads: int = 0
    rejected_reads: int = 0  # text PlateEvent cannot carry: a recogniser bug, never a silent drop
    events: int = 0
    replaced: int = 0  # settled tracks whose place another vehicle's plate took: a new pass started
    duplicates: int = 0  # passes folded into an earlier event of the same plate (dedup window)
    unread: int = 0  # tracks that ended without one legible read: no event


@dataclass(slots=True)
class _Read:
    ts: datetime
    result: PlateResult
    plate_jpeg: bytes | None
    vehicle_jpeg: bytes | None
    cut: bool  # the crop touched the frame's edge


@dataclass(slots=True)
class _Track:
    id: int
    first_seen: datetime
    last_seen: datetime
    first_box: Box
    last_box: Box
    reads: list[_Read] = field(default_factory=list)
    read_attempts: int = 0
    best_quality: float = 0.0
    last_read_at: datetime | None = None  # when an OCR read was last asked for
    look_at: datetime | None = None  # when a settled track was last looked at (`_should_read`)
    # Set when the pass is decided (emitted, folded into an earlier event, or unread). A decided
    # track stays alive while the plate is in view, so a car stopped at the booth keeps feeding it
    # instead of starting a new track, and it never emits twice.
    done: bool = False
    text: str = ""
    confidences: tuple[float, ...] = ()  # per character of `text`, as voted
    event_id: str | None = None


def vote(results: Sequence[PlateResult]) -> Vote | None:
    """Combine a track's reads into one text, or None without reads.

    The length with the most total read confidence wins, then its reads vote per position weighted
    by their character confidences, so a misread character in a minority of reads is outvoted. A
    position's confidence is the winner's weight over the number of *all* reads (reads of another
    length disagree everywhere): agreement keeps it high, a lone read keeps its own confidence.
    """
    if not results:
        return None
    by_length: dict[int, float] = defaultdict(float)
    for r in results:
        by_length[len(r.text)] += r.confidence
    length = max(by_length, key=lambda n: (by_length[n], n))
    voters = [r for r in results if len(r.text) == length]
    chars: list[str] = []
    confidences: list[float] = []
    for i in range(length):
        weights: dict[str, float] = defaultdict(float)
        for r in voters:
            weights[r.text[i]] += r.char_confidences[i] if len(r.char_confidences) == length else r.confidence
        winner = max(weights, key=lambda c: (weights[c], c))  # ties broken by char: deterministic
        chars.append(winner)
        confidences.append(min(1.0, weights[winner] / len(results)))
    text = "".join(chars)
    countries: dict[str, float] = defaultdict(float)
    for r in voters:
        if r.country is not None:
            countries[r.country] += r.confidence
    country = max(countries, key=lambda c: (countries[c], c)) if countries else None
    best = max(range(len(results)), key=lambda i: (results[i].text == text, results[i].confidence))
    return Vote(text, sum(confidences) / length, tuple(confidences), country, best)


def _voters(reads: Sequence[_Read]) -> list[_Read]:
    """The reads that vote: all but those of cut crops that are part of a whole read of the track.

    A receding plate is largest when it enters the frame, where the edge may still hide a
    character; that read is often the surest of the track ("IS27RV" 0.99 against "IS27RVT" 0.98,
    measured on lane_day with frames dropped) and would outvote the whole plate.
    """
    whole = [r.result.text for r in reads if not r.cut]
    return [r for r in reads if not (r.cut and any(part_of(r.result.text, w) for w in whole))]


def similar(
    a: str, b: str, max_edits: int, a_confidences: Sequence[float] = (), b_confidences: Sequence[float] = ()
) -> bool:
    """True when `a` and `b` may be reads of one plate: `a` becomes `b` in at most `max_edits`
    single-character edits, and where they are the same length, each character that differs is a
    look-alike pair (B/8, O/0) or one that either read was unsure of (under plates.UNSURE_BELOW;
    no confidences: unsure).

    One confusable, misread or dropped character must not turn a car stopped at the booth into two
    events; but a fleet's trucks cross in convoy with consecutive plates (AA1234BB, AA1235BB), and a
    sure 4 against a sure 5 is another vehicle.
    """
    if abs(len(a) - len(b)) > max_edits or edit_distance(a, b) > max_edits:
        return False

    def unsure(confidences: Sequence[float], i: int) -> bool:
        return len(confidences) != len(a) or confidences[i] < UNSURE_BELOW

    return len(a) != len(b) or all(
        x == y or look_alike(x) == y or look_alike(y) == x or unsure(a_confidences, i) or unsure(b_confidences, i)
        for i, (x, y) in enumerate(zip(a, b, strict=True))
    )


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


class Tracker:
    """Tracks of one lane's camera, and the passes decided recently (for dedup).

    Timestamps must be timezone-aware (UTC) and non-decreasing per call sequence.
    """

    def __init__(self, cfg: TrackerConfig, lane: LaneConfig) -> None:
        self.cfg = cfg
        self.lane = lane
        self.reset()

    def reset(self) -> None:
        """Forget every track and decided pass (new replay, camera switched)."""
        self._tracks: dict[int, _Track] = {}
        # Decided passes, live or ended, kept while a new track could still be their duplicate.
        self._decided: list[_Track] = []
        # Tracks another vehicle's plate took over before they were decided: decided at the next flush.
        self._replaced: list[_Track] = []
        self._next_id = 1
        self.stats = TrackerStats()

    def associate(
        self, ts: datetime, detections: Sequence[PlateDetection], sharpness: Sequence[float]
    ) -> list[Assignment]:
        """Match one frame's detections to live tracks; one Assignment per detection, in input order.

        `sharpness[i]` is any focus measure of detection i's crop (e.g. variance of the Laplacian);
        only its ratio between crops of the same track matters.
        """
        if len(sharpness) != len(detections):
            raise ValueError(f"{len(detections)} detections but {len(sharpness)} sharpness values")
        live = [t for t in self._tracks.values() if _seconds(ts, t.last_seen) < self.cfg.lost_after_s]
        pairs = [
            (score, ti, di)
            for ti, t in enumerate(live)
            for di, d in enumerate(detections)
            if (score := self._match_score(t.last_box, d.box, _seconds(ts, t.last_seen))) > 0
        ]
        # Greedy, best pair first: a handful of plates per frame does not need the Hungarian method.
        matched: dict[int, _Track] = {}
        used: set[int] = set()
        for _, ti, di in sorted(pairs, reverse=True):
            if ti not in used and di not in matched:
                used.add(ti)
                matched[di] = live[ti]
        out = []
        for di, d in enumerate(detections):
            track = matched.get(di) or self._start(ts, d.box)
            track.last_seen, track.last_box = ts, d.box
            quality = d.box.area * max(0.0, sharpness[di])
            out.append(Assignment(track.id, d, self._should_read(track, quality, ts)))
        return out

    def add_read(
        self,
        track_id: int,
        ts: datetime,
        result: PlateResult | None,
        *,
        plate_jpeg: bytes | None = None,
        vehicle_jpeg: bytes | None = None,
        cut: bool = False,
    ) -> None:
        """Add the OCR result of a crop `associate` asked for; None means the crop was illegible.

        `cut`: the crop touched the frame's edge, so characters may be missing; such a read is left
        out of the vote when it is part of a longer whole read of the track. Results for a track
        that has ended or been decided meanwhile are ignored: they cannot change an event already sent.
        """
        track = self._tracks.get(track_id)
        if track is None or result is None:
            return
        if not _PLATE_TEXT.fullmatch(result.text):
            self.stats.rejected_reads += 1
            return
        if track.look_at == ts and (settled := self._settled(track)) is not None:
            text, confidences = settled
            if result.confidence < self.cfg.early_confidence or similar(
                text, result.text, self.cfg.dedup_max_edits, confidences, result.char_confidences
            ):
                return  # the settled plate still, or a read too unsure to say otherwise
            # Another vehicle's plate took this one's place (the next car pulled up to the booth, a
            # cut in edited footage): the track ends here and the new plate starts its own pass.
            del self._tracks[track.id]
            if not track.done:
                self._replaced.append(track)
            new = self._start(ts, result.box)
            new.read_attempts, new.last_read_at, new.best_quality = 1, ts, track.best_quality
            self.stats.replaced += 1
            track = new
        elif track.done:
            return  # a read asked for before the pass was decided: it cannot change the event sent
        self.stats.reads += 1
        track.reads.append(_Read(ts, result, plate_jpeg, vehicle_jpeg, cut))

    def flush(self, now: datetime, final: bool = False) -> list[Emission]:
        """Decide the passes that are over, then those confident (or old) enough to go early.

        `final=True` (end of a replay) treats every track as ended. Tracks are decided in first-seen
        order, so one camera's events leave in the order its vehicles came.
        """
        ended = sorted(
            [
                *self._replaced,
                *(t for t in self._tracks.values() if final or _seconds(now, t.last_seen) >= self.cfg.lost_after_s),
            ],
            key=lambda t: (t.first_seen, t.id),
        )
        self._replaced = []
        out = [e for t in ended if not t.done and (e := self._decide(t)) is not None]
        for t in ended:
            self._tracks.pop(t.id, None)
        for t in sorted(self._tracks.values(), key=lambda t: (t.first_seen, t.id)):
            if not t.done and self._ready_early(t, now) and (e := self._decide(t)) is not None:
                out.append(e)
        self._decided = [
            t for t in self._decided if t.id in self._tracks or _seconds(now, t.last_seen) <= self.cfg.dedup_window_s
        ]
        return out

    # -- association and OCR gating ---------------------------------------------------------------

    def _match_score(self, a: Box, b: Box, gap_s: float) -> float:
        """Above 1 for overlapping boxes (by IoU), in (0, 1] for a near jump, 0 for no match.

        The jump rule keeps a fast plate on one track when the detector runs at a few fps and
        consecutive boxes no longer overlap. Its reach grows with the time the track went unseen
        (up to twice `max_jump` at `lost_after_s`): a plate the detector missed for a few runs has
        moved on meanwhile (measured on truck_rear: a receding trailer plate missed for 0.8 s had
        moved 1.1 plate widths, which broke the pass in two).
        """
        iou = a.iou(b)
        if iou >= self.cfg.iou_match:
            return 1.0 + iou
        reach = self.cfg.max_jump * max(a.width, b.width) * (1.0 + min(1.0, gap_s / self.cfg.lost_after_s))
        distance = math.dist(a.center, b.center)
        return 1.0 - distance / reach if reach > 0 and distance < reach else 0.0

    def _start(self, ts: datetime, box: Box) -> _Track:
        track = _Track(self._next_id, ts, ts, box, box)
        self._next_id += 1
        self._tracks[track.id] = track
        self.stats.tracks += 1
        return track

    def _should_read(self, track: _Track, quality: float, ts: datetime) -> bool:
        """Read the first crop, then clearly better ones, within the per-track budget; and every
        `reread_s` a crop even if no better.

        A plate that does not grow (a car waiting at the booth, a camera that follows the car) offers
        no better crop, so without the timed read its pass hangs on its first read. Past the budget,
        a track still reads one crop a `reread_s` until it settles (`_settled`); a settled track is
        only looked at, to notice another vehicle's plate in its place (`add_read`). The budget is
        spent when the read is requested (not when it returns), and with `reread_s` it bounds the
        OCR a track causes: `max_reads` at once, then one crop a `reread_s`.
        """
        due = (
            self.cfg.reread_s > 0
            and quality > 0
            and track.last_read_at is not None
            and _seconds(ts, track.last_read_at) >= self.cfg.reread_s
        )
        better = not track.read_attempts or quality > track.best_quality * (1 + self.cfg.read_gain)
        if not (better or due):
            return False  # most frames: decided here, without voting the track's reads
        if self._settled(track) is not None:
            if not due:
                return False
            track.look_at = ts
        elif track.read_attempts < self.cfg.max_reads:
            track.read_attempts += 1
        elif not due:
            return False
        track.last_read_at = ts
        track.best_quality = max(track.best_quality, quality)
        self.stats.ocr_requests += 1
        return True

    # -- deciding a pass --------------------------------------------------------------------------

    def _ready_early(self, track: _Track, now: datetime) -> bool:
        """Confident (enough reads, high vote) or waited `max_delay_s`; and the direction known.

        Direction is the point of the event at a border: a vehicle first seen standing still (the
        camera came up while it waited at the booth) is held back until it moves, at most
        `direction_wait_s` (measured: the live benchmark's 20 s still pre-roll sent OKA417 early as
        `unknown`, though it drove off towards the camera right after).
        """
        if not track.reads:
            return False
        age = _seconds(now, track.first_seen)
        if self._approaching(track) is None and age < self.cfg.direction_wait_s:
            return False
        return age >= self.cfg.max_delay_s or self._confident_vote(track) is not None

    def _confident_vote(self, track: _Track) -> Vote | None:
        """The vote once enough reads (`early_min_reads`) reach `early_confidence`; else None."""
        if len(track.reads) < self.cfg.early_min_reads:
            return None
        v = vote([r.result for r in _voters(track.reads)])
        return v if v is not None and v.confidence >= self.cfg.early_confidence else None

    def _settled(self, track: _Track) -> tuple[str, tuple[float, ...]] | None:
        """The plate a track has settled on, with its voted confidences: decided, or voted with
        confidence; None: still reading."""
        if track.done:
            return track.text, track.confidences
        v = self._confident_vote(track)
        return None if v is None else (v.text, v.char_confidences)

    def _decide(self, track: _Track) -> Emission | None:
        """Vote, then emit an event, fold the pass into an earlier one, or count it unread."""
        track.done = True
        voters = _voters(track.reads)
        v = vote([r.result for r in voters])
        if v is None:
            self.stats.unread += 1
            return None
        earlier = next(
            (
                d
                for d in reversed(self._decided)
                if _seconds(track.first_seen, d.last_seen) <= self.cfg.dedup_window_s
                and similar(d.text, v.text, self.cfg.dedup_max_edits, d.confidences, v.char_confidences)
            ),
            None,
        )
        if earlier is not None:
            # Same vehicle again (stopped at the booth, track broken by an occlusion): it keeps the
            # first event's identity, and its last_seen extends the dedup window.
            track.text, track.confidences, track.event_id = earlier.text, earlier.confidences, earlier.event_id
            self._decided.append(track)
            self.stats.duplicates += 1
            return None
        approaching = self._approaching(track)
        lane = self.lane
        track.text, track.confidences = v.text, v.char_confidences
        track.event_id = PlateEvent.make_id(lane.site, lane.lane, v.text, track.first_seen)
        self._decided.append(track)
        best = voters[v.best]
        self.stats.events += 1
        event = PlateEvent(
            event_id=track.event_id,
            site=lane.site,
            lane=lane.lane,
            camera=lane.camera,
            direction=self._direction(approaching),
            plate=v.text,
            country=v.country,
            confidence=round(v.confidence, 4),
            char_confidences=[round(c, 4) for c in v.char_confidences],
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            best_seen=best.ts,
            reads=len(track.reads),
            box=best.result.box.as_int_list(),
        )
        side = Side.UNKNOWN if approaching is None else Side.FRONT if approaching else Side.REAR
        return Emission(event, best.plate_jpeg, best.vehicle_jpeg, side)

    def _approaching(self, track: _Track) -> bool | None:
        """Towards the camera (True), away from it (False) or unknown, from the plate's motion.

        Moving down the image (or growing) = approaching. Vertical travel is measured in plate
        heights and wins when large enough; otherwise the change of size decides (a camera looking
        straight along the lane); otherwise unknown.
        """
        first, last = track.first_box, track.last_box
        height = (first.height + last.height) / 2
        travel = (last.center[1] - first.center[1]) / height if height > 0 else 0.0
        growth = math.log(last.height / first.height) if first.height > 0 and last.height > 0 else 0.0
        if abs(travel) >= self.cfg.min_motion:
            return travel > 0
        if abs(growth) >= math.log1p(self.cfg.min_motion):  # log: shrinking by 1/3 = growing by 1/2
            return growth > 0
        return None

    def _direction(self, approaching: bool | None) -> Direction:
        """Entry/exit: what approaching this camera means on its lane, and the other for receding."""
        if approaching is None:
            return Direction.UNKNOWN
        toward = Direction(self.lane.approach_direction)
        if approaching:
            return toward
        return Direction.EXIT if toward is Direction.ENTRY else Direction.ENTRY
