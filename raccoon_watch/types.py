"""Typed, frozen values that travel between the stages of the flow.

camera -> capture -> frame queue -> detector workers -> debounce -> event store/outbox -> sinks

Box convention used everywhere inside the daemon (``Box``):
    (xmin, ymin, xmax, ymax), normalised to the frame: 0 <= xmin < xmax <= 1, 0 <= ymin < ymax <= 1.
Detector backends convert from their model's order (TF OD API: ymin, xmin, ymax, xmax) once, at
the backend boundary; pixels appear only where a box leaves the daemon (``detect --json``,
drawing on snapshots), through ``box_to_pixels``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]
"""(xmin, ymin, xmax, ymax), normalised to [0, 1] of the frame's width and height."""


def box_to_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised (xmin, ymin, xmax, ymax) -> integer pixels (xmin, ymin, xmax, ymax), clipped."""
    xmin, ymin, xmax, ymax = box
    return (
        int(round(min(max(xmin, 0.0), 1.0) * width)),
        int(round(min(max(ymin, 0.0), 1.0) * height)),
        int(round(min(max(xmax, 0.0), 1.0) * width)),
        int(round(min(max(ymax, 0.0), 1.0) * height)),
    )


def box_area(box: Box) -> float:
    """Area of a normalised box as a fraction of the frame (0..1)."""
    xmin, ymin, xmax, ymax = box
    return max(0.0, xmax - xmin) * max(0.0, ymax - ymin)


def shift_box(box: Box, dx: float, dy: float) -> Box:
    """A normalised (xmin, ymin, xmax, ymax) box moved by (dx, dy) (fractions of the frame's width and
    height), stopped at the frame's edges: it keeps its size and never leaves the frame."""
    xmin, ymin, xmax, ymax = box
    dx = min(max(dx, -xmin), 1.0 - xmax)
    dy = min(max(dy, -ymin), 1.0 - ymax)
    return (xmin + dx, ymin + dy, xmax + dx, ymax + dy)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes, any one unit for both (0..1).

    Continuous areas (no "+1 pixel"), as ``train.metrics.iou_xyxy`` computes for arrays; 0.0 when
    the boxes do not overlap or both are empty.
    """
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0.0 else 0.0


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded camera frame.

    image: BGR uint8 array of shape (H, W, 3), as OpenCV decodes it; never mutated after capture.
    ts: wall-clock capture time (time.time()), mono: time.monotonic() at capture.
    seq: per-camera frame counter, starting at 0 for each capture thread.
    crop: None (detect on the whole image), or the part of ``image`` the detector should look at,
        set by the motion gate around a small motion region: integer pixels (x0, y0, x1, y1) of
        ``image``, ends exclusive (the crop is ``image[y0:y1, x0:x1]``), 0 <= x0 < x1 <= W,
        0 <= y0 < y1 <= H. Note the order is x first, like ``Box``, but in pixels, not normalised.
        Whatever the crop, detections leave the detector worker as ``Box`` of the FULL image.
    motion_regions: what moved in this frame, set by the motion gate (empty without one, or when it
        is disabled): at most ``motion.MAX_REGIONS`` boxes, normalised (xmin, ymin, xmax, ymax) of the
        FULL image, largest first, one per connected group of changed pixels, specks dropped. In
        infrared frames they are candidates for the classifier (``recognition``); the tracker takes
        them as evidence that a candidate moved (``tracking``).
    """

    camera: str
    seq: int
    ts: float
    mono: float
    image: np.ndarray
    crop: tuple[int, int, int, int] | None = None
    motion_regions: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        if self.crop is not None:
            if len(self.crop) != 4:
                raise ValueError(f"expected 4 crop coords (x0, y0, x1, y1), got {len(self.crop)}")
            x0, y0, x1, y1 = self.crop
            if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
                raise ValueError(f"crop {self.crop} is not inside the {self.width}x{self.height} image")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


