"""Many cameras on one CPU (issue 24): the bench's ``cameras`` and ``options`` stages.

``cameras``: the real daemon (``App``: 8 file cameras paced in real time, 720p 15 fps, each sampled at
5 fps with the motion gate off, so every camera detects at 5 fps: 40 frames/s for the detector), run
twice in the same bench invocation, one arm after the other, each in its own process:

* ``today``: the one-frame path as it was before issue 24: one drop-oldest FIFO for all cameras
  (``OneFrameQueue``, the old ``FrameQueue``), 2 workers x 2 threads, one frame per invoke;
* ``fair``: the daemon as shipped now: ``FrameQueue`` with ``raccoon_watch.schedule``'s rules
  (round robin, newest frame per camera, open visits first), with its default workers, threads and
  batch size (``FAIR_DEFAULTS``: 2 x 2, one frame per invoke, what measured best: docs/performance.md);
* with ``sweep``, more fair arms: fewer workers with more threads, and batches of the newest frame of
  each camera (``detector.batch_size`` 4 and 8), each a name like ``fair_w1_t2_b8``.

The first ``visits`` cameras play the raccoon clip (a raccoon walks in at 6 s and stays until 14 s),
the others the empty clip. Per arm, from the router's callbacks and every ``put`` on the queue:

* frames sent to the detector, processed, dropped (sent, never processed), per camera and in all;
* frames of an open visit dropped: sent frames whose capture time lies between an event's first
  counting frame (``Event.first_seen_ts``) and its END reaching the router's callback, the same
  window for both arms (and the fair queue's own count, ``QueueSnapshot.visit_dropped_by_camera``);
  and, from the clip itself, frames dropped while the raccoon was on screen (an arm that raised no
  event has no visit window: this count still compares them);
* event latency from the confirming frame to the START's hand-off (``tools.bench``'s definition);
* each camera's detector lag: capture (``Frame.mono``) to its result reaching the router, p50/p95;
* detector calls, frames per call, CPU per video second, and the load average before and after.

``options``: what each way of spending the CPU costs per frame, timed in alternation, call by call, on
the 720p raccoon clip's frames, in one process (so machine load hits all alike): one frame per invoke
vs a batch of 8, with 1 and 2 threads; the whole 720p frame vs a 300 px motion crop around the
raccoon; and the classifier alone on the motion region (no proposer). Wall and CPU ms per frame.
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raccoon_watch.types import Frame, QueueSnapshot
from tools.bench_clips import CpuMarkAtCameras, cpu_seconds, play_to_the_end

FAIR_DEFAULTS = {"workers": 2, "threads": 2, "batch_size": 1}  # the daemon's defaults: what measured best
SWEEP = (  # --many-cameras-sweep: the other ways to spend the same CPU, each its own arm
    {"workers": 2, "threads": 1, "batch_size": 1},
    {"workers": 1, "threads": 2, "batch_size": 1},
    {"workers": 2, "threads": 2, "batch_size": 4},
    {"workers": 1, "threads": 2, "batch_size": 8},
)


class OneFrameQueue:
    """The frame queue before issue 24, for the ``today`` arm: one bounded FIFO for every camera; when
    full, the OLDEST frame (whichever camera's) is dropped; a worker takes the oldest frame. The method
    surface is ``FrameQueue``'s, so the daemon runs on it unchanged."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._frames: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._dropped = 0
        self._dropped_by_camera: collections.Counter[str] = collections.Counter()

    def set_visit_open(self, visit_open: Any) -> None:  # no notion of visits
        return None

    def put(self, frame: Frame) -> Frame | None:
        with self._cond:
            evicted = None
            if len(self._frames) >= self.maxsize:
                evicted = self._frames.popleft()
                self._dropped += 1
                self._dropped_by_camera[evicted.camera] += 1
            self._frames.append(frame)
            self._cond.notify()
            return evicted

    def wait_for_room(self, timeout: float | None = None, camera: str | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._frames) < self.maxsize, timeout)

    def get_batch(self, max_n: int, wait_s: float, timeout: float | None = 0.5) -> list[Frame]:
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames, timeout):
                return []
            batch = [self._frames.popleft() for _ in range(min(max_n, len(self._frames)))]
            self._cond.notify_all()
            return batch

    def get(self, timeout: float | None = None) -> Frame | None:
        got = self.get_batch(1, 0.0, timeout)
        return got[0] if got else None

    def done(self, frames: Any) -> None:
        return None

    def qsize(self) -> int:
        with self._cond:
            return len(self._frames)

    @property
    def dropped(self) -> int:
        return self._dropped

    def dropped_by_camera(self) -> dict[str, int]:
        with self._cond:
            return dict(self._dropped_by_camera)

    def snapshot(self) -> QueueSnapshot:
        with self._cond:
            return QueueSnapshot(len(self._frames), self._dropped, dict(self._dropped_by_camera))


