"""The event store: SQLite record of every event, its snapshot file, and the delivery outbox.

Layout under ``storage.path``::

    events.db                                  SQLite, WAL, one connection guarded by a lock
    snapshots/<camera>/<event_id>.jpg          best frame of the event, box drawn (atomic write)

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
- If the database cannot be opened at all, or an outbox write fails, the store switches to an
  in-memory database (copying whatever pending rows can still be read) and logs
  ``store_fallback_memory`` at error level: alerts keep flowing, but pending deliveries no longer
  survive a restart until the storage is fixed and the daemon restarted.

Durability: ``synchronous=NORMAL`` in WAL mode survives a process crash / ``kill -9`` (the case
this outbox exists for); only an OS crash or power loss can lose the last transactions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.types import Event

log = structlog.get_logger(__name__)

DB_NAME = "events.db"
SNAPSHOT_DIR = "snapshots"

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
        retention_days: float = 14.0,
        retention_mb: float = 500.0,
        outbox_max: int = 10000,
        *,
        clock: Any = time.time,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.retention_mb = retention_mb
        self.outbox_max = outbox_max
        self._clock = clock
        self._lock = threading.RLock()
        self.persistent = True
        self._conn = self._open()

    # --- connection -------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    @property
    def snapshot_root(self) -> Path:
        return self.path / SNAPSHOT_DIR

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, check_same_thread=False, timeout=5.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            conn.commit()
            return conn
        except (OSError, sqlite3.Error) as exc:
            self.persistent = False
            log.error(
                "store_fallback_memory",
                path=str(self.db_path),
                reason=str(exc),
                consequence="deliveries and events are kept in memory only; they are lost on restart",
            )
            return self._memory_connection()

    @staticmethod
    def _memory_connection() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(_SCHEMA)
        return conn

    def _fallback(self, reason: str) -> None:
        """Switch to an in-memory DB mid-run, carrying over the pending rows we can still read."""
        if not self.persistent:
            return
        mem = self._memory_connection()
        carried = 0
        try:
            rows = self._conn.execute(
                "SELECT id, sink, key, payload, meta, state, attempts, retry_at, error, created, updated "
                "FROM outbox WHERE state = ? ORDER BY id",
                (PENDING,),
            ).fetchall()
            mem.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            mem.commit()
            carried = len(rows)
        except sqlite3.Error as exc:
            reason = f"{reason}; pending rows could not be read: {exc}"
        try:
            self._conn.close()
        except sqlite3.Error:
            pass
        self._conn = mem
        self.persistent = False
        log.error(
            "store_fallback_memory",
            path=str(self.db_path),
            reason=reason,
            carried_pending=carried,
            consequence="deliveries and events are kept in memory only; they are lost on restart",
        )

    def _write(self, sql_ops: Any, what: str) -> Any:
        """Run ``sql_ops(conn)`` in a transaction; on a storage failure fall back to memory and retry."""
        with self._lock:
            for _ in range(2):
                try:
                    with self._conn:
                        return sql_ops(self._conn)
                except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error
                    if not self.persistent or "locked" in str(exc):
                        raise
                    log.error("store_write_failed", what=what, reason=str(exc))
                    self._fallback(f"{what}: {exc}")
            return None  # not reached

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    # --- events -----------------------------------------------------------------------------

    def snapshot_path(self, camera: str, event_id: str) -> Path:
        """``<storage>/snapshots/<camera>/<event_id>.jpg``; ids are sanitised for the filesystem."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in event_id)
        return self.snapshot_root / camera / f"{safe}.jpg"

    def record(self, event: Event) -> None:
        """Upsert the event row and write its snapshot. Never raises for storage problems."""
        rel: str | None = None
        if event.snapshot_jpeg is not None:
            rel = self._write_snapshot(event)
        try:
            self._write(lambda c: self._upsert_event(c, event, rel), "event")
        except sqlite3.Error as exc:
            log.error("store_write_failed", what="event", event_id=event.id, reason=str(exc))

    def _write_snapshot(self, event: Event) -> str | None:
        target = self.snapshot_path(event.camera, event.id)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(event.snapshot_jpeg or b"")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            return str(target.relative_to(self.path))
        except OSError as exc:
            log.error(
                "store_write_failed",
                what="snapshot",
                event_id=event.id,
                path=str(target),
                reason=exc.strerror or str(exc),
            )
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return None

    def _upsert_event(self, conn: sqlite3.Connection, event: Event, snapshot: str | None) -> None:
        conn.execute(
            "INSERT INTO events (id, camera, label, start_time, end_time, top_score, box, in_cooldown,"
            " snapshot, updated) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET end_time=excluded.end_time, top_score=excluded.top_score,"
            " box=excluded.box, in_cooldown=excluded.in_cooldown,"
            " snapshot=COALESCE(excluded.snapshot, events.snapshot), updated=excluded.updated",
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
            ),
        )

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._conn.execute("SELECT * FROM events WHERE id = ?", (event_id,))
            row = cur.fetchone()
            if row is None:
                return None
            out = dict(zip([d[0] for d in cur.description], row))
        out["box"] = tuple(json.loads(out["box"]))
        out["in_cooldown"] = bool(out["in_cooldown"])
        return out

    def read_snapshot(self, event_id: str) -> bytes | None:
        event = self.get_event(event_id)
        if not event or not event["snapshot"]:
            return None
        try:
            return (self.path / event["snapshot"]).read_bytes()
        except OSError:
            return None

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
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, sink, key, payload, meta, attempts, retry_at, created FROM outbox"
                " WHERE sink=? AND state=? ORDER BY id LIMIT ?",
                (sink, PENDING, int(limit)),
            ).fetchall()
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
        with self._lock:
            return int(
                self._conn.execute("SELECT COUNT(*) FROM outbox WHERE sink=? AND state=?", (sink, state)).fetchone()[0]
            )

    def pending_count(self, sink: str) -> int:
        return self._count(sink, PENDING)

    def failed_count(self, sink: str) -> int:
        return self._count(sink, FAILED)

    def dropped_count(self, sink: str) -> int:
        return self._count(sink, DROPPED)

    def outbox_state(self, sink: str, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT state FROM outbox WHERE sink=? AND key=?", (sink, key)).fetchone()
        return row[0] if row else None

    # --- small key/value memory (e.g. which cameras have discovery published) ----------------

    def kv_get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
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

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """Delete snapshots older than retention_days, then the oldest until under retention_mb;
        prune finished outbox rows older than the retention (at least a day). Call it hourly."""
        now = self._clock() if now is None else now
        files = self._snapshot_files()
        deleted: list[Path] = []
        freed = 0
        if self.retention_days > 0:
            cutoff = now - self.retention_days * 86400
            for mtime, size, p in files:
                if mtime < cutoff and self._unlink(p):
                    deleted.append(p)
                    freed += size
        if self.retention_mb > 0:
            budget = int(self.retention_mb * 1024 * 1024)
            gone = set(deleted)
            kept = [(m, s, p) for m, s, p in files if p not in gone]
            total = sum(s for _, s, _ in kept)
            for mtime, size, p in kept:  # oldest first
                if total <= budget:
                    break
                if self._unlink(p):
                    deleted.append(p)
                    freed += size
                    total -= size
        keep_s = max(self.retention_days, 1.0) * 86400
        rels = [str(p.relative_to(self.path)) for p in deleted]

        def ops(conn: sqlite3.Connection) -> int:
            conn.executemany("UPDATE events SET snapshot=NULL WHERE snapshot=?", [(r,) for r in rels])
            cur = conn.execute("DELETE FROM outbox WHERE state != ? AND updated < ?", (PENDING, now - keep_s))
            return cur.rowcount

        pruned = 0
        try:
            pruned = self._write(ops, "sweep") or 0
        except sqlite3.Error as exc:
            log.error("store_write_failed", what="sweep", reason=str(exc))
        result = {"snapshots_deleted": len(deleted), "bytes_freed": freed, "outbox_pruned": pruned}
        log.info("store_swept", **result)
        return result

    def _snapshot_files(self) -> list[tuple[float, int, Path]]:
        out = []
        if not self.snapshot_root.is_dir():
            return out
        for p in self.snapshot_root.glob("*/*.jpg"):
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((st.st_mtime, st.st_size, p))
        out.sort()
        return out

    @staticmethod
    def _unlink(p: Path) -> bool:
        try:
            p.unlink()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("store_write_failed", what="sweep", path=str(p), reason=exc.strerror or str(exc))
            return False