ORIGIN_DETECTOR, ORIGIN_TRACK, ORIGIN_MOTION = "detector", "track", "motion"
"""``Detection.origin`` values."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found by a detector. ``box`` is normalised (xmin, ymin, xmax, ymax).

    score: the final score, what thresholds, visit scoring and the debounce use. With a two-stage
        model it is the raccoon classifier's probability on the candidate's full-resolution crop
        (later, in the router, the candidate's visit score: the median over its recent frames).
    detector_score: the proposer's (SSD) score for this box; None when it is the same number as
        ``score`` (single-stage model).
    mode: the image mode of the frame it was found in (``imagemode.image_mode``: "color" or "ir"),
        which picks the threshold that applies; None when nobody looked (then the colour one).
    origin: what made it a candidate: ``ORIGIN_DETECTOR`` (a detector proposal, also a sub-threshold
        one found at a tracked animal), ``ORIGIN_TRACK`` (a track's predicted box, nothing proposed
        there) or ``ORIGIN_MOTION`` (a moving region of an infrared frame). See ``recognition``.
    """

    label: str
    score: float
    box: Box
    detector_score: float | None = None
    mode: str | None = None
    origin: str = ORIGIN_DETECTOR


@dataclass(frozen=True, slots=True)
class TrackHint:
    """Where a tracked animal of one camera is expected next: published by the event router (which owns
    the tracks, ``tracking.select_hints``) for the detector workers, which classify it there even when
    the detector's score for it falls under the proposal threshold.

    box: normalised (xmin, ymin, xmax, ymax) of the track's last supported detection, at monotonic
    time ``mono``; velocity: its centre's (dx, dy) per second, fractions of the frame's width and height.
    """

    track_id: int
    box: Box
    mono: float
    velocity: tuple[float, float] = (0.0, 0.0)

    def box_at(self, mono: float) -> Box:
        """The box predicted at monotonic time ``mono`` (constant velocity; never before ``self.mono``)."""
        dt = max(0.0, mono - self.mono)
        return shift_box(self.box, self.velocity[0] * dt, self.velocity[1] * dt)


@dataclass(frozen=True, slots=True, eq=False)
class FrameResult:
    """A frame with what the detector found in it (all detections, before any filtering)."""

    frame: Frame
    detections: tuple[Detection, ...]
    inference_ms: float
    model_version: str | None = None  # the classifier that scored it (site_models.model_version)


class EventKind(str, enum.Enum):
    START = "new"  # values match Frigate's <prefix>/events "type"
    UPDATE = "update"
    END = "end"


class Severity(str, enum.Enum):
    """Frigate's review terms. An ALERT passed the alert threshold and is pushed (Pushover, MQTT,
    Home Assistant); a DETECTION passed only the lower review threshold: stored and shown on the
    review page, never pushed. A detection that later passes the alert threshold is upgraded: the
    same event id gets a second START, with severity ALERT, and that one is pushed."""

    ALERT = "alert"
    DETECTION = "detection"


@dataclass(frozen=True, slots=True, eq=False)
class Event:
    """A debounced occurrence: a raccoon arrived (START), is still there (UPDATE), left (END).

    id: stable across START/UPDATE/END of one occurrence, e.g. "1732640000.123456-3fa2c1".
    box: normalised (xmin, ymin, xmax, ymax) of the best detection so far.
    snapshot_jpeg: the best frame so far, JPEG bytes, box drawn; None if it could not be encoded.
    in_cooldown: True when this occurrence started within ``events.cooldown`` seconds of the
        previous one of the same camera and label; sinks that push to a phone skip it.
    frame_ts: wall-clock capture time of the frame that caused this message (for latency metrics).
    first_seen_ts: capture time of the first counting frame of this occurrence.
    end_time: on END, ``start_time`` plus the occurrence's length on the monotonic clock (so
        ``end_time - start_time`` is its true duration whatever the wall clock did); None before.
    first_seen_mono, last_seen_mono: the first and the latest counting frame on the monotonic clock
        (``Frame.mono``): the clip window; None when the producer had no monotonic times.
    count: number of counting detections of this label in the latest frame.
    model_version: the classifier (sha256 prefix, ``site_models.model_version``) that scored the
        frame that started this occurrence; None for a detector alone.
    severity: ALERT (pushed) or DETECTION (review page only); see ``Severity``. Every message of one
        occurrence carries its severity at that moment: a detection's messages say DETECTION until the
        START that upgrades it, and ALERT from there on.
    """

    id: str
    kind: EventKind
    camera: str
    label: str
    start_time: float
    end_time: float | None
    score: float
    top_score: float
    box: Box
    snapshot_jpeg: bytes | None = field(default=None, repr=False)
    in_cooldown: bool = False
    frame_ts: float = 0.0
    first_seen_ts: float = 0.0
    count: int = 1
    model_version: str | None = None
    severity: Severity = Severity.ALERT
    mode: str | None = None  # image mode of the best detection ("color" / "ir"): whose threshold applied
    first_seen_mono: float | None = None
    last_seen_mono: float | None = None

    @property
    def is_alert(self) -> bool:
        return self.severity is Severity.ALERT

    @property
    def has_snapshot(self) -> bool:
        return self.snapshot_jpeg is not None

    def to_dict(self) -> dict[str, object]:
        """Frigate-style event body (no snapshot bytes); box in normalised xyxy. No ``severity``: only
        alerts are published, and their body is what it was before detections existed."""
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "score": round(self.score, 4),
            "top_score": round(self.top_score, 4),
            "box": [round(v, 4) for v in self.box],
            "start_time": self.start_time,
            "end_time": self.end_time,
            "has_snapshot": self.has_snapshot,
            "in_cooldown": self.in_cooldown,
            "count": self.count,
            **({"model_version": self.model_version} if self.model_version else {}),
        }


