"""What ``events.db`` holds: its tables, the columns added since, and the values of its state columns.

Events table: one row per occurrence (upserted on START/UPDATE/END). The box is stored as JSON
``[xmin, ymin, xmax, ymax]`` normalised to the frame, as in ``raccoon_watch.types.Box``.

Review columns (added to older databases at open, ``migrate``): ``clip`` (path relative to
``storage.path``, NULL while none), ``clip_state`` (``pending`` | ``ready`` | ``missing``, NULL when
the camera records no clips) with ``clip_reason`` (why it is missing), ``frame`` (the clean best
frame), ``scores`` (JSON ``[[ts, visit_score, classifier_score, detector_score(, box)], ...]`` per
frame the router saw), ``feedback`` (``raccoon`` | ``not_raccoon`` | NULL), ``feedback_source`` and
``feedback_time``, ``severity`` (``alert`` | ``detection``: Frigate's review terms, ``types.Severity``;
rows written before detections existed are alerts).
"""

from __future__ import annotations

import sqlite3

from raccoon_watch.types import Severity

DB_NAME = "events.db"
# (column, type) added to the events table after its first version; migrate adds what is missing
REVIEW_COLUMNS = (
    ("clip", "TEXT"), ("clip_state", "TEXT"), ("clip_reason", "TEXT"), ("frame", "TEXT"), ("scores", "TEXT"),
    ("feedback", "TEXT"), ("feedback_source", "TEXT"), ("feedback_time", "REAL"),
    ("model_version", "TEXT"),  # the classifier that scored the event (site_models.model_version)
    ("severity", "TEXT NOT NULL DEFAULT 'alert'"),  # alert | detection; older rows were all alerts
    ("first_seen", "REAL"),  # wall time of the first sighting (Event.first_seen_ts); NULL in older rows
)
SEVERITIES = tuple(s.value for s in Severity)  # what the severity column holds
CLIP_PENDING, CLIP_READY, CLIP_MISSING = "pending", "ready", "missing"  # the clip_state column
FEEDBACK_LABELS = ("raccoon", "not_raccoon")  # the feedback column
TABLES = ("events", "outbox", "kv")
PARTIAL_ID_BASE = 1 << 40  # first outbox id of a memory store that began without a copy of the file

# the outbox state column: pending -> done | failed (for good) | dropped (evicted by the bound)
PENDING = "pending"
DONE = "done"
FAILED = "failed"
DROPPED = "dropped"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    camera      TEXT NOT NULL,
    label       TEXT NOT NULL,
    start_time  REAL NOT NULL,
    end_time    REAL,
    top_score   REAL NOT NULL,
    box         TEXT NOT NULL,          -- JSON [xmin, ymin, xmax, ymax], normalised
    in_cooldown INTEGER NOT NULL,
    snapshot    TEXT,                   -- path relative to storage.path, NULL if none/swept
    updated     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_start ON events(start_time);
CREATE INDEX IF NOT EXISTS events_camera_start ON events(camera, start_time);
CREATE TABLE IF NOT EXISTS outbox (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    sink      TEXT NOT NULL,
    key       TEXT NOT NULL,
    payload   BLOB,
    meta      TEXT NOT NULL,            -- JSON object
    state     TEXT NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0,
    retry_at  REAL NOT NULL DEFAULT 0,  -- wall clock; 0 = now
    error     TEXT,
    created   REAL NOT NULL,
    updated   REAL NOT NULL,
    UNIQUE (sink, key)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(sink, state, id);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Add the review columns an older events table lacks (SQLite: ADD COLUMN, no rewrite)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    for name, kind in REVIEW_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")

