"""Tracking: the candidates of one fixed camera followed across its frames. Pure functions over immutable state.

    state, owners = step(state, detections, params, now, image=None, regions=())

The event router keeps one ``TrackState`` per camera and calls ``step`` after each processed frame,
with that frame's eligible detections (any score). SORT-style (Bewley et al. 2016, "Simple Online and
Realtime Tracking"), with a constant-velocity prediction instead of SORT's Kalman filter:

- ``predict``: each track's box at ``now``: its last supported box, its centre moved by its velocity
  times the time since then (``shift_box``: the box keeps its size and stops at the frame's edge);
- ``match``: greedy by IoU of a detection's box with a track's PREDICTED box, highest first, same
  label only, one-to-one, only pairs with IoU >= ``match_iou`` (ties: older track, earlier detection);
- a track is *supported* in a frame when a detection the detector or the motion gate proposed
  (``Detection.origin`` not ``ORIGIN_TRACK``) continued it with a score above 0: its box, time and
  velocity follow the detection (velocity smoothed by ``velocity_gain``), its misses go back to 0.
  Otherwise (no detection, only its own predicted box came back from the classifier, or a score of
  0.0) it *coasts*: it keeps predicting, and after ``max_misses`` such frames in a row it dies;
- a detection that continued no track starts one.

Moved or still (``has_moved``, table-tested): on a fixed camera the animal is what moves, and a
watering can, a plant, a bottle or a lamp never does; the router lets only a track that has moved
raise an alert. The evidence works with or without the motion gate:

- ``changed_cells``: the grey, area-averaged ``THUMB_SIDE`` x ``THUMB_SIDE`` thumbnail of the track's
  FIRST box (the same pixels every frame, so box jitter does not count), compared with the one of its
  first frame, each less its mean (a camera's gain change does not count): the share of cells that
  differ by more than ``thumb_floor`` grey levels. A raccoon eating at a bowl moves its head; a
  raccoon walking leaves its first box;
- ``motion_cover``: the share of the track's box covered by a motion-gate region lying mostly inside
  it (``Frame.motion_regions``): this one counts from the track's very first frame;
- neither counts while a track that has moved overlaps this one's first box: the change is that
  track's (a raccoon walking past the watering can does not make the can an animal).
``Track.moved`` is sticky: once moved, a track stays moved.

Boxes: normalised (xmin, ymin, xmax, ymax) of the full frame everywhere (``types.Box``); velocities
are the centre's (dx, dy) per second in the same units; times are monotonic seconds (``Frame.mono``).
Images are BGR uint8 (H, W, 3) as decoded, or grey uint8 (H, W).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from raccoon_watch.types import ORIGIN_TRACK, Box, Detection, TrackHint, box_area, box_iou, box_to_pixels, shift_box

THUMB_SIDE = 16
"""Cells per side of a track's thumbnail."""
THUMB_SAMPLES = 2
"""At most this many pixels per cell side are read (a strided sample), so a large box costs what a
small one does: about 0.03 ms per thumbnail of a 1080p frame on this 2-core machine."""


@dataclass(frozen=True, slots=True)
class TrackParams:
    """match_iou: a detection continues the track whose predicted box overlaps it most, if at least this
    (the config's ``events.score_match_iou``); max_misses: frames in a row without support after which a
    track dies (``events.score_window``, so a track lives exactly as long as a visit candidate did);
    velocity_gain: weight of a new velocity measurement (1: the last step alone).
    thumb_floor, min_changed_cells, min_motion_cover, motion_inside: the moved evidence (``has_moved``).
    hint_min_score, max_hints: which tracks the detector workers look for next (``select_hints``).
    """

    match_iou: float = 0.1
    max_misses: int = 10
    velocity_gain: float = 0.5
    thumb_floor: float = 20.0  # grey levels a thumbnail cell must change by (after removing the mean)
    min_changed_cells: float = 0.1  # ... in at least this share of the cells (26 of 256)
    min_motion_cover: float = 0.2  # a motion region covering this share of the box
    motion_inside: float = 0.5  # ... with at least this share of the region inside the box
    hint_min_score: float = 0.1  # a track whose best recent score reaches this is looked for
    max_hints: int = 4

    def __post_init__(self) -> None:
        for name in ("match_iou", "velocity_gain", "min_changed_cells", "min_motion_cover", "motion_inside",
                     "hint_min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)}")
        if self.max_misses < 1:
            raise ValueError(f"max_misses must be >= 1, got {self.max_misses}")
        if not 0.0 <= self.thumb_floor <= 255.0:
            raise ValueError(f"thumb_floor is a grey-level difference 0..255, got {self.thumb_floor}")
        if self.max_hints < 0:
            raise ValueError(f"max_hints must be >= 0, got {self.max_hints}")


