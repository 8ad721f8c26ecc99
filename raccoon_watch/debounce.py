"""Debounce counting detections into events. Pure functions over immutable state.

    state, events = step(state, observation, now)   # after each processed frame of one camera
    state, events = tick(state, now)                # periodically, ends events when frames stop

Rules (per camera and label):
- an event STARTs when at least ``min_frames`` of the last ``window`` processed frames counted;
- it ENDs once ``end_after`` seconds pass with no counting detection (end_time = last seen);
- while it runs, an UPDATE is emitted when the top score improves or the count changes, at most
  every ``update_interval`` seconds;
- a START within ``cooldown`` seconds of the previous alert's end is flagged ``in_cooldown``;
  the previous alert may be one of an earlier run: ``seeded`` puts the store's last alert ends
  (wall clock) into a fresh state as monotonic times (``cooldown_since``), so a restart forgets
  no cooldown.

Severity (Frigate's review terms). ``Observation.detections`` are the frame's detections that pass the
review threshold; ``Observation.alerting`` those of them that pass the alert threshold too (None: all of
them, which is the case when no review threshold is set). The frames are counted twice, over the same
``window``: an event STARTs when ``min_frames`` counted at the review level, as an ALERT if
``min_frames`` also counted at the alert level, else as a DETECTION. A running DETECTION whose
alert-level count reaches ``min_frames`` is upgraded: a second START for the same id, with severity
ALERT, ``in_cooldown`` measured at that moment; it never goes back. Only alerts start a cooldown
(a detection pushes nothing, so it holds back no push). Without a review threshold both counts are
the same and every event is an ALERT, exactly as before detections existed.

Two clocks: every duration (``end_after``, ``cooldown``, ``update_interval``) is measured on the
monotonic clock (``Observation.mono``, ``Frame.mono``; ``now`` of ``tick``/``end_all``), so an NTP
step of the wall clock changes no event's length, cooldown or messages. Wall-clock seconds
(``Observation.ts``, the frame's capture time) only name and date events: ``start_time``,
``first_seen_ts``, the id. ``end_time`` is ``start_time`` plus the event's monotonic length (first
counting frame of the START to the last sighting), so ``end_time - start_time`` is the true
duration even when the wall clock was stepped during the event; events also carry their first and
last sighting on the monotonic clock (``first_seen_mono``, ``last_seen_mono``: the clip window).
Without ``mono`` an observation's ``ts`` serves as both.
Events leave here without snapshot bytes; the best frame is kept in the state
(``Track.best_frame``) and the event router encodes it once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from raccoon_watch.types import Box, Detection, Event, EventKind, Frame, Severity


@dataclass(frozen=True, slots=True)
class DebounceParams:
    min_frames: int = 3
    window: int = 5
    end_after: float = 10.0
    cooldown: float = 300.0
    update_interval: float = 5.0


@dataclass(frozen=True, slots=True, eq=False)
class Observation:
    """What one processed frame of one camera contributed: only its counting detections.

    detections: those at or above the review threshold (``filters.meets_review_threshold``).
    alerting: the ones among them at or above the alert threshold; None: all of them.
    """

    camera: str
    ts: float  # wall clock: the record
    detections: tuple[Detection, ...]
    frame: Frame | None = None
    mono: float | None = None  # monotonic clock: every duration; None: use ts
    alerting: tuple[Detection, ...] | None = None

    @property
    def clock(self) -> float:
        return self.ts if self.mono is None else self.mono

    def alert_hits(self, label: str) -> tuple[Detection, ...]:
        """This frame's detections of ``label`` that pass the alert threshold."""
        found = self.detections if self.alerting is None else self.alerting
        return tuple(d for d in found if d.label == label)


@dataclass(frozen=True, slots=True, eq=False)
class Track:
    """A running event of one label. ``*_mono`` and ``last_update`` are monotonic; the rest wall."""

    event_id: str
    start_time: float
    first_seen: float
    last_seen: float
    last_seen_mono: float
    start_mono: float
    first_seen_mono: float
    score: float
    top_score: float
    box: Box
    count: int
    in_cooldown: bool
    last_update: float
    best_frame: Frame | None = None
    dirty: bool = False  # score/count changed since the last START/UPDATE message
    severity: Severity = Severity.ALERT
    mode: str | None = None  # image mode of the best detection ("color" / "ir"): whose threshold applied


