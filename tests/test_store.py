"""EventStore: event upsert + snapshot files, outbox order/idempotency/bound, retention, failures."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog

from raccoon_watch.store import EventStore
from raccoon_watch.store.retention import RetentionPolicy
from raccoon_watch.types import EventKind, Severity
from tests import corrupt_db
from tests.fixtures.pushover import make_event

REPO = Path(__file__).resolve().parent.parent


def test_record_upserts_row_and_writes_snapshot(tmp_path: Path) -> None:
    store = EventStore(tmp_path, RetentionPolicy(days=1, snapshot_mb=10), outbox_max=100)
    start = make_event(EventKind.START, event_id="e1", score=0.7)
    store.record(start)
    end = make_event(EventKind.END, event_id="e1", start_time=start.start_time, score=0.95, snapshot=False)
    store.record(end)

    row = store.get_event("e1")
    assert row is not None
    assert row.camera == "front_door" and row.label == "raccoon"
    assert row.top_score == pytest.approx(0.95)
    assert row.end_time == pytest.approx(end.end_time)
    assert row.box == (0.25, 0.25, 0.75, 0.75)
    # the END carried no snapshot: the START's file is kept
    snap = tmp_path / "snapshots" / "front_door" / "e1.jpg"
    assert row.snapshot == "snapshots/front_door/e1.jpg" and snap.is_file()
    img = cv2.imdecode(np.frombuffer(snap.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (48, 64, 3)
    assert not list(snap.parent.glob(".*.tmp"))


def test_outbox_order_idempotent_enqueue_and_done(tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox_max=100)
    ids = [store.enqueue("push", f"e{i}:new", f"payload {i}", {"n": i}) for i in range(5)]
    assert ids == sorted(ids)
    # a re-enqueue (e.g. after a restart) is a no-op returning the existing row
    assert store.enqueue("push", "e2:new", "other", {}) == ids[2]
    # another sink may use the same key
    assert store.enqueue("mqtt", "e2:new", b"x", {}) not in ids

    items = store.pending("push", limit=10)
    assert [i.key for i in items] == [f"e{i}:new" for i in range(5)]
    assert items[2].payload == b"payload 2" and items[2].meta == {"n": 2}

    store.mark_done(ids[0])
    store.mark_failed(ids[1], "bad token", retry_at=None)
    store.mark_failed(ids[2], "timeout", retry_at=time.time() + 30)
    items = store.pending("push", limit=10)
    assert [i.key for i in items] == ["e2:new", "e3:new", "e4:new"]
    assert items[0].attempts == 1 and items[0].retry_at > time.time()
    assert store.pending_count("push") == 3 and store.failed_count("push") == 1
    assert store.outbox_state("push", "e0:new") == "done"
    # done rows stay known: enqueueing it again does not resurrect it
    store.enqueue("push", "e0:new", "again", {})
    assert store.pending_count("push") == 3


def test_outbox_survives_reopen(tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox_max=100)
    store.enqueue("push", "a", b"1", {})
    store.enqueue("push", "b", b"2", {})
    store.mark_done(store.pending("push")[0].id)
    store.close()
    again = EventStore(tmp_path, outbox_max=100)
    assert [i.key for i in again.pending("push")] == ["b"]


def test_outbox_bound_drops_oldest_pending_and_logs(tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox_max=10)
    with structlog.testing.capture_logs() as logs:
        for i in range(13):
            store.enqueue("push", f"k{i}", b"x", {})
    assert [i.key for i in store.pending("push", 100)] == [f"k{i}" for i in range(3, 13)]
    assert store.dropped_count("push") == 3
    dropped = [e for e in logs if e["event"] == "outbox_dropped"]
    assert sum(e["dropped"] for e in dropped) == 3 and dropped[-1]["pending"] == 10
    # the bound is per sink
    store.enqueue("mqtt", "m", b"x", {})
    assert store.pending_count("mqtt") == 1


def test_unopenable_storage_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the storage directory should be")
    with structlog.testing.capture_logs() as logs:
        store = EventStore(blocker / "var", outbox_max=100)
        store.record(make_event(event_id="e1"))  # snapshot cannot be written: logged, no raise
        item_id = store.enqueue("push", "e1:new", b"jpeg", {"title": "t"})
    assert not store.persistent
    assert any(e["event"] == "store_fallback_memory" and e["log_level"] == "error" for e in logs)
    assert any(e["event"] == "store_write_failed" and e["what"] == "snapshot" for e in logs)
    assert store.pending("push")[0].id == item_id
    assert store.get_event("e1") is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_falls_back(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        store = EventStore(ro, outbox_max=100)
        assert not store.persistent
        store.enqueue("push", "k", b"x", {})
        assert store.pending_count("push") == 1
    finally:
        ro.chmod(0o700)


_DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys
    from pathlib import Path
    import structlog
    from raccoon_watch.store import EventStore
    from tests.fixtures.pushover import make_event

    path = Path(sys.argv[1])
    store = EventStore(path, outbox_max=100)
    store.enqueue("push", "before", b"x", {})
    # "disk full": every file may grow to at most the current DB size (writes past it fail, EFBIG)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = (path / "events.db").stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    with structlog.testing.capture_logs() as logs:
        store.record(make_event(event_id="big", snapshot=b"\\xff" * (limit + 4096)))
        for i in range(50):
            store.enqueue("push", f"during{i}", b"y" * 4096, {})
    print(json.dumps({
        "persistent": store.persistent,
        "pending": [i.key for i in store.pending("push", 100)][:3],
        "count": store.pending_count("push"),
        "events": sorted({e["event"] for e in logs}),
    }))
    """
)


