"""The store's event rows: one row per occurrence, upserted on START/UPDATE/END, read as ``EventRow``.

``record`` (event row + snapshot file) never raises for storage problems: a failure logs
``store_write_failed`` and returns; the alert still goes out through the outbox. Readers get frozen
``EventRow`` values (``get_event``, ``list_events``, ``events_with``), never the raw columns; the
review columns (clip, frame, scores, feedback) are set one by one (``set_clip``, ...).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.media import MEDIA_COLUMN, MediaFiles
from raccoon_watch.store.retention import CLIP_DIR, FRAME_DIR, SNAPSHOT_DIR
from raccoon_watch.store.schema import (
    CLIP_MISSING,
    CLIP_PENDING,
    CLIP_READY,
    FEEDBACK_LABELS,
    REVIEW_COLUMNS,
    SEVERITIES,
)
from raccoon_watch.types import Event, EventKind, Severity

log = structlog.get_logger(__name__)

UNREVIEWED = "unreviewed"  # list_events(verdict=...): no verdict yet; or one of FEEDBACK_LABELS


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event as the store read it. Times are wall clock (epoch s); paths are relative to
    ``storage.path``; ``box`` is ``[xmin, ymin, xmax, ymax]`` normalised to the frame (``types.Box``)."""

    id: str
    camera: str
    label: str
    start_time: float
    end_time: float | None  # None while the visit is open
    top_score: float  # best visit score
    box: tuple[float, float, float, float]
    in_cooldown: bool
    snapshot: str | None  # best frame with the box drawn; None if none or removed
    updated: float
    clip: str | None = None
    clip_state: str | None = None  # CLIP_PENDING | CLIP_READY | CLIP_MISSING; None: the camera records none
    clip_reason: str | None = None  # why the clip is missing
    frame: str | None = None  # the clean best frame (no box)
    # per frame the router saw: [wall ts, visit score, classifier score, detector score(, box)]
    scores: list[list[Any]] = field(default_factory=list)
    feedback: str | None = None  # one of FEEDBACK_LABELS, or None (no verdict)
    feedback_source: str | None = None
    feedback_time: float | None = None
    model_version: str | None = None  # the classifier that scored it
    severity: str = Severity.ALERT.value  # alert | detection
    first_seen: float | None = None  # wall time of the first sighting; None in older rows