@dataclass
class CamerasProbe:
    """What the router's callbacks and the queue's puts see (callbacks: router thread; puts: capture
    threads; list.append is atomic)."""

    sent: list[tuple[str, int, float]] = field(default_factory=list)  # (camera, seq, capture ts)
    done: dict[tuple[str, int], float] = field(default_factory=dict)  # (camera, seq) -> lag s
    busy_ms: float = 0.0  # sum of the results' share of their detect() call: worker time spent detecting
    starts: list[dict[str, Any]] = field(default_factory=list)
    ends: dict[str, float] = field(default_factory=dict)  # event id -> wall time the END was handed on

    def on_result(self, result: Any, hits: tuple[Any, ...]) -> None:
        frame = result.frame
        self.done[(frame.camera, frame.seq)] = max(0.0, time.monotonic() - frame.mono)
        self.busy_ms += result.inference_ms

    def on_event(self, event: Any) -> None:
        now = time.time()
        if event.kind.value == "new" and event.id not in {s["id"] for s in self.starts}:
            self.starts.append({"camera": event.camera, "id": event.id, "handed_ts": now, "frame_ts": event.frame_ts,
                                "first_seen_ts": event.first_seen_ts, "alert": event.severity.value == "alert"})
        elif event.kind.value == "end":
            self.ends[event.id] = now


def _config(args: dict[str, Any], storage: Path) -> Any:
    from raccoon_watch.config import Config

    cameras = {name: {"source": clip, "detect_fps": args["detect_fps"], "realtime": True, "loop": False,
                      "motion": {"enabled": False}} for name, clip in args["clips"].items()}
    detector: dict[str, Any] = {"backend": "tflite", "workers": args["workers"], "num_threads": args["threads"],
                                "batch_size": args["batch_size"], "queue_size": args["queue_size"],
                                "frames_per_camera": args.get("frames_per_camera", 1)}
    if args.get("model"):
        detector["model"] = args["model"]
    if args.get("threshold") is not None:
        detector["threshold"] = args["threshold"]
    return Config.model_validate({"cameras": cameras, "detector": detector, "storage": {"path": str(storage)},
                                  "logging": {"level": "warning", "format": "json"}})


