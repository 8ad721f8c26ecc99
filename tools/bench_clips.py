"""Benchmark clips: a mostly still doorstep scene, with or without a raccoon, day or night.

Built once from ``../shared`` photos into ``./var/bench/`` (never committed) and reused:

    <resolution>_<scene>_<light>_<seconds>s.mp4      e.g. 1080p_raccoon_day_30s.mp4

* background: the blank daytime trail-camera frame (``demo.EMPTY_SCENE``), cover-scaled; light
  sensor noise (sigma 2 grey levels), a fresh pattern every frame, as a real sensor has.
* ``raccoon``: the dataset photo ``RACCOON_PHOTO`` (a whole raccoon), cut around its labelled box
  with a margin, scaled to ``RACCOON_HEIGHT`` of the frame height, pasted; it walks in from the
  right for ``WALK_S`` seconds, then holds still, then is gone. Timeline (``clip_timeline``):
  empty until ``appear_s``, present until ``leave_s``, empty to the end.
* ``night``: the same frames in grey (an IR camera), darkened to ~35 % and noisier (sigma 6).
* encoded as H.264 by Debian's ffmpeg (libx264 veryfast, CRF 23 capped at 2 Mbit/s (720p) or
  4 Mbit/s (1080p), yuv420p, keyframe every 2 s, no B-frames, like an IP camera's main stream); without ffmpeg, OpenCV's mp4v (cheaper to decode; said so in
  the bench JSON under ``clip.codec``).

Frame indices count from 0 and equal ``Frame.seq`` of a file source read once.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from raccoon_watch.demo import empty_scene, raccoon_boxes, write_mp4v
from raccoon_watch.types import Box
from tools.video import encode_h264, ir_look

log = structlog.get_logger(__name__)

BENCH_DIR = Path("var/bench")
FPS = 15.0
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}  # name -> (width, height)
SCENES = ("raccoon", "empty")
LIGHTS = ("day", "night")
RACCOON_PHOTO = "raccoon-186.jpg"  # dataset test split: one whole raccoon on grass
RACCOON_HEIGHT = 0.45  # pasted patch height, fraction of the frame height
RACCOON_MARGIN = 0.15  # context kept around the labelled box, fraction of its size per side
WALK_S = 2.0  # seconds the raccoon moves before it holds still
DAY_NOISE, NIGHT_NOISE = 2.0, 6.0  # sensor noise sigma, grey levels
NIGHT_GAIN = 0.35
NOISE_PATTERNS = 8  # distinct noise frames, cycled
MAX_RATE = {"720p": "2M", "1080p": "4M"}  # bit-rate cap, as an IP camera main stream


@dataclass(frozen=True, slots=True)
class ClipSpec:
    resolution: str
    scene: str
    light: str
    seconds: float
    fps: float = FPS

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {sorted(RESOLUTIONS)}, got {self.resolution!r}")
        if self.scene not in SCENES or self.light not in LIGHTS:
            raise ValueError(f"scene must be in {SCENES} and light in {LIGHTS}, got {self.scene!r}, {self.light!r}")
        if self.seconds < 4:
            raise ValueError(f"a bench clip needs at least 4 s, got {self.seconds}")

    @property
    def size(self) -> tuple[int, int]:
        return RESOLUTIONS[self.resolution]

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def name(self) -> str:
        return f"{self.resolution}_{self.scene}_{self.light}_{self.seconds:g}s"


@dataclass(frozen=True, slots=True)
class Timeline:
    """Where the raccoon is, in frame indices: present in [appear, leave); still from ``still``.

    box: normalised (xmin, ymin, xmax, ymax) of the labelled raccoon once it holds still.
    For an empty scene appear == leave == still == frames and box is None.
    """

    frames: int
    appear: int
    still: int
    leave: int
    box: Box | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def clip_timeline(spec: ClipSpec) -> tuple[int, int, int]:
    """(appear, still, leave) frame indices: in at 20 % of the clip (>= 3 s), present up to 8 s."""
    if spec.scene == "empty":
        return spec.frames, spec.frames, spec.frames
    appear_s = max(3.0, 0.2 * spec.seconds)
    leave_s = min(appear_s + 8.0, spec.seconds - 1.0)
    appear, leave = round(appear_s * spec.fps), round(leave_s * spec.fps)
    return appear, min(leave, appear + round(WALK_S * spec.fps)), leave


def _raccoon_patch(shared_dir: Path, height: int) -> tuple[np.ndarray, Box]:
    """The photo cut around its box (with margin), scaled to ``height`` px; box normalised to the patch."""
    dataset = Path(shared_dir) / "data" / "raccoon_dataset"
    photo = cv2.imread(str(dataset / "images" / RACCOON_PHOTO))
    if photo is None:
        raise FileNotFoundError(f"raccoon photo not readable: {dataset / 'images' / RACCOON_PHOTO}")
    xmin, ymin, xmax, ymax = raccoon_boxes(dataset, RACCOON_PHOTO)[0]
    mx, my = (xmax - xmin) * RACCOON_MARGIN, (ymax - ymin) * RACCOON_MARGIN
    x0, y0 = max(0, int(xmin - mx)), max(0, int(ymin - my))
    x1, y1 = min(photo.shape[1], int(xmax + mx)), min(photo.shape[0], int(ymax + my))
    cut = photo[y0:y1, x0:x1]
    scale = height / cut.shape[0]
    patch = cv2.resize(cut, (max(1, round(cut.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    w, h = cut.shape[1], cut.shape[0]
    return patch, ((xmin - x0) / w, (ymin - y0) / h, (xmax - x0) / w, (ymax - y0) / h)


def _night(image: np.ndarray) -> np.ndarray:
    return ir_look(image, NIGHT_GAIN)


def render(spec: ClipSpec, shared_dir: Path, seed: int = 0) -> tuple[Iterator[np.ndarray], Timeline]:
    """The clip's frames (BGR uint8, lazily) and where the raccoon is in them."""
    width, height = spec.size
    background = empty_scene(shared_dir, (width, height))
    appear, still, leave = clip_timeline(spec)
    patch, patch_box = (None, None)
    final_box: Box | None = None
    if spec.scene == "raccoon":
        patch, patch_box = _raccoon_patch(shared_dir, round(RACCOON_HEIGHT * height))
    ph, pw = (patch.shape[:2] if patch is not None else (0, 0))
    y0 = round(0.5 * height - ph / 2)  # vertically centred, on the path
    x_end = round(0.55 * width - pw / 2)  # where it stops
    x_start = width - pw  # enters from the right edge
    if patch is not None and patch_box is not None:
        bx0, by0, bx1, by1 = patch_box
        final_box = ((x_end + bx0 * pw) / width, (y0 + by0 * ph) / height, (x_end + bx1 * pw) / width, (y0 + by1 * ph) / height)
    rng = np.random.default_rng(seed)
    sigma = NIGHT_NOISE if spec.light == "night" else DAY_NOISE
    noise = [rng.normal(0.0, sigma, (height, width, 1)).astype(np.int16) for _ in range(NOISE_PATTERNS)]

    def frames() -> Iterator[np.ndarray]:
        for i in range(spec.frames):
            image = background.copy()
            if patch is not None and appear <= i < leave:
                progress = min(1.0, (i - appear) / max(1, still - appear))
                x0 = round(x_start + (x_end - x_start) * progress)
                image[y0 : y0 + ph, x0 : x0 + pw] = patch
            if spec.light == "night":
                image = _night(image)
            yield np.clip(image.astype(np.int16) + noise[i % NOISE_PATTERNS], 0, 255).astype(np.uint8)

    return frames(), Timeline(spec.frames, appear, still, leave, final_box)