class EventRows(MediaFiles):
    """Event rows and their review columns; each snapshot and frame written through ``MediaFiles``."""

    def record(self, event: Event) -> None:
        """Upsert the event row and write its snapshot (held in memory when it cannot be written,
        written and recorded when the disk takes it). Never raises for storage problems."""
        with self._retention_lock:  # _enforce reads the set in other threads
            if event.kind is EventKind.END:
                self._open_events.discard(event.id)
            else:
                self._open_events.add(event.id)
        rel: str | None = None
        if event.snapshot_jpeg is not None:
            rel = self._write_media(SNAPSHOT_DIR, event.camera, event.id, event.snapshot_jpeg)
        try:
            self._write(lambda c: self._upsert_event(c, event, rel), "event")
        except sqlite3.Error as exc:
            log.error("store_write_failed", what="event", event_id=event.id, reason=str(exc))

    def _upsert_event(self, conn: sqlite3.Connection, event: Event, snapshot: str | None) -> None:
        conn.execute(
            "INSERT INTO events (id, camera, label, start_time, end_time, top_score, box, in_cooldown,"
            " snapshot, updated, model_version, severity, first_seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET end_time=excluded.end_time, top_score=excluded.top_score,"
            " first_seen=COALESCE(events.first_seen, excluded.first_seen),"
            " box=excluded.box, in_cooldown=excluded.in_cooldown,"
            " snapshot=COALESCE(excluded.snapshot, events.snapshot), updated=excluded.updated,"
            " model_version=COALESCE(excluded.model_version, events.model_version),"
            " severity=CASE events.severity WHEN 'alert' THEN 'alert' ELSE excluded.severity END",
            (
                event.id,
                event.camera,
                event.label,
                event.start_time,
                event.end_time,
                event.top_score,
                json.dumps([float(v) for v in event.box]),
                int(event.in_cooldown),
                snapshot,
                self._clock(),
                event.model_version,
                event.severity.value,
                event.first_seen_ts or event.start_time,
            ),
        )

    def get_event(self, event_id: str) -> EventRow | None:
        def ops(conn: sqlite3.Connection) -> EventRow | None:
            cur = conn.execute("SELECT * FROM events WHERE id = ?", (event_id,))
            row = cur.fetchone()
            return None if row is None else event_row(dict(zip([d[0] for d in cur.description], row)))

        return self._read(ops, None)

    def read_snapshot(self, event_id: str) -> bytes | None:
        event = self.get_event(event_id)
        if event is None or not event.snapshot:
            return None
        try:
            return (self.path / event.snapshot).read_bytes()
        except OSError:
            return None

    def media_file(self, event_id: str, kind: str) -> Path | None:
        """The file of an event's snapshot / frame / clip as the store recorded it, if it still exists
        inside ``storage.path``: the only way a URL reaches a file (no path from a request is used)."""
        column = MEDIA_COLUMN[kind]
        event = self.get_event(event_id)
        rel = getattr(event, column) if event is not None else None
        if not rel:
            return None
        root = self.path.resolve()
        path = (self.path / rel).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def write_frame(self, camera: str, event_id: str, jpeg: bytes) -> None:
        """Store the clean best frame (no box drawn) of an event, for the feedback export."""
        rel = self._write_media(FRAME_DIR, camera, event_id, jpeg)
        if rel is not None:
            self._set(event_id, frame=rel)

    def set_scores(self, event_id: str, scores: list[tuple[float | None, ...]]) -> None:
        """Per-frame scores of the event: (wall ts, visit score, classifier score, detector score[, the
        candidate's box xmin, ymin, xmax, ymax normalised]), as ``eventtrace.score_row`` makes them."""
        self._set(event_id, scores=json.dumps([[round(v, 4) if v is not None else None for v in row]
                                               for row in scores]))

    def set_clip(self, event_id: str, state: str, clip: Path | None = None, reason: str | None = None) -> None:
        """``pending`` (to be cut), ``ready`` with the file under storage.path, or ``missing`` with why."""
        if state not in (CLIP_PENDING, CLIP_READY, CLIP_MISSING):
            raise ValueError(f"unknown clip state {state!r}")
        rel = str(Path(clip).relative_to(self.path)) if clip is not None else None
        with self._retention_lock:
            if state == CLIP_PENDING:
                self._clip_pending.add(event_id)
            else:
                self._clip_pending.discard(event_id)
            if clip is not None:
                self._note_media(Path(clip), CLIP_DIR)
        self._set(event_id, clip_state=state, clip=rel, clip_reason=reason[:300] if reason else None)

    def set_feedback(self, event_id: str, label: str | None, source: str) -> bool:
        """Store a user's verdict (``raccoon`` | ``not_raccoon`` | None to clear). False: no such event."""
        if label is not None and label not in FEEDBACK_LABELS:
            raise ValueError(f"feedback must be one of {FEEDBACK_LABELS}, got {label!r}")
        if self.get_event(event_id) is None:
            return False
        self._set(event_id, feedback=label, feedback_source=source[:40], feedback_time=self._clock())
        return True

    def _set(self, event_id: str, **columns: Any) -> None:
        names = [n for n in columns if n in {c for c, _ in REVIEW_COLUMNS}]
        if len(names) != len(columns):
            raise ValueError(f"not review columns: {sorted(set(columns) - set(names))}")
        sql = f"UPDATE events SET {', '.join(f'{n}=?' for n in names)} WHERE id=?"
        self._safe_write(lambda c: c.execute(sql, [columns[n] for n in names] + [event_id]), "event")

    def list_events(self, camera: str | None = None, since: float | None = None, until: float | None = None,
                    limit: int = 50, offset: int = 0, severity: str | None = None,
                    verdict: str | None = None) -> tuple[list[EventRow], int]:
        """Events newest first (by start_time, then id) with the filters, one page; and how many match
        in all. ``severity``: ``alert`` | ``detection`` | None (both); ``verdict``: ``unreviewed`` (no
        feedback yet) | ``raccoon`` | ``not_raccoon`` | None (any)."""
        clause, args = _filter_clause(camera, since, until, severity, verdict)

        def ops(conn: sqlite3.Connection) -> tuple[list[EventRow], int]:
            total = conn.execute(f"SELECT COUNT(*) FROM events{clause}", args).fetchone()[0]
            cur = conn.execute(
                f"SELECT * FROM events{clause} ORDER BY start_time DESC, id DESC LIMIT ? OFFSET ?",
                [*args, int(limit), int(offset)],
            )
            names = [d[0] for d in cur.description]
            return [event_row(dict(zip(names, row))) for row in cur.fetchall()], int(total)

        return self._read(ops, ([], 0))

    def neighbours(self, event_id: str, camera: str | None = None, since: float | None = None,
                   until: float | None = None, severity: str | None = None,
                   verdict: str | None = None) -> tuple[str | None, str | None]:
        """(newer, older): the ids next to ``event_id`` in ``list_events``' order among the events that
        match the filters (``event_id`` itself need not match: one just marked stays a place to step
        from in the unreviewed list). (None, None) when there is no such event."""
        clause, args = _filter_clause(camera, since, until, severity, verdict)
        glue = " AND " if clause else " WHERE "

        def ops(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
            here = conn.execute("SELECT start_time, id FROM events WHERE id = ?", (event_id,)).fetchone()
            if here is None:
                return None, None
            newer = conn.execute(
                f"SELECT id FROM events{clause}{glue}(start_time > ? OR (start_time = ? AND id > ?))"
                " ORDER BY start_time ASC, id ASC LIMIT 1", [*args, here[0], here[0], here[1]]).fetchone()
            older = conn.execute(
                f"SELECT id FROM events{clause}{glue}(start_time < ? OR (start_time = ? AND id < ?))"
                " ORDER BY start_time DESC, id DESC LIMIT 1", [*args, here[0], here[0], here[1]]).fetchone()
            return (newer[0] if newer else None), (older[0] if older else None)

        return self._read(ops, (None, None))

    def count_events_since(self, since: float) -> dict[str, int]:
        """camera -> number of events that started at or after ``since`` (wall clock)."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT camera, COUNT(*) FROM events WHERE start_time >= ? GROUP BY camera", (since,)).fetchall(), [])
        return {camera: int(n) for camera, n in rows}

    def count_feedback(self) -> dict[str, int]:
        """verdict (``raccoon`` | ``not_raccoon``) -> number of events marked so (both always present)."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT feedback, COUNT(*) FROM events WHERE feedback IS NOT NULL GROUP BY feedback").fetchall(), [])
        counts = {label: 0 for label in FEEDBACK_LABELS}
        counts.update({label: int(n) for label, n in rows if label in counts})
        return counts

    def last_event_ends(self) -> dict[tuple[str, str], float]:
        """(camera, label) -> wall-clock end of its latest alert (for one that never ended, its last
        write): where the debounce cooldown of a new run starts from (detections start none)."""
        rows = self._read(lambda conn: conn.execute(
            "SELECT camera, label, MAX(COALESCE(end_time, updated)) FROM events WHERE severity = ?"
            " GROUP BY camera, label", (Severity.ALERT.value,)).fetchall(), [])
        return {(camera, label): float(end) for camera, label, end in rows if end is not None}

    def latest_event_id(self, camera: str, severity: str | None = None) -> str | None:
        """The camera's newest event (of ``severity``, when given)."""
        row = self._read(lambda conn: conn.execute(
            "SELECT id FROM events WHERE camera = ? AND (? IS NULL OR severity = ?) ORDER BY start_time DESC LIMIT 1",
            (camera, severity, severity)).fetchone(), None)
        return row[0] if row else None

    def events_with(self, where: str) -> list[EventRow]:
        """Events matching one of the fixed conditions ``feedback`` (a verdict given) or
        ``clip_pending`` (a clip still to cut), oldest first."""
        clauses = {"feedback": "feedback IS NOT NULL", "clip_pending": "clip_state = 'pending'"}
        if where not in clauses:
            raise ValueError(f"unknown condition {where!r}")

        def ops(conn: sqlite3.Connection) -> list[EventRow]:
            cur = conn.execute(f"SELECT * FROM events WHERE {clauses[where]} ORDER BY start_time")
            names = [d[0] for d in cur.description]
            return [event_row(dict(zip(names, row))) for row in cur.fetchall()]

        return self._read(ops, [])