def score_text(score: float) -> str:
    """THE way an event's score is written for people, everywhere: the label burned into the
    snapshot, the review list and event page, the push. Two decimals, "0.90", in the units of the
    thresholds in the config. The score is the event's ``top_score``: the best visit score (what the
    threshold compares) of the event so far."""
    return f"{score:.2f}"


# --- pipeline stats: what each stage reports about itself ---------------------------------------
# Each stage's ``snapshot()`` returns one of these frozen values (counters copied at that moment);
# ``App.stats()`` gathers them into a ``PipelineStats``. Times are ``time.monotonic()`` seconds.


@dataclass(frozen=True, slots=True)
class CaptureSnapshot:
    """One capture thread (``CaptureThread.snapshot()``); counters as in ``capture.CameraStats``.

    last_frame_mono: monotonic time of the last frame grabbed, 0.0 before any.
    reason: why it is not up, in a few words without the source URL ("connection refused", "no such
    file", "file ended (loop: false)"); empty while up or before the first open has an outcome.
    """

    camera: str
    alive: bool = True
    state: str = "connecting"  # 'connecting' | 'up' | 'down' | 'stopped'
    frames_read: int = 0
    frames_decoded: int = 0
    frames_queued: int = 0
    frames_dropped: int = 0  # puts that evicted an older frame (queue full)
    frames_bad: int = 0
    reconnects: int = 0
    open_failures: int = 0
    last_frame_mono: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RecognizerSnapshot:
    """Which recognizer the detector workers use now, and why (/healthz ``recognizer``, /metrics).

    backend: ``detector.backend`` (auto, tflite, tensorflow, remote); local: the local models'
    recognizer (e.g. ``tflite+tflite-classifier``); in_use: "remote" or "local"; reason: a sentence
    (no URL, no key). With ``backend: remote`` also its counters: frames the remote answered, frames
    detected locally instead, failed or slow calls, the last remote call's milliseconds, seconds until
    the remote is tried again (None while it is in use) and seconds since ``in_use`` last changed.
    """

    backend: str
    local: str
    in_use: str
    reason: str
    remote_frames: int = 0
    local_frames: int = 0
    failures: int = 0
    last_remote_ms: float | None = None
    retry_in_s: float | None = None
    since_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "in_use": self.in_use, "reason": self.reason, "local": self.local}
        if self.backend == "remote":
            out.update(remote_frames=self.remote_frames, local_frames=self.local_frames, failures=self.failures,
                       last_remote_ms=self.last_remote_ms, retry_in_s=self.retry_in_s, since_s=self.since_s)
        return out


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One detector worker (``DetectorWorker.snapshot()``); counters as in ``workers.WorkerStats``.

    loaded: its model is loaded; busy_since: start of the current detect() call, None when idle.
    """

    name: str
    alive: bool = True
    loaded: bool = True
    frames: int = 0
    cropped: int = 0
    calls: int = 0
    errors: int = 0
    last_inference_ms: float = 0.0
    heartbeat: float = 0.0
    busy_since: float | None = None


@dataclass(frozen=True, slots=True)
class RouterSnapshot:
    """The event router (``EventRouter.snapshot()``).

    processed: results folded in, per camera; enabled: detection switched on, per camera.
    """

    alive: bool = True
    heartbeat: float = 0.0
    events_emitted: int = 0
    processed: Mapping[str, int] = field(default_factory=dict)
    enabled: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MotionSnapshot:
    """One camera's motion gate (``MotionGate.snapshot()``): frames checked, passed on to the
    detector, passed with a crop; ``by_reason``: passed/held frames per ``motion.Reason`` value."""

    frames_checked: int = 0
    frames_passed: int = 0
    frames_cropped: int = 0
    by_reason: Mapping[str, int] = field(default_factory=dict)
    motion_ms_mean: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"frames_checked": self.frames_checked, "frames_passed": self.frames_passed,
                "frames_cropped": self.frames_cropped, "by_reason": dict(self.by_reason),
                "motion_ms_mean": self.motion_ms_mean}


@dataclass(frozen=True, slots=True)
class DeliveryCounts:
    """One sink's outbox (``EventStore``): deliveries waiting, rejected for good, evicted by the bound."""

    pending: int = 0
    failed: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"pending": self.pending, "failed": self.failed, "dropped": self.dropped}


