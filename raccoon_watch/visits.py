"""Visit scoring: a visit is many frames, not one photo. Pure functions over immutable state.

    state, scored = step(state, detections, params, track_ids, live)   # after each processed frame

Per camera (the router keeps one ``VisitState`` each). ``detections`` are one frame's eligible
detections (label, area, zones and masks passed; NOT yet the score threshold), boxes normalised
(xmin, ymin, xmax, ymax). Each belongs to a *candidate* (an object followed across frames), one per
track: the daemon's tracker (``tracking.step``) says which track each detection continued
(``track_ids``) and which tracks are still alive (``live``). Called without ``track_ids`` (tables,
tools) it follows objects itself the simple way: ``tracking.match`` of each detection with the box
of a candidate's last detection (greedy by IoU, highest first, same label only, one-to-one, IoU >=
``match_iou``), an unmatched detection starting a new candidate. Then:

- a candidate continued in this frame appends the detection's per-frame score, any other appends
  0.0 (a miss);
- a candidate whose last ``window`` scores are all 0.0 is dropped (a detection scoring 0.0 counts
  like a miss here), and so is one whose track is no longer ``live``.

The detections come back in their input order with ``score`` replaced by their candidate's visit
score (``detector_score`` untouched): the median of its last ``window`` scores, padded with zeros up
to ``min_frames`` scores, as Frigate does with a tracked object's last 10 scores. A raccoon scoring
0.6-0.8 frame after frame confirms; a cat spiking once to 0.95 does not. ``window=1, min_frames=1``
is exactly the per-frame score.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from raccoon_watch.tracking import match as match_boxes
from raccoon_watch.types import Box, Detection

MISS = 0.0
"""The score a candidate appends for a frame in which no detection continued it."""


@dataclass(frozen=True, slots=True)
class VisitParams:
    window: int = 10  # last scores kept per candidate (Frigate keeps 10)
    min_frames: int = 3  # a candidate with fewer scores is padded with 0s to this many: one spike never confirms
    match_iou: float = 0.1  # a detection continues the candidate whose last box overlaps it most, IoU >= this

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 1 <= self.min_frames <= self.window:
            raise ValueError(f"min_frames must be in 1..window ({self.window}), got {self.min_frames}")
        if not 0.0 <= self.match_iou <= 1.0:
            raise ValueError(f"match_iou must be in 0..1, got {self.match_iou}")


@dataclass(frozen=True, slots=True)
class Candidate:
    """An object followed across the frames of one camera."""

    id: int  # per camera, in order of appearance
    label: str
    box: Box  # normalised (xmin, ymin, xmax, ymax) of the last detection that continued it
    scores: tuple[float, ...]  # at most `window`, oldest first, misses are 0.0


@dataclass(frozen=True, slots=True)
class VisitState:
    candidates: tuple[Candidate, ...] = ()
    next_id: int = 0


def visit_score(scores: Sequence[float], p: VisitParams) -> float:
    """Median of the last ``p.window`` scores, padded with 0.0 up to ``p.min_frames`` scores."""
    recent = list(scores[-p.window:])
    recent += [MISS] * (p.min_frames - len(recent))
    return float(statistics.median(recent))


def match(candidates: Sequence[Candidate], detections: Sequence[Detection],
          min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching by the candidates' last boxes: detection index -> candidate index
    (``tracking.match``: highest IoU first, same label, IoU >= ``min_iou``, ties to the older candidate)."""
    return match_boxes([(c.label, c.box) for c in candidates], detections, min_iou)


def _own_ids(state: VisitState, detections: Sequence[Detection], p: VisitParams) -> list[int]:
    """Without a tracker: each detection's candidate id by ``match``, new ids for the unmatched ones."""
    matched = match(state.candidates, detections, p.match_iou)
    ids, next_id = [], state.next_id
    for di in range(len(detections)):
        if di in matched:
            ids.append(state.candidates[matched[di]].id)
        else:
            ids.append(next_id)
            next_id += 1
    return ids


def step(state: VisitState, detections: tuple[Detection, ...], p: VisitParams,
         track_ids: Sequence[int] | None = None,
         live: Collection[int] | None = None) -> tuple[VisitState, tuple[Detection, ...]]:
    """Fold one processed frame's eligible detections into ``state``; return them visit-scored.

    track_ids: per detection, the id of the track it belongs to (``tracking.step``), all different;
    None: match them here. live: ids of the tracks still alive (None: every candidate is)."""
    ids = list(track_ids) if track_ids is not None else _own_ids(state, detections, p)
    if len(ids) != len(detections):
        raise ValueError(f"expected one track id per detection, got {len(ids)} for {len(detections)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"a track continues at most one detection per frame, got ids {ids}")
    det_of = {cid: di for di, cid in enumerate(ids)}
    continued = [  # Candidate(...) rather than replace(): this runs for every candidate of every frame
        Candidate(c.id, c.label, detections[det_of[c.id]].box, (*c.scores, detections[det_of[c.id]].score)[-p.window:])
        if c.id in det_of else Candidate(c.id, c.label, c.box, (*c.scores, MISS)[-p.window:])
        for c in state.candidates
    ]
    known = {c.id: c for c in continued}
    started = [Candidate(cid, det.label, det.box, (det.score,)) for cid, det in zip(ids, detections) if cid not in known]
    owner = {**known, **{c.id: c for c in started}}
    kept = tuple(c for c in (*continued, *started) if not _gone(c, p) and (live is None or c.id in live))
    scored = tuple(replace(d, score=visit_score(owner[cid].scores, p)) for d, cid in zip(detections, ids))
    next_id = max([state.next_id, *(cid + 1 for cid in ids)])
    return VisitState(kept, next_id), scored


def best_scores(state: VisitState) -> dict[int, float]:
    """Candidate id -> its best per-frame score in the window (``tracking.select_hints`` reads it)."""
    return {c.id: max(c.scores, default=MISS) for c in state.candidates}


def _gone(c: Candidate, p: VisitParams) -> bool:
    """True when the candidate's last ``window`` scores are all 0.0: misses, or detections the
    classifier gave 0.0, which say as little about a raccoon as a miss does."""
    recent = c.scores[-p.window:]
    return len(recent) >= p.window and not any(recent)
