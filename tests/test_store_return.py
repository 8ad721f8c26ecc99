"""EventStore: storage that comes back (issue 21). The folder deleted under a running store, and a
full disk that gets space again: every event, delivery and snapshot recorded in between ends up in
events.db, and each delivery keeps its row (and its id), so none is sent twice and none is lost.

Real SQLite and real files throughout. "Disk full" is RLIMIT_FSIZE in a child process (every write
past the limit fails with EFBIG, as a full disk fails with ENOSPC), lifted again for "space is back".
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import structlog

from raccoon_watch.store import EventStore
from raccoon_watch.store.salvage import merge_into
from raccoon_watch.store.schema import DONE, PARTIAL_ID_BASE, PENDING
from raccoon_watch.types import EventKind
from tests.fixtures.pushover import make_event

REPO = Path(__file__).resolve().parent.parent


def _db_rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("noticed_by", ["a write", "maintain"])
def test_a_deleted_storage_folder_is_recreated_with_everything(tmp_path: Path, noticed_by: str) -> None:
    storage = tmp_path / "var"
    store = EventStore(storage, outbox_max=100)
    store.record(make_event(EventKind.START, event_id="before"))
    done = store.enqueue("pushover", "before", b"jpeg", {})
    store.enqueue("pushover", "waiting", b"jpeg", {})
    store.mark_done(done)
    shutil.rmtree(storage)  # rm -rf while the daemon runs
    with structlog.testing.capture_logs() as logs:
        if noticed_by == "a write":
            store.record(make_event(EventKind.START, event_id="after"))
        else:
            store.maintain()
            store.record(make_event(EventKind.START, event_id="after"))
    assert [e["event"] for e in logs if e["log_level"] == "error"][:1] == ["store_vanished"]
    assert (storage / "events.db").is_file() and store.persistent
    health = store.health()
    assert health.vanished["restored"] is True and "vanished" in " ".join(health.problems())
    # a done delivery stays done (not pushed again), the pending one stays pending
    assert store.outbox_state("pushover", "before") == DONE and store.outbox_state("pushover", "waiting") == PENDING
    assert store.enqueue("pushover", "before", b"again", {}) == done
    store.close()
    rows = _db_rows(storage / "events.db", "SELECT id, snapshot FROM events ORDER BY id")
    assert [r[0] for r in rows] == ["after", "before"]
    assert (storage / rows[0][1]).is_file(), "the snapshot written after the deletion is on disk"
    assert rows[1][1] is None, "the snapshot deleted with the folder is no longer named"
    assert _db_rows(storage / "events.db", "SELECT key, state FROM outbox ORDER BY id") == \
        [("before", DONE), ("waiting", PENDING)]


def test_an_unchanged_store_is_not_restored(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "var")
    with structlog.testing.capture_logs() as logs:
        store.record(make_event(EventKind.START, event_id="e"))
        store.maintain()
    assert not [e for e in logs if e["log_level"] in ("error", "warning")]
    assert store.health().problems() == []
    store.close()


_FULL_THEN_BACK = textwrap.dedent(
    """
    import json, resource, signal, sys, time
    from pathlib import Path
    import structlog
    from raccoon_watch.store import EventStore
    from raccoon_watch.types import EventKind
    from tests.fixtures.pushover import make_event

    path = Path(sys.argv[1])
    out = {}
    store = EventStore(path, outbox_max=100)
    store.record(make_event(EventKind.START, event_id="before"))
    sent = store.enqueue("pushover", "before", b"x", {})
    ids = {"before": sent}
    # "disk full": no file may grow past the current DB size (EFBIG, as ENOSPC would); the hard limit
    # stays unlimited so the soft one can be lifted again ("space is back")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = (path / "events.db").stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    with structlog.testing.capture_logs() as logs:
        for i in range(5):
            eid = f"full{i}"
            store.record(make_event(EventKind.START, event_id=eid, snapshot=b"\\xff\\xd8" + bytes(limit)))
            ids[eid] = store.enqueue("pushover", eid, b"y" * 4096, {})
            store.record(make_event(EventKind.END, event_id=eid, snapshot=False))
        store.mark_done(ids["before"])   # the sender held this row across the fall to memory
        store.mark_done(ids["full0"])    # and sent one while in memory
        out["in_memory"] = not store.persistent
        store.maintain(now=time.monotonic() + 3600)   # still full: stays in memory
        out["still_in_memory"] = not store.persistent
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        store.maintain(now=time.monotonic() + 7200)   # space again: back to disk
        out["back"] = store.persistent
        store.mark_done(ids["full1"])    # the sender's id from the memory time marks the same row
        again = store.enqueue("pushover", "full0", b"z", {})  # a replay: the done row is kept, not re-sent
        out["replay_same_id"] = again == ids["full0"]
        out["held_media"] = store.held_media()
        store.close()
    out["events"] = [e["event"] for e in logs if e["log_level"] in ("error", "warning")]
    print(json.dumps(out))
    """
)


def test_a_full_disk_then_space_again_writes_everything_back(tmp_path: Path) -> None:
    storage = tmp_path / "var"
    done = subprocess.run([sys.executable, "-c", _FULL_THEN_BACK, str(storage)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["in_memory"] and out["still_in_memory"] and out["back"], out
    assert "store_fallback_memory" in out["events"] and "store_back_on_disk" in out["events"]
    assert out["replay_same_id"] and out["held_media"] == 0
    # after the process is gone (a restart): every event of the full time is in events.db, whole
    events = _db_rows(storage / "events.db", "SELECT id, end_time IS NOT NULL, snapshot FROM events ORDER BY id")
    assert [e[0] for e in events] == ["before"] + [f"full{i}" for i in range(5)]
    assert all(e[1] for e in events[1:]), "the ENDs recorded in memory were written back"
    assert all(e[2] and (storage / e[2]).stat().st_size > 0 for e in events), "held snapshots were written"
    states = dict(_db_rows(storage / "events.db", "SELECT key, state FROM outbox"))
    assert states == {"before": DONE, "full0": DONE, "full1": DONE, "full2": PENDING, "full3": PENDING,
                      "full4": PENDING}


def test_a_store_that_began_in_memory_is_merged_into_the_file_when_it_can_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "mnt"
    blocker.write_text("a file where the storage folder's parent should be (an unmounted disk)")
    store = EventStore(blocker / "var", outbox_max=100)
    assert not store.persistent
    store.record(make_event(EventKind.START, event_id="e1"))
    item = store.enqueue("pushover", "e1", b"x", {})
    assert item > PARTIAL_ID_BASE
    blocker.unlink()
    blocker.mkdir()  # the disk is mounted
    with structlog.testing.capture_logs() as logs:
        store.maintain(now=time.monotonic() + 3600)
    assert store.persistent and [e["event"] for e in logs] == ["store_back_on_disk"]
    store.mark_done(item)
    store.close()
    assert _db_rows(blocker / "var" / "events.db", "SELECT key, state FROM outbox") == [("e1", DONE)]
    [(snapshot,)] = _db_rows(blocker / "var" / "events.db", "SELECT snapshot FROM events WHERE id='e1'")
    assert (blocker / "var" / snapshot).is_file()


def _store_rows(conn: sqlite3.Connection) -> tuple[list[tuple], list[tuple]]:
    events = conn.execute("SELECT id, end_time, top_score, snapshot, feedback FROM events ORDER BY id").fetchall()
    outbox = conn.execute("SELECT id, key, state, attempts FROM outbox ORDER BY id").fetchall()
    return events, outbox


def test_merge_into_a_file_the_memory_store_did_not_copy() -> None:
    disk = EventStore._memory_connection()  # stands for the file: the schema is the same
    mem = EventStore._memory_connection(id_base=PARTIAL_ID_BASE)
    ev = ("INSERT INTO events (id, camera, label, start_time, end_time, top_score, box, in_cooldown, snapshot,"
          " updated, feedback) VALUES (?, 'porch', 'raccoon', 1.0, ?, ?, '[0,0,1,1]', 0, ?, 1.0, ?)")
    disk.execute(ev, ("started_on_disk", None, 0.8, "snapshots/porch/a.jpg", "raccoon"))
    mem.execute(ev, ("started_on_disk", 9.0, 0.9, None, None))  # its END, recorded in memory
    mem.execute(ev, ("only_in_memory", 5.0, 0.7, None, None))
    ob = "INSERT INTO outbox (id, sink, key, payload, meta, state, attempts, created, updated) VALUES (?,?,?,?,'{}',?,?,0,0)"
    disk.execute(ob, (1, "pushover", "sent_before", None, DONE, 1))
    disk.execute(ob, (2, "pushover", "pending_before", b"x", PENDING, 0))
    mem.execute("INSERT INTO outbox (sink, key, payload, meta, state, attempts, created, updated)"
                " VALUES ('pushover', 'sent_before', 'x', '{}', 'pending', 0, 0, 0)")  # replayed in memory
    mem.execute(ob, (2, "pushover", "pending_before", None, DONE, 1))  # carried, then sent in memory
    mem.execute("INSERT INTO outbox (sink, key, payload, meta, state, attempts, created, updated)"
                " VALUES ('pushover', 'new', 'x', '{}', 'pending', 0, 0, 0)")
    with disk:
        counts = merge_into(mem, disk)
    events, outbox = _store_rows(disk)
    assert events == [("only_in_memory", 5.0, 0.7, None, None),
                      ("started_on_disk", 9.0, 0.9, "snapshots/porch/a.jpg", "raccoon")]
    assert outbox == [(1, "sent_before", DONE, 1), (2, "pending_before", DONE, 1),
                      (PARTIAL_ID_BASE + 2, "new", PENDING, 0)]
    assert counts == {"events": 2, "outbox": 2}
