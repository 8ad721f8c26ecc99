"""Event router: detector results -> filters -> tracks -> visit scores -> moved? -> threshold -> debounce
-> snapshot -> store -> sinks.

Each visit-scored detection is compared with two thresholds of its camera's filter: the review one
(it counts) and the alert one (it may alert); ``debounce.step`` decides each event's severity. Every
event, alert or detection, is recorded and handed to every sink; the sinks that push skip detections.

One thread owns all track, visit and debounce state, so the pure ``step`` functions need no locks.
Per camera, ``tracking.step`` follows each eligible detection's object (a track), ``visits.step``
scores each track over its recent frames, and a detection counts only when its visit score passes
the threshold AND its track has moved (a watering can, a plant or a lamp never raises an alert, nor
a detection, however much it looks like a raccoon). After each frame the router publishes the
camera's track hints on the ``HintBoard`` (moving tracks that scored something): the detector
workers classify those tracks at their predicted boxes in the next frames, even when the detector
no longer proposes them. Snapshots are
encoded once per best frame and score (at START, and again only when a better frame arrives, the
END included) and reused by the other messages: the score drawn on the stored snapshot is the
event's final ``top_score``. Events leave for the sinks as soon as the confirming frame is folded in: no
periodic loop sits between detection and alert.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

import structlog

from raccoon_watch import debounce, tracking, visits
from raccoon_watch.debounce import CameraState, DebounceParams, Observation
from raccoon_watch.filters import DetectionFilter, eligible, meets_review_threshold, meets_threshold
from raccoon_watch.sinks.base import Sink
from raccoon_watch.snapshot import draw_detections, encode_jpeg
from raccoon_watch.tracking import HintBoard, Track, TrackParams, TrackState
from raccoon_watch.types import Detection, Event, EventKind, Frame, FrameResult, RouterSnapshot
from raccoon_watch.visits import VisitParams, VisitState

log = structlog.get_logger(__name__)

TICK_S = 0.25
DEFAULT_VISIT_PARAMS = VisitParams()


def track_params(visit_params: VisitParams) -> TrackParams:
    """The tracker follows the visit-scoring config: a detection continues a track whose predicted box
    overlaps it by ``score_match_iou``, and a track lives as long as a visit candidate (``score_window``
    frames without support)."""
    return TrackParams(match_iou=visit_params.match_iou, max_misses=visit_params.window)


class EventRouter(threading.Thread):
    def __init__(
        self,
        results: queue.Queue[FrameResult],
        filters: Mapping[str, DetectionFilter],
        params: DebounceParams,
        record: Callable[[Event], None],
        sinks: Sequence[Sink],
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,  # debounce durations; frames carry their own .mono
        on_event: Callable[[Event], None] | None = None,
        on_result: Callable[[FrameResult, tuple[Detection, ...]], None] | None = None,
        visit_params: VisitParams = DEFAULT_VISIT_PARAMS,
        states: Mapping[str, CameraState] | None = None,
        hints: HintBoard | None = None,
    ) -> None:
        super().__init__(name="event-router", daemon=True)
        self._results = results
        self._filters = dict(filters)
        self._params = params
        self._record = record
        self._sinks = list(sinks)
        self._halt = stop
        self._clock = clock
        self._on_event = on_event
        self._on_result = on_result
        # debounce state per camera; ``states``: seeded ones (debounce.seeded: the last run's cooldowns)
        self._states = {cam: (states or {}).get(cam) or CameraState(cam) for cam in self._filters}
        self._visit_params = visit_params
        self._visits = {cam: VisitState() for cam in self._filters}
        self._track_params = track_params(visit_params)
        self._tracks = {cam: TrackState() for cam in self._filters}
        self._hints = hints  # where the workers read each camera's track hints
        self._still_logged: dict[str, set[int]] = {cam: set() for cam in self._filters}  # tracks logged as still
        # event id -> ((frame seq, frame mono, score drawn), jpeg)
        self._snapshots: dict[str, tuple[tuple[int, float, float], bytes | None]] = {}
        self._versions: dict[str, str | None] = {}  # event id -> the classifier version that scored its START
        self._enabled = {cam: True for cam in self._filters}
        self._commands: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._reconfig: queue.SimpleQueue[tuple[dict[str, DetectionFilter], DebounceParams, VisitParams]] = \
            queue.SimpleQueue()
        self.heartbeat = time.monotonic()
        self.events_emitted = 0
        self.processed: dict[str, int] = {cam: 0 for cam in self._filters}  # results folded in, per camera
        # camera -> Frame.mono of its last frame with a detection at the review threshold on its own score
        # (None: none yet); keys fixed here, values replaced whole (``visit_open`` reads them unlocked)
        self._candidate_mono: dict[str, float | None] = {cam: None for cam in self._filters}

    # --- thread-safe controls ------------------------------------------------------------------
    def set_detect(self, camera: str, enabled: bool) -> None:
        """Switch detection for one camera (from MQTT); applied in the router thread."""
        self._commands.put((camera, enabled))

    def reconfigure(self, filters: Mapping[str, DetectionFilter], params: DebounceParams,
                    visit_params: VisitParams) -> None:
        """New filters / debounce / visit-scoring rules (SIGHUP reload); applied in the router thread,
        running events and candidates kept. Cameras not already watched are ignored (adding a camera
        needs a restart)."""
        self._reconfig.put((dict(filters), params, visit_params))

    def has_active_event(self, camera: str) -> bool:
        """True while an event is open on this camera (read from other threads: the state values
        are immutable and replaced whole, so a lookup sees either the old or the new one)."""
        state = self._states.get(camera)
        return state is not None and any(ls.track is not None for ls in state.labels.values())

    def visit_open(self, camera: str) -> bool:
        """True while a visit is under way on this camera: an event is open; or a frame in the debounce
        window counted toward one; or a moving track scored enough that the workers look for it (its
        hints); or, within ``end_after`` seconds (monotonic), a frame had a detection whose own score
        met the camera's review threshold, moved or not yet (``_handle``). The frame queue serves such
        a camera first and drops its frames last, so the frames that show the animal moving and then
        confirm its event are processed even when the detector cannot keep up with every camera.
        Read from other threads without a lock, like ``has_active_event``: every value read is
        immutable and replaced whole."""
        if not self._enabled.get(camera, False):
            return False
        state = self._states.get(camera)
        if state is not None and any(ls.track is not None or any(ls.history) for ls in state.labels.values()):
            return True
        if self._hints is not None and self._hints.get(camera):
            return True
        seen = self._candidate_mono.get(camera)
        return seen is not None and self._clock() - seen <= self._params.end_after

    def is_enabled(self, camera: str) -> bool:
        return self._enabled.get(camera, False)

    def filter_for(self, camera: str) -> DetectionFilter | None:
        """The camera's filter now (the router thread's own callbacks; a reload replaces it whole)."""
        return self._filters.get(camera)

    def snapshot(self) -> RouterSnapshot:
        """Heartbeat and counters now, as a frozen value (read from other threads: the per-camera
        dicts never gain or lose keys after ``__init__``, so copying them is safe)."""
        return RouterSnapshot(
            alive=self.is_alive(), heartbeat=self.heartbeat, events_emitted=self.events_emitted,
            processed=dict(self.processed), enabled=dict(self._enabled),
        )

    # --- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        next_tick = time.monotonic() + TICK_S
        while not self._halt.is_set():
            self.heartbeat = time.monotonic()
            self._apply_commands()
            try:
                result = self._results.get(timeout=TICK_S)
            except queue.Empty:
                result = None
            if result is not None:
                self._handle(result)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                self._tick(self._clock())
        self._end_all(self._clock())

    def _apply_commands(self) -> None:
        while not self._reconfig.empty():
            filters, self._params, self._visit_params = self._reconfig.get_nowait()
            self._track_params = track_params(self._visit_params)
            self._filters.update({cam: f for cam, f in filters.items() if cam in self._states})
            log.info("router_reconfigured", cameras=sorted(self._filters))
        while True:
            try:
                camera, enabled = self._commands.get_nowait()
            except queue.Empty:
                return
            if camera not in self._states:
                log.warning("detect_switch_unknown_camera", camera=camera)
                continue
            self._enabled[camera] = enabled
            log.info("detect_switched", camera=camera, enabled=enabled)
            if not enabled:
                before = self._states[camera]
                state, events = debounce.end_all(before, self._clock())
                self._states[camera] = state
                self._visits[camera] = VisitState()  # a visit does not span detection being off
                self._tracks[camera] = TrackState()  # ... nor does a track
                if self._hints is not None:
                    self._hints.publish(camera, ())
                self._emit(events, before)

    def _handle(self, result: FrameResult) -> None:
        cam = result.frame.camera
        flt = self._filters.get(cam)
        if flt is None or not self._enabled[cam]:
            return
        self.processed[cam] += 1
        frame = result.frame
        seen = tuple(d for d in result.detections if eligible(d, flt))  # any score
        if any(meets_review_threshold(d, flt) for d in seen):  # the frame's own score: a visit may begin
            before = self._candidate_mono.get(cam)
            self._candidate_mono[cam] = frame.mono if before is None else max(before, frame.mono)
        self._tracks[cam], owners = tracking.step(self._tracks[cam], seen, self._track_params, frame.mono,
                                                  frame.image, frame.motion_regions)
        live = {t.id for t in self._tracks[cam].tracks}
        self._visits[cam], scored = visits.step(self._visits[cam], seen, self._visit_params,
                                                track_ids=[t.id for t in owners], live=live)
        hits = tuple(d for d, track in zip(scored, owners)  # on the visit score, and only what moved
                     if meets_review_threshold(d, flt) and self._has_moved(cam, d, track, live))
        alerting = tuple(d for d in hits if meets_threshold(d, flt))
        if self._hints is not None:
            self._hints.publish(cam, tracking.select_hints(self._tracks[cam].tracks,
                                                           visits.best_scores(self._visits[cam]), self._track_params))
        if self._on_result:
            self._on_result(result, hits)
        obs = Observation(cam, result.frame.ts, hits, result.frame, mono=result.frame.mono, alerting=alerting)
        before = self._states[cam]
        state, events = debounce.step(before, obs, tuple(sorted(flt.labels)), self._params)
        for event in events:
            if event.kind is EventKind.START:  # an upgrade's START keeps the version of the first
                self._versions.setdefault(event.id, result.model_version)
        self._states[cam] = state
        self._emit(events, state, before)

    def _has_moved(self, cam: str, det: Detection, track: Track, live: set[int]) -> bool:
        """True when the track of a detection that passed the (review) threshold has moved; a still one is
        logged once per track (it would have counted: a watering can, a plant, a picture of a raccoon)."""
        logged = self._still_logged[cam]
        logged &= live
        if track.moved:
            return True
        if track.id not in logged:
            logged.add(track.id)
            log.info("still_candidate_ignored", camera=cam, track=track.id, label=det.label,
                     score=round(det.score, 3), box=[round(v, 3) for v in det.box], mode=det.mode)
        return False

    def _tick(self, now: float) -> None:
        for cam, before in list(self._states.items()):
            state, events = debounce.tick(before, now, self._params)
            self._states[cam] = state
            self._emit(events, before)

    def _end_all(self, now: float) -> None:
        for cam, before in list(self._states.items()):
            state, events = debounce.end_all(before, now)
            self._states[cam] = state
            self._emit(events, before)

    # --- output --------------------------------------------------------------------------------
    def _emit(self, events: Iterable[Event], *states: CameraState) -> None:
        """``states``: the camera's state after the step that made ``events``, and the one before it
        (an END's track is only in the state before: its best frame is drawn from there)."""
        for event in events:
            event = replace(event, snapshot_jpeg=self._snapshot(event, states), model_version=self._versions.get(event.id))
            if event.kind is EventKind.END:
                self._snapshots.pop(event.id, None)
                self._versions.pop(event.id, None)
            self.events_emitted += 1
            self._record(event)
            for sink in self._sinks:
                try:
                    sink.publish(event)
                except Exception as exc:  # one sink's bug must not silence the others
                    log.error("sink_publish_failed", sink=getattr(sink, "name", "?"), error=repr(exc))
            if self._on_event:
                self._on_event(event)

    def _snapshot(self, event: Event, states: Sequence[CameraState]) -> bytes | None:
        """JPEG of the event's best frame with its box and its score (``top_score``) drawn, encoded once
        per best frame and score. The END is drawn too when the best frame or score changed since the
        last message (a better frame between the last UPDATE and the END): the snapshot the store
        keeps always says the score the page and the store say."""
        frame = next((f for f in (_best_frame(s, event) for s in states) if f is not None), None)
        cached = self._snapshots.get(event.id)
        if frame is None:
            return cached[1] if cached else None
        key = (frame.seq, frame.mono, event.top_score)
        if cached and cached[0] == key:
            return cached[1]
        try:
            image = draw_detections(frame.image, [Detection(event.label, event.top_score, event.box)])
            jpeg = encode_jpeg(image)
        except Exception as exc:
            log.error("snapshot_failed", event_id=event.id, error=repr(exc))
            jpeg = cached[1] if cached else None
        self._snapshots[event.id] = (key, jpeg)
        return jpeg


def _best_frame(state: CameraState, event: Event) -> Frame | None:
    """The best frame of ``event``'s own track in ``state`` (None: not there, e.g. ended)."""
    ls = state.labels.get(event.label)
    track = ls.track if ls is not None else None
    return track.best_frame if track is not None and track.event_id == event.id else None