@dataclass(frozen=True, slots=True, eq=False)
class LabelState:
    history: tuple[bool, ...] = ()  # counted?, for the last `window` processed frames, oldest first
    alert_history: tuple[bool, ...] = ()  # the same frames: counted at the alert threshold?
    first_hit: float | None = None  # ts of the oldest counting frame still in the history
    first_hit_mono: float | None = None  # the same frame's monotonic time
    track: Track | None = None
    last_end: float | None = None  # monotonic end of the previous alert (for cooldown)


@dataclass(frozen=True, slots=True, eq=False)
class CameraState:
    camera: str
    labels: dict[str, LabelState] = field(default_factory=dict)  # never mutated; copied on change


def make_event_id(camera: str, label: str, start: float) -> str:
    """Stable id, e.g. '1732640000.123456-3fa2c1' (Frigate style, deterministic for tests)."""
    digest = hashlib.sha1(f"{camera}|{label}|{start:.6f}".encode()).hexdigest()[:6]
    return f"{start:.6f}-{digest}"


def _best(dets: tuple[Detection, ...]) -> Detection:
    return max(dets, key=lambda d: d.score)


def _event(kind: EventKind, camera: str, label: str, t: Track, frame_ts: float, ended: bool = False) -> Event:
    """``ended``: an END, whose ``end_time`` is the start plus the monotonic time to the last sighting."""
    return Event(
        id=t.event_id, kind=kind, camera=camera, label=label, start_time=t.start_time,
        end_time=t.start_time + (t.last_seen_mono - t.start_mono) if ended else None,
        score=t.score, top_score=t.top_score, box=t.box, in_cooldown=t.in_cooldown,
        frame_ts=frame_ts, first_seen_ts=t.first_seen, count=t.count, severity=t.severity, mode=t.mode,
        first_seen_mono=t.first_seen_mono, last_seen_mono=t.last_seen_mono,
    )


def _cooled(ls: LabelState, obs: Observation, p: DebounceParams) -> bool:
    """Within ``cooldown`` seconds (monotonic) of the previous alert's end."""
    return ls.last_end is not None and obs.clock - ls.last_end < p.cooldown


def _alerting(ls: LabelState, alert_hits: tuple[Detection, ...], p: DebounceParams) -> bool:
    """This frame counts at the alert threshold, and ``min_frames`` of the window did."""
    return bool(alert_hits) and sum(ls.alert_history) >= p.min_frames


def _start(camera: str, label: str, ls: LabelState, obs: Observation, hits: tuple[Detection, ...],
           p: DebounceParams, severity: Severity) -> Track:
    best = _best(hits)
    first = ls.first_hit if ls.first_hit is not None else obs.ts
    first_mono = ls.first_hit_mono if ls.first_hit_mono is not None else obs.clock
    return Track(
        event_id=make_event_id(camera, label, obs.ts), start_time=obs.ts, first_seen=first,
        last_seen=obs.ts, last_seen_mono=obs.clock, start_mono=obs.clock, first_seen_mono=first_mono,
        score=best.score, top_score=best.score, box=best.box, mode=best.mode,
        count=len(hits), in_cooldown=_cooled(ls, obs, p), last_update=obs.clock, best_frame=obs.frame,
        severity=severity,
    )


def _continue(t: Track, obs: Observation, hits: tuple[Detection, ...], p: DebounceParams) -> tuple[Track, bool]:
    """Fold one counting frame into a running track; say whether an UPDATE is due."""
    best = _best(hits)
    improved = best.score > t.top_score
    dirty = t.dirty or improved or len(hits) != t.count
    t = replace(
        t, last_seen=obs.ts, last_seen_mono=obs.clock, score=best.score, count=len(hits),
        top_score=max(t.top_score, best.score),
        box=best.box if improved else t.box,
        mode=best.mode if improved else t.mode,
        best_frame=obs.frame if improved and obs.frame is not None else t.best_frame,
    )
    due = dirty and p.update_interval > 0 and obs.clock - t.last_update >= p.update_interval
    return replace(t, last_update=obs.clock if due else t.last_update, dirty=dirty and not due), due