def test_disk_full_mid_run_keeps_outbox_working(tmp_path: Path) -> None:
    """A file-size limit (RLIMIT_FSIZE) in a child process makes every write past it fail."""
    out = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_SCRIPT, str(tmp_path / "var")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "store_write_failed" in result["events"]
    assert result["count"] == 51 and result["pending"][0] == "before"
    if not result["persistent"]:
        assert "store_fallback_memory" in result["events"]


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    store = EventStore(tmp_path, RetentionPolicy(days=1, snapshot_mb=0, clip_mb=0), outbox_max=100)
    now = time.time()
    old = make_event(EventKind.END, event_id="old", start_time=now - 3 * 86400)  # ended: open events keep theirs
    new = make_event(EventKind.END, event_id="new", start_time=now)
    store.record(old)
    store.record(new)
    old_file = store.snapshot_path("front_door", "old")
    os.utime(old_file, (now - 3 * 86400, now - 3 * 86400))
    result = store.sweep(now=now)
    assert result["media_deleted"] == 1
    assert not old_file.exists() and store.snapshot_path("front_door", "new").exists()
    assert store.get_event("old").snapshot is None
    assert store.read_snapshot("new") == new.snapshot_jpeg

    # size budget: keep the newest files under ~1.5 KB per file allowance
    sized = EventStore(tmp_path / "b", RetentionPolicy(days=0, snapshot_mb=0.003), outbox_max=100)
    for i in range(5):
        ev = make_event(EventKind.END, event_id=f"s{i}", snapshot=b"\xff\xd8" + bytes(1022))
        sized.record(ev)
        os.utime(sized.snapshot_path("front_door", f"s{i}"), (now - 100 + i, now - 100 + i))
    left = sorted(p.stem for p in (tmp_path / "b" / "snapshots" / "front_door").glob("*.jpg"))
    assert left == ["s2", "s3", "s4"]  # made room at each write, before the sweep
    assert sized.sweep(now=now)["media_deleted"] == 0


def test_sweep_prunes_finished_outbox_rows(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    store = EventStore(tmp_path, RetentionPolicy(days=1), outbox_max=100, clock=lambda: clock[0])
    done = store.enqueue("push", "done", b"x", {})
    store.enqueue("push", "waiting", b"x", {})
    store.mark_done(done)
    clock[0] += 2 * 86400
    assert store.sweep()["outbox_pruned"] == 1
    assert store.pending_count("push") == 1


def test_log_sink_logs_each_kind() -> None:
    from raccoon_watch.sinks.log import LogSink

    sink = LogSink()
    with structlog.testing.capture_logs() as logs:
        for kind in EventKind:
            sink.publish(make_event(kind, event_id="e1", snapshot=False))
    assert [e["event"] for e in logs] == ["event_started", "event_updated", "event_ended"]
    assert logs[0]["camera"] == "front_door" and logs[0]["id"] == "e1" and logs[0]["box"] == [0.25, 0.25, 0.75, 0.75]
    assert "in_cooldown" in logs[0] and "top_score" in logs[0]


# --- a damaged database: moved aside, salvaged, replaced -----------------------------------------

@pytest.mark.parametrize("how", ["pages", "header"])
def test_corrupt_database_is_moved_aside_salvaged_and_replaced(tmp_path: Path, how: str) -> None:
    storage = tmp_path / "var"
    db = corrupt_db.build(storage)
    corrupt_db.damage(db, how)
    with structlog.testing.capture_logs() as logs:
        store = EventStore(storage, outbox_max=100)
        store.enqueue("pushover", "after", b"x", {})  # writes work at once
        assert store.pending_count("pushover") >= 1
    assert store.persistent, "a corrupt file must not send the store to memory"
    recovered = [e for e in logs if e["event"] == "store_corrupt_recovered"]
    assert len(recovered) == 1 and recovered[0]["log_level"] == "error"
    aside = list(storage.glob("events.db.corrupt-*"))
    assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))] == [Path(recovered[0]["moved_to"]).name]
    assert store.health().recovered["moved_to"] == recovered[0]["moved_to"]
    salvaged = recovered[0]["salvaged"]
    if how == "pages":  # the pending push and most of the history were readable
        assert store.outbox_state("pushover", corrupt_db.PENDING_KEY) == "pending"
        assert corrupt_db.EVENTS // 2 <= salvaged["events"] < corrupt_db.EVENTS + 1
    store.close()
    # the new file is sound and reopens without another recovery
    with structlog.testing.capture_logs() as again:
        reopened = EventStore(storage, outbox_max=100)
    assert not any(e["event"] == "store_corrupt_recovered" for e in again)
    assert reopened.outbox_state("pushover", "after") == "pending"
    reopened.close()