@dataclass(frozen=True, slots=True)
class StorageSnapshot:
    """The event store (``EventStore.health()``): on disk or in memory only; when a damaged
    events.db was replaced in this run, ``recovered`` = {"at", "reason", "moved_to", "method", "salvaged"};
    when events.db was deleted under the running store, ``vanished`` = {"at", "reason", "restored"};
    ``held_media``: snapshots and frames waiting in memory for the disk."""

    persistent: bool = True
    recovered: Mapping[str, Any] | None = None
    vanished: Mapping[str, Any] | None = None
    held_media: int = 0

    def problems(self) -> list[str]:
        """What makes /healthz say degraded, one sentence each (empty: the store is fine)."""
        out = []
        if self.recovered:
            out.append(f"events.db was damaged and replaced; the old file is {self.recovered['moved_to']}")
        if self.vanished:
            out.append(f"events.db vanished while running ({self.vanished['reason']}); "
                       + ("it was re-created with everything the store had" if self.vanished.get("restored")
                          else "the store could not re-create it"))
        if not self.persistent:
            out.append("event store is in memory only (the disk is tried again every few seconds): "
                       "what it holds does not survive a restart until then")
        if self.held_media:
            out.append(f"{self.held_media} snapshot/frame files wait in memory for the disk")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"persistent": self.persistent, "recovered": dict(self.recovered) if self.recovered else None,
                "vanished": dict(self.vanished) if self.vanished else None, "held_media": self.held_media}


SINK_OK, SINK_CONNECTING, SINK_FAILING = "ok", "connecting", "failing"


