"""A clip's window, pure: which seconds an event's clip covers and which recorded segments hold them.

Times are on the monotonic clock (as ``Frame.mono`` and the events' ``first_seen_mono`` /
``last_seen_mono``); ``wall_offset`` converts to and from the wall clock for records that outlive
the process. ``review/clips.py`` runs the recorders and the cuts; ``review/ffmpeg.py`` builds their
commands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from raccoon_watch.capture import Clock, FileAnchor
from raccoon_watch.config import ClipsConfig
from raccoon_watch.types import Event


def wall_offset(clock: Clock = time) -> float:
    """wall - monotonic now: ``mono + wall_offset()`` is the wall time of a monotonic one, as the
    wall clock reads now (for records that outlive the process and for messages people read)."""
    return clock.time() - clock.monotonic()


@dataclass(frozen=True, slots=True)
class Segment:
    """One closed segment file; ``start``/``end`` on the monotonic clock (time.monotonic())."""

    path: Path
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class ClipJob:
    """A clip to cut: the event and the range [start, end] it should cover on the monotonic clock;
    ``seen``: its first sighting (monotonic), which picks a file camera's pass through its file
    (None: ``start``)."""

    event_id: str
    camera: str
    start: float
    end: float
    seen: float | None = None


def _hms(mono: float) -> str:
    """A monotonic time as the wall clock's HH:MM:SS (for messages people read)."""
    return time.strftime("%H:%M:%S", time.localtime(mono + wall_offset()))


def clip_window(first_seen: float, last_seen: float, clips: ClipsConfig) -> tuple[float, float]:
    """The range a clip covers: first sighting - pre_roll .. last sighting + post_roll (one clock)."""
    return first_seen - clips.pre_roll, last_seen + clips.post_roll


def select_segments(segments: Iterable[Segment], start: float, end: float) -> list[Segment]:
    """Segments overlapping [start, end], oldest first (pure)."""
    return sorted((s for s in segments if s.end > start and s.start < end), key=lambda s: s.start)


def covered_seconds(chosen: Sequence[Segment], start: float, end: float) -> float:
    """Seconds of [start, end] a clip cut from ``chosen`` (oldest first) spans: from the later of
    ``start`` and the first segment's start to the earlier of ``end`` and the last segment's end (pure)."""
    if not chosen:
        return 0.0
    return max(0.0, min(end, chosen[-1].end) - max(start, chosen[0].start))


def coverage_note(chosen: Sequence[Segment], start: float, end: float, slack: float = 1.0) -> str | None:
    """None when the chosen segments cover [start, end] (give or take ``slack`` s), else what is
    missing (the clip is still cut from what there is, and the note is logged)."""
    if not chosen:
        return f"no recorded segment between {_hms(start)} and {_hms(end)} (was the recorder down?)"
    notes = []
    if chosen[0].start > start + slack:
        notes.append(f"the recording starts {chosen[0].start - start:.1f} s late")
    if chosen[-1].end < end - slack:
        notes.append(f"the recording ends {end - chosen[-1].end:.1f} s early")
    notes += [f"a {b.start - a.end:.1f} s gap at {_hms(a.end)}"
              for a, b in zip(chosen, chosen[1:]) if b.start - a.end > slack]
    return "; ".join(notes) or None


def file_span(anchors: Sequence[FileAnchor], start: float, end: float, seen: float) -> tuple[float, float] | None:
    """(offset, duration) in seconds of a file camera's file for the monotonic range [start, end],
    read in the pass through the file that was on screen at monotonic time ``seen`` (the first
    sighting), or None when no frame was marked by then or the range maps to nothing (pure).

    ``anchors``: a FileClock's, oldest first. The offset is clamped to the file's start; an end past
    the pass's last frame (the file looped or ended) is left to the cut, which stops at the file's end."""
    before = [a for a in anchors if a.mono <= seen]
    if not before:
        return None
    run = [a for a in anchors if a.run == before[-1].run]

    def stream_at(mono: float) -> float:
        prior = [a for a in run if a.mono <= mono]
        a = prior[-1] if prior else run[0]
        return a.stream + (mono - a.mono)

    offset = max(0.0, stream_at(start))
    duration = stream_at(end) - offset
    return (offset, duration) if duration > 0 else None


def sighting_span(event: Event) -> tuple[float, float]:
    """First and last sighting of an event on the monotonic clock: the event's own when it has them
    (the debounce sets them), else its wall times converted at the current offset; an open event's
    last sighting is its first."""
    if event.first_seen_mono is not None:
        first = event.first_seen_mono
        return first, event.last_seen_mono if event.last_seen_mono is not None else first
    offset = wall_offset()
    first = (event.first_seen_ts or event.start_time) - offset
    return first, (event.end_time - offset) if event.end_time is not None else first


def parse_list_line(line: str) -> tuple[str, float, float] | None:
    """One line of ffmpeg's CSV segment list, ``name,start,end`` (stream seconds); None if malformed."""
    parts = line.strip().rsplit(",", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    try:
        return parts[0].strip('"'), float(parts[1]), float(parts[2])
    except ValueError:
        return None

