"""Every Redis key and stream name anpr uses, in one place.

All names hang off one prefix so tests (and two sites sharing a broker) never collide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "anpr"

    @property
    def events(self) -> str:
        """Stream of PlateEvent JSON, one entry per vehicle pass."""
        return f"{self.prefix}:events"

    def plate_image(self, event_id: str) -> str:
        """JPEG of an event's best plate crop (string key with a TTL)."""
        return f"{self.prefix}:img:plate:{event_id}"

    def vehicle_image(self, event_id: str) -> str:
        """JPEG of an event's vehicle crop (string key with a TTL)."""
        return f"{self.prefix}:img:vehicle:{event_id}"