def test_row_by_row_salvage_without_the_sqlite3_cli(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sqlite3 command to run
    storage = tmp_path / "var"
    db = corrupt_db.build(storage)
    corrupt_db.damage(db, "pages")
    with structlog.testing.capture_logs() as logs:
        store = EventStore(storage, outbox_max=100)
    [rec] = [e for e in logs if e["event"] == "store_corrupt_recovered"]
    assert rec["method"] == "row_by_row"
    assert store.outbox_state("pushover", corrupt_db.PENDING_KEY) == "pending"
    assert rec["salvaged"]["events"] > 0
    store.close()


def test_damage_met_mid_run_by_a_read_is_recovered_in_place(tmp_path: Path) -> None:
    import sqlite3

    storage = tmp_path / "var"
    db = corrupt_db.build(storage)
    store = EventStore(storage, outbox_max=100)
    assert store.pending_count("pushover") == 1
    corrupt_db.damage(db, "pages")
    with sqlite3.connect(db) as other:  # another writer: our connection re-reads pages from disk
        other.execute("INSERT INTO kv VALUES ('poke', '1')")
    with structlog.testing.capture_logs() as logs:
        pending = store.pending_count("pushover")  # used to raise DatabaseError into the sink
        store.enqueue("pushover", "after", b"", {})
    assert [e["event"] for e in logs if e["log_level"] == "error"][-1] == "store_corrupt_recovered"
    assert pending == 1 and store.pending_count("pushover") == 2 and store.persistent
    assert store.health().recovered is not None
    store.close()


def test_last_event_ends_per_camera_and_label(tmp_path: Path) -> None:
    clock = [5000.0]
    store = EventStore(tmp_path, clock=lambda: clock[0])
    assert store.last_event_ends() == {}
    store.record(make_event(EventKind.END, event_id="a", start_time=1000.0, end_time=1010.0, snapshot=False))
    store.record(make_event(EventKind.END, event_id="b", start_time=2000.0, end_time=2030.0, snapshot=False))
    store.record(make_event(EventKind.END, event_id="c", label="cat", start_time=3000.0, end_time=3005.0,
                            snapshot=False))
    store.record(make_event(EventKind.START, event_id="d", camera="garden", start_time=4000.0, snapshot=False))
    # a later detection (below the alert threshold: never pushed) starts no cooldown
    store.record(dataclasses.replace(make_event(EventKind.END, event_id="e", start_time=4100.0, end_time=4110.0,
                                                snapshot=False), severity=Severity.DETECTION))
    # the garden event never ended (the daemon died): its last write counts
    assert store.last_event_ends() == {("front_door", "raccoon"): 2030.0, ("front_door", "cat"): 3005.0,
                                       ("garden", "raccoon"): 5000.0}


@pytest.mark.parametrize("verdict, event_id, expected", [
    (None, "b", ("b2", "a")),             # newest first, ties by id: c, b2, b, a
    (None, "c", (None, "b2")),
    (None, "b2", ("c", "b")),
    ("unreviewed", "b", ("c", "a")),      # b2 is marked: stepped over
    ("unreviewed", "b2", ("c", "b")),     # b2 itself need not match the filter
    ("raccoon", "c", (None, "b2")),
    ("not_raccoon", "a", (None, None)),
    (None, "missing", (None, None)),
])
def test_neighbours_within_the_filter(tmp_path: Path, verdict, event_id, expected) -> None:
    store = EventStore(tmp_path / "var")
    for eid, start in (("a", 100.0), ("b", 200.0), ("b2", 200.0), ("c", 300.0)):
        store.record(make_event(EventKind.END, event_id=eid, start_time=start, end_time=start + 5, snapshot=False))
    store.set_feedback("b2", "raccoon", "page")
    assert store.neighbours(event_id, verdict=verdict) == expected
    rows, total = store.list_events(verdict=verdict)
    order = [r.id for r in rows]
    assert total == len(order) and order == [e for e in ("c", "b2", "b", "a") if e in order]
    store.close()


def test_first_seen_is_kept_from_the_first_message(tmp_path: Path) -> None:
    """The event's span (first sighting to END) is what the page's Duration and chart show."""
    store = EventStore(tmp_path / "var")
    start = dataclasses.replace(make_event(event_id="x", start_time=100.0, snapshot=False), first_seen_ts=99.2)
    store.record(start)
    store.record(dataclasses.replace(start, kind=EventKind.END, end_time=101.5, first_seen_ts=0.0))
    row = store.get_event("x")
    assert (row.first_seen, row.end_time) == (99.2, 101.5)
    store.close()