def _filter_clause(camera: str | None, since: float | None, until: float | None, severity: str | None,
                   verdict: str | None) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or "") and its arguments for ``list_events``' filters; ValueError for an
    unknown severity or verdict (pure)."""
    where: list[str] = []
    args: list[Any] = []
    if severity is not None:
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        where.append("severity = ?")
        args.append(severity)
    if verdict == UNREVIEWED:
        where.append("feedback IS NULL")
    elif verdict is not None:
        if verdict not in FEEDBACK_LABELS:
            raise ValueError(f"verdict must be {UNREVIEWED} or one of {FEEDBACK_LABELS}, got {verdict!r}")
        where.append("feedback = ?")
        args.append(verdict)
    for sql, value in (("camera = ?", camera), ("start_time >= ?", since), ("start_time < ?", until)):
        if value is not None:
            where.append(sql)
            args.append(value)
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


def event_row(row: Mapping[str, Any]) -> EventRow:
    """A raw events row (column -> value) -> ``EventRow``: box as a tuple, flags as bools, scores
    decoded (a list of rows, [] if none or unreadable), a NULL severity an alert (pure)."""
    try:
        scores = json.loads(row.get("scores") or "[]")
    except ValueError:
        scores = []
    box = tuple(float(v) for v in json.loads(row["box"]))
    if len(box) != 4:
        raise ValueError(f"expected 4 box coords, got {len(box)}")
    return EventRow(
        id=row["id"], camera=row["camera"], label=row["label"], start_time=row["start_time"],
        end_time=row["end_time"], top_score=row["top_score"], box=(box[0], box[1], box[2], box[3]),
        in_cooldown=bool(row["in_cooldown"]), snapshot=row["snapshot"], updated=row["updated"],
        clip=row.get("clip"), clip_state=row.get("clip_state"), clip_reason=row.get("clip_reason"),
        frame=row.get("frame"), scores=scores, feedback=row.get("feedback"),
        feedback_source=row.get("feedback_source"), feedback_time=row.get("feedback_time"),
        model_version=row.get("model_version"), severity=row.get("severity") or Severity.ALERT.value,
        first_seen=row.get("first_seen"),
    )

