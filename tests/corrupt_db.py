"""Build a real events.db with history and a pending push, then damage it the way disks do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from raccoon_watch.store import EventStore
from raccoon_watch.store.schema import DB_NAME
from tests.fixtures.pushover import make_event

PENDING_KEY = "salvaged-push"
EVENTS = 600


def build(storage: Path, pushover_meta: dict | None = None) -> Path:
    """events.db under ``storage`` with one pending Pushover row (written first, so it sits in the
    outbox's first page) and ``EVENTS`` event rows filling many pages after it."""
    store = EventStore(storage, outbox_max=100)
    meta = pushover_meta or {"title": "Raccoon at salvaged", "message": "from before the damage"}
    store.enqueue("pushover", PENDING_KEY, b"", meta)
    for i in range(EVENTS):
        store.record(make_event(event_id=f"old{i:04d}-" + "x" * 150, snapshot=None, start_time=1.7e9 + i))
    store.close()
    db = storage / DB_NAME
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    return db


def damage(db: Path, how: str) -> None:
    """``pages``: overwrite eight pages in the middle (event rows) and the root page of the outbox's
    state index, which every pending-count query reads (header intact); ``header``: the first 100
    bytes."""
    conn = sqlite3.connect(db)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    index_root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox_state'").fetchone()[0]
    conn.close()
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        if how == "pages":
            pages = size // page_size
            fh.seek((pages // 2) * page_size)
            fh.write(os.urandom(8 * page_size))
            fh.seek((index_root - 1) * page_size)  # pages are numbered from 1
            fh.write(os.urandom(page_size))
        elif how == "header":
            fh.write(b"\xa5" * 100)
        else:
            raise ValueError(f"unknown damage {how!r}")