@dataclass(frozen=True, slots=True)
class Track:
    """One candidate followed across frames.

    box / mono: the box of its last supported detection and that frame's monotonic time.
    velocity: its centre's (dx, dy) per second. hits: supported frames; misses: frames in a row without.
    first_box: its box in its first frame; first_thumb: ``thumbnail`` of first_box in the first frame
    that had an image, as bytes (row-major (THUMB_SIDE, THUMB_SIDE) uint8), None before one.
    moved: it has moved since it began (sticky).
    """

    id: int
    label: str
    box: Box
    mono: float
    velocity: tuple[float, float] = (0.0, 0.0)
    hits: int = 1
    misses: int = 0
    first_box: Box | None = None
    first_thumb: bytes | None = None
    moved: bool = False


@dataclass(frozen=True, slots=True)
class TrackState:
    tracks: tuple[Track, ...] = ()
    next_id: int = 0


@dataclass(frozen=True, slots=True)
class MoveEvidence:
    """What one frame says about whether a track moved (``has_moved``).

    changed_cells: share of its first box's thumbnail cells that changed since its first frame (0..1).
    motion_cover: share of its box covered by a motion region lying mostly inside it (0..1).
    occluded: a track that has moved overlaps its first box: the change may be that one's.
    """

    changed_cells: float = 0.0
    motion_cover: float = 0.0
    occluded: bool = False


def has_moved(evidence: MoveEvidence, p: TrackParams) -> bool:
    """The decision, first matching rule wins:

    =====================================================  =====
    condition                                              moved
    =====================================================  =====
    a track that moved overlaps its first box (occluded)   no
    changed_cells >= min_changed_cells                     yes
    motion_cover >= min_motion_cover                       yes
    otherwise                                              no
    =====================================================  =====
    """
    if evidence.occluded:
        return False
    return evidence.changed_cells >= p.min_changed_cells or evidence.motion_cover >= p.min_motion_cover


