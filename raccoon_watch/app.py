"""The one place that wires the stages together.

    cameras --CaptureThread--> FrameQueue --DetectorWorker xN--> results --EventRouter--> store + sinks
                                   ^-- EventRouter.visit_open: who goes first --'

``start()`` reads like a table of contents and ``stop()`` undoes it in reverse order. Every thread
watches ``self.stop_event`` and waits on queues with timeouts, so shutdown takes well under 5 s.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch import debounce
from raccoon_watch.capture import CaptureThread, Clock
from raccoon_watch.config import DEFAULT_THRESHOLD, CameraConfig, Config
from raccoon_watch.debounce import DebounceParams
from raccoon_watch.filters import DetectionFilter
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.learning import site_models
from raccoon_watch.learning.hotswap import ClassifierSwap
from raccoon_watch.motion import MotionGate
from raccoon_watch.recognition.detectors import create_recognizer, resolve_default_model
from raccoon_watch.recognition.detectors.base import ModelError
from raccoon_watch.recognition.detectors.factory import find_model
from raccoon_watch.recognition.detectors.remote import RemoteLink
from raccoon_watch.recognition.recognizer import Recognizer
from raccoon_watch.review.clips import ClipService
from raccoon_watch.review.eventtrace import EventTrace
from raccoon_watch.review.live import LatestFrame, live_boxes
from raccoon_watch.router import EventRouter
from raccoon_watch.sinks.base import Sink
from raccoon_watch.sinks.factory import build_sinks
from raccoon_watch.store import EventStore
from raccoon_watch.store.lock import StorageLock
from raccoon_watch.support.metrics import Metrics, outbox_counts
from raccoon_watch.tracking import HintBoard
from raccoon_watch.types import Detection, Event, FrameResult, PipelineStats, RecognizerSnapshot, Severity
from raccoon_watch.visits import VisitParams
from raccoon_watch.workers import DetectorWorker

log = structlog.get_logger(__name__)

RETENTION_SWEEP_S = 3600.0
STOP_JOIN_S = 3.0  # how long stop() waits for all threads together


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The daemon-wide score thresholds (``App.thresholds_for``), before a camera's own overrides.

    alert / ir_alert: an alert's (ir None: ``alert`` in every mode); review / ir_review: a detection's
    (review None: no detections; ir_review None: ``review`` in every mode)."""

    alert: float
    ir_alert: float | None = None
    review: float | None = None
    ir_review: float | None = None


def camera_filter(cam: CameraConfig, cfg: Config, thresholds: Thresholds) -> DetectionFilter:
    """The camera's filter from the daemon-wide ``thresholds``. A camera's own ``threshold`` applies
    to every image mode unless it sets ``ir_threshold`` too; the same for ``review_threshold`` and
    ``ir_review_threshold``."""
    own = cam.threshold is not None
    own_review = cam.review_threshold is not None
    return DetectionFilter(
        labels=frozenset(cam.labels or cfg.detector.labels),
        threshold=cam.threshold if own else thresholds.alert,
        ir_threshold=cam.ir_threshold if cam.ir_threshold is not None or own else thresholds.ir_alert,
        review_threshold=cam.review_threshold if own_review else thresholds.review,
        ir_review_threshold=cam.ir_review_threshold if cam.ir_review_threshold is not None or own_review
        else thresholds.ir_review,
        min_area=cam.min_area,
        max_area=cam.max_area,
        zones=tuple(tuple(p) for p in cam.zones),
        masks=tuple(tuple(p) for p in cam.masks),
    )


def deployed_thresholds(threshold: float | None, ir_threshold: float | None, card_threshold: float | None,
                        card_ir_threshold: float | None) -> tuple[float, float | None]:
    """(threshold, infrared threshold) from the config's ``detector.threshold`` / ``ir_threshold`` and
    the model cards'. The first: the config's if set, else the card's, else DEFAULT_THRESHOLD. The
    second: the config's ``ir_threshold`` if set; else None (the first applies in every mode) when the
    config sets ``threshold``, since a user who sets one number means it; else the card's."""
    chosen = next(t for t in (threshold, card_threshold, DEFAULT_THRESHOLD) if t is not None)
    if ir_threshold is not None:
        return chosen, ir_threshold
    return chosen, (None if threshold is not None else card_ir_threshold)