def stage_cameras(args: dict[str, Any]) -> dict[str, Any]:
    """One arm (``args["arm"]``: today | fair) of the many-cameras run; see the module text."""
    from raccoon_watch.support.logs import setup_logging

    setup_logging("warning", "json")
    workdir = Path(tempfile.mkdtemp(prefix="raccoon-cameras-"))
    try:
        return _run_arm(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_arm(args: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from raccoon_watch.app import App, Observer
    from tools.bench import percentiles

    probe = CamerasProbe()
    legacy = args["arm"] == "today"

    class ArmApp(CpuMarkAtCameras, App):
        def __init__(self, cfg: Any, **kw: Any) -> None:
            super().__init__(cfg, **kw)
            if legacy:
                self.frames = OneFrameQueue(cfg.detector.queue_size)  # type: ignore[assignment]
            put = self.frames.put

            def counted_put(frame: Frame) -> Frame | None:
                probe.sent.append((frame.camera, frame.seq, frame.ts))
                return put(frame)

            self.frames.put = counted_put  # type: ignore[method-assign]

    load_before = os.getloadavg()
    app = ArmApp(_config(args, workdir / "store"), observers=[Observer(on_result=probe.on_result,
                                                                       on_event=probe.on_event)])
    app.start()
    video_s = args["video_s"]
    play_to_the_end(app, video_s)
    cpu, wall = cpu_seconds() - app.cpu_at_cameras, time.monotonic() - app.mono_at_cameras
    stats = app.stats()
    app.stop()  # ends the open events: their END reaches the probe
    load_after = os.getloadavg()
    calls = sum(w.calls for w in stats.workers)
    processed = sum(w.frames for w in stats.workers)

    windows = _visit_windows(probe)
    appear, leave = args["raccoon_frames"]  # the raccoon is on screen in frames [appear, leave) of its clip
    visit_cams = list(args["clips"])[: args["visits"]]
    per_camera: dict[str, Any] = {}
    dropped_all = visit_sent = visit_dropped = screen_sent = screen_dropped = 0
    lags: list[float] = []
    for name in args["clips"]:
        sent = [(seq, ts) for cam, seq, ts in probe.sent if cam == name]
        lost = [(seq, ts) for seq, ts in sent if (name, seq) not in probe.done]
        in_visit = [ts for _, ts in sent if _inside(ts, windows.get(name, []))]
        lost_in_visit = [ts for _, ts in lost if _inside(ts, windows.get(name, []))]
        on_screen = [seq for seq, _ in sent if name in visit_cams and appear <= seq < leave]
        lost_on_screen = [seq for seq, _ in lost if name in visit_cams and appear <= seq < leave]
        cam_lags = [probe.done[(name, seq)] * 1000.0 for seq, _ in sent if (name, seq) in probe.done]
        lags += cam_lags
        dropped_all += len(lost)
        visit_sent += len(in_visit)
        visit_dropped += len(lost_in_visit)
        screen_sent += len(on_screen)
        screen_dropped += len(lost_on_screen)
        per_camera[name] = {"sent": len(sent), "processed": len(sent) - len(lost), "dropped": len(lost),
                            "visit_sent": len(in_visit), "visit_dropped": len(lost_in_visit),
                            "raccoon_on_screen_sent": len(on_screen), "raccoon_on_screen_dropped": len(lost_on_screen),
                            "lag_ms": percentiles(cam_lags)}
    sent_all = len(probe.sent)
    from_confirm = [(s["handed_ts"] - s["frame_ts"]) * 1000.0 for s in probe.starts if s["alert"]]
    return {
        "arm": args["arm"],
        "settings": {k: args[k] for k in ("workers", "threads", "batch_size", "queue_size", "detect_fps", "visits")}
        | {"frames_per_camera": None if legacy else args.get("frames_per_camera", 1),
           "queue": "one drop-oldest FIFO" if legacy else "fair (raccoon_watch.schedule)"},
        "detector_frames_sent": sent_all,
        "processed": processed,
        "dropped": dropped_all,
        "dropped_pct": round(100.0 * dropped_all / sent_all, 1) if sent_all else None,
        "visit_frames_sent": visit_sent,
        "visit_frames_dropped": visit_dropped,
        "queue_visit_dropped": None if legacy else sum(stats.queue.visit_dropped_by_camera.values()),
        "raccoon_on_screen_sent": screen_sent,
        "raccoon_on_screen_dropped": screen_dropped,
        "inferences_per_s": round(processed / wall, 1) if wall > 0 else None,
        "needed_per_s": round(len(args["clips"]) * args["detect_fps"], 1),
        "detector_calls": calls,
        "frames_per_call": round(processed / calls, 2) if calls else None,
        "workers_busy_pct": round(100.0 * probe.busy_ms / 1000.0 / (wall * args["workers"]), 1) if wall > 0 else None,
        "lag_ms": percentiles(lags),
        "events_started": len(probe.starts),
        "alerts": len(from_confirm),
        "event_from_confirm_ms": {**percentiles(from_confirm), "n": len(from_confirm)},
        "cameras_with_visit_without_alert": sorted(set(visit_cams) - {s["camera"] for s in probe.starts if s["alert"]}),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 1),
        "cpu_per_video_s": round(cpu / video_s, 3),
        "load_avg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "per_camera": per_camera,
    }


def _visit_windows(probe: CamerasProbe) -> dict[str, list[tuple[float, float]]]:
    """camera -> [(first counting frame's ts, END's hand-off time)] of each event (END not seen: open)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for s in probe.starts:
        out.setdefault(s["camera"], []).append((s["first_seen_ts"], probe.ends.get(s["id"], float("inf"))))
    return out


def _inside(ts: float, windows: list[tuple[float, float]]) -> bool:
    return any(lo <= ts <= hi for lo, hi in windows)


# --- stage: options (what each way of spending the CPU costs per frame) --------------------------------


def stage_options(args: dict[str, Any]) -> dict[str, Any]:
    from raccoon_watch.config import DetectorConfig
    from raccoon_watch.recognition.detectors import create_recognizer
    from raccoon_watch.recognition.recognizer import classifier_crop

    model = Path(args["model"])
    frames = _clip_frames(args["clip"], args["frames"], args["fps"], args["detect_fps"])
    box = tuple(args["box"])  # the raccoon's box in the still part of the clip, normalised xyxy
    h, w = frames[0].shape[:2]
    cx, cy = int((box[0] + box[2]) / 2 * w), int((box[1] + box[3]) / 2 * h)  # a 300 px square on the raccoon
    x0, y0 = min(max(cx - 150, 0), w - 300), min(max(cy - 150, 0), h - 300)
    window = (x0, y0, x0 + 300, y0 + 300)
    batch = args.get("batch", 8)
    variants: dict[str, Any] = {}  # name -> fn(images): every variant gets the same ``batch`` frames a run
    for threads in (1, 2):
        one = create_recognizer(DetectorConfig(backend="tflite", num_threads=threads), model)
        many = create_recognizer(DetectorConfig(backend="tflite", num_threads=threads, batch_size=batch), model)
        variants[f"one_frame_{threads}t"] = lambda ims, r=one: [r.recognize([im]) for im in ims]
        variants[f"batch_{batch}_{threads}t"] = lambda ims, r=many: r.recognize(ims)
        if threads == 1:
            variants["crop_300px_1t"] = lambda ims, r=one: [r.recognize([im], [window]) for im in ims]
            variants["proposer_only_1t"] = lambda ims, r=one: [r.detector.detect([im]) for im in ims]
            size = one.classifier.input_size if one.classifier is not None else None
            if size is not None:
                variants["classifier_on_motion_region_1t"] = (
                    lambda ims, r=one, s=size: [r.classifier.classify([classifier_crop(im, box, 0.2, s)])
                                                for im in ims])
    for fn in variants.values():  # warm up
        fn(frames[:batch])
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for run in range(args["runs"]):
        start = (run * batch) % max(1, len(frames) - batch + 1)
        images = frames[start:start + batch]
        for name, fn in variants.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            fn(images)
            wall[name].append((time.perf_counter() - t0) * 1000.0 / len(images))
            cpu[name].append((cpu_seconds() - c0) * 1000.0 / len(images))
    return {
        "frames": len(frames), "runs": args["runs"], "batch": batch, "crop": list(window), "frame_size": [w, h],
        "per_frame_ms": {name: {"wall_p50": round(float(np.median(wall[name])), 1),
                                "wall_min": round(float(np.min(wall[name])), 1),
                                "cpu_mean": round(float(np.mean(cpu[name])), 1)} for name in variants},
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def _clip_frames(clip: str, count: int, fps: float, detect_fps: float) -> list[np.ndarray]:
    """``count`` frames of the clip at the detector's sampling, from the raccoon's walk on."""
    import cv2

    cap = cv2.VideoCapture(clip)
    step = max(1, int(round(fps / detect_fps)))
    frames, index = [], 0
    try:
        while len(frames) < count:
            ok, image = cap.read()
            if not ok:
                break
            if index % step == 0 and index >= fps * 6:  # the raccoon is in from 6 s
                frames.append(image)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames read from {clip}")
    return frames


# --- orchestration (called by tools.bench.run_bench) ----------------------------------------------------

TARGET_DROPPED_PCT = 5.0
TARGET_EVENT_P95_MS = 300.0


@dataclass(frozen=True)
class CamerasPlan:
    """The many-cameras part of a bench run. ``fair``: the fair arm's workers, threads and batch size."""

    cameras: int = 8
    visits: int = 2
    resolution: str = "720p"
    seconds: float = 30.0
    detect_fps: float = 5.0
    rounds: int = 1
    fair: dict[str, int] = field(default_factory=lambda: dict(FAIR_DEFAULTS))
    options_runs: int = 10
    sweep: bool = False


def run_many_cameras(plan: CamerasPlan, model: Path | None, threshold: float | None, out_dir: Path,
                     say: Any) -> dict[str, Any]:
    """The options stage, then ``rounds`` x (today, fair, the sweep's arms), in turned-round order every
    other round (today, fair, ...; ..., fair, today) so that machine load hits every arm alike."""
    from raccoon_watch.config import shared_dir
    from tools.bench import run_stage
    from tools.bench_clips import ClipSpec, ensure_clip

    if model is None:
        return {"skipped": "no shipped model (models/raccoon): the many-cameras run needs the two-stage recognizer"}
    specs = {scene: ClipSpec(plan.resolution, scene, "day", plan.seconds) for scene in ("raccoon", "empty")}
    built = {scene: ensure_clip(spec, shared_dir(), out_dir) for scene, spec in specs.items()}
    raccoon_path, raccoon_tl, _ = built["raccoon"]
    fps = specs["raccoon"].fps
    clips = {f"cam{i}": str(built["raccoon" if i < plan.visits else "empty"][0]) for i in range(plan.cameras)}
    report: dict[str, Any] = {
        "scenario": (f"{plan.cameras} cameras {plan.resolution} {fps:g} fps, each detecting at {plan.detect_fps:g} fps "
                     f"(motion gate off); a raccoon visits the first {plan.visits} of them at the same time"),
        "clips": {"raccoon": str(raccoon_path), "empty": str(built["empty"][0]), "appear_s": raccoon_tl.appear / fps,
                  "leave_s": raccoon_tl.leave / fps},
    }
    say("many cameras: what each way of spending the CPU costs per frame (options)")
    report["options"] = run_stage("options", {
        "model": str(model), "clip": str(raccoon_path), "frames": 24, "fps": fps, "detect_fps": plan.detect_fps,
        "box": list(raccoon_tl.box or (0.4, 0.3, 0.7, 0.7)), "runs": plan.options_runs, "batch": 8})
    common = {"clips": clips, "visits": plan.visits, "detect_fps": plan.detect_fps, "video_s": plan.seconds,
              "raccoon_frames": [raccoon_tl.appear, raccoon_tl.leave],
              "model": str(model), "threshold": threshold, "queue_size": max(16, 2 * plan.cameras)}
    arms = {"today": {**common, "arm": "today", "workers": 2, "threads": 2, "batch_size": 1},
            "fair": {**common, "arm": "fair", "frames_per_camera": 1, **plan.fair}}
    for variant in SWEEP if plan.sweep else ():
        name = f"fair_w{variant['workers']}_t{variant['threads']}_b{variant['batch_size']}"
        if variant != plan.fair:
            arms[name] = {**common, "arm": "fair", "frames_per_camera": 1, **variant}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for i in range(plan.rounds):  # the order turns round each round: a load that grows hits both arms alike
        for name in (list(arms) if i % 2 == 0 else list(arms)[::-1]):
            say(f"many cameras: round {i + 1}/{plan.rounds}, {name} ({plan.cameras} cameras in real time)")
            runs[name].append(run_stage("cameras", arms[name]))
    report["runs"] = runs
    for name in arms:
        report[name] = summary(runs[name])
    report["ratios"] = cameras_ratios(report["today"], report["fair"])
    return report


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm over its rounds: counts pooled, rates and percentiles as the median of the rounds."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": "every round failed", "errors": [r.get("error") for r in runs]}

    def pooled(key: str) -> int:
        return sum(r[key] for r in ok)

    def median(*keys: str) -> float | None:
        values = [v for v in (_dig(r, *keys) for r in ok) if v is not None]
        return round(float(np.median(values)), 1) if values else None

    sent, dropped = pooled("detector_frames_sent"), pooled("dropped")
    return {
        "rounds": len(ok),
        "detector_frames_sent": sent,
        "dropped": dropped,
        "dropped_pct": round(100.0 * dropped / sent, 1) if sent else None,
        "visit_frames_sent": pooled("visit_frames_sent"),
        "visit_frames_dropped": pooled("visit_frames_dropped"),
        "queue_visit_dropped": (sum(r["queue_visit_dropped"] for r in ok)
                                if all(r.get("queue_visit_dropped") is not None for r in ok) else None),
        "raccoon_on_screen_sent": pooled("raccoon_on_screen_sent"),
        "raccoon_on_screen_dropped": pooled("raccoon_on_screen_dropped"),
        "inferences_per_s": median("inferences_per_s"),
        "needed_per_s": ok[0]["needed_per_s"],
        "frames_per_call": median("frames_per_call"),
        "workers_busy_pct": median("workers_busy_pct"),
        "lag_ms_p95": median("lag_ms", "p95"),
        "alerts": pooled("alerts"),
        "event_from_confirm_ms_p95": median("event_from_confirm_ms", "p95"),
        "event_from_confirm_ms_max": max((r["event_from_confirm_ms"]["p95"] or 0.0 for r in ok), default=None),
        "cameras_with_visit_without_alert": sorted({c for r in ok for c in r["cameras_with_visit_without_alert"]}),
        "cpu_per_video_s": median("cpu_per_video_s"),
        "load_avg_1m": [r["load_avg_1m"] for r in ok],
        "settings": ok[0]["settings"],
    }


