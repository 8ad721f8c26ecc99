"""What can be saved: rows read out of a damaged ``events.db``, and a memory database merged back into the file.

Module functions that touch only the damaged file and the connections they are given (pure of the
store's state); ``db.Database`` calls them when it moves a damaged file aside (``salvage``, then
``insert_salvaged``) and when it returns to disk from a memory database that did not begin as a
copy of the file (``merge_into``).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.schema import DONE, DROPPED, FAILED, PENDING, TABLES

log = structlog.get_logger(__name__)

RECOVER_TIMEOUT_S = 60.0
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # primary result codes (sqlite.org/rescode.html)
FINISHED = (DONE, FAILED, DROPPED)


def merge_into(mem: sqlite3.Connection, disk: sqlite3.Connection) -> dict[str, int]:
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


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """A damaged file, as opposed to a full disk, a read-only directory or a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text \
        or text.startswith("quick_check")


def salvage(damaged: Path) -> tuple[dict[str, tuple[list[str], list[tuple[Any, ...]]]], str]:
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


def insert_salvaged(conn: sqlite3.Connection, found: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> dict[str, int]:
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