def review_thresholds(review: float | None, ir_review: float | None, card_review: float | None,
                      card_ir_review: float | None) -> tuple[float | None, float | None]:
    """(review threshold, infrared review threshold) from the config's ``detector.review_threshold`` /
    ``ir_review_threshold`` and the classifier card's ``review_thresholds``, by the rule of
    ``deployed_thresholds`` but with no default: the first is None (no detections) when neither gives
    one. The second: the config's if set; else None (the first, in every mode) when the config sets
    ``review_threshold``; else the card's."""
    chosen = review if review is not None else card_review
    if ir_review is not None:
        return chosen, ir_review
    return chosen, (None if review is not None else card_ir_review)


def _guarded(callback: Callable[..., None], *args: Any) -> None:
    """An observer's bug is logged, never allowed to stop the router thread."""
    try:
        callback(*args)
    except Exception as exc:
        log.error("observer_failed", callback=getattr(callback, "__qualname__", "?"), error=repr(exc))


def debounce_params(cfg: Config) -> DebounceParams:
    e = cfg.events
    return DebounceParams(e.min_frames, e.window, e.end_after, e.cooldown, e.update_interval)


def visit_params(cfg: Config) -> VisitParams:
    e = cfg.events
    return VisitParams(window=e.score_window, min_frames=e.score_min_frames, match_iou=e.score_match_iou)


# Per-camera fields the event router's filters take (detection filter: labels, score, area, zones).
LIVE_CAMERA_FIELDS = ("labels", "threshold", "ir_threshold", "review_threshold", "ir_review_threshold",
                      "min_area", "max_area", "zones", "masks")


# Detector fields the filters take: the alert and review thresholds and the labels.
LIVE_DETECTOR_FIELDS = ("threshold", "ir_threshold", "review_threshold", "ir_review_threshold", "labels")


