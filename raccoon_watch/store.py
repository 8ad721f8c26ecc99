"""The event store: SQLite record of every event, its snapshot file, and the delivery outbox.

Layout under ``storage.path``::

    events.db                                  SQLite, WAL, one connection guarded by a lock
    snapshots/<camera>/<event_id>.jpg          best frame of the event, box drawn (atomic write)
    frames/<camera>/<event_id>.jpg             the same best frame without the box (feedback export)
    clips/<camera>/<event_id>.mp4              the event's clip (H.264 MP4, faststart; clips.py)

Review columns (added to older databases at open, ``_migrate``): ``clip`` (path relative to
``storage.path``, NULL while none), ``clip_state`` (``pending`` | ``ready`` | ``missing``, NULL when
the camera records no clips) with ``clip_reason`` (why it is missing), ``frame`` (the clean best
frame), ``scores`` (JSON ``[[ts, visit_score, classifier_score, detector_score(, box)], ...]`` per
frame the router saw), ``feedback`` (``raccoon`` | ``not_raccoon`` | NULL), ``feedback_source`` and
``feedback_time``, ``severity`` (``alert`` | ``detection``: Frigate's review terms, ``types.Severity``;
rows written before detections existed are alerts).

Retention (``raccoon_watch.retention``): snapshots and frames under ``snapshot_retention_mb``, clips
under ``clip_retention_mb``, all of them younger than ``snapshot_retention_days``, enforced oldest first
each time a snapshot or frame is written (before the write, with room for its bytes), by the clip
service around each cut (``enforce_retention``), and by the hourly ``sweep``. The media of an event
still open in this run, of one whose clip is still to be cut, and of the newest event are kept. The
rows stay: a deleted file's column is cleared (a clip is marked ``missing``, its reason saying which
limit removed it), so the page says the media is gone instead of linking to nothing.

Events table: one row per occurrence (upserted on START/UPDATE/END). The box is stored as JSON
``[xmin, ymin, xmax, ymax]`` normalised to the frame, as in ``raccoon_watch.types.Box``.

Outbox: every delivery a network sink makes (one push, one MQTT message) is written here *before*
it is attempted and marked done only when the other side acknowledged it. Rows are unique per
``(sink, key)`` so re-enqueueing the same delivery (e.g. after a restart replays an event) is a
no-op. States: ``pending`` -> ``done`` (acknowledged) | ``failed`` (rejected for good) |
``dropped`` (evicted by the bound). Payloads of finished rows are cleared to free space; the rows
themselves stay (so the key stays known) until the retention sweep prunes them.

Bound policy: at most ``outbox_max`` *pending* rows per sink. Enqueueing beyond that evicts that
sink's oldest pending rows (state ``dropped``) and logs ``outbox_dropped`` with the counts: the
newest alerts are the ones worth having after a long outage.

Failure policy: the store never raises into its caller for storage problems.
- ``record`` (event row + snapshot file) failing (disk full, read-only) logs ``store_write_failed``
  and returns; the alert still goes out through the outbox.
- A damaged database (``sqlite3.DatabaseError``: "database disk image is malformed", "file is not
  a database", or a failing ``PRAGMA quick_check`` at open), met at open or by any read or write,
  is moved aside as ``events.db.corrupt-<UTC time>`` (with its WAL), what can be read is salvaged
  (``sqlite3 <file> .recover`` when the sqlite3 command exists, else row by row) into a new
  ``events.db``, and ``store_corrupt_recovered`` is logged at error level; ``health()`` (and so
  /healthz) shows it for the rest of the run. Detection never stops for it.
- If the database cannot be opened at all, or a write fails (disk full, read-only), the store
  switches to an in-memory database and logs ``store_fallback_memory`` at error level: alerts keep
  flowing. The memory database starts as a copy of the whole file (SQLite's backup API; when even
  that cannot be read, the pending deliveries only). Snapshots and frames that cannot be written are
  held in memory too (``MEDIA_HOLD_BYTES`` at most, the oldest given up first, logged).
- Back to disk: ``maintain()`` (the daemon's housekeeping calls it every second) tries the disk
  again every ``DISK_RETRY_S``: a probe file of ``PROBE_BYTES`` must be written and synced first;
  then what the memory database holds is written into ``events.db`` in one transaction (the whole
  copy; or, when it began without one, merged row by row: an event's non-empty columns win, a
  finished delivery is never made pending again), the held media files are written and their paths
  recorded, and the store is on disk again (``store_back_on_disk``). A failed attempt changes nothing
  on disk (the transaction rolls back) and is tried again later. Delivery row ids stay the same, so
  a sender holding a row across the switch marks the right one done: nothing is pushed twice.
- The folder or the file deleted while running (``rm -rf`` of the storage): SQLite would go on
  writing into the deleted file, and all of it would be gone at the next start. Before each write
  and in ``maintain()`` the store compares the file at ``events.db`` with the one it has open
  (device and inode, one ``stat``); when it is gone or another file, the store re-creates the folder
  and a new ``events.db`` and copies everything from the open (deleted) file into it, logging
  ``store_vanished`` at error level; ``health()`` shows it for the rest of the run (media files
  deleted with the folder are gone; their rows stay). When the new file cannot be made, the store
  goes to memory as above and returns to disk when it can.

Durability: ``synchronous=NORMAL`` in WAL mode survives a process crash / ``kill -9`` (the case
this outbox exists for); only an OS crash or power loss can lose the last transactions.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.retention import (
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
from raccoon_watch.types import DeliveryCounts, Event, EventKind, Severity, StorageSnapshot

log = structlog.get_logger(__name__)

DB_NAME = "events.db"
MEDIA_COLUMN = {SNAPSHOT_DIR: "snapshot", FRAME_DIR: "frame", CLIP_DIR: "clip"}  # the events column naming each kind's file
# (column, type) added to the events table after its first version; _migrate adds what is missing
REVIEW_COLUMNS = (
    ("clip", "TEXT"), ("clip_state", "TEXT"), ("clip_reason", "TEXT"), ("frame", "TEXT"), ("scores", "TEXT"),
    ("feedback", "TEXT"), ("feedback_source", "TEXT"), ("feedback_time", "REAL"),
    ("model_version", "TEXT"),  # the classifier that scored the event (site_models.model_version)
    ("severity", "TEXT NOT NULL DEFAULT 'alert'"),  # alert | detection; older rows were all alerts
    ("first_seen", "REAL"),  # wall time of the first sighting (Event.first_seen_ts); NULL in older rows
)
SEVERITIES = tuple(s.value for s in Severity)  # what the severity column holds
CLIP_PENDING, CLIP_READY, CLIP_MISSING = "pending", "ready", "missing"
FEEDBACK_LABELS = ("raccoon", "not_raccoon")
UNREVIEWED = "unreviewed"  # list_events(verdict=...): no verdict yet; or one of FEEDBACK_LABELS
TABLES = ("events", "outbox", "kv")
RECOVER_TIMEOUT_S = 60.0
DISK_RETRY_S = 5.0  # in memory: how often maintain() tries the disk again
PROBE_BYTES = 64 * 1024  # a write the disk must take (and sync) before the write-back is tried
MEDIA_HOLD_BYTES = 64 * 1024 * 1024  # snapshots/frames kept in memory while they cannot be written
PARTIAL_ID_BASE = 1 << 40  # first outbox id of a memory store that began without a copy of the file
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # primary result codes (sqlite.org/rescode.html)

PENDING = "pending"
DONE = "done"
FAILED = "failed"
DROPPED = "dropped"

_SCHEMA = """
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


