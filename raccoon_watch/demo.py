"""A demo clip for machines without a camera: an empty scene, a raccoon walking across, the empty scene again.

``make run`` falls back to it when no configured camera opens, so a newcomer sees detections and
events. The clip is built once from ``../shared/data`` images and cached (never committed):

    empty 3 s | raccoon A 4 s | empty 12 s | raccoon B 4 s | empty 12 s     (640x360, 15 fps, mp4v)

Each raccoon walks: its photo, scaled to ``WALK_SCALE`` of the frame, crosses from left to right
(``walk_onto``). A still picture would never alert: the daemon only alerts on a candidate that
moved (``tracking``), as a watering can never does. 12 s of empty scene is longer than the default
``events.end_after`` (10 s), so each raccoon gives one event start and one end. The compositing
helpers are also used by tests/fixtures/media.py.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog

from raccoon_watch.config import shared_dir as default_shared_dir
from raccoon_watch.types import Box

log = structlog.get_logger(__name__)

DEMO_PATH = Path("var/demo/raccoon_demo_walk.mp4")  # not the old still one's name: a cached still clip never alerts
DEMO_SIZE = (640, 360)  # (width, height)
DEMO_FPS = 15.0
# Raccoon photos from the dataset's test split: one whole, large raccoon each.
DEMO_RACCOONS = ("raccoon-186.jpg", "raccoon-41.jpg")
# An empty daytime trail-camera scene (../shared/data/negatives), checked by eye: no animal.
EMPTY_SCENE = "ctai_blank2.jpg"
# (what, seconds) in clip order; "empty" or an index into DEMO_RACCOONS.
DEMO_TIMELINE: tuple[tuple[str | int, float], ...] = (("empty", 3), (0, 4), ("empty", 12), (1, 4), ("empty", 12))
WALK_SCALE = 0.85  # a walking photo's size, share of the letterboxed (largest) size: room to walk in


@dataclass(frozen=True, slots=True)
class Composite:
    """A frame with a photo placed on it; ``boxes`` are the photo's labelled boxes in the frame."""

    image: np.ndarray  # BGR uint8 (H, W, 3)
    boxes: tuple[Box, ...]  # normalised (xmin, ymin, xmax, ymax)


def empty_scene(shared_dir: Path | None, size: tuple[int, int] = DEMO_SIZE) -> np.ndarray:
    """The empty scene at ``size`` (width, height): the blank camera-trap frame, else a grey gradient."""
    width, height = size
    path = None if shared_dir is None else Path(shared_dir) / "data" / "negatives" / EMPTY_SCENE
    image = cv2.imread(str(path)) if path is not None and path.is_file() else None
    if image is None:
        ramp = np.linspace(60, 140, height, dtype=np.float32)[:, None]
        grey = np.repeat(ramp, width, axis=1).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    return cover(image, size)


def cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` to fill ``size`` (width, height), cropping the centre (no bars)."""
    width, height = size
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    resized = cv2.resize(image, (max(width, round(w * scale)), max(height, round(h * scale))), interpolation=cv2.INTER_AREA)
    y0 = (resized.shape[0] - height) // 2
    x0 = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])


def letterbox_onto(background: np.ndarray, photo: np.ndarray, boxes_px: Iterable[tuple[int, int, int, int]],
                   size: float = 1.0, at: tuple[float, float] = (0.5, 0.5)) -> Composite:
    """Scale ``photo`` to ``size`` of the largest size that fits inside ``background`` (keeping its
    aspect), place it (``at``: where in the room left over, (0, 0) top left, (1, 1) bottom right,
    (0.5, 0.5) centred), and map its pixel boxes (xmin, ymin, xmax, ymax in the photo) to normalised
    boxes of the composite."""
    height, width = background.shape[:2]
    h, w = photo.shape[:2]
    scale = min(width / w, height / h) * size
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    x0, y0 = round((width - pw) * at[0]), round((height - ph) * at[1])
    out = background.copy()
    out[y0 : y0 + ph, x0 : x0 + pw] = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    boxes = tuple(
        ((x0 + xmin * scale) / width, (y0 + ymin * scale) / height, (x0 + xmax * scale) / width, (y0 + ymax * scale) / height)
        for xmin, ymin, xmax, ymax in boxes_px
    )
    return Composite(out, boxes)


def walk_onto(background: np.ndarray, photo: np.ndarray, boxes_px: Iterable[tuple[int, int, int, int]],
              frames: int, size: float = WALK_SCALE) -> list[Composite]:
    """``frames`` composites of ``photo`` at ``size`` (see ``letterbox_onto``) crossing ``background``
    from its left edge to its right edge at a steady pace, a little lower as it goes (an animal
    walking in, not a picture hung on the scene)."""
    boxes = list(boxes_px)
    steps = max(1, frames - 1)
    return [letterbox_onto(background, photo, boxes, size, (i / steps, 0.3 + 0.4 * i / steps)) for i in range(frames)]


def arrive_onto(background: np.ndarray, photo: np.ndarray, boxes_px: Iterable[tuple[int, int, int, int]],
                frames: int, walking: int) -> list[Composite]:
    """``frames`` composites of ``photo`` letterboxed onto ``background`` (full size) that first walks in
    from the left edge for ``walking`` frames, then stays where ``letterbox_onto`` centres it (an animal
    that comes to the bowl and sits down)."""
    boxes = list(boxes_px)
    steps = max(1, walking - 1)
    return [letterbox_onto(background, photo, boxes, 1.0, (0.5 * min(i, steps) / steps, 0.5)) for i in range(frames)]


def raccoon_boxes(dataset_dir: Path, filename: str) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (xmin, ymin, xmax, ymax) of ``filename`` from the dataset's raccoon_labels.csv."""
    with open(Path(dataset_dir) / "raccoon_labels.csv", newline="") as fh:
        return [
            (int(r["xmin"]), int(r["ymin"]), int(r["xmax"]), int(r["ymax"]))
            for r in csv.DictReader(fh)
            if r["filename"] == filename
        ]


def raccoon_composite(shared_dir: Path, filename: str, background: np.ndarray) -> Composite:
    """A dataset raccoon photo letterboxed onto ``background``, with its boxes."""
    dataset = Path(shared_dir) / "data" / "raccoon_dataset"
    return letterbox_onto(background, _raccoon_photo(dataset, filename), raccoon_boxes(dataset, filename))


def raccoon_walk(shared_dir: Path, filename: str, background: np.ndarray, frames: int) -> list[Composite]:
    """A dataset raccoon photo walking across ``background`` in ``frames`` frames (``walk_onto``)."""
    dataset = Path(shared_dir) / "data" / "raccoon_dataset"
    return walk_onto(background, _raccoon_photo(dataset, filename), raccoon_boxes(dataset, filename), frames)


def _raccoon_photo(dataset: Path, filename: str) -> np.ndarray:
    photo = cv2.imread(str(dataset / "images" / filename))
    if photo is None:
        raise FileNotFoundError(f"raccoon photo not readable: {dataset / 'images' / filename}")
    return photo


def write_mp4v(frames: Iterable[np.ndarray], path: Path, fps: float) -> int:
    """Write BGR uint8 frames (all one size) to ``path`` with OpenCV's mp4v writer; returns the count.

    Writes to a temporary name and renames, so a half-written file never looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for image in frames:
            if writer is None:
                height, width = image.shape[:2]
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write mp4v video to {tmp}")
            writer.write(image)
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError("no frames to write")
    tmp.replace(path)
    return count


def _demo_frames(shared_dir: Path) -> Iterator[np.ndarray]:
    empty = empty_scene(shared_dir)
    for what, seconds in DEMO_TIMELINE:
        count = round(seconds * DEMO_FPS)
        if what == "empty":
            yield from (empty for _ in range(count))
        else:
            yield from (c.image for c in raccoon_walk(shared_dir, DEMO_RACCOONS[int(what)], empty, count))


def ensure_demo_clip(
    shared_dir: str | os.PathLike[str] | None = None, out_path: str | os.PathLike[str] = DEMO_PATH
) -> Path:
    """Build the demo clip at ``out_path`` unless it already exists; return its path.

    shared_dir: the shared/ folder (default ``raccoon_watch.config.shared_dir()``). Raises FileNotFoundError
    when it has no raccoon dataset."""
    out = Path(out_path)
    if out.is_file() and out.stat().st_size > 0:
        return out
    shared = Path(shared_dir) if shared_dir is not None else default_shared_dir()
    if not (shared / "data" / "raccoon_dataset" / "images").is_dir():
        raise FileNotFoundError(f"cannot build the demo clip: no raccoon dataset under {shared / 'data'}")
    count = write_mp4v(_demo_frames(shared), out, DEMO_FPS)
    log.info("demo_clip_built", path=str(out), frames=count, fps=DEMO_FPS, width=DEMO_SIZE[0], height=DEMO_SIZE[1])
    return out