def plan_reload(old: Config, new: Config, filters_live: bool) -> tuple[Config, list[str]]:
    """Merge a freshly loaded ``Config`` into the running one.

    Returns (config to run with, top-level sections whose change still needs a restart). Live:
    ``logging.level`` always; with ``filters_live`` (the router can be reconfigured) also
    ``events`` and the filter fields (``detector.threshold``/``labels``, per camera
    ``LIVE_CAMERA_FIELDS``). Everything else (cameras added/removed or their sources, the model,
    workers, storage, MQTT, Pushover, HTTP, log format) needs a restart and keeps its old value.
    """
    update: dict[str, Any] = {"logging": old.logging.model_copy(update={"level": new.logging.level})}
    if filters_live:
        update["events"] = new.events
        update["detector"] = old.detector.model_copy(
            update={k: getattr(new.detector, k) for k in LIVE_DETECTOR_FIELDS}
        )
        update["cameras"] = {
            name: cam.model_copy(update={k: getattr(new.cameras[name], k) for k in LIVE_CAMERA_FIELDS})
            if name in new.cameras else cam
            for name, cam in old.cameras.items()
        }
    merged = old.model_copy(update=update)
    restart = [name for name in type(new).model_fields if getattr(merged, name) != getattr(new, name)]
    return merged, restart


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What ``App.reload`` did: whether the filters changed live, and the top-level sections whose
    change needs a restart (they keep their old values until then)."""

    live_filters: bool
    restart: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Observer:
    """Callbacks the router calls, in its own thread, for what it processes (tools, benchmarks).

    on_result(result, hits): every FrameResult of an enabled camera, with its counting detections
        (those that passed the camera's filter at its review threshold, which is the alert threshold
        when none is set), before the debounce folds it in.
    on_event(event): every Event (START/UPDATE/END), after the store recorded it and every sink's
        ``publish`` returned. ``event.severity`` says alert or detection; an upgraded detection comes
        again as a START with severity alert, so "START and alert" is each alert exactly once.
    A callback must be quick: it runs on the path from frame to alert. What it raises is logged.
    """

    on_result: Callable[[FrameResult, tuple[Detection, ...]], None] | None = None
    on_event: Callable[[Event], None] | None = None


class App:
    """Owns every thread and resource of one daemon run. All attributes are set here.

    observers: called by the router for every processed frame and every event (see ``Observer``);
    more can be added with ``add_observer`` at any time.
    clock: the monotonic clock (seconds) by which the router ends events when frames stop coming
    (durations are monotonic, like ``Frame.mono``); ``time.monotonic`` for cameras. An offline
    evaluation of draining file cameras (``drain: true``, frames on file time) passes one that
    follows the clip's ``Frame.mono``.
    capture_clock: what the capture threads stamp frames with (``time()`` for ``Frame.ts``,
    ``monotonic()`` for ``Frame.mono``): the ``time`` module; a test steps its wall clock.
    storage_lock: the store's lock when the caller took it already (the ``run`` command takes it
    before its heavy imports); else ``start()`` takes it. ``stop()`` releases it either way.
    """

    def __init__(self, cfg: Config, observers: Iterable[Observer] = (), clock: Callable[[], float] = time.monotonic,
                 capture_clock: Clock = time, storage_lock: StorageLock | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.capture_clock = capture_clock
        self.observers: tuple[Observer, ...] = tuple(observers)  # replaced whole, never mutated
        self.model_path: Path = cfg.detector.model or resolve_default_model()
        self.stop_event = threading.Event()
        # fair across cameras (raccoon_watch/schedule.py); open visits first once the router runs
        self.frames = FrameQueue(cfg.detector.queue_size, lane_depth=cfg.detector.frames_per_camera)
        self.results: queue.Queue[FrameResult] = queue.Queue(maxsize=256)
        self.storage_lock = storage_lock or StorageLock(cfg.storage.path)  # one daemon per store (store/lock.py)
        self.store: EventStore | None = None
        self.sinks: list[Sink] = []
        self.workers: list[DetectorWorker] = []
        self.router: EventRouter | None = None
        self.hints = HintBoard(name for name, cam in cfg.cameras.items() if cam.enabled)  # router -> workers
        self.cameras: dict[str, CaptureThread] = {}
        self.gates: dict[str, MotionGate] = {}  # per camera: decoded frame -> detector or not
        self.live: dict[str, LatestFrame] = {}  # per camera: the newest decoded frame, for the live view
        self.clips: ClipService | None = None  # event clips (recorders + cutter)
        self.trace: EventTrace | None = None  # per-frame scores and clean best frame of each event
        self.card_threshold: float | None = None  # the model card's deployed threshold, once loaded
        self.card_ir_threshold: float | None = None  # ... and its infrared-frame one (None: the same)
        self.card_review: tuple[float | None, float | None] = (None, None)  # its review_thresholds (colour, ir)
        self.models_root = site_models.models_root(cfg.storage.path)  # the site's retrained classifiers
        self.classifier_dir: Path | None = None  # site_models.current() when the daemon loaded it
        self.swap: ClassifierSwap | None = None  # the classifier the workers run (hot swap)
        # detector.backend remote: the remote recognizer's state, shared by the workers (detectors/remote.py)
        self.remote = RemoteLink(cfg.detector.remote) if cfg.detector.backend == "remote" and cfg.detector.remote else None
        self.recognizer_name = ""  # the local models' recognizer, once loaded
        self.thresholds = Thresholds(DEFAULT_THRESHOLD)  # daemon-wide; set by _load_model and reload
        self.started_mono = time.monotonic()
        self._last_sweep = 0.0
        self.metrics = Metrics(self.stats)  # private Prometheus registry; read at scrape time

    def add_observer(
        self,
        on_result: Callable[[FrameResult, tuple[Detection, ...]], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> Observer:
        """Register router callbacks (see ``Observer``); returns the observer."""
        observer = Observer(on_result=on_result, on_event=on_event)
        self.observers = (*self.observers, observer)
        return observer

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.storage_lock.held:  # StorageLocked: another daemon has this store; nothing is started
            self.storage_lock.acquire()
        self._load_model()
        self._open_store()
        self._start_clips()
        self._start_sinks()
        self._start_workers()
        self._start_router()
        self._start_cameras()
        log.info("daemon_started", cameras=list(self.cameras), workers=len(self.workers), model=str(self.model_path))

    def stop(self) -> None:
        self.stop_event.set()
        # one shared deadline for every thread, not 3 s each in turn: a capture thread stuck in
        # VideoCapture's open (open_timeout_s, up to 120 s) cannot be interrupted, and N of them
        # joined one after another took N x 3 s. All threads are daemons; what is left is abandoned.
        deadline = time.monotonic() + STOP_JOIN_S
        threads = [*([self.router] if self.router else []), *self.workers, *self.cameras.values()]
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("threads_abandoned_at_stop", threads=stuck, waited_s=STOP_JOIN_S)
        if self.clips is not None:
            self.clips.stop()  # a clip not cut yet stays pending and is cut at the next start
        for sink in reversed(self.sinks):
            try:
                sink.stop()
            except Exception as exc:
                log.error("sink_stop_failed", sink=getattr(sink, "name", "?"), error=repr(exc))
        if self.store is not None:
            self.store.close()
        self.storage_lock.release()
        log.info("daemon_stopped")

    def reload(self, new: Config) -> Reloaded:
        """Apply a re-read configuration (SIGHUP): the log level always, and with a running router
        the events section and the detection filters (``plan_reload``); the rest waits for a restart."""
        router = self.router
        merged, restart = plan_reload(self.cfg, new, filters_live=router is not None)
        logging.getLogger().setLevel(merged.logging.level.upper())
        if router is not None:
            thresholds = self.thresholds_for(merged)
            router.reconfigure(
                {name: camera_filter(cam, merged, thresholds) for name, cam in merged.cameras.items() if cam.enabled},
                debounce_params(merged),
                visit_params(merged),
            )
        self.cfg = merged
        try:  # a promoted (or rolled back) classifier: swapped in the background
            self.reload_classifier()
        except Exception as exc:  # the config part of the reload is done; never let this undo it
            log.error("classifier_reload_failed", error=repr(exc)[:300])
        return Reloaded(live_filters=router is not None, restart=tuple(restart))

    def check_model(self) -> None:
        """The start-up model check alone, exactly as ``start()`` runs it (the site's promoted
        classifier when it loads, else the model folder's own; the thresholds of the cards), the model
        closed again, nothing else started: for ``check-config``. ModelError when it does not load."""
        self._load_model()

    def _make_detector(self) -> Recognizer:
        return create_recognizer(self.cfg.detector, self.model_path, classifier_dir=self.classifier_dir,
                                 remote=self.remote)

    def _load_model(self) -> None:
        """Load once in the main thread so a missing/corrupt model fails before anything starts."""
        probe = self._probe_model()
        self.card_threshold = getattr(probe, "threshold", None)
        self.card_ir_threshold = getattr(probe, "ir_threshold", None)
        self.card_review = (getattr(probe, "review_threshold", None), getattr(probe, "ir_review_threshold", None))
        self.thresholds = self.thresholds_for(self.cfg)
        t = self.thresholds
        self.recognizer_name = self.remote.local if self.remote is not None else probe.name
        log.info("model_loaded", backend=probe.name, labels=len(probe.labels), threshold=t.alert,
                 ir_threshold=t.ir_alert, review_threshold=t.review, ir_review_threshold=t.ir_review,
                 classifier=probe.classifier is not None,
                 proposal_threshold=probe.params.proposal_threshold if probe.classifier is not None else None)
        probe.close()

    def _probe_model(self) -> Recognizer:
        """The site's promoted classifier (``site_models.current``) when there is one and it loads,
        else the model folder's own; also sets up the hot swap with its version and card."""
        site = site_models.current(self.models_root)
        self.classifier_dir = site
        try:
            probe = self._make_detector()
        except ModelError as exc:
            if site is None:
                raise
            log.error("site_classifier_unusable_using_shipped", folder=str(site), error=str(exc)[:300])
            self.classifier_dir = None
            probe = self._make_detector()
        classifier = probe.classifier
        if classifier is not None:
            if self.classifier_dir is None:
                card = find_model(self.model_path).classifier_card
            else:
                card = json.loads((self.classifier_dir / site_models.CLASSIFIER_CARD).read_text())
            self.swap = ClassifierSwap(site_models.model_version(classifier.model_path), self.classifier_dir, card,
                                       num_threads=self.cfg.detector.num_threads)
            log.info("classifier_version", version=self.swap.active.version, site=self.classifier_dir is not None)
        return probe

    def reload_classifier(self) -> object:
        """SIGHUP / the page: load the site's current classifier (or, after a roll back to none, the
        model folder's own) in the background; detection goes on with the old one meanwhile and
        keeps it if the new one fails. Returns the loader thread (None: nothing to do)."""
        if self.swap is None:
            return None
        site = site_models.current(self.models_root)
        if site is None:
            files = find_model(self.model_path)
            return self.swap.load(None, files.classifier_card, files.classifier)
        return self.swap.load(site)

    @property
    def threshold(self) -> float:
        """The daemon-wide alert threshold (colour frames)."""
        return self.thresholds.alert

    def thresholds_for(self, cfg: Config) -> Thresholds:
        """The daemon-wide thresholds of ``cfg`` with this model's cards: the alert pair
        (``deployed_thresholds``) and the review pair (``review_thresholds``)."""
        d = cfg.detector
        alert, ir_alert = deployed_thresholds(d.threshold, d.ir_threshold, self.card_threshold, self.card_ir_threshold)
        review, ir_review = review_thresholds(d.review_threshold, d.ir_review_threshold, *self.card_review)
        return Thresholds(alert, ir_alert, review, ir_review)

    def _open_store(self) -> None:
        s = self.cfg.storage
        self.store = EventStore(s.path, s.retention(), s.outbox_max)

    def _start_clips(self) -> None:
        assert self.store is not None
        self.clips = ClipService(self.store, self.cfg.cameras, self.cfg.clips, self.stop_event)
        self.clips.start()
        self.trace = EventTrace(self.store, {
            name: camera_filter(cam, self.cfg, self.thresholds).labels
            for name, cam in self.cfg.cameras.items() if cam.enabled
        }, lookback=self.cfg.events.score_window)

    def _start_sinks(self) -> None:
        assert self.store is not None
        self.sinks = build_sinks(self.cfg, self.store, commands=self.set_detect, stats=self.stats,
                                 event_fields=self.clips.event_fields if self.clips else None,
                                 feedback=self.set_feedback)
        for sink in self.sinks:
            sink.start()

    def _start_workers(self) -> None:
        wait_s = self.cfg.detector.batch_wait_ms / 1000.0
        for i in range(self.cfg.detector.workers):
            worker = DetectorWorker(
                i, self._make_detector, self.frames, self.results, self.stop_event, wait_s,
                on_inference=self.metrics.on_inference,
                swap=self.swap,
                hints=self.hints,
            )
            worker.start()
            self.workers.append(worker)

    def _start_router(self) -> None:
        assert self.store is not None
        filters = {
            name: camera_filter(cam, self.cfg, self.thresholds)
            for name, cam in self.cfg.cameras.items() if cam.enabled
        }
        self.router = EventRouter(
            self.results, filters, debounce_params(self.cfg), self._record, self.sinks, self.stop_event,
            clock=self.clock, on_event=self._on_event, on_result=self._on_result,
            visit_params=visit_params(self.cfg), states=self._cooldown_states(filters), hints=self.hints,
        )
        self.router.start()
        self.frames.set_visit_open(self.router.visit_open)

    def _cooldown_states(self, filters: dict[str, DetectionFilter]) -> dict[str, debounce.CameraState]:
        """Each camera's debounce state seeded with the end of its last stored event per label, so
        the cooldown runs on across a restart (a visit soon after a pushed one is not pushed again)."""
        assert self.store is not None
        ends = self.store.last_event_ends()
        now_wall, now_mono = time.time(), self.clock()
        states = {}
        for cam, flt in filters.items():
            mine = {label: end for (camera, label), end in ends.items() if camera == cam and label in flt.labels}
            if mine:
                states[cam] = debounce.seeded(cam, mine, now_wall, now_mono)
                log.info("cooldown_restored", camera=cam,
                         ended_s_ago={label: round(max(0.0, now_wall - end), 1) for label, end in mine.items()})
        return states

    def _start_cameras(self) -> None:
        for name, cam in self.cfg.cameras.items():
            if not cam.enabled:
                continue
            router = self.router
            # while an event is open every sampled frame goes to the detector, still or not
            self.gates[name] = MotionGate(
                cam.motion, event_active=(lambda n=name, r=router: r.has_active_event(n)) if router else None,
            )
            self.live[name] = LatestFrame(self.gates[name])
            thread = CaptureThread(name, cam, self.frames, self.stop_event, clock=self.capture_clock,
                                   sample_hook=self.live[name],
                                   file_clock=self.clips.file_clocks.get(name) if self.clips else None)
            thread.start()
            self.cameras[name] = thread

    # --- runtime -------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        """Router thread: metrics first, then clips and the score trace, then each observer."""
        self.metrics.on_event(event)
        for own in (self.clips, self.trace):
            if own is not None:
                _guarded(own.on_event, event)
        for observer in self.observers:
            if observer.on_event is not None:
                _guarded(observer.on_event, event)

    def _on_result(self, result: FrameResult, hits: tuple[Detection, ...]) -> None:
        """Router thread: the live view's boxes, the score trace, then each observer."""
        tap = self.live.get(result.frame.camera)
        flt = self.router.filter_for(result.frame.camera) if self.router is not None else None
        if tap is not None and flt is not None:
            tap.show(result.frame.mono, live_boxes(result.detections, hits, flt))
        if self.trace is not None:
            _guarded(self.trace.on_result, result, hits)
        for observer in self.observers:
            if observer.on_result is not None:
                _guarded(observer.on_result, result, hits)

    def _record(self, event: Event) -> None:
        if self.store is not None:
            self.store.record(event)

    def set_detect(self, camera: str, enabled: bool) -> None:
        if self.router is not None:
            self.router.set_detect(camera, enabled)

    def set_feedback(self, event_id: str | None, camera: str | None, label: str | None, source: str) -> str | None:
        """A user's verdict on an event (the page, MQTT, Home Assistant): ``event_id``, or the latest
        alert of ``camera`` (the one Home Assistant knows: detections are not published); returns the
        event id it was stored on, None when there is no such event."""
        if self.store is None:
            return None
        if event_id is None and camera is not None:
            event_id = self.store.latest_event_id(camera, Severity.ALERT.value)
        if event_id is None or not self.store.set_feedback(event_id, label, source):
            return None
        log.info("feedback_stored", event_id=event_id, label=label, source=source)
        for sink in self.sinks:
            if hasattr(sink, "feedback_changed"):
                sink.feedback_changed(event_id, label, source)
        return event_id

    def housekeeping(self) -> None:
        """Called about once a second from the main thread."""
        now = time.monotonic()
        self.storage_lock.check()  # a stat: the lock file deleted with the folder is locked again
        if self.store is not None:
            self.store.maintain()  # a stat; in memory: the disk tried again every few seconds
        if self.store is not None and now - self._last_sweep >= RETENTION_SWEEP_S:
            self._last_sweep = now
            self.store.sweep()

    def stats(self) -> PipelineStats:
        """Every stage's own snapshot, now: for health, metrics, the watchdog, MQTT stats and bench."""
        return PipelineStats(
            mono=time.monotonic(),
            started_mono=self.started_mono,
            cameras=tuple(thread.snapshot() for thread in self.cameras.values()),
            workers=tuple(w.snapshot() for w in self.workers),
            router=self.router.snapshot() if self.router is not None else None,
            queue=self.frames.snapshot(),
            motion={name: gate.snapshot() for name, gate in self.gates.items()},
            deliveries=outbox_counts(self.store, [s.name for s in self.sinks]),
            storage=self.store.health() if self.store is not None else None,
            sinks={s.name: s.health() for s in self.sinks if hasattr(s, "health")},
            model_version=self.swap.active.version if self.swap is not None else None,
            recognizer=self.recognizer_snapshot(),
        )

    def recognizer_snapshot(self) -> RecognizerSnapshot:
        """Which recognizer the workers use now and why (/healthz ``recognizer``)."""
        if self.remote is not None:
            return self.remote.snapshot()
        backend = self.cfg.detector.backend
        return RecognizerSnapshot(backend=backend, local=self.recognizer_name, in_use="local",
                                  reason=f"detector.backend is {backend}: the local models")

    def wait(self, timeout: float | None = None) -> bool:
        return self.stop_event.wait(timeout)
