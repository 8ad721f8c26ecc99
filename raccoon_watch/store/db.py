"""The store's database: one SQLite connection kept working through damage, deletion and a full disk.

``Database`` owns ``events.db`` (WAL, one connection guarded by a lock), its schema and migrations,
and the small key/value table; the event rows (``events.py``), the outbox (``outbox.py``) and the
media files (``media.py``) are written and read through its ``_write`` / ``_read``. Reading a
damaged file and merging a memory database back into the file are in ``salvage.py``.

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

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.salvage import insert_salvaged, is_corruption, merge_into, salvage
from raccoon_watch.store.schema import DB_NAME, PARTIAL_ID_BASE, PENDING, SCHEMA, migrate
from raccoon_watch.types import StorageSnapshot

log = structlog.get_logger(__name__)

DISK_RETRY_S = 5.0  # in memory: how often maintain() tries the disk again
PROBE_BYTES = 64 * 1024  # a write the disk must take (and sync) before the write-back is tried


class Database:
    """``events.db`` and the way back to it; thread-safe (one connection, one lock).

    The parts built on it (media, events, outbox) hook into three moments: the folder was deleted
    (``_storage_vanished``), a re-created file lost media (``_forget_lost_media``), the disk takes
    writes again (``_write_held``); ``held_media`` counts what waits in memory for the disk."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        self.persistent = True
        self.recovered: dict[str, Any] | None = None  # set when a corrupt database was replaced
        self.vanished: dict[str, Any] | None = None  # set when events.db was deleted under us and re-created
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the events.db we have open
        self._memory_complete = False  # in memory: it began as a copy of the whole file
        self._next_disk_try = 0.0  # monotonic
        self._conn = self._open()

    # --- hooks of the parts built on the database (no media here) --------------------------------

    def _storage_vanished(self) -> None:
        """The storage folder was deleted under us (before ``events.db`` is re-created)."""

    def _forget_lost_media(self, conn: sqlite3.Connection) -> int:
        """After a re-created ``events.db``: how many recorded media paths were cleared."""
        return 0

    def _write_held(self) -> int:
        """The disk takes writes again: how many files held in memory were written."""
        return 0

    def held_media(self) -> int:
        """How many files wait in memory for the disk."""
        return 0

    # --- connection ---------------------------------------------------------------------------

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
            conn.executescript(SCHEMA)
            migrate(conn)
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
            if is_corruption(exc):
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
        conn.executescript(SCHEMA)
        migrate(conn)
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
                    if is_corruption(exc):
                        self._replace_corrupt(f"{what}: {exc}")
                    elif isinstance(exc, sqlite3.OperationalError):
                        if not self._check_vanished():  # SQLite refusing to write a moved file
                            self._fallback(f"{what}: {exc}")
                    else:  # a constraint or a bug, not the storage: let the caller's handler log it
                        raise
            return None  # not reached

    def _safe_write(self, ops: Any, what: str) -> None:
        try:
            self._write(ops, what)
        except sqlite3.Error as exc:
            log.error("store_write_failed", what=what, reason=str(exc))

    def _read(self, ops: Any, default: Any) -> Any:
        """Run the query ``ops(conn)``; a damaged database is replaced and the query retried once.
        Any other storage error returns ``default`` (logged): readers never crash the daemon."""
        with self._lock:
            for attempt in range(2):
                try:
                    return ops(self._conn)
                except sqlite3.DatabaseError as exc:
                    if attempt == 0 and self.persistent and is_corruption(exc):
                        self._replace_corrupt(f"read: {exc}")
                        continue
                    log.error("store_read_failed", reason=str(exc))
                    return default
            return default

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
        self._storage_vanished()
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
            elif self.held_media():
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
                if not is_corruption(exc):
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
                    merged = merge_into(self._conn, disk)
        except sqlite3.Error as exc:
            disk.close()
            log.warning("store_disk_still_unusable", reason=str(exc))
            return False
        old, self._conn = self._conn, disk
        old.close()
        self.persistent = True
        held = self._write_held()
        log.warning("store_back_on_disk", path=str(self.db_path), how="copy" if self._memory_complete else "merge",
                    media_written=held, media_waiting=self.held_media(), **merged)
        return True

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
        rows, method = salvage(aside)
        try:
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:  # no new file either: memory, with what was salvaged
            if not to_memory:
                raise
            conn = self._open_failed(exc)
        salvaged = insert_salvaged(conn, rows)
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
                                   dict(self.vanished) if self.vanished else None, self.held_media())

    def close(self) -> None:
        """Close the database; in memory, one last try to write it back to disk first."""
        with self._lock:
            if not self.persistent or self.held_media():
                self._next_disk_try = 0.0
                self.maintain()
            if not self.persistent:
                log.error("store_closed_in_memory", lost_events=self._counts(self._conn)["events"],
                          consequence="what was kept in memory is lost: the disk did not take it back")
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

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