def thumbnail(image: np.ndarray, box: Box, side: int = THUMB_SIDE) -> np.ndarray:
    """(side, side) uint8: the area-averaged grey of a normalised (xmin, ymin, xmax, ymax) box of a BGR
    uint8 (H, W, 3) or grey (H, W) image. Grey is the green channel (most of the luminance; an infrared
    frame has R = G = B), read on a strided sample of at most ``THUMB_SAMPLES`` pixels per cell side."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box_to_pixels(box, width, height)
    x0, y0 = min(x0, width - 1), min(y0, height - 1)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    sx, sy = max(1, (x1 - x0) // (side * THUMB_SAMPLES)), max(1, (y1 - y0) // (side * THUMB_SAMPLES))
    region = image[y0:y1:sy, x0:x1:sx]
    if region.ndim == 3:
        region = region[..., 1]
    return cv2.resize(np.ascontiguousarray(region), (side, side), interpolation=cv2.INTER_AREA)


def changed_cells(first: np.ndarray, now: np.ndarray, floor: float) -> float:
    """Share (0..1) of the cells of two same-shape grey thumbnails that differ by more than ``floor``
    grey levels once the camera's exposure is taken out: each thumbnail less its median, and ``now``
    divided by its least-squares gain over ``first`` (a brighter, darker or contrastier frame is no
    change). Medians, not means, so a quarter of the box changing does not shift the other three.
    (Medians by ``np.partition``: ``np.median`` costs 0.1 ms on 256 values, this whole function 0.02.)"""
    if first.shape != now.shape:
        raise ValueError(f"thumbnails differ in shape: {first.shape} vs {now.shape}")
    a = first.astype(np.float32).ravel()
    b = now.astype(np.float32).ravel()
    middle = a.size // 2
    a -= np.partition(a, middle)[middle]
    b -= np.partition(b, middle)[middle]
    energy = float(a.dot(a))
    gain = float(a.dot(b)) / energy if energy > 0.0 else 1.0
    gain = min(max(gain, 0.5), 2.0)  # an exposure change, not a different picture
    b /= gain
    b -= a
    return np.count_nonzero(np.abs(b) > floor) / b.size


def motion_cover(box: Box, regions: Iterable[Box], inside: float) -> float:
    """The largest share (0..1) of ``box`` covered by one of the motion ``regions`` that lies at least
    ``inside`` within the box (a region mostly elsewhere is another thing's motion). Boxes normalised xyxy."""
    area = box_area(box)
    best = 0.0
    for region in regions:
        inter = box_area((max(box[0], region[0]), max(box[1], region[1]),
                          min(box[2], region[2]), min(box[3], region[3])))
        region_area = box_area(region)
        if area > 0.0 and region_area > 0.0 and inter / region_area >= inside:
            best = max(best, inter / area)
    return best


def predict(track: Track, now: float) -> Box:
    """The track's box at monotonic time ``now`` (constant velocity; a frame older than its last
    supported one gets that box)."""
    dt = max(0.0, now - track.mono)
    return shift_box(track.box, track.velocity[0] * dt, track.velocity[1] * dt)


def match(tracks: Sequence[tuple[str, Box]], detections: Sequence[Detection], min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching, highest IoU first: detection index -> track index.

    tracks: (label, box to compare with: the predicted one) per track. Only same-label pairs with IoU
    >= ``min_iou``; ties go to the older track, then to the earlier detection, so the result does not
    depend on dict or set order. IoU as ``types.box_iou``, for all pairs at once.
    """
    if not tracks or not detections:
        return {}
    iou = iou_matrix(np.array([box for _, box in tracks], np.float64), np.array([d.box for d in detections], np.float64))
    same = np.array([[label == d.label for d in detections] for label, _ in tracks])
    iou = np.where(same, iou, -1.0)
    ti, di = np.indices(iou.shape)
    order = np.lexsort((di.ravel(), ti.ravel(), -iou.ravel()))  # by IoU down, then track, then detection
    matched: dict[int, int] = {}
    used: set[int] = set()
    for k in order.tolist():
        t, d = divmod(k, iou.shape[1])
        if iou[t, d] < min_iou:
            break
        if t in used or d in matched:
            continue
        matched[d] = t
        used.add(t)
    return matched


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) (xmin, ymin, xmax, ymax) boxes, continuous areas as ``box_iou``
    (0.0 where the union is empty)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def _supports(det: Detection) -> bool:
    """A detection supports its track when something other than the track proposed it and it scored."""
    return det.origin != ORIGIN_TRACK and det.score > 0.0


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0


def _follow(track: Track, det: Detection, now: float, p: TrackParams) -> Track:
    """The track continued by a supporting detection at ``now``."""
    dt = now - track.mono
    velocity = track.velocity
    if dt > 0.0:
        (cx0, cy0), (cx1, cy1) = _centre(track.box), _centre(det.box)
        measured = ((cx1 - cx0) / dt, (cy1 - cy0) / dt)
        gain = 1.0 if track.hits == 1 else p.velocity_gain
        velocity = (velocity[0] + gain * (measured[0] - velocity[0]), velocity[1] + gain * (measured[1] - velocity[1]))
    return replace(track, box=det.box, mono=max(now, track.mono), velocity=velocity, hits=track.hits + 1, misses=0)


def _judge(track: Track, image: np.ndarray | None, regions: Sequence[Box], movers: Sequence[Box],
           p: TrackParams) -> Track:
    """The track with ``moved`` (and, in its first frame with an image, ``first_thumb``) brought up to date.

    movers: current boxes of the OTHER tracks that had moved before this frame."""
    if track.moved:
        return track
    first_box = track.first_box or track.box
    cells = 0.0
    first_thumb = track.first_thumb
    if image is not None:
        now_thumb = thumbnail(image, first_box)
        if first_thumb is None:
            first_thumb = now_thumb.tobytes()
        else:
            reference = np.frombuffer(first_thumb, np.uint8).reshape(now_thumb.shape)
            cells = changed_cells(reference, now_thumb, p.thumb_floor)
    evidence = MoveEvidence(
        changed_cells=cells,
        motion_cover=motion_cover(track.box, regions, p.motion_inside) if regions else 0.0,
        occluded=any(box_iou(other, first_box) > 0.0 for other in movers),
    )
    moved = has_moved(evidence, p)
    if not moved and first_box is track.first_box and first_thumb is track.first_thumb:
        return track  # nothing new: no copy
    return replace(track, first_box=first_box, first_thumb=first_thumb, moved=moved)


def step(state: TrackState, detections: Sequence[Detection], p: TrackParams, now: float,
         image: np.ndarray | None = None, regions: Sequence[Box] = ()) -> tuple[TrackState, tuple[Track, ...]]:
    """Fold one processed frame into ``state``.

    detections: the frame's eligible detections, boxes normalised xyxy; now: the frame's monotonic
    time; image: the frame (for the thumbnail evidence; None: no thumbnails); regions: its motion
    regions (``Frame.motion_regions``). Returns the new state and, per detection in input order, the
    track it continued or began (as updated by this frame, also when it died in it).
    """
    matched = match([(t.label, predict(t, now)) for t in state.tracks], detections, p.match_iou)
    by_track = {ti: di for di, ti in matched.items()}
    tracks: list[Track] = []
    owner_of: dict[int, int] = {}  # detection index -> index into tracks
    for ti, track in enumerate(state.tracks):
        di = by_track.get(ti)
        supported = di is not None and _supports(detections[di])
        tracks.append(_follow(track, detections[di], now, p) if supported else replace(track, misses=track.misses + 1))
        if di is not None:
            owner_of[di] = len(tracks) - 1
    next_id = state.next_id
    for di, det in enumerate(detections):
        if di not in matched:
            tracks.append(Track(next_id, det.label, det.box, now, misses=0 if _supports(det) else 1, first_box=det.box))
            owner_of[di] = len(tracks) - 1
            next_id += 1
    movers = [(t.id, t.box) for t in tracks if t.moved]  # moved before this frame, where they are now
    tracks = [_judge(t, image, regions, [box for tid, box in movers if tid != t.id], p) for t in tracks]
    kept = tuple(t for t in tracks if t.misses < p.max_misses)
    return TrackState(kept, next_id), tuple(tracks[owner_of[di]] for di in range(len(detections)))


def select_hints(tracks: Iterable[Track], best_scores: Mapping[int, float], p: TrackParams) -> tuple[TrackHint, ...]:
    """The tracks the detector workers should look for in the next frames: those that have moved and
    whose best recent score (``best_scores``: track id -> best of its visit's recent per-frame scores)
    reaches ``hint_min_score``, best first, at most ``max_hints``. A still scene has none, so it costs
    no extra classifier work."""
    chosen = sorted(
        (t for t in tracks if t.moved and best_scores.get(t.id, 0.0) >= p.hint_min_score),
        key=lambda t: (-best_scores.get(t.id, 0.0), t.id),
    )[:p.max_hints]
    return tuple(TrackHint(t.id, t.box, t.mono, t.velocity) for t in chosen)


class HintBoard:
    """Per camera, the track hints the router published last, for the detector workers.

    Each value is an immutable tuple replaced whole, in a dict whose keys are fixed in ``__init__``, so a
    reader in another thread sees either the old or the new tuple and needs no lock."""

    def __init__(self, cameras: Iterable[str]) -> None:
        self._hints: dict[str, tuple[TrackHint, ...]] = {camera: () for camera in cameras}

    def publish(self, camera: str, hints: tuple[TrackHint, ...]) -> None:
        """Router thread only. A camera not named at start is ignored."""
        if camera in self._hints:
            self._hints[camera] = hints

    def get(self, camera: str) -> tuple[TrackHint, ...]:
        return self._hints.get(camera, ())
