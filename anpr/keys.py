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

    def event_seen(self, event_id: str) -> str:
        """Marker that an event id was written to the stream (holds its entry id, with a TTL).

        XADD has no dedup on Redis 7.0: the writer checks this key in the same script as the XADD,
        so a retried or re-spooled event is written once.
        """
        return f"{self.prefix}:events:seen:{event_id}"

    # -- watchlist hits and the stream consumers (anpr/hits.py, anpr/streams.py) --------------------

    @property
    def hits(self) -> str:
        """Stream of Hit JSON: an event that matched a watchlist entry, once per event and entry."""
        return f"{self.prefix}:hits"

    def hit_emitted(self, hit_id: str) -> str:
        """Marker that a hit was written to the hits stream, so a re-delivered event raises nothing new."""
        return f"{self.prefix}:hits:emitted:{hit_id}"

    @property
    def console_acks(self) -> str:
        """Stream of hit acknowledgements made in the console, so every open console shows them at once."""
        return f"{self.prefix}:console:acks"

    def dead_letters(self, group: str) -> str:
        """Entries a consumer group gave up on, with the reason and the original fields (never retried by itself)."""
        return f"{self.prefix}:dead:{group}"

    def consumer_stats(self, group: str) -> str:
        """Hash of a consumer group's counters (done, retried, dead_lettered) that survive restarts."""
        return f"{self.prefix}:consumer:{group}:stats"

    def consumer_health(self, group: str, consumer: str) -> str:
        """JSON status of one consumer process, with a TTL: absent means dead or stuck."""
        return f"{self.prefix}:consumer:{group}:health:{consumer}"

    def site_box(self, box: str) -> str:
        """Heartbeat of one box of a site spread over several: JSON of its cameras' states, with a TTL."""
        return f"{self.prefix}:site:box:{box}"

    # -- lane registry (anpr/passes.py) ----------------------------------------------------------

    def lane_passes(self, site: str, lane: str) -> str:
        """Sorted set of a lane's recent passes: event ids scored by last-seen epoch ms (with a TTL).

        Shared by the lane's cameras, which may run in different worker processes: a trailer's rear
        plate on one camera finds its tractor's front plate from another here.
        """
        return f"{self.prefix}:lane:{site}:{lane}:passes"

    def lane_pass_records(self, site: str, lane: str) -> str:
        """Hash of the same passes: event id -> JSON (plate, direction, side, last_seen, link state), with a TTL."""
        return f"{self.prefix}:lane:{site}:{lane}:pass-records"

    # -- partner exchange (anpr/exchange) ------------------------------------------------------

    @property
    def exchange_dead(self) -> str:
        """Dead-letter stream: events the publisher gave up on, with the reason (never retried by itself)."""
        return f"{self.prefix}:exchange:dead"

    @property
    def publisher_stats(self) -> str:
        """Hash of publisher counters (delivered, retried, dead_lettered) that survive restarts."""
        return f"{self.prefix}:exchange:publisher:stats"

    def publisher_health(self, consumer: str) -> str:
        """JSON status of one publisher process, with a TTL: absent means dead or stuck."""
        return f"{self.prefix}:exchange:publisher:health:{consumer}"

    @property
    def publisher_state(self) -> str:
        """Hash of what `--check` and /metrics judge by: pause (reason, since), dead-letter streak, last delivery."""
        return f"{self.prefix}:exchange:publisher:state"

    @property
    def exchange_redrive(self) -> str:
        """Stream of dead letters an operator re-queued; the publisher delivers them and deletes each once done."""
        return f"{self.prefix}:exchange:redrive"

    @property
    def exchange_inbox(self) -> str:
        """Receiver side: stream of accepted partner messages, each stored once with its signature."""
        return f"{self.prefix}:exchange:inbox"

    @property
    def exchange_landing(self) -> str:
        """Receiver side: stream the partner XADDs signed messages into (Redis transport), not yet checked."""
        return f"{self.prefix}:exchange:landing"

    @property
    def exchange_rejected(self) -> str:
        """Receiver side: landing entries refused by the checks, with the reason."""
        return f"{self.prefix}:exchange:rejected"

    @property
    def receiver_stats(self) -> str:
        """Receiver side: hash of counters (stored, duplicate)."""
        return f"{self.prefix}:exchange:receiver:stats"

    def exchange_nonce(self, key_id: str, nonce: str) -> str:
        """Receiver side: a nonce seen recently (TTL twice the clock-skew window), to refuse replays."""
        return f"{self.prefix}:exchange:nonce:{key_id}:{nonce}"

    def exchange_message(self, message_id: str) -> str:
        """Receiver side: marker that a message id was stored (TTL dedup_ttl_s), for idempotency."""
        return f"{self.prefix}:exchange:msg:{message_id}"

    @property
    def crossing_matches(self) -> str:
        """Partner exit paired with our entry of the same vehicle (CrossingMatch JSON)."""
        return f"{self.prefix}:crossing:matches"

    @property
    def crossing_alerts(self) -> str:
        """Exits never followed by an entry, entries without an exit (CrossingAlert JSON)."""
        return f"{self.prefix}:crossing:alerts"

    def crossing_emitted(self, output_id: str) -> str:
        """Marker that a match or alert was written, so a restarted matcher does not repeat it."""
        return f"{self.prefix}:crossing:emitted:{output_id}"
