"""A video in an archive: its visits, scored as the daemon scores a camera's frames.

    record = video_record(recognizer, path, keep, wanted, video_fps)

The clip is read frame by frame and recognized at ``video_fps`` frames per second of clip time (the
daemon's default ``detect_fps``; every frame when the clip has fewer), each frame the way the daemon's
detector worker and event router treat one camera's frame (router.py ``_handle``, workers.py):

    recognize(frame, hints = the tracks' predicted boxes)          the worker, with the router's hints
    -> detections of a wanted label, any score                     ``filters.eligible`` (no zones here)
    -> tracking.step (SORT-style tracks, moved or still)           the router
    -> visits.step (median of the track's last scores)             the router: the visit score
    -> counted: visit score >= the threshold of the frame's mode (``keep``) and the track has moved
    -> hints for the next frame: tracking.select_hints

with the daemon's defaults (``VisitParams()``, ``router.track_params``). Clip time (frame number / fps)
stands in for the monotonic clock. A visit is one track with at least one counted frame; tracks that
never counted (a still watering can, a cat scoring 0.2) are not listed.

Record (a JSON object)::

    {"video": PATH, "fps": 29.97, "frames": 900, "width": 1920, "height": 1080,
     "frames_processed": [0, 6, 12, ...],
     "visits": [{"label": "raccoon", "first_frame": 120, "last_frame": 410, "first_s": 4.004, "last_s": 13.68,
                 "frames": 44, "score": 0.91, "frame": 216, "detector_score": 0.52, "box": [x0, y0, x1, y1]}]}

``first_frame``/``last_frame``: the first and last processed frame in which the track was seen
(any score); ``frames``: how many processed frames it was seen in; ``score``: its best visit score
over its counted frames, at frame ``frame`` where its box was ``box`` (integer pixels, xmin, ymin,
xmax, ymax of the frame) and the detector scored it ``detector_score`` (with a classifier stage).
Visits are in order of first appearance. ``{"video": PATH, "error": "..."}`` when the file cannot
be read as a video.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import cv2

from raccoon_watch import tracking, visits
from raccoon_watch.recognition.recognizer import CandidateHints, Recognizer
from raccoon_watch.router import track_params
from raccoon_watch.types import Detection, box_to_pixels
from raccoon_watch.visits import VisitParams

DEFAULT_VIDEO_FPS = 5.0  # the daemon's default camera detect_fps (config.CameraConfig)
MAX_FPS = 240.0
FALLBACK_FPS = 15.0  # a clip that does not say its frame rate


@dataclass
class _Visit:
    label: str
    first_frame: int
    last_frame: int
    frames: int = 0
    score: float = -1.0  # best counted visit score; -1: never counted
    frame: int = -1
    detector_score: float | None = None
    box: tuple[int, int, int, int] = (0, 0, 0, 0)


def sampled(index: int, fps: float, video_fps: float) -> bool:
    """True for the first frame of each 1 / video_fps seconds of clip time (every frame when
    video_fps >= fps)."""
    if video_fps >= fps:
        return True
    return index == 0 or math.floor(index * video_fps / fps) > math.floor((index - 1) * video_fps / fps)


def video_record(recognizer: Recognizer, path: str, keep: Callable[[list[Detection]], list[Detection]],
                 wanted: Collection[str] | None, video_fps: float = DEFAULT_VIDEO_FPS) -> dict[str, Any]:
    """The clip's record (module docstring)."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        return {"video": path, "error": "cannot open as a video"}
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= MAX_FPS else FALLBACK_FPS
    vparams = VisitParams()
    tparams = track_params(vparams)
    tracks, vstate, hints = tracking.TrackState(), visits.VisitState(), ()
    found: dict[int, _Visit] = {}
    processed: list[int] = []
    index, width, height = -1, 0, 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            index += 1
            if not sampled(index, fps, video_fps):
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                break
            height, width = frame.shape[:2]
            now = index / fps
            hint = CandidateHints(tracked=tuple(h.box_at(now) for h in hints)) if hints else None
            dets = recognizer.recognize([frame], hints=[hint])[0]
            seen = tuple(d for d in dets if wanted is None or d.label in wanted)
            tracks, owners = tracking.step(tracks, seen, tparams, now, frame)
            live = {t.id for t in tracks.tracks}
            vstate, scored = visits.step(vstate, seen, vparams, track_ids=[t.id for t in owners], live=live)
            hints = tracking.select_hints(tracks.tracks, visits.best_scores(vstate), tparams)
            processed.append(index)
            for det, track, raw in zip(scored, owners, seen):
                _fold(found, track, det, raw, index, width, height, counted=bool(keep([det])) and track.moved)
    finally:
        cap.release()
    if not processed:
        return {"video": path, "error": "no frame could be read"}
    return {"video": path, "fps": round(fps, 3), "frames": index + 1, "width": width, "height": height,
            "frames_processed": processed, "visits": [_visit_json(v, fps) for v in found.values() if v.score >= 0]}


def _fold(found: dict[int, _Visit], track: tracking.Track, scored: Detection, raw: Detection, index: int,
          width: int, height: int, counted: bool) -> None:
    """Add one frame's visit-scored detection (``scored``; ``raw``: before visit scoring) to its track's visit."""
    visit = found.setdefault(track.id, _Visit(track.label, index, index))
    visit.last_frame = index
    visit.frames += 1
    if counted and scored.score > visit.score:
        visit.score, visit.frame = scored.score, index
        visit.detector_score = raw.detector_score
        visit.box = box_to_pixels(raw.box, width, height)


def _visit_json(v: _Visit, fps: float) -> dict[str, Any]:
    out: dict[str, Any] = {"label": v.label, "first_frame": v.first_frame, "last_frame": v.last_frame,
                           "first_s": round(v.first_frame / fps, 3), "last_s": round(v.last_frame / fps, 3),
                           "frames": v.frames, "score": round(v.score, 4), "frame": v.frame}
    if v.detector_score is not None:
        out["detector_score"] = round(v.detector_score, 4)
    out["box"] = list(v.box)
    return out
