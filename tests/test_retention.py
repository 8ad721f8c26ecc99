"""Media retention (issue 22, disk): the decision as a table, then the store enforcing it at each write.

``retention.plan_deletions`` is pure: files (kind, size, age, event) and caps in, what to delete out.
The store calls it before each snapshot/frame write (room for the new bytes), the clip service around
each cut; rows stay, their media columns are cleared (a clip says retention removed it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from raccoon_watch.store import EventStore
from raccoon_watch.store.retention import (
    AGE,
    CLIP_DIR,
    FRAME_DIR,
    SNAPSHOT_DIR,
    MediaCap,
    MediaFile,
    RetentionPolicy,
    plan_deletions,
    safe_name,
    scan_media,
)
from raccoon_watch.store.schema import CLIP_MISSING, CLIP_PENDING, CLIP_READY
from raccoon_watch.types import EventKind
from tests.fixtures.pushover import make_event

PICTURES = MediaCap("snapshot_retention_mb", frozenset((SNAPSHOT_DIR, FRAME_DIR)), 100)
CLIPS = MediaCap("clip_retention_mb", frozenset((CLIP_DIR,)), 1000)


def f(event: str, kind: str = SNAPSHOT_DIR, size: int = 30, mtime: float = 0.0) -> MediaFile:
    suffix = ".mp4" if kind == CLIP_DIR else ".jpg"
    return MediaFile(f"{kind}/cam/{event}{suffix}", kind, size, mtime, event)


@pytest.mark.parametrize("files, caps, keep, extra, deleted, over", [
    # under the cap: nothing
    ([f("a", mtime=1), f("b", mtime=2), f("c", mtime=3)], [PICTURES], (), {}, [], {}),
    # 4 x 30 = 120 over 100: the oldest one goes (by mtime, not by name)
    ([f("d", mtime=4), f("a", mtime=1), f("c", mtime=3), f("b", mtime=2)], [PICTURES], (), {}, ["a"], {}),
    # snapshots and frames share the picture cap
    ([f("a", FRAME_DIR, mtime=1), f("b", mtime=2), f("c", FRAME_DIR, mtime=3), f("d", mtime=4)], [PICTURES], (), {},
     ["a"], {}),
    # 40 bytes about to be written: room for them first
    ([f("a", mtime=1), f("b", mtime=2), f("c", mtime=3)], [PICTURES], (), {"args": {"incoming": {SNAPSHOT_DIR: 40}}},
     ["a"], {}),
    # a kept event's files are skipped: the next oldest goes instead
    ([f("a", mtime=1), f("b", mtime=2), f("c", mtime=3), f("d", mtime=4)], [PICTURES], ("a",), {}, ["b"], {}),
    # kept files alone over the cap: nothing else to delete, and the plan says by how much
    ([f("a", size=80, mtime=1), f("b", size=80, mtime=2)], [PICTURES], ("a", "b"), {}, [], {"snapshot_retention_mb": 60}),
    ([f("a", size=80, mtime=1), f("b", size=80, mtime=2), f("c", size=10, mtime=3)], [PICTURES], ("a", "b"), {},
     ["c"], {"snapshot_retention_mb": 60}),
    # each cap counts its own kinds: clips do not push pictures out, nor the other way round
    ([f("a", CLIP_DIR, 600, 1), f("b", mtime=2), f("c", CLIP_DIR, 600, 3), f("d", mtime=4)], [PICTURES, CLIPS], (), {},
     ["a"], {}),
    # a cap of 0 is no limit
    ([f("a", size=10**9, mtime=1)], [MediaCap("snapshot_retention_mb", PICTURES.kinds, 0)], (), {}, [], {}),
    # the age limit: older than max_age_s goes whatever the size; a kept event's file stays
    ([f("a", mtime=10), f("b", mtime=50), f("c", mtime=95)], [PICTURES], ("a",),
     {"args": {"now": 100.0, "max_age_s": 30.0}}, ["b"], {}),
    # the same age: by path, so the plan does not depend on the order of the listing
    ([f("b", mtime=1), f("a", mtime=1), f("c", mtime=1), f("d", mtime=1)], [PICTURES], (), {}, ["a"], {}),
    # a marked (labelled) event's files go after every unmarked one, even when older
    ([f("a", mtime=1), f("b", mtime=2), f("c", mtime=3), f("d", mtime=4)], [PICTURES], (),
     {"args": {"labelled": {"a"}}}, ["b"], {}),
    # ... but the cap still holds: with only marked files left to take, the oldest marked one goes
    ([f("a", size=60, mtime=1), f("b", size=60, mtime=2), f("c", size=10, mtime=3)], [PICTURES], (),
     {"args": {"labelled": {"a", "b"}}}, ["a", "c"], {}),
])
def test_plan_deletions(files, caps, keep, extra, deleted, over):
    plan = plan_deletions(files, caps, frozenset(keep), **extra.get("args", {}))
    assert [x.event for x in plan.delete] == deleted
    assert dict(plan.over) == over


def test_plan_deletions_says_why_each_file_goes():
    files = [f("old", mtime=1), f("a", mtime=60), f("b", mtime=70), f("c", mtime=80), f("d", mtime=90)]
    plan = plan_deletions(files, [PICTURES], now=100.0, max_age_s=50.0)
    assert {x.event: plan.reasons[x.rel] for x in plan.delete} == {"old": AGE, "a": "snapshot_retention_mb"}


def test_caps_come_from_the_policy():
    caps = {c.name: c for c in RetentionPolicy(days=3, snapshot_mb=1.5, clip_mb=2).caps()}
    assert caps["snapshot_retention_mb"].max_bytes == int(1.5 * 1024 * 1024)
    assert caps["snapshot_retention_mb"].kinds == {SNAPSHOT_DIR, FRAME_DIR}
    assert caps["clip_retention_mb"].max_bytes == 2 * 1024 * 1024 and caps["clip_retention_mb"].kinds == {CLIP_DIR}
    assert RetentionPolicy(days=3).max_age_s == 3 * 86400


def test_scan_media_lists_the_store_files_and_leaves_temp_files_out(tmp_path: Path):
    for rel in ("snapshots/porch/e1.jpg", "frames/porch/e1.jpg", "clips/porch/e1.mp4", "clips/yard/e2.mp4",
                "clips/porch/.e3.tmp.mp4", "snapshots/porch/.e4.jpg.1.2.tmp", "snapshots/porch/notes.txt",
                "recordings/porch/1-000001.ts", "events.db"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * 7)
    found = sorted(scan_media(tmp_path), key=lambda m: m.rel)
    assert [(m.rel, m.kind, m.size, m.event) for m in found] == [
        ("clips/porch/e1.mp4", CLIP_DIR, 7, "e1"), ("clips/yard/e2.mp4", CLIP_DIR, 7, "e2"),
        ("frames/porch/e1.jpg", FRAME_DIR, 7, "e1"), ("snapshots/porch/e1.jpg", SNAPSHOT_DIR, 7, "e1")]
    assert scan_media(tmp_path / "nothing") == []


# --- the store: at every write -----------------------------------------------------------------------

JPEG = b"\xff\xd8" + bytes(998)  # 1000 bytes


def _pictures(store: EventStore) -> int:
    return sum(m.size for m in scan_media(store.path, (SNAPSHOT_DIR, FRAME_DIR)))


def test_snapshots_and_frames_stay_under_their_cap_at_every_write(tmp_path: Path):
    store = EventStore(tmp_path, RetentionPolicy(days=0, snapshot_mb=5500 / 1024 / 1024, clip_mb=0))
    t0 = time.time() - 1000
    for i in range(12):
        eid = f"e{i:02d}"
        store.record(make_event(EventKind.START, event_id=eid, start_time=t0 + i, snapshot=JPEG))
        assert _pictures(store) <= 5500
        store.record(make_event(EventKind.END, event_id=eid, start_time=t0 + i, snapshot=JPEG))
        store.write_frame("front_door", eid, JPEG)
        assert _pictures(store) <= 5500, i
    left = sorted(m.rel for m in scan_media(tmp_path))
    # 5 pictures fit; the oldest file went first (e09's snapshot was written before its frame)
    assert left == ["frames/front_door/e09.jpg", "frames/front_door/e10.jpg", "frames/front_door/e11.jpg",
                    "snapshots/front_door/e10.jpg", "snapshots/front_door/e11.jpg"]
    rows = {r.id: r for r in store.list_events(limit=100)[0]}
    assert len(rows) == 12  # the rows stay
    assert rows["e00"].snapshot is None and rows["e00"].frame is None
    assert rows["e09"].snapshot is None and rows["e09"].frame == "frames/front_door/e09.jpg"
    assert store.media_file("e00", SNAPSHOT_DIR) is None and store.read_snapshot("e11") == JPEG


def test_open_and_newest_events_keep_their_media_over_the_cap(tmp_path: Path):
    store = EventStore(tmp_path, RetentionPolicy(days=0, snapshot_mb=2500 / 1024 / 1024))
    t0 = time.time() - 1000
    store.record(make_event(EventKind.START, event_id="open", start_time=t0, snapshot=JPEG))  # never ends
    store.record(make_event(EventKind.END, event_id="done", start_time=t0 + 1, snapshot=JPEG))
    store.set_clip("pending", CLIP_PENDING)
    store.record(make_event(EventKind.END, event_id="pending", start_time=t0 + 2, snapshot=JPEG))
    store.record(make_event(EventKind.END, event_id="newest", start_time=t0 + 3, snapshot=JPEG))
    # 4000 bytes over a 2500 cap: only "done" may go
    assert sorted(m.event for m in scan_media(tmp_path)) == ["newest", "open", "pending"]
    assert store.enforce_retention().over == {"snapshot_retention_mb": 500}
    store.set_clip("pending", CLIP_MISSING, reason="no segment")  # cut (or given up): no longer kept
    store.enforce_retention()
    assert sorted(m.event for m in scan_media(tmp_path)) == ["newest", "open"]


def test_a_clip_removed_by_retention_says_so_on_its_row(tmp_path: Path):
    store = EventStore(tmp_path, RetentionPolicy(days=0, snapshot_mb=0, clip_mb=2500 / 1024 / 1024))
    t0 = time.time() - 1000
    for i, eid in enumerate(("a", "b", "c")):
        store.record(make_event(EventKind.END, event_id=eid, start_time=t0 + i, snapshot=False))
        clip = store.media_path(CLIP_DIR, "front_door", eid)
        store.enforce_retention({CLIP_DIR: 1000})  # what the clip service does before a cut ...
        clip.parent.mkdir(parents=True, exist_ok=True)
        clip.write_bytes(bytes(1000))
        os.utime(clip, (t0 + i, t0 + i))
        store.set_clip(eid, CLIP_READY, clip=clip)
        store.enforce_retention(keep=(eid,))  # ... and after it
    row = store.get_event("a")
    assert row.clip is None and row.clip_state == CLIP_MISSING
    assert row.clip_reason == "removed by retention: clips over storage.clip_retention_mb (0.00238419 MB)"
    assert store.get_event("b").clip_state == CLIP_READY and store.media_file("c", CLIP_DIR) is not None


def test_event_ids_map_to_their_file_names():
    assert safe_name("1700000000.123-porch/cam:1") == "1700000000.123-porch_cam_1"


def test_the_page_says_retention_removed_the_media_instead_of_linking_to_nothing(tmp_path: Path, small_clip):
    import dataclasses

    import requests

    from tests.test_review_page import _event, _serve

    app, server = _serve(tmp_path, small_clip, {})
    try:
        store, url = app.store, f"http://127.0.0.1:{server.port}"
        now = time.time()
        for eid, start in (("old", now - 7200), ("new", now - 60)):
            store.record(_event(eid, start))
            store.write_frame("porch", eid, JPEG)
            clip = store.media_path(CLIP_DIR, "porch", eid)
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.write_bytes(small_clip.path.read_bytes())
            os.utime(clip, (start, start))
            store.set_clip(eid, CLIP_READY, clip=clip)
        for kind in (SNAPSHOT_DIR, FRAME_DIR):
            os.utime(store.media_path(kind, "porch", "old"), (now - 7200, now - 7200))
        store.retention = dataclasses.replace(store.retention, snapshot_mb=1 / 1024, clip_mb=1 / 1024)  # 1 KB each
        store.enforce_retention()
        assert store.media_file("old", SNAPSHOT_DIR) is None and store.media_file("old", CLIP_DIR) is None
        assert store.media_file("new", CLIP_DIR) is not None  # the newest event keeps its media, over the cap

        event = requests.get(f"{url}/events/old", timeout=10).text
        assert "removed by retention: clips over storage.clip_retention_mb (0.000976562 MB)" in event
        assert "/events/old/clip.mp4" not in event and "/events/old/snapshot.jpg" not in event
        listing = requests.get(f"{url}/", timeout=10).text
        assert "/events/old/snapshot.jpg" not in listing and "/events/new/snapshot.jpg" in listing
    finally:
        server.stop()
        app.stop_event.set()
        app.stop()
