"""Prometheus metrics in a private registry (no process-global state, one registry per App).

Two sources, no double bookkeeping:
- ``StatsCollector`` reads ``App.stats()`` (a ``PipelineStats``) at scrape time: the same numbers
  the MQTT stats topic publishes (per-camera frames, reconnects, up, detector lag and frames the
  queue dropped; detector frames/errors; queue depth; events; outbox deliveries per sink). Counters
  there are owned by the threads that count them.
- Two things ``PipelineStats`` cannot hold as plain numbers are fed by callbacks from the pipeline:
  the inference latency and batch size histograms (``DetectorWorker(on_inference=...)``) and events by
  camera/label/kind/severity (``EventRouter(on_event=...)``). ``severity`` is ``alert`` or
  ``detection``; a detection upgraded to an alert counts one ``new`` in each, so
  ``raccoon_watch_events_total{kind="new",severity="alert"}`` is the number of alerts.

Labels are camera names, detection labels, event kinds, severities and sink names only: never a source URL,
a host or a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from raccoon_watch.types import CaptureSnapshot, DeliveryCounts, Event, PipelineStats


class DeliveryCounter(Protocol):
    """What /metrics reads of the store (``store.EventStore``): support/ sits below store/."""

    def delivery_counts(self, sink: str) -> DeliveryCounts: ...

PREFIX = "raccoon_watch"
CAMERA_UP = "up"
# Inference latency per detect() call: 5 ms (GPU batch) .. 2.5 s (a slow CPU under load).
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)  # frames per detect() call

# (per-camera counter, metric suffix, help) for the counters of each camera in PipelineStats.
_CAMERA_COUNTERS: tuple[tuple[Callable[[PipelineStats, CaptureSnapshot], int], str, str], ...] = (
    (lambda s, cam: cam.frames_read, "camera_frames_read", "Frames decoded from the camera."),
    (lambda s, cam: cam.frames_queued, "camera_frames_queued", "Frames handed to the detector queue."),
    (lambda s, cam: cam.frames_dropped, "camera_frames_dropped", "Queue puts that evicted an older frame (queue full)."),
    (lambda s, cam: s.processed(cam.camera), "camera_frames_processed",
     "Detector results folded into this camera's events."),
    (lambda s, cam: cam.frames_bad, "camera_frames_bad", "Corrupt or unusable frames from the camera."),
    (lambda s, cam: cam.reconnects, "camera_reconnects", "Times the camera was reopened after a failure."),
)
_DELIVERY_GAUGES = (
    ("pending", "deliveries_pending", "Outbox deliveries waiting to be sent, per sink."),
    ("failed", "deliveries_failed", "Outbox deliveries rejected for good, per sink."),
    ("dropped", "deliveries_dropped", "Outbox deliveries evicted by the outbox bound, per sink."),
)


class StatsCollector:
    """Turns one ``PipelineStats`` into metric families, at scrape time."""

    def __init__(self, stats: Callable[[], PipelineStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        s = self._stats()
        yield from _camera_families(s)
        yield _counter("detector_frames", "Frames run through the detector.", s.detector_frames)
        yield _counter("detector_errors", "detect() calls that raised.", s.detector_errors)
        yield _gauge("queue_depth", "Frames waiting in the frame queue.", s.queue.depth)
        yield _counter("queue_dropped", "Oldest frames evicted because the frame queue was full.", s.queue.dropped)
        yield _gauge("uptime_seconds", "Seconds since the daemon started.", s.uptime_s)
        yield from _delivery_families(s.deliveries)
        rec = s.recognizer
        if rec is not None and rec.backend == "remote":  # detector.backend remote (detectors/remote.py)
            yield _gauge("recognizer_remote", "1 while the remote recognizer is in use, 0 while the local models stand in.",
                         1.0 if rec.in_use == "remote" else 0.0)
            yield _counter("recognizer_remote_frames", "Frames the remote recognizer answered.", rec.remote_frames)
            yield _counter("recognizer_local_frames", "Frames the local models detected instead of the remote.",
                           rec.local_frames)
            yield _counter("recognizer_remote_failures", "Remote calls that failed or were slower than the timeout.",
                           rec.failures)
        if s.model_version:  # which classifier scores now (hot swap, roll back): raccoon_watch.learning.site_models
            info = GaugeMetricFamily(f"{PREFIX}_classifier_info", "1 for the classifier version in use.", labels=["version"])
            info.add_metric([s.model_version], 1.0)
            yield info


def _counter(suffix: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{suffix}", doc, value=value)


def _gauge(suffix: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{suffix}", doc, value=value)


def _camera_families(s: PipelineStats) -> Iterable[Metric]:
    for value, suffix, doc in _CAMERA_COUNTERS:
        fam = CounterMetricFamily(f"{PREFIX}_{suffix}", doc, labels=["camera"])
        for cam in s.cameras:
            fam.add_metric([cam.camera], value(s, cam))
        yield fam
    up = GaugeMetricFamily(f"{PREFIX}_camera_up", "1 while the camera delivers frames.", labels=["camera"])
    age = GaugeMetricFamily(f"{PREFIX}_camera_last_frame_age_seconds", "Seconds since the last frame.",
                            labels=["camera"])
    enabled = GaugeMetricFamily(f"{PREFIX}_camera_detect_enabled", "1 while detection is switched on.",
                                labels=["camera"])
    for cam in s.cameras:
        up.add_metric([cam.camera], 1.0 if cam.state == CAMERA_UP else 0.0)
        last_frame_age_s = s.last_frame_age_s(cam)
        if last_frame_age_s is not None:
            age.add_metric([cam.camera], last_frame_age_s)
        enabled.add_metric([cam.camera], 1.0 if s.detect_enabled(cam.camera) else 0.0)
    yield from (up, age, enabled)
    q = s.queue
    lag = GaugeMetricFamily(f"{PREFIX}_camera_detector_lag_seconds",
                            "Capture to detector result of the camera's newest processed frame, or the wait of "
                            "its oldest queued frame when that is longer.", labels=["camera"])
    evicted = CounterMetricFamily(f"{PREFIX}_camera_frames_evicted",
                                  "Frames of this camera dropped from the detector queue unseen (superseded by a "
                                  "newer one, or room for another camera's).", labels=["camera"])
    in_visit = CounterMetricFamily(f"{PREFIX}_camera_visit_frames_evicted",
                                   "Of those, frames dropped while the camera had an open visit.", labels=["camera"])
    for cam in s.cameras:
        if cam.camera in q.lag_s_by_camera:
            lag.add_metric([cam.camera], q.lag_s_by_camera[cam.camera])
        evicted.add_metric([cam.camera], q.dropped_by_camera.get(cam.camera, 0))
        in_visit.add_metric([cam.camera], q.visit_dropped_by_camera.get(cam.camera, 0))
    yield from (lag, evicted, in_visit)


def _delivery_families(deliveries: Mapping[str, DeliveryCounts]) -> Iterable[Metric]:
    """``deliveries``: sink name -> its outbox counts."""
    for key, suffix, doc in _DELIVERY_GAUGES:
        fam = GaugeMetricFamily(f"{PREFIX}_{suffix}", doc, labels=["sink"])
        for sink, counts in deliveries.items():
            fam.add_metric([sink], getattr(counts, key))
        yield fam


class Metrics:
    """The registry plus the callback-fed metrics. Callbacks are thread-safe (prometheus-client)."""

    def __init__(self, stats: Callable[[], PipelineStats]) -> None:
        self.registry = CollectorRegistry()
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_seconds", "Wall time of one detect() call (a batch of frames).",
            buckets=INFERENCE_BUCKETS_S, registry=self.registry,
        )
        self.batch_frames = Histogram(
            f"{PREFIX}_detector_batch_frames", "Frames (of as many cameras) in one detect() call.",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.events = Counter(
            f"{PREFIX}_events", "Event messages emitted (kind: new, update, end; severity: alert, detection).",
            ["camera", "label", "kind", "severity"], registry=self.registry,
        )
        self.registry.register(StatsCollector(stats))

    # --- pipeline callbacks (called from worker / router threads) -------------------------------
    def on_inference(self, ms: float, batch: int) -> None:
        self.inference_seconds.observe(ms / 1000.0)
        self.batch_frames.observe(batch)

    def on_event(self, event: Event) -> None:
        self.events.labels(event.camera, event.label, event.kind.value, event.severity.value).inc()

    def render(self) -> bytes:
        """Prometheus text exposition format 0.0.4."""
        return generate_latest(self.registry)


def outbox_counts(store: DeliveryCounter | None, sink_names: Iterable[str]) -> dict[str, DeliveryCounts]:
    """sink -> its ``DeliveryCounts`` in ``store``'s outbox; {} without a store."""
    if store is None:
        return {}
    return {name: store.delivery_counts(name) for name in sink_names}
