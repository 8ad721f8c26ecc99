"""The store's media files: snapshots, clean frames and clips under ``storage.path``, and their retention.

Layout under ``storage.path``::

    snapshots/<camera>/<event_id>.jpg          best frame of the event, box drawn (atomic write)
    frames/<camera>/<event_id>.jpg             the same best frame without the box (feedback export)
    clips/<camera>/<event_id>.mp4              the event's clip (H.264 MP4, faststart; review/clips.py)

A snapshot or frame that cannot be written (disk full, read-only) is held in memory
(``MEDIA_HOLD_BYTES`` at most, the oldest given up first, logged) and written, its path recorded,
when the disk takes writes again (``db.Database`` calls ``_write_held``).

Retention (``raccoon_watch.store.retention``): snapshots and frames under ``snapshot_retention_mb``, clips
under ``clip_retention_mb``, all of them younger than ``snapshot_retention_days``, enforced oldest first
each time a snapshot or frame is written (before the write, with room for its bytes), by the clip
service around each cut (``enforce_retention``), and by the hourly ``sweep``. The media of an event
still open in this run, of one whose clip is still to be cut, and of the newest event are kept. The
rows stay: a deleted file's column is cleared (a clip is marked ``missing``, its reason saying which
limit removed it), so the page says the media is gone instead of linking to nothing.

"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.db import DISK_RETRY_S, Database
from raccoon_watch.store.retention import (
    CLIP_DIR,
    FRAME_DIR,
    MEDIA_DIRS,
    SNAPSHOT_DIR,
    MediaFile,
    RetentionPlan,
    RetentionPolicy,
    plan_deletions,
    safe_name,
    scan_media,
)
from raccoon_watch.store.schema import CLIP_MISSING

log = structlog.get_logger(__name__)

MEDIA_COLUMN = {SNAPSHOT_DIR: "snapshot", FRAME_DIR: "frame", CLIP_DIR: "clip"}  # the events column naming each kind's file
MEDIA_HOLD_BYTES = 64 * 1024 * 1024  # snapshots/frames kept in memory while they cannot be written


@dataclass(frozen=True, slots=True)
class HeldMedia:
    """A snapshot or clean frame that could not be written: its bytes until the disk takes them.
    ``column``: the events column that records its path once written (``snapshot`` | ``frame``)."""

    event_id: str
    column: str
    target: Path
    data: bytes = field(repr=False)


class MediaFiles(Database):
    """Media paths, atomic writes, the files held in memory, and retention (oldest first under the caps)."""

    def __init__(self, path: Path, *, retention: RetentionPolicy | None = None, **rest: Any) -> None:
        self.retention = retention or RetentionPolicy()
        # taken before self._lock, never while holding it: scan, delete and write media one at a time;
        # it also guards the two sets below and _media
        self._retention_lock = threading.Lock()
        self._open_events: set[str] = set()  # events started and not yet ended in this run: their media stay
        self._clip_pending: set[str] = set()  # events whose clip is still to be cut: their media stay
        self._over: dict[str, int] = {}  # cap -> bytes over it that only kept media hold (logged once)
        # rel -> the media files on disk as the store wrote and deleted them: scanned at the first
        # enforcement and at each sweep (None: scan again), kept up to date in between
        self._media: dict[str, MediaFile] | None = None
        self._held: dict[Path, HeldMedia] = {}  # media waiting for the disk, oldest first
        super().__init__(path, **rest)  # opens the database: the state above is ready for its hooks

    def _storage_vanished(self) -> None:
        self._media = None  # the media files went with the folder: scan again at the next enforcement

    def snapshot_path(self, camera: str, event_id: str) -> Path:
        """``<storage>/snapshots/<camera>/<event_id>.jpg``; ids are sanitised for the filesystem."""
        return self.media_path(SNAPSHOT_DIR, camera, event_id)

    def media_path(self, kind: str, camera: str, event_id: str) -> Path:
        """``<storage>/<kind>/<camera>/<event_id>.<ext>`` for kind snapshots | frames | clips."""
        if kind not in MEDIA_DIRS:
            raise ValueError(f"unknown media kind {kind!r}, expected one of {MEDIA_DIRS}")
        return self.path / kind / camera / f"{safe_name(event_id)}.{'mp4' if kind == CLIP_DIR else 'jpg'}"

    def _write_media(self, kind: str, camera: str, event_id: str, data: bytes) -> str | None:
        """Make room for ``data`` under its cap, then write it (atomic); its path relative to the
        folder, or None when it could not be written (it is then held in memory)."""
        target = self.media_path(kind, camera, event_id)
        with self._retention_lock:
            self._enforce({kind: len(data)}, (event_id,))
            written = atomic_write(target, data, what=MEDIA_COLUMN[kind], event_id=event_id)
            if written:
                self._note_media(target, kind)
        if not written:
            self._hold(HeldMedia(event_id, MEDIA_COLUMN[kind], target, data))
            return None
        return str(target.relative_to(self.path))

    def _hold(self, item: HeldMedia) -> None:
        """Keep media that could not be written, up to ``MEDIA_HOLD_BYTES`` (the oldest given up first)."""
        with self._lock:
            self._held.pop(item.target, None)
            self._held[item.target] = item
            total = sum(len(h.data) for h in self._held.values())
            while total > MEDIA_HOLD_BYTES and len(self._held) > 1:
                oldest = next(iter(self._held))
                total -= len(self._held.pop(oldest).data)
                log.error("store_media_given_up", path=str(oldest), reason=f"over {MEDIA_HOLD_BYTES} bytes held in memory")
            self._next_disk_try = min(self._next_disk_try, time.monotonic() + DISK_RETRY_S)

    def _write_held(self) -> int:
        """Write the held media files and record their paths; returns how many were written. No room
        is made for them (this runs under the store lock, which the retention lock never waits in):
        the next write or sweep does, after a scan that finds them."""
        self._media = None
        written = 0
        for target, item in list(self._held.items()):
            if not atomic_write(target, item.data, quiet=True):
                break  # the disk is still full: the rest waits too
            del self._held[target]
            written += 1
            rel = str(target.relative_to(self.path))
            self._safe_write(lambda c, i=item, r=rel: c.execute(
                f"UPDATE events SET {i.column}=? WHERE id=?", (r, i.event_id)), "event")
        return written

    def held_media(self) -> int:
        with self._lock:
            return len(self._held)

    def _forget_lost_media(self, conn: sqlite3.Connection) -> int:
        """After the folder was deleted: rows whose snapshot, frame or clip file went with it no
        longer name it (a clip is marked missing, saying why). Returns how many paths were cleared."""
        lost = 0
        with conn:
            for column in ("snapshot", "frame", "clip"):
                rows = conn.execute(f"SELECT id, {column} FROM events WHERE {column} IS NOT NULL").fetchall()
                gone = [(eid,) for eid, rel in rows if not (self.path / rel).is_file()]
                if column == "clip":
                    conn.executemany("UPDATE events SET clip=NULL, clip_state=?, clip_reason=? WHERE id=?",
                                     [(CLIP_MISSING, "deleted with the storage folder", eid) for (eid,) in gone])
                else:
                    conn.executemany(f"UPDATE events SET {column}=NULL WHERE id=?", gone)
                lost += len(gone)
        return lost

    def enforce_retention(self, incoming: Mapping[str, int] | None = None, keep: Iterable[str] = ()) -> RetentionPlan:
        """Delete the oldest media until every cap holds with ``incoming`` (kind -> bytes about to be
        written) added, and what is older than the age limit. ``keep``: event ids whose media stay
        (besides the open, pending and newest events). The clip service calls it around each cut."""
        with self._retention_lock:
            return self._enforce(incoming or {}, keep)

    def _enforce(self, incoming: Mapping[str, int], keep: Iterable[str], now: float | None = None) -> RetentionPlan:
        """``enforce_retention`` with ``_retention_lock`` held."""
        newest = self._read(lambda c: c.execute("SELECT id FROM events ORDER BY start_time DESC LIMIT 1").fetchone(),
                            None)
        kept = {safe_name(i) for i in (*self._open_events, *self._clip_pending, *keep, *(newest or ()))}
        media = self._media  # a local: another thread may drop the list meanwhile (_write_held, _check_vanished)
        if media is None:
            media = self._media = {m.rel: m for m in scan_media(self.path)}
        labelled = {safe_name(r[0]) for r in self._read(
            lambda c: c.execute("SELECT id FROM events WHERE feedback IS NOT NULL").fetchall(), [])}
        plan = plan_deletions(media.values(), self.retention.caps(), kept, incoming=incoming,
                              now=self._clock() if now is None else now, max_age_s=self.retention.max_age_s,
                              labelled=labelled)
        gone = [f for f in plan.delete if self._unlink(self.path / f.rel)]
        for f in gone:
            media.pop(f.rel, None)
        if gone:
            self._forget_removed(gone, plan.reasons)
            log.info("retention_deleted", files=len(gone), bytes=sum(f.size for f in gone),
                     by=dict(Counter(plan.reasons[f.rel] for f in gone)))
        for cap, over in plan.over.items():
            if cap not in self._over:
                log.warning("retention_cap_exceeded", cap=cap, over_bytes=over,
                            why="the rest is media of open, pending or the newest events, which are kept")
        self._over = dict(plan.over)
        return plan

    def _note_media(self, target: Path, kind: str) -> None:
        """A media file the store (or the clip service) has just written, into the list (retention lock held)."""
        media = self._media
        if media is None:
            return  # the next enforcement scans, and finds it
        try:
            st = target.stat()
        except OSError:
            return
        rel = str(target.relative_to(self.path))
        media[rel] = MediaFile(rel, kind, st.st_size, st.st_mtime, target.stem)

    def _forget_removed(self, gone: list[MediaFile], reasons: Mapping[str, str]) -> None:
        """Clear the columns naming deleted media files; a clip is marked missing, saying which limit removed it."""

        def ops(conn: sqlite3.Connection) -> None:
            for f in gone:
                if f.kind == CLIP_DIR:
                    conn.execute("UPDATE events SET clip=NULL, clip_state=?, clip_reason=? WHERE clip=?",
                                 (CLIP_MISSING, f"removed by retention: {self.retention.why(reasons[f.rel])}", f.rel))
                else:
                    column = MEDIA_COLUMN[f.kind]
                    conn.execute(f"UPDATE events SET {column}=NULL WHERE {column}=?", (f.rel,))

        self._safe_write(ops, "retention")

    @staticmethod
    def _unlink(p: Path) -> bool:
        try:
            p.unlink()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("store_write_failed", what="retention", path=str(p), reason=exc.strerror or str(exc))
            return False


    def sweep_media(self, now: float) -> RetentionPlan:
        """The retention limits once more, after a fresh scan (files deleted or added by hand since)."""
        with self._retention_lock:
            self._media = None
            return self._enforce({}, (), now=now)


def atomic_write(target: Path, data: bytes, quiet: bool = False, **context: Any) -> bool:
    """Write ``data`` to ``target`` through a temp file and rename; False (logged unless ``quiet``)
    on an OSError."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        return True
    except OSError as exc:
        if not quiet:
            log.error("store_write_failed", path=str(target), reason=exc.strerror or str(exc), **context)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False

