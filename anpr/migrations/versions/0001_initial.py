"""The initial store: events, crops, crossing alerts, watchlist entries and revision, hits.

Revision ID: 0001
Revises:
Create Date: 2025-06-01

Written out in full rather than imported from anpr.store: a migration stays what it was when a
database ran it, whatever the module's tables become later. Datetimes are naive UTC (the store's
UtcDateTime adds the zone back on reading).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_ID = 128


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.String(EVENT_ID), primary_key=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("lane", sa.String(32), nullable=False),
        sa.Column("camera", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("plate", sa.String(16), nullable=False),
        sa.Column("plate_key", sa.String(16), nullable=False),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("char_confidences", sa.JSON(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("best_seen", sa.DateTime(), nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("plate_crop", sa.String(64), nullable=True),
        sa.Column("vehicle_crop", sa.String(64), nullable=True),
        sa.Column("linked_event_id", sa.String(EVENT_ID), nullable=True),
        sa.Column("stored_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_events_plate", "events", ["plate"])
    op.create_index("ix_events_plate_key", "events", ["plate_key"])
    op.create_index("ix_events_best_seen", "events", ["best_seen"])
    op.create_index("ix_events_lane_best_seen", "events", ["lane", "best_seen"])

    op.create_table(
        "crops",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_crops_created_at", "crops", ["created_at"])

    op.create_table(
        "crossing_alerts",
        sa.Column("alert_id", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(EVENT_ID), nullable=False),
        sa.Column("plate", sa.String(16), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("raised_at", sa.DateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("acked_at", sa.DateTime(), nullable=True),
        sa.Column("acked_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_crossing_alerts_raised_at", "crossing_alerts", ["raised_at"])
    op.create_index("ix_crossing_alerts_seen_at", "crossing_alerts", ["seen_at"])

    op.create_table(
        "watchlist_entries",
        sa.Column("entry_id", sa.String(64), primary_key=True),
        sa.Column("plate", sa.String(16), nullable=False),
        sa.Column("plate_key", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("valid_from", sa.DateTime(), nullable=True),
        sa.Column("valid_until", sa.DateTime(), nullable=True),
        sa.Column("lanes", sa.JSON(), nullable=False),
        sa.Column("directions", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("added_by", sa.String(64), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
        sa.Column("removed_at", sa.DateTime(), nullable=True),
        sa.Column("removed_by", sa.String(64), nullable=True),
    )
    op.create_index("ix_watchlist_entries_plate_key", "watchlist_entries", ["plate_key"])

    revision_table = op.create_table(
        "watchlist_revision",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("revision", sa.Integer(), nullable=False),
    )
    op.bulk_insert(revision_table, [{"id": 1, "revision": 0}])

    op.create_table(
        "hits",
        sa.Column("hit_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.String(EVENT_ID), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("matched_as", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("plate", sa.String(16), nullable=False),
        sa.Column("entry_plate", sa.String(16), nullable=False),
        sa.Column("lane", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("raised_at", sa.DateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("acked_at", sa.DateTime(), nullable=True),
        sa.Column("acked_by", sa.String(64), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
    )
    op.create_index("ix_hits_event_id", "hits", ["event_id"])
    op.create_index("ix_hits_seen_at", "hits", ["seen_at"])
    op.create_index("ix_hits_raised_at", "hits", ["raised_at"])


def downgrade() -> None:
    for table in ("hits", "watchlist_revision", "watchlist_entries", "crossing_alerts", "crops", "events"):
        op.drop_table(table)
