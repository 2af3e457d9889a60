"""Every message that travels between anpr's stages, defined once.

In-process messages on the per-frame hot path (boxes, detections, reads) are frozen dataclasses:
cheap to build and impossible to mutate behind a later stage's back. Messages that leave the
process as JSON (plate events, the partner exchange) are pydantic models with a `schema_version`,
so a consumer can parse and validate them without our code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

from anpr.plates import normalise

# -- in-process, per frame ---------------------------------------------------------------------


# eq=False: comparing pixel arrays field by field is ambiguous in numpy and never what is meant.
@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One picture from a camera or a recording, as anpr.capture hands it to the detector.

    `seq` counts the frames the source produced (from 0, across reconnects): a gap tells the
    consumer how many it missed. `ts` is the capture time in UTC: wall clock at grab for a live
    camera, start time + position in the file for a replay, so a replay is reproducible.
    """

    camera: str
    seq: int
    ts: datetime
    image: np.ndarray = field(repr=False)  # BGR, height x width x 3, uint8


@dataclass(frozen=True, slots=True)
class FrameRef:
    """Where a Frame's pixels wait in its camera's shared-memory ring (anpr/runtime/ring.py).

    This, not the image, is what crosses between processes: ~150 bytes pickled against ~6 MB for
    a 1080p frame. Slots are reused, so `seq` and `ts` are kept to let the reader tell whether the
    slot still holds this frame; `height` and `width` give the image shape without touching it.
    """

    camera: str
    slot: int
    seq: int
    ts: datetime  # capture time, UTC (Frame.ts)
    height: int
    width: int


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in pixels of the original image (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def padded(self, frac_x: float, frac_y: float, width: int, height: int) -> Box:
        """Grow by a fraction of the box size, clipped to the image.

        Detector boxes are looser/tighter than hand labels in unpredictable ways (recall jumps
        from IoU 0.5 to 0.3 in shared/NOTES.md), so OCR gets a padded crop.
        """
        dx, dy = self.width * frac_x, self.height * frac_y
        return Box(
            max(0.0, self.x1 - dx),
            max(0.0, self.y1 - dy),
            min(float(width), self.x2 + dx),
            min(float(height), self.y2 + dy),
        )

    def as_int_list(self) -> list[int]:
        return [round(self.x1), round(self.y1), round(self.x2), round(self.y2)]


@dataclass(frozen=True, slots=True)
class PlateDetection:
    """One plate box found by a detector."""

    box: Box
    confidence: float


@dataclass(frozen=True, slots=True)
class PlateRead:
    """Text an OCR backend read from one plate crop, before grammar checks.

    `char_confidences` has one entry per character of `text` so the tracker can vote per position.
    `country` (ISO 3166 alpha-2) is the network's own guess of the plate's country, where it makes one
    (the CCT's region head), with its probability: anpr.plates takes it as the plate's country.
    """

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = field(default=())
    country: str | None = None
    country_confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class PlateResult:
    """A plate found in an image: box, grammar-checked text and the country it fits."""

    box: Box
    detection_confidence: float
    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    country: str | None
    raw_text: str


# -- across processes and over the wire -------------------------------------------------------

UtcDatetime = Annotated[
    datetime,
    PlainSerializer(lambda d: d.astimezone(UTC).isoformat().replace("+00:00", "Z"), return_type=str),
]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Direction(StrEnum):
    """Where the vehicle goes relative to the country running this site."""

    ENTRY = "entry"
    EXIT = "exit"
    UNKNOWN = "unknown"


class Side(StrEnum):
    """The end of the vehicle a camera saw, from the plate's motion: approaching shows the front plate.

    A trailer carries only a rear plate, so this is what tells its pass from a car's (anpr/passes.py).
    """

    FRONT = "front"
    REAR = "rear"
    UNKNOWN = "unknown"


class PlateEvent(BaseModel):
    """One vehicle pass in one lane: the unit written to the events stream and sent to the partner.

    `event_id` is deterministic (site, lane, plate, first-seen time) so that a retried XADD or a
    re-delivered message can be recognised as the same event everywhere downstream.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    event_id: str
    site: str
    lane: str
    camera: str
    direction: Direction
    plate: str = Field(min_length=1, max_length=16, pattern=r"^[A-Z0-9]+$")
    country: str | None = Field(default=None, min_length=2, max_length=2)
    confidence: float = Field(ge=0.0, le=1.0)
    char_confidences: list[float] = Field(default_factory=list)
    first_seen: UtcDatetime
    last_seen: UtcDatetime
    best_seen: UtcDatetime
    reads: int = Field(ge=1)
    box: list[int] = Field(min_length=4, max_length=4)
    plate_image: str | None = Field(default=None, description="key or path of the best plate crop (JPEG)")
    vehicle_image: str | None = Field(default=None, description="key or path of the vehicle crop (JPEG)")
    linked_event_id: str | None = Field(
        default=None, description="event of the tractor unit when this is a trailer's plate"
    )

    @staticmethod
    def make_id(site: str, lane: str, plate: str, first_seen: datetime) -> str:
        """Deterministic id: same pass, same id, in every process and after every retry."""
        stamp = first_seen.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")
        digest = hashlib.sha256(f"{site}|{lane}|{plate}|{stamp}".encode()).hexdigest()[:16]
        return f"{site}-{lane}-{stamp}-{digest}"


# -- the exchange matcher's outputs (anpr/exchange/matching.py) -----------------------------------


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1


class CrossingMatch(_Output):
    """The partner's exit and our entry of one vehicle."""

    match_id: str
    exact: bool
    exit_event_id: str
    entry_event_id: str
    exit_plate: str
    entry_plate: str
    exit_site: str
    entry_site: str
    exited_at: UtcDatetime
    entered_at: UtcDatetime
    transit_s: float


class CrossingAlert(_Output):
    """A vehicle that left the partner's country and never reached us, or reached us without leaving it."""

    alert_id: str
    kind: Literal["exited_not_entered", "entered_without_exit"]
    event_id: str
    plate: str
    site: str
    seen_at: UtcDatetime
    raised_at: UtcDatetime
    detail: str


# -- watchlists and hits (anpr/watchlist.py, anpr/hits.py) ---------------------------------------


class Severity(StrEnum):
    """What an officer should do on a hit: note it, check the vehicle, or stop it."""

    INFO = "info"
    CHECK = "check"
    STOP = "stop"


class MatchMode(StrEnum):
    """How close a read must be to a watchlist plate; each mode includes the ones before it.

    `confusable`: equal once OCR's look-alikes (O/0, B/8, I/1...) are folded together;
    `one_edit`: that, or one character added, dropped or replaced (a read that lost or gained one).
    """

    EXACT = "exact"
    CONFUSABLE = "confusable"
    ONE_EDIT = "one_edit"


class ListSource(StrEnum):
    """Who asked for a watchlist entry."""

    CUSTOMS = "customs"
    PARTNER = "partner"
    POLICE = "police"


class WatchlistEntry(BaseModel):
    """A plate officers want to know about, with the rules of when it counts.

    `plate` is stored normalised (`anpr.plates.normalise`): typed in Cyrillic or with spaces and
    dashes, it becomes the A-Z0-9 spelling every event uses. Empty `lanes` / `directions` mean all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    entry_id: str = Field(min_length=1, max_length=64)
    plate: str = Field(min_length=2, max_length=16, pattern=r"^[A-Z0-9]+$")
    mode: MatchMode = MatchMode.CONFUSABLE
    reason: str = Field(default="", max_length=500)
    severity: Severity = Severity.CHECK
    valid_from: UtcDatetime | None = None
    valid_until: UtcDatetime | None = None
    lanes: list[str] = Field(default_factory=list)
    directions: list[Direction] = Field(default_factory=list)
    source: ListSource = ListSource.CUSTOMS
    added_by: str = Field(min_length=1, max_length=64)
    added_at: UtcDatetime = Field(default_factory=utc_now)

    @field_validator("plate", mode="before")
    @classmethod
    def _normalised(cls, value: object) -> object:
        return normalise(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _valid_window(self) -> WatchlistEntry:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def applies(self, at: datetime, lane: str, direction: Direction) -> bool:
        """Whether the entry is in force for a pass at this time, in this lane and direction."""
        if self.valid_from is not None and at < self.valid_from:
            return False
        if self.valid_until is not None and at >= self.valid_until:
            return False
        if self.lanes and lane not in self.lanes:
            return False
        return not self.directions or direction in self.directions


class Hit(BaseModel):
    """A plate event that matched a watchlist entry: raised once per event and entry.

    It carries both whole, as they were when it was raised, so an officer (or a webhook receiver)
    sees what matched what without another lookup, even after the entry has been edited or removed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    hit_id: str
    matched_as: MatchMode = Field(description="how the read matched: exact, confusable or one_edit")
    raised_at: UtcDatetime
    event: PlateEvent
    entry: WatchlistEntry

    @staticmethod
    def make_id(event_id: str, entry_id: str) -> str:
        """Same event and entry, same id: a re-delivered event raises nothing new."""
        return hashlib.sha256(f"{event_id}|{entry_id}".encode()).hexdigest()[:24]