def ensure_clip(spec: ClipSpec, shared_dir: Path, out_dir: Path = BENCH_DIR) -> tuple[Path, Timeline, str]:
    """Build the clip unless it exists; (path, timeline, codec). The timeline is recomputed (cheap)."""
    ffmpeg = shutil.which("ffmpeg")
    codec = "h264" if ffmpeg else "mp4v"
    path = Path(out_dir) / f"{spec.name}_{codec}.mp4"
    frames, timeline = render(spec, shared_dir)
    if path.is_file() and path.stat().st_size > 0:
        return path, timeline, codec
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("bench_clip_building", path=str(path), frames=spec.frames, codec=codec)
    if ffmpeg:
        encode_h264(frames, path, spec.size, spec.fps, MAX_RATE[spec.resolution], ffmpeg)
    else:
        write_mp4v(frames, path, spec.fps)
    return path, timeline, codec


__all__ = ["BENCH_DIR", "ClipSpec", "RESOLUTIONS", "Timeline", "clip_timeline", "ensure_clip", "render"]


def play_to_the_end(app: Any, video_s: float) -> None:
    """Wait until every camera of a started app (file cameras, each ``video_s`` long) has played its
    clip and the frame and result queues are drained; at most 3x the clip plus 60 s, monotonic."""
    deadline = time.monotonic() + video_s * 3 + 60
    while any(t.is_alive() for t in app.cameras.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    while (app.frames.qsize() or app.results.qsize()) and time.monotonic() < deadline:  # drain
        time.sleep(0.05)
    time.sleep(0.3)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (getrusage: microsecond resolution)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuMarkAtCameras:
    """Mixin for the daemon's ``App`` in a bench (``class BenchApp(CpuMarkAtCameras, App)``): the cameras
    start once every worker has its interpreter (loading is not per-frame work), and the CPU and
    monotonic clocks are marked right then (``cpu_at_cameras``, ``mono_at_cameras``)."""

    cpu_at_cameras = 0.0
    mono_at_cameras = 0.0
    workers: Any

    def _start_cameras(self) -> None:
        deadline = time.monotonic() + 60.0
        while any(w.detector is None for w in self.workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.cpu_at_cameras, self.mono_at_cameras = cpu_seconds(), time.monotonic()
        super()._start_cameras()  # type: ignore[misc]