def _step_label(camera: str, label: str, ls: LabelState, obs: Observation,
                p: DebounceParams) -> tuple[LabelState, list[Event]]:
    hits = tuple(d for d in obs.detections if d.label == label)
    alert_hits = obs.alert_hits(label) if hits else ()
    history = (ls.history + (bool(hits),))[-p.window:]
    alert_history = (ls.alert_history + (bool(alert_hits),))[-p.window:]
    keep = ls.first_hit is not None and any(history)
    first_hit = ls.first_hit if keep else (obs.ts if hits else None)
    first_hit_mono = ls.first_hit_mono if keep else (obs.clock if hits else None)
    ls = replace(ls, history=history, alert_history=alert_history, first_hit=first_hit, first_hit_mono=first_hit_mono)
    if ls.track is None:
        if hits and sum(history) >= p.min_frames:
            severity = Severity.ALERT if _alerting(ls, alert_hits, p) else Severity.DETECTION
            track = _start(camera, label, ls, obs, hits, p, severity)
            return replace(ls, track=track), [_event(EventKind.START, camera, label, track, obs.ts)]
        return ls, []
    if not hits:
        return _maybe_end(camera, label, ls, obs.clock, p)
    track, due = _continue(ls.track, obs, hits, p)
    if track.severity is Severity.DETECTION and _alerting(ls, alert_hits, p):
        # upgraded: the START an alert's sinks see first, same id; the held UPDATE is part of it
        track = replace(track, severity=Severity.ALERT, in_cooldown=_cooled(ls, obs, p),
                        last_update=obs.clock, dirty=False)
        return replace(ls, track=track), [_event(EventKind.START, camera, label, track, obs.ts)]
    events = [_event(EventKind.UPDATE, camera, label, track, obs.ts)] if due else []
    return replace(ls, track=track), events


def _maybe_end(camera: str, label: str, ls: LabelState, now: float,
               p: DebounceParams) -> tuple[LabelState, list[Event]]:
    """``now``: monotonic. The END's frame_ts is the wall time of ``now`` as seen from the track."""
    t = ls.track
    if t is None or now - t.last_seen_mono < p.end_after:
        return ls, []
    ended = replace(t, count=0)
    event = _event(EventKind.END, camera, label, ended, t.last_seen + (now - t.last_seen_mono), ended=True)
    last_end = t.last_seen_mono if t.severity is Severity.ALERT else ls.last_end
    return LabelState(history=(), first_hit=None, track=None, last_end=last_end), [event]


def cooldown_since(last_end_wall: float, now_wall: float, now_mono: float) -> float:
    """The monotonic time a previous run's event ended at, from its stored wall-clock end (pure).

    The wall time elapsed since then is taken as the monotonic time elapsed (the monotonic clock
    does not survive a reboot; the record is wall-clock). An end in the future (the wall clock
    stepped back since, or a wrong clock then) counts as just now: the cooldown is kept, never lost."""
    return now_mono - max(0.0, now_wall - last_end_wall)


def seeded(camera: str, last_ends: dict[str, float], now_wall: float, now_mono: float) -> CameraState:
    """A fresh state of ``camera`` whose labels remember when their last event ended, from the
    store's wall-clock ends (label -> end); the next START of a label within ``cooldown`` of it is
    flagged ``in_cooldown`` as if no restart had happened."""
    return CameraState(camera, {label: LabelState(last_end=cooldown_since(end, now_wall, now_mono))
                                for label, end in last_ends.items()})


def step(state: CameraState, obs: Observation, labels: tuple[str, ...],
         p: DebounceParams) -> tuple[CameraState, list[Event]]:
    """Fold one processed frame of ``state.camera`` into the state; return the events it causes."""
    if obs.camera != state.camera:
        raise ValueError(f"observation of camera {obs.camera!r} given to state of {state.camera!r}")
    new_labels = dict(state.labels)
    events: list[Event] = []
    for label in labels:
        new_labels[label], evs = _step_label(state.camera, label, state.labels.get(label, LabelState()), obs, p)
        events.extend(evs)
    return replace(state, labels=new_labels), events


def tick(state: CameraState, now: float, p: DebounceParams) -> tuple[CameraState, list[Event]]:
    """End events whose label has not been seen for ``end_after`` seconds of ``now`` (monotonic)."""
    new_labels = dict(state.labels)
    events: list[Event] = []
    for label, ls in state.labels.items():
        new_labels[label], evs = _maybe_end(state.camera, label, ls, now, p)
        events.extend(evs)
    return replace(state, labels=new_labels), events


def end_all(state: CameraState, now: float) -> tuple[CameraState, list[Event]]:
    """End every running event at ``now`` (monotonic): detection switched off, camera removed, shutdown."""
    forced = DebounceParams(end_after=0.0)
    return tick(state, now, forced)


def best_frame(state: CameraState, label: str) -> Frame | None:
    ls = state.labels.get(label)
    return ls.track.best_frame if ls and ls.track else None
