"""Media retention: which snapshots, frames and clips to delete so that each kind stays under its cap.

Caps (``storage`` in the config; the defaults are defined here, once)::

    snapshot_retention_mb    snapshots/ + frames/   the pictures of each event (small; kept longest)
    clip_retention_mb        clips/                 the event clips (most of the bytes)
    snapshot_retention_days  all three              media older than this, whatever the size

When: the store enforces the size caps each time it writes a snapshot or a frame (before the
write, making room for its bytes, so the pictures are under their cap at every moment), and the
clip service each time it cuts a clip (before the cut, room for a clip as big as its last one;
after it, the cap itself: the folder is over by at most the clip being written). The hourly sweep
applies the age limit and the caps again (``EventStore.sweep``).

What is never deleted: the media of an event that is still open, or whose clip is still to be cut,
of the newest event, and of an event the caller names (the clip just written). When those alone
are over a cap the cap stays exceeded (``RetentionPlan.over`` says by how much; the store logs it).
Oldest first is by file modification time: a snapshot rewritten by each update of its event dates
from the event's last update.

``plan_deletions`` is the decision, a pure function of the files (kind, size, age, event) and the
caps, tested as a table (tests/test_retention.py). ``scan_media`` reads the folder for it; the store
scans once and then keeps the list up to date with what it writes and deletes (a scan of a few
thousand files costs 50-200 ms here, too much for every snapshot on the way to an alert), and scans
again at each hourly sweep.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT_DIR = "snapshots"
FRAME_DIR = "frames"
CLIP_DIR = "clips"
MEDIA_DIRS = (SNAPSHOT_DIR, FRAME_DIR, CLIP_DIR)
MEDIA_SUFFIX = {SNAPSHOT_DIR: ".jpg", FRAME_DIR: ".jpg", CLIP_DIR: ".mp4"}

DEFAULT_RETENTION_DAYS = 14.0
DEFAULT_SNAPSHOT_MB = 100.0  # snapshots + frames: 740 KB an event at 1080p (about 135 events), 154 KB at 640x360
DEFAULT_CLIP_MB = 400.0  # about 27 clips of 30 s from a 4 Mbit/s camera (a 10 s visit with the default rolls)
MB = 1024 * 1024  # the caps' "MB"
# why a file goes: the config key of the limit
SNAPSHOT_CAP, CLIP_CAP, AGE = "snapshot_retention_mb", "clip_retention_mb", "snapshot_retention_days"


def safe_name(event_id: str) -> str:
    """An event id as the stem of its media files (what ``EventStore.media_path`` names them)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in event_id)


@dataclass(frozen=True, slots=True)
class MediaFile:
    """One media file under the storage folder. ``rel``: its path relative to the folder (as the
    events table records it); ``kind``: snapshots | frames | clips; ``event``: the file's stem
    (``safe_name`` of its event's id); ``mtime``: wall-clock seconds."""

    rel: str
    kind: str
    size: int
    mtime: float
    event: str


@dataclass(frozen=True, slots=True)
class MediaCap:
    """At most ``max_bytes`` (0: no limit) in the files of ``kinds``; ``name``: the config key."""

    name: str
    kinds: frozenset[str]
    max_bytes: int


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The storage config's retention numbers; 0 switches a limit off."""

    days: float = DEFAULT_RETENTION_DAYS
    snapshot_mb: float = DEFAULT_SNAPSHOT_MB
    clip_mb: float = DEFAULT_CLIP_MB

    def caps(self) -> tuple[MediaCap, ...]:
        return (MediaCap(SNAPSHOT_CAP, frozenset((SNAPSHOT_DIR, FRAME_DIR)), int(self.snapshot_mb * MB)),
                MediaCap(CLIP_CAP, frozenset((CLIP_DIR,)), int(self.clip_mb * MB)))

    @property
    def max_age_s(self) -> float:
        return self.days * 86400.0

    def why(self, reason: str) -> str:
        """The limit that removed a file, in words for its event's page (``reason``: a cap's name or AGE)."""
        return {SNAPSHOT_CAP: f"snapshots and frames over storage.{SNAPSHOT_CAP} ({self.snapshot_mb:g} MB)",
                CLIP_CAP: f"clips over storage.{CLIP_CAP} ({self.clip_mb:g} MB)",
                AGE: f"older than storage.{AGE} ({self.days:g})"}.get(reason, reason)


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What to delete (oldest first) and why each file goes (the cap's name, or the age limit);
    ``over``: cap name -> bytes still over it after the deletions (only the files it may not delete)."""

    delete: tuple[MediaFile, ...]
    reasons: Mapping[str, str]  # rel -> SNAPSHOT_CAP | CLIP_CAP | AGE
    over: Mapping[str, int]


def plan_deletions(files: Iterable[MediaFile], caps: Sequence[MediaCap], keep: Collection[str] = (), *,
                   now: float | None = None, max_age_s: float = 0.0,
                   incoming: Mapping[str, int] | None = None, labelled: Collection[str] = ()) -> RetentionPlan:
    """The files to delete so that every cap holds (pure).

    ``keep``: events (``MediaFile.event``) whose files are never chosen. ``max_age_s`` > 0 (with
    ``now``): every other file older than that goes first. Then, for each cap, the oldest files of
    its kinds until their total plus ``incoming`` (kind -> bytes about to be written) is at most
    ``max_bytes``. Ties in age go by path, so the plan is the same for the same files.
    ``labelled``: events the user gave a verdict (retrain's teaching material): within a cap their
    files go only after every unlabelled file has, so the cap still holds but a marked event is the
    last thing it costs."""
    incoming = incoming or {}
    files = list(files)
    chosen: dict[str, tuple[MediaFile, str]] = {}
    if max_age_s > 0 and now is not None:
        for f in files:
            if f.mtime < now - max_age_s and f.event not in keep:
                chosen[f.rel] = (f, AGE)
    over: dict[str, int] = {}
    for cap in caps:
        if cap.max_bytes <= 0:
            continue
        mine = [f for f in files if f.kind in cap.kinds and f.rel not in chosen]
        total = sum(f.size for f in mine) + sum(incoming.get(k, 0) for k in cap.kinds)
        if total <= cap.max_bytes:
            continue  # the usual case at a write: no sorting
        for f in sorted(mine, key=lambda f: (f.event in labelled, f.mtime, f.rel)):
            if total <= cap.max_bytes:
                break
            if f.event in keep:
                continue
            chosen[f.rel] = (f, cap.name)
            total -= f.size
        if total > cap.max_bytes:
            over[cap.name] = total - cap.max_bytes
    delete = tuple(sorted((f for f, _ in chosen.values()), key=lambda f: (f.mtime, f.rel)))
    return RetentionPlan(delete, {rel: why for rel, (_, why) in chosen.items()}, over)


def scan_media(root: Path, kinds: Iterable[str] = MEDIA_DIRS) -> list[MediaFile]:
    """The media files of ``kinds`` under ``root`` (``<kind>/<camera>/<stem><suffix>``). Files being
    written (dot-named temp files) are left out: they are not the store's yet, and never deleted."""
    out = []
    for kind in kinds:
        suffix = MEDIA_SUFFIX[kind]
        try:
            cameras = [e for e in os.scandir(root / kind) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for camera in cameras:
            try:
                entries = list(os.scandir(camera.path))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith(".") or not e.name.endswith(suffix):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                out.append(MediaFile(f"{kind}/{camera.name}/{e.name}", kind, st.st_size, st.st_mtime,
                                     e.name[: -len(suffix)]))
    return out