def cameras_ratios(today: dict[str, Any], fair: dict[str, Any]) -> dict[str, Any]:
    """fair / today (inferences, lag, latency: < 1 is better for lag and latency, > 1 for inferences)."""
    from tools.bench import ratio

    return {
        "inferences_per_s_fair_vs_today": ratio(fair.get("inferences_per_s"), today.get("inferences_per_s")),
        "dropped_pct_fair_vs_today": ratio(fair.get("dropped_pct"), today.get("dropped_pct")),
        "lag_p95_fair_vs_today": ratio(fair.get("lag_ms_p95"), today.get("lag_ms_p95")),
        "event_p95_fair_vs_today": ratio(fair.get("event_from_confirm_ms_p95"), today.get("event_from_confirm_ms_p95")),
    }


def cameras_targets(report: dict[str, Any]) -> dict[str, Any]:
    """Issue 24's targets on the fair arm, each with today's value beside it."""
    fair, today = report.get("fair") or {}, report.get("today") or {}
    if "detector_frames_sent" not in fair:
        return {"note": report.get("skipped") or fair.get("error") or "not run"}

    def row(key: str, limit: float | None, upper: bool = True) -> dict[str, Any]:
        value = fair.get(key)
        met = None if value is None or limit is None else (value <= limit if upper else value >= limit)
        return {"value": value, "met": met, "today": today.get(key)}

    return {
        # the daemon's own count (frames dropped while their camera's visit was open), and the bench's:
        # dropped frames captured between an event's first counting frame and its END (today has only this)
        "zero_open_visit_frames_dropped": {**row("queue_visit_dropped", 0.0),
                                           "by_event_window": fair.get("visit_frames_dropped"),
                                           "of": fair.get("visit_frames_sent"),
                                           "today": today.get("visit_frames_dropped"),
                                           "today_of": today.get("visit_frames_sent")},
        "raccoon_on_screen_frames_dropped": {**row("raccoon_on_screen_dropped", None),
                                             "of": fair.get("raccoon_on_screen_sent")},
        "detector_frames_dropped_le_5pct": row("dropped_pct", TARGET_DROPPED_PCT),
        "event_p95_le_300ms_from_confirm": {**row("event_from_confirm_ms_p95", TARGET_EVENT_P95_MS),
                                            "alerts": fair.get("alerts")},
        "every_visit_alerted": {"value": fair.get("cameras_with_visit_without_alert"),
                                "met": not fair.get("cameras_with_visit_without_alert"),
                                "today": today.get("cameras_with_visit_without_alert")},
        "load_avg_1m": {"fair": fair.get("load_avg_1m"), "today": today.get("load_avg_1m")},
    }


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d