@dataclass(frozen=True, slots=True)
class HeldMedia:
    """A snapshot or clean frame that could not be written: its bytes until the disk takes them.
    ``column``: the events column that records its path once written (``snapshot`` | ``frame``)."""

    event_id: str
    column: str
    target: Path
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending delivery. ``payload`` is bytes (text payloads are stored UTF-8 encoded)."""

    id: int
    sink: str
    key: str
    payload: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    retry_at: float = 0.0
    created: float = 0.0


class EventStore:
    """SQLite event store + outbox; thread-safe (one connection, one lock)."""

    def __init__(
        self,
        path: Path,
        retention: RetentionPolicy | None = None,
        outbox_max: int = 10000,
        *,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention = retention or RetentionPolicy()
        self.outbox_max = outbox_max
        self._clock = clock
        self._lock = threading.RLock()
        # taken before self._lock, never while holding it: scan, delete and write media one at a time;
        # it also guards the two sets below and _media
        self._retention_lock = threading.Lock()
        self._open_events: set[str] = set()  # events started and not yet ended in this run: their media stay
        self._clip_pending: set[str] = set()  # events whose clip is still to be cut: their media stay
        self._over: dict[str, int] = {}  # cap -> bytes over it that only kept media hold (logged once)
        # rel -> the media files on disk as the store wrote and deleted them: scanned at the first
        # enforcement and at each sweep (None: scan again), kept up to date in between
        self._media: dict[str, MediaFile] | None = None
        self.persistent = True
        self.recovered: dict[str, Any] | None = None  # set when a corrupt database was replaced
        self.vanished: dict[str, Any] | None = None  # set when events.db was deleted under us and re-created
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the events.db we have open
        self._memory_complete = False  # in memory: it began as a copy of the whole file
        self._next_disk_try = 0.0  # monotonic
        self._held: dict[Path, HeldMedia] = {}  # media waiting for the disk, oldest first
        self._conn = self._open()

    # --- connection -------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    def _connect(self) -> sqlite3.Connection:
        """Open ``events.db``, check it, create the schema. A damaged file raises DatabaseError."""
        conn = sqlite3.connect(self.db_path, check_same_thread=False, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            verdict = conn.execute("PRAGMA quick_check").fetchall()
            if verdict != [("ok",)]:
                raise sqlite3.DatabaseError(f"quick_check: {'; '.join(str(r[0]) for r in verdict[:3])}")
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.commit()
            st = os.stat(self.db_path)
        except BaseException:
            conn.close()
            raise
        self._identity = (st.st_dev, st.st_ino)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return self._connect()
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                return self._recover(str(exc))
            return self._open_failed(exc)
        except (OSError, sqlite3.Error) as exc:
            return self._open_failed(exc)

    def _open_failed(self, exc: Exception) -> sqlite3.Connection:
        self.persistent = False
        self._memory_complete = False  # the file (if any) was not read: merge into it later
        self._next_disk_try = time.monotonic() + DISK_RETRY_S
        log.error(
            "store_fallback_memory",
            path=str(self.db_path),
            reason=str(exc),
            consequence=f"events and deliveries are kept in memory; the disk is tried again every {DISK_RETRY_S:g} s",
        )
        return self._memory_connection(id_base=PARTIAL_ID_BASE)

    @staticmethod
    def _memory_connection(id_base: int = 0) -> sqlite3.Connection:
        """An empty in-memory store; ``id_base``: its outbox ids start above it (so rows made here
        never take the id of a row in a file it did not copy)."""
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(_SCHEMA)
        _migrate(conn)
        if id_base:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (id_base,))
            conn.commit()
        return conn

    def _fallback(self, reason: str) -> None:
        """Switch to an in-memory DB mid-run: a copy of the whole file (SQLite's backup API), or
        when that cannot be read, the pending rows we can still read."""
        if not self.persistent:
            return
        mem = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._conn.backup(mem)
            complete, carried = True, int(mem.execute("SELECT COUNT(*) FROM outbox WHERE state = ?",
                                                      (PENDING,)).fetchone()[0])
        except sqlite3.Error as exc:
            mem.close()
            mem, complete = self._memory_connection(id_base=PARTIAL_ID_BASE), False
            carried, reason = self._carry_pending(mem, f"{reason}; the file could not be copied ({exc})")
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self._conn = mem
        self.persistent = False
        self._memory_complete = complete
        self._next_disk_try = time.monotonic() + DISK_RETRY_S
        log.error(
            "store_fallback_memory",
            path=str(self.db_path),
            reason=reason,
            copied="everything" if complete else "pending deliveries only",
            carried_pending=carried,
            consequence=f"events and deliveries are kept in memory; the disk is tried again every {DISK_RETRY_S:g} s",
        )

    def _carry_pending(self, mem: sqlite3.Connection, reason: str) -> tuple[int, str]:
        try:
            rows = self._conn.execute(
                "SELECT id, sink, key, payload, meta, state, attempts, retry_at, error, created, updated "
                "FROM outbox WHERE state = ? ORDER BY id",
                (PENDING,),
            ).fetchall()
            mem.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            mem.commit()
            return len(rows), reason
        except sqlite3.Error as exc:
            return 0, f"{reason}; pending rows could not be read: {exc}"

    def _write(self, sql_ops: Any, what: str) -> Any:
        """Run ``sql_ops(conn)`` in a transaction; on a storage failure fall back to memory and retry."""
        with self._lock:
            self._check_vanished()
            for _ in range(2):
                try:
                    with self._conn:
                        return sql_ops(self._conn)
                except sqlite3.DatabaseError as exc:  # corrupt file; disk full, read-only, I/O error
                    if not self.persistent or "locked" in str(exc):
                        raise
                    log.error("store_write_failed", what=what, reason=str(exc))
                    if _is_corruption(exc):
                        self._replace_corrupt(f"{what}: {exc}")
                    elif isinstance(exc, sqlite3.OperationalError):
                        if not self._check_vanished():  # SQLite refusing to write a moved file
                            self._fallback(f"{what}: {exc}")
                    else:  # a constraint or a bug, not the storage: let the caller's handler log it
                        raise
            return None  # not reached

    # --- the file deleted under us; the disk back after a fallback ------------------------------

    def _gone(self) -> str | None:
        """Why the file we have open is no longer ``events.db`` (deleted, replaced), or None."""
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            return f"{self.db_path} is gone (was the storage folder deleted?)"
        except OSError as exc:
            return f"{self.db_path} cannot be looked at: {exc.strerror or exc}"
        if self._identity is not None and (st.st_dev, st.st_ino) != self._identity:
            return f"{self.db_path} is another file than the one the store opened (replaced)"
        return None

    def _check_vanished(self) -> bool:
        """On disk and the file vanished: re-create it from the open copy (or go to memory). True
        when it had vanished. One ``stat``."""
        if not self.persistent:
            return False
        reason = self._gone()
        if reason is None:
            return False
        self.vanished = {"at": time.time(), "reason": reason, "restored": False}
        self._media = None  # the media files went with the folder: scan again at the next enforcement
        log.error("store_vanished", path=str(self.db_path), reason=reason,
                  consequence="re-creating the folder and events.db from the copy the store still has open")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fresh = self._connect()
        except (OSError, sqlite3.Error) as exc:
            self._fallback(f"{reason}; a new events.db cannot be made: {exc}")
            return True
        try:
            self._conn.backup(fresh)
        except sqlite3.Error as exc:
            fresh.close()
            self._fallback(f"{reason}; the open copy cannot be written into a new events.db: {exc}")
            return True
        old, self._conn = self._conn, fresh
        try:
            old.close()
        except sqlite3.Error:
            pass
        self.vanished["restored"] = True
        forgotten = self._forget_lost_media(fresh)
        log.warning("store_restored", path=str(self.db_path), media_lost=forgotten, **self._counts(fresh))
        return True

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

    @staticmethod
    def _counts(conn: sqlite3.Connection) -> dict[str, int]:
        return {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("events", "outbox")}

    def maintain(self, now: float | None = None) -> None:
        """Housekeeping (about once a second): notice a vanished file; in memory, try the disk again
        every ``DISK_RETRY_S``; write held media files. ``now``: monotonic."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self.persistent:
                self._check_vanished()
            if now < self._next_disk_try:
                return
            self._next_disk_try = now + DISK_RETRY_S
            if not self.persistent:
                self._back_to_disk()
            elif self._held:
                self._write_held()

    def _disk_takes_writes(self) -> str | None:
        """None when a ``PROBE_BYTES`` file can be written, synced and removed in the folder, else why not."""
        probe = self.path / f".probe-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"\0" * PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            try:
                probe.unlink(missing_ok=True)
            except OSError:
                pass

    def _back_to_disk(self) -> bool:
        """Write what the memory database holds into events.db and use the file again. False (and
        nothing changed on disk) when the disk does not take it yet."""
        why = self._disk_takes_writes()
        if why is not None:
            log.debug("store_disk_still_unusable", reason=why)
            return False
        try:
            try:
                disk = self._connect()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise
                # found damaged: moved aside and salvaged as at start-up, then what memory holds goes in
                disk = self._recover(f"found when returning to disk: {exc}", to_memory=False)
        except (OSError, sqlite3.Error) as exc:
            log.warning("store_disk_still_unusable", reason=str(exc))
            return False
        try:
            if self._memory_complete:
                self._conn.backup(disk)  # one transaction: all of it or, on a failure, nothing
                merged = self._counts(disk)
            else:
                with disk:
                    merged = _merge_into(self._conn, disk)
        except sqlite3.Error as exc:
            disk.close()
            log.warning("store_disk_still_unusable", reason=str(exc))
            return False
        old, self._conn = self._conn, disk
        old.close()
        self.persistent = True
        held = self._write_held()
        log.warning("store_back_on_disk", path=str(self.db_path), how="copy" if self._memory_complete else "merge",
                    media_written=held, media_waiting=len(self._held), **merged)
        return True

    # --- media held in memory -----------------------------------------------------------------

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
            if not _atomic_write(target, item.data, quiet=True):
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

    def _read(self, ops: Any, default: Any) -> Any:
        """Run the query ``ops(conn)``; a damaged database is replaced and the query retried once.
        Any other storage error returns ``default`` (logged): readers never crash the daemon."""
        with self._lock:
            for attempt in range(2):
                try:
                    return ops(self._conn)
                except sqlite3.DatabaseError as exc:
                    if attempt == 0 and self.persistent and _is_corruption(exc):
                        self._replace_corrupt(f"read: {exc}")
                        continue
                    log.error("store_read_failed", reason=str(exc))
                    return default
            return default

    # --- a damaged database -----------------------------------------------------------------

    def _replace_corrupt(self, reason: str) -> None:
        """Mid-run: close the damaged connection and put a recovered database in its place."""
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self._conn = self._recover(reason)

    def _recover(self, reason: str, to_memory: bool = True) -> sqlite3.Connection:
        """Move the damaged file aside, salvage what can be read into a new file, log it loudly.
        When no new file can be made: memory (``to_memory``), else the OSError / sqlite3.Error."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.db_path.with_name(f"{DB_NAME}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.db_path.with_name(f"{DB_NAME}.corrupt-{stamp}.{n}")
        try:
            os.replace(self.db_path, aside)
            for suffix in ("-wal", "-shm"):
                extra = Path(f"{self.db_path}{suffix}")
                if extra.exists():
                    os.replace(extra, Path(f"{aside}{suffix}"))
        except OSError as exc:
            if not to_memory:
                raise
            return self._open_failed(OSError(f"{reason}; cannot move the damaged file aside: {exc}"))
        rows, method = _salvage(aside)
        try:
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:  # no new file either: memory, with what was salvaged
            if not to_memory:
                raise
            conn = self._open_failed(exc)
        salvaged = _insert_salvaged(conn, rows)
        self.recovered = {
            "at": time.time(), "reason": reason, "moved_to": str(aside), "method": method, "salvaged": salvaged,
        }
        log.error(
            "store_corrupt_recovered",
            path=str(self.db_path),
            moved_to=str(aside),
            reason=reason,
            method=method,
            salvaged=salvaged,
            consequence="a new events.db is in use; rows that could not be read are only in the moved file",
        )
        return conn

    def health(self) -> StorageSnapshot:
        """For /healthz: is the store on disk, was a damaged database replaced or a deleted one
        re-created in this run, how many media files wait in memory."""
        with self._lock:
            return StorageSnapshot(self.persistent, dict(self.recovered) if self.recovered else None,
                                   dict(self.vanished) if self.vanished else None, len(self._held))

    def delivery_counts(self, sink: str) -> DeliveryCounts:
        """``sink``'s outbox now: pending, failed for good, dropped by the bound."""
        return DeliveryCounts(self.pending_count(sink), self.failed_count(sink), self.dropped_count(sink))

    def close(self) -> None:
        """Close the database; in memory, one last try to write it back to disk first."""
        with self._lock:
            if not self.persistent or self._held:
                self._next_disk_try = 0.0
                self.maintain()
            if not self.persistent:
                log.error("store_closed_in_memory", lost_events=self._counts(self._conn)["events"],
                          consequence="what was kept in memory is lost: the disk did not take it back")
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    # --- events -----------------------------------------------------------------------------

    def snapshot_path(self, camera: str, event_id: str) -> Path:
        """``<storage>/snapshots/<camera>/<event_id>.jpg``; ids are sanitised for the filesystem."""
        return self.media_path(SNAPSHOT_DIR, camera, event_id)

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

    def _write_media(self, kind: str, camera: str, event_id: str, data: bytes) -> str | None:
        """Make room for ``data`` under its cap, then write it (atomic); its path relative to the
        folder, or None when it could not be written (it is then held in memory)."""
        target = self.media_path(kind, camera, event_id)
        with self._retention_lock:
            self._enforce({kind: len(data)}, (event_id,))
            written = _atomic_write(target, data, what=MEDIA_COLUMN[kind], event_id=event_id)
            if written:
                self._note_media(target, kind)
        if not written:
            self._hold(HeldMedia(event_id, MEDIA_COLUMN[kind], target, data))
            return None
        return str(target.relative_to(self.path))

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

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        def ops(conn: sqlite3.Connection) -> dict[str, Any] | None:
            cur = conn.execute("SELECT * FROM events WHERE id = ?", (event_id,))
            row = cur.fetchone()
            return None if row is None else dict(zip([d[0] for d in cur.description], row))

        out = self._read(ops, None)
        return None if out is None else _event_row(out)

    def read_snapshot(self, event_id: str) -> bytes | None:
        event = self.get_event(event_id)
        if not event or not event["snapshot"]:
            return None
        try:
            return (self.path / event["snapshot"]).read_bytes()
        except OSError:
            return None

    # --- review: clips, clean frames, scores, feedback, listing ------------------------------

    def media_path(self, kind: str, camera: str, event_id: str) -> Path:
        """``<storage>/<kind>/<camera>/<event_id>.<ext>`` for kind snapshots | frames | clips."""
        if kind not in MEDIA_DIRS:
            raise ValueError(f"unknown media kind {kind!r}, expected one of {MEDIA_DIRS}")
        return self.path / kind / camera / f"{safe_name(event_id)}.{'mp4' if kind == CLIP_DIR else 'jpg'}"

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
                    verdict: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """Events newest first (by start_time, then id) with the filters, one page; and how many match
        in all. ``severity``: ``alert`` | ``detection`` | None (both); ``verdict``: ``unreviewed`` (no
        feedback yet) | ``raccoon`` | ``not_raccoon`` | None (any)."""
        clause, args = _filter_clause(camera, since, until, severity, verdict)

        def ops(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.execute(f"SELECT COUNT(*) FROM events{clause}", args).fetchone()[0]
            cur = conn.execute(
                f"SELECT * FROM events{clause} ORDER BY start_time DESC, id DESC LIMIT ? OFFSET ?",
                [*args, int(limit), int(offset)],
            )
            names = [d[0] for d in cur.description]
            return [_event_row(dict(zip(names, row))) for row in cur.fetchall()], int(total)

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

    def events_with(self, where: str) -> list[dict[str, Any]]:
        """Events matching one of the fixed conditions ``feedback`` (a verdict given) or
        ``clip_pending`` (a clip still to cut), oldest first."""
        clauses = {"feedback": "feedback IS NOT NULL", "clip_pending": "clip_state = 'pending'"}
        if where not in clauses:
            raise ValueError(f"unknown condition {where!r}")

        def ops(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute(f"SELECT * FROM events WHERE {clauses[where]} ORDER BY start_time")
            names = [d[0] for d in cur.description]
            return [_event_row(dict(zip(names, row))) for row in cur.fetchall()]

        return self._read(ops, [])

    def media_file(self, event_id: str, kind: str) -> Path | None:
        """The file of an event's snapshot / frame / clip as the store recorded it, if it still exists
        inside ``storage.path``: the only way a URL reaches a file (no path from a request is used)."""
        column = {SNAPSHOT_DIR: "snapshot", FRAME_DIR: "frame", CLIP_DIR: "clip"}[kind]
        event = self.get_event(event_id)
        if not event or not event.get(column):
            return None
        root = self.path.resolve()
        path = (self.path / event[column]).resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    # --- outbox -----------------------------------------------------------------------------

    def enqueue(self, sink: str, key: str, payload: bytes | str, meta: Mapping[str, Any] | None = None) -> int:
        """Record one delivery; returns its row id. Same (sink, key) again: no-op, existing id."""
        return self.enqueue_many(sink, [(key, payload, meta or {})])[0]

    def enqueue_many(
        self, sink: str, items: Iterable[tuple[str, bytes | str, Mapping[str, Any]]]
    ) -> list[int]:
        """Several deliveries in one transaction (in order); returns their row ids."""
        rows = [
            (sink, key, payload.encode() if isinstance(payload, str) else bytes(payload), json.dumps(dict(meta)))
            for key, payload, meta in items
        ]

        def ops(conn: sqlite3.Connection) -> tuple[list[int], int, int]:
            now = self._clock()
            ids = []
            for s, key, payload, meta in rows:
                cur = conn.execute(
                    "INSERT INTO outbox (sink, key, payload, meta, state, created, updated)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT(sink, key) DO NOTHING",
                    (s, key, payload, meta, PENDING, now, now),
                )
                if cur.rowcount:
                    ids.append(int(cur.lastrowid))
                else:
                    ids.append(int(conn.execute("SELECT id FROM outbox WHERE sink=? AND key=?", (s, key)).fetchone()[0]))
            dropped, pending = self._enforce_bound(conn, sink, now)
            return ids, dropped, pending

        try:
            ids, dropped, pending = self._write(ops, "outbox")
        except sqlite3.Error as exc:  # even the memory DB failed: nothing sensible left to do
            log.error("store_write_failed", what="outbox", sink=sink, reason=str(exc))
            return [-1] * len(rows)
        if dropped:
            log.warning("outbox_dropped", sink=sink, dropped=dropped, pending=pending, outbox_max=self.outbox_max,
                        policy="oldest pending first")
        return ids

    def _enforce_bound(self, conn: sqlite3.Connection, sink: str, now: float) -> tuple[int, int]:
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE sink=? AND state=?", (sink, PENDING)).fetchone()[0]
        excess = pending - self.outbox_max
        if excess <= 0:
            return 0, pending
        conn.execute(
            "UPDATE outbox SET state=?, payload=NULL, error='evicted by outbox_max', updated=? WHERE id IN ("
            " SELECT id FROM outbox WHERE sink=? AND state=? ORDER BY id LIMIT ?)",
            (DROPPED, now, sink, PENDING, excess),
        )
        return excess, pending - excess

    def pending(self, sink: str, limit: int = 100) -> list[OutboxItem]:
        """Pending deliveries of ``sink`` in insertion order (including ones waiting for retry_at)."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT id, sink, key, payload, meta, attempts, retry_at, created FROM outbox"
                " WHERE sink=? AND state=? ORDER BY id LIMIT ?",
                (sink, PENDING, int(limit)),
            ).fetchall(),
            [],
        )
        return [
            OutboxItem(id=r[0], sink=r[1], key=r[2], payload=bytes(r[3] or b""), meta=json.loads(r[4]),
                       attempts=r[5], retry_at=r[6], created=r[7])
            for r in rows
        ]

    def mark_done(self, item_id: int) -> None:
        self._finish(item_id, DONE, None)

    def mark_failed(self, item_id: int, error: str, retry_at: float | None = None) -> None:
        """``retry_at`` (wall clock) given: stays pending, attempts+1. None: failed for good."""
        if retry_at is None:
            self._finish(item_id, FAILED, error)
            return
        self._safe_write(
            lambda c: c.execute(
                "UPDATE outbox SET attempts=attempts+1, retry_at=?, error=?, updated=? WHERE id=? AND state=?",
                (retry_at, error[:500], self._clock(), item_id, PENDING),
            ),
            "outbox",
        )

    def _finish(self, item_id: int, state: str, error: str | None) -> None:
        self._safe_write(
            lambda c: c.execute(
                "UPDATE outbox SET state=?, payload=NULL, error=?, updated=?,"
                " attempts=attempts+1 WHERE id=? AND state=?",
                (state, error[:500] if error else None, self._clock(), item_id, PENDING),
            ),
            "outbox",
        )

    def _safe_write(self, ops: Any, what: str) -> None:
        try:
            self._write(ops, what)
        except sqlite3.Error as exc:
            log.error("store_write_failed", what=what, reason=str(exc))

    def _count(self, sink: str, state: str) -> int:
        return int(self._read(
            lambda conn: conn.execute("SELECT COUNT(*) FROM outbox WHERE sink=? AND state=?", (sink, state)).fetchone()[0],
            0,
        ))

    def pending_count(self, sink: str) -> int:
        return self._count(sink, PENDING)

    def failed_count(self, sink: str) -> int:
        return self._count(sink, FAILED)

    def dropped_count(self, sink: str) -> int:
        return self._count(sink, DROPPED)

    def outbox_state(self, sink: str, key: str) -> str | None:
        row = self._read(
            lambda conn: conn.execute("SELECT state FROM outbox WHERE sink=? AND key=?", (sink, key)).fetchone(), None,
        )
        return row[0] if row else None

    # --- small key/value memory (e.g. which cameras have discovery published) ----------------

    def kv_get(self, key: str) -> str | None:
        row = self._read(lambda conn: conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone(), None)
        return row[0] if row else None

    def kv_set(self, key: str, value: str) -> None:
        self._safe_write(
            lambda c: c.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            ),
            "kv",
        )

    # --- retention --------------------------------------------------------------------------

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

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """The retention limits once more (the age limit is the one that needs it: nothing is
        written for days), then prune finished outbox rows older than the retention (at least a
        day). Call it hourly."""
        now = self._clock() if now is None else now
        with self._retention_lock:
            self._media = None  # scan again: files deleted or added by hand since
            plan = self._enforce({}, (), now=now)
        keep_s = max(self.retention.days, 1.0) * 86400
        pruned = 0
        try:
            pruned = self._write(lambda c: c.execute("DELETE FROM outbox WHERE state != ? AND updated < ?",
                                                     (PENDING, now - keep_s)).rowcount, "sweep") or 0
        except sqlite3.Error as exc:
            log.error("store_write_failed", what="sweep", reason=str(exc))
        result = {"media_deleted": len(plan.delete), "bytes_freed": sum(f.size for f in plan.delete),
                  "outbox_pruned": pruned}
        log.info("store_swept", **result)
        return result

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


def _event_row(row: dict[str, Any]) -> dict[str, Any]:
    """A raw events row -> box as a tuple, flags as bools, scores decoded (list of rows, [] if none)."""
    row["box"] = tuple(json.loads(row["box"]))
    row["in_cooldown"] = bool(row["in_cooldown"])
    try:
        row["scores"] = json.loads(row.get("scores") or "[]")
    except ValueError:
        row["scores"] = []
    return row


def _atomic_write(target: Path, data: bytes, quiet: bool = False, **context: Any) -> bool:
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


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the review columns an older events table lacks (SQLite: ADD COLUMN, no rewrite)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    for name, kind in REVIEW_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE events ADD COLUMN {name} {kind}")


# --- back to disk: merge a memory store that did not begin as a copy of the file ----------------------

FINISHED = (DONE, FAILED, DROPPED)


def _merge_into(mem: sqlite3.Connection, disk: sqlite3.Connection) -> dict[str, int]:
    """Write what ``mem`` holds into ``disk`` (call inside one transaction of ``disk``); returns how
    many rows of each table went in. Events: a column the memory row has (not NULL) wins, so a
    START recorded on disk and its END in memory make one whole row. Outbox, by (sink, key): a
    finished delivery (done, failed, dropped) is never made pending again, otherwise the memory row
    wins; a new row keeps its id (memory ids start above ``PARTIAL_ID_BASE``, so no id is taken twice,
    and a sender holding an id marks the same row). kv: memory wins."""
    counts = {"events": 0, "outbox": 0}
    cur = mem.execute("SELECT * FROM events")
    names = [d[0] for d in cur.description]
    rest = [n for n in names if n != "id"]
    sql = (f"INSERT INTO events ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
           f" ON CONFLICT(id) DO UPDATE SET {', '.join(f'{n}=COALESCE(excluded.{n}, events.{n})' for n in rest)}")
    for row in cur.fetchall():
        disk.execute(sql, row)
        counts["events"] += 1
    columns = "id, sink, key, payload, meta, state, attempts, retry_at, error, created, updated"
    for row in mem.execute(f"SELECT {columns} FROM outbox ORDER BY id").fetchall():
        sink, key, state = row[1], row[2], row[5]
        there = disk.execute("SELECT id, state FROM outbox WHERE sink=? AND key=?", (sink, key)).fetchone()
        if there is None:
            try:
                disk.execute(f"INSERT INTO outbox ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError:  # the id is taken by another delivery: a new id
                disk.execute(f"INSERT INTO outbox ({columns.split(', ', 1)[1]}) VALUES (?,?,?,?,?,?,?,?,?,?)", row[1:])
        elif there[1] in FINISHED and state == PENDING:
            continue
        else:
            disk.execute("UPDATE outbox SET payload=?, meta=?, state=?, attempts=?, retry_at=?, error=?, updated=?"
                         " WHERE id=?", (row[3], row[4], state, row[6], row[7], row[8], row[10], there[0]))
        counts["outbox"] += 1
    disk.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                     mem.execute("SELECT key, value FROM kv").fetchall())
    return counts


# --- salvage (module functions: they touch only the damaged file and the new connection) ----------

def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged file, as opposed to a full disk, a read-only directory or a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text \
        or text.startswith("quick_check")


def _salvage(damaged: Path) -> tuple[dict[str, tuple[list[str], list[tuple[Any, ...]]]], str]:
    """Readable rows of each table of ``damaged``: {table: (columns, rows)}, and how they were read.

    ``.recover`` first (it reads pages the b-tree no longer reaches); any table it did not give back
    is read row by row, and the larger harvest of the two is kept."""
    found: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    if shutil.which("sqlite3"):
        try:
            found = _salvage_cli(damaged)
        except (OSError, subprocess.SubprocessError, sqlite3.Error, UnicodeDecodeError) as exc:
            log.warning("store_recover_cli_failed", reason=str(exc)[:200], fallback="row_by_row")
    if found and all(t in found for t in TABLES):
        return found, "sqlite3_recover"
    rows = _salvage_rows(damaged)
    for table, (columns, got) in rows.items():
        if len(got) > len(found.get(table, ([], []))[1]):
            found[table] = (columns, got)
    return found, "row_by_row"


def _salvage_cli(damaged: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """``sqlite3 <damaged> .recover`` writes SQL that rebuilds what it can read; run it in memory."""
    out = subprocess.run(["sqlite3", str(damaged), ".recover"], capture_output=True, timeout=RECOVER_TIMEOUT_S,
                         check=False)
    if not out.stdout.strip():
        raise sqlite3.DatabaseError(f".recover produced nothing: {out.stderr.decode(errors='replace')[:200]}")
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(out.stdout.decode("utf-8", errors="surrogateescape"))
        return _read_tables(mem)
    finally:
        mem.close()


def _read_tables(conn: sqlite3.Connection) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    found = {}
    for table in TABLES:
        try:
            cur = conn.execute(f"SELECT * FROM {table}")
            found[table] = ([d[0] for d in cur.description], cur.fetchall())
        except sqlite3.Error:
            continue
    return found


def _salvage_rows(damaged: Path, max_skips: int = 200) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Read each table in rowid order; past an unreadable stretch, jump ahead and go on."""
    found: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    try:
        conn = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
    except sqlite3.Error:
        return found
    try:
        for table in TABLES:
            try:
                columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            except sqlite3.Error:
                continue
            if not columns:
                continue
            rows: list[tuple[Any, ...]] = []
            last, skips, step = 0, 0, 1
            while skips <= max_skips:
                try:
                    for row in conn.execute(f"SELECT rowid, * FROM {table} WHERE rowid > ? ORDER BY rowid", (last,)):
                        rows.append(tuple(row[1:]))
                        last, step = row[0], 1
                    break
                except sqlite3.DatabaseError:
                    skips += 1
                    last += step
                    step *= 2
            found[table] = (columns, rows)
    finally:
        conn.close()
    return found


def _insert_salvaged(conn: sqlite3.Connection, found: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> dict[str, int]:
    """Copy salvaged rows into the new database, one by one (a damaged row is skipped)."""
    counts = {}
    for table in TABLES:
        if table not in found:
            counts[table] = 0
            continue
        columns, rows = found[table]
        wanted = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        keep = [i for i, c in enumerate(columns) if c in wanted]
        names = ", ".join(columns[i] for i in keep)
        sql = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' for _ in keep)})"
        n = 0
        for row in rows:
            try:
                n += conn.execute(sql, [row[i] for i in keep]).rowcount
            except sqlite3.Error:
                continue
        counts[table] = n
    conn.commit()
    return counts