@dataclass(frozen=True, slots=True)
class SinkSnapshot:
    """A sink's ``health()``: ``state`` ok | connecting | failing and why; ``retained_commands``:
    camera -> retained command it obeyed at start (MQTT); ``detail``: published as is (e.g. broker)."""

    state: str = SINK_OK
    reason: str | None = None
    retained_commands: Mapping[str, str] = field(default_factory=dict)
    detail: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"state": self.state, "reason": self.reason, **self.detail,
                "retained_commands": dict(self.retained_commands)}


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The frame queue (``FrameQueue.snapshot()``): frames waiting, and frames dropped before the
    detector saw them (per camera of the dropped frame; ``visit_dropped_by_camera``: those dropped while
    their camera had an open visit). ``lag_s_by_camera``: each camera's detector lag, seconds: capture
    to result of its newest processed frame, or the wait of its oldest queued frame if longer."""

    depth: int = 0
    dropped: int = 0
    dropped_by_camera: Mapping[str, int] = field(default_factory=dict)
    visit_dropped_by_camera: Mapping[str, int] = field(default_factory=dict)
    lag_s_by_camera: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PipelineStats:
    """Every stage's snapshot at monotonic time ``mono``: what health, metrics, the watchdog, the
    MQTT stats topic and the benchmark read. Plain numbers only: no secrets, no URLs.

    cameras: one ``CaptureSnapshot`` per started camera, in config order.
    motion: camera -> ``MotionGate.snapshot()`` (cameras without a gate are absent).
    deliveries: sink -> its ``DeliveryCounts`` in the event store's outbox.
    storage: ``EventStore.health()``, None without a store; sinks: sink -> its ``health()``.
    ``to_dict()`` is the published JSON shape (MQTT ``P/stats``, documented in sinks/discovery.py).
    """

    mono: float = 0.0
    started_mono: float = 0.0
    cameras: tuple[CaptureSnapshot, ...] = ()
    workers: tuple[WorkerSnapshot, ...] = ()
    router: RouterSnapshot | None = None
    queue: QueueSnapshot = QueueSnapshot()
    motion: Mapping[str, MotionSnapshot] = field(default_factory=dict)
    deliveries: Mapping[str, DeliveryCounts] = field(default_factory=dict)
    storage: StorageSnapshot | None = None
    sinks: Mapping[str, SinkSnapshot] = field(default_factory=dict)
    model_version: str | None = None  # the classifier the workers run now
    recognizer: RecognizerSnapshot | None = None  # which recognizer the workers use (backend: remote: and why)

    # --- derived numbers (rounded as published) -------------------------------------------------
    @property
    def uptime(self) -> float:
        """Seconds since the app started, never 0 (a divisor for the mean rates)."""
        return max(self.mono - self.started_mono, 1e-6)

    @property
    def uptime_s(self) -> float:
        return round(self.uptime, 1)

    @property
    def detector_frames(self) -> int:
        return sum(w.frames for w in self.workers)

    @property
    def detector_errors(self) -> int:
        return sum(w.errors for w in self.workers)

    @property
    def detector_fps(self) -> float:
        """Mean frames per second through the detectors since start."""
        return round(self.detector_frames / self.uptime, 2)

    @property
    def inference_ms(self) -> float:
        """The slowest worker's last detect() call, ms."""
        return round(max((w.last_inference_ms for w in self.workers), default=0.0), 2)

    @property
    def events(self) -> int:
        return self.router.events_emitted if self.router is not None else 0

    def processed(self, camera: str) -> int:
        return self.router.processed.get(camera, 0) if self.router is not None else 0

    def detect_fps(self, camera: str) -> float:
        """Mean results per second folded in for ``camera`` since start."""
        return round(self.processed(camera) / self.uptime, 2)

    def detect_enabled(self, camera: str) -> bool:
        return self.router.enabled.get(camera, False) if self.router is not None else False

    def last_frame_age_s(self, cam: CaptureSnapshot) -> float | None:
        return round(self.mono - cam.last_frame_mono, 3) if cam.last_frame_mono else None

    # --- the published shape --------------------------------------------------------------------
    def camera_dict(self, cam: CaptureSnapshot) -> dict[str, object]:
        """One camera's entry in ``to_dict()["cameras"]``."""
        return {
            # the three keys Home Assistant's diagnostic sensors read (sinks/discovery.py DIAGNOSTICS);
            # "dropped_frames" is the published name HA reads, the same number as "frames_dropped"
            "detect_fps": self.detect_fps(cam.camera),
            "inference_ms": self.inference_ms,
            "dropped_frames": cam.frames_dropped,
            "frames_processed": self.processed(cam.camera),
            "state": cam.state,
            "frames_read": cam.frames_read,
            "frames_queued": cam.frames_queued,
            "frames_dropped": cam.frames_dropped,
            "frames_bad": cam.frames_bad,
            "reconnects": cam.reconnects,
            "last_frame_age_s": self.last_frame_age_s(cam),
            "detect_enabled": self.detect_enabled(cam.camera),
            "detector_lag_s": self.queue.lag_s_by_camera.get(cam.camera),
            "motion": self.motion[cam.camera].to_dict() if cam.camera in self.motion else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the MQTT stats topic (keys and rounding are a published contract)."""
        return {
            "uptime_s": self.uptime_s,
            "cameras": {cam.camera: self.camera_dict(cam) for cam in self.cameras},
            "detector": {
                "fps": self.detector_fps,
                "frames": self.detector_frames,
                "inference_ms": self.inference_ms,
                "errors": self.detector_errors,
            },
            "queue_depth": self.queue.depth,
            "queue_dropped": self.queue.dropped,
            "events": self.events,
            "deliveries": {sink: counts.to_dict() for sink, counts in self.deliveries.items()},
            "storage": self.storage.to_dict() if self.storage is not None else None,
            "sinks": {name: sink.to_dict() for name, sink in self.sinks.items()},
        }


def detection_json(det: Detection, width: int, height: int) -> dict[str, Any]:
    """{"label", "score" (4 decimals), ["detector_score",] "box": integer pixels [xmin, ymin, xmax, ymax] of the image}."""
    out: dict[str, Any] = {"label": det.label, "score": round(det.score, 4)}
    if det.detector_score is not None:
        out["detector_score"] = round(det.detector_score, 4)
    out["box"] = list(box_to_pixels(det.box, width, height))
    return out
