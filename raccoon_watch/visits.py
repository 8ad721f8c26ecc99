"""Visit scoring: a visit is many frames, not one photo. Pure functions over immutable state.

    state, scored = step(state, detections, params)   # after each processed frame of one camera

Per camera (the router keeps one ``VisitState`` each). ``detections`` are one frame's eligible
detections (label, area, zones and masks passed; NOT yet the score threshold), boxes normalised
(xmin, ymin, xmax, ymax). Each is matched to a *candidate* (an object followed across frames):

- matching is greedy by IoU of boxes, highest first, same label only, each candidate and each
  detection used at most once, and only pairs with IoU >= ``match_iou``; a candidate is compared
  by the box of its last matched detection;
- a matched candidate appends the detection's per-frame score, an unmatched one appends 0.0 (a
  miss), an unmatched detection starts a new candidate;
- a candidate whose last ``window`` scores are all 0.0 is dropped (a detection scoring 0.0 counts
  like a miss here).

The detections come back in their input order with ``score`` replaced by their candidate's visit
score (``detector_score`` untouched): the median of its last ``window`` scores, padded with zeros up
to ``min_frames`` scores, as Frigate does with a tracked object's last 10 scores. A raccoon scoring
0.6-0.8 frame after frame confirms; a cat spiking once to 0.95 does not. ``window=1, min_frames=1``
is exactly the per-frame score.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Sequence

from raccoon_watch.types import Box, Detection, box_iou

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
    """Greedy one-to-one matching, highest IoU first: detection index -> candidate index.

    Only same-label pairs with IoU >= ``min_iou``; ties go to the older candidate, then to the
    earlier detection, so the result does not depend on dict or set order.
    """
    pairs = sorted(
        ((box_iou(c.box, d.box), ci, di)
         for ci, c in enumerate(candidates) for di, d in enumerate(detections) if c.label == d.label),
        key=lambda pair: (-pair[0], pair[1], pair[2]),
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for iou, ci, di in pairs:
        if iou < min_iou:
            break
        if ci in used or di in matched:
            continue
        matched[di] = ci
        used.add(ci)
    return matched


def step(state: VisitState, detections: tuple[Detection, ...],
         p: VisitParams) -> tuple[VisitState, tuple[Detection, ...]]:
    """Fold one processed frame's eligible detections into ``state``; return them visit-scored."""
    matched = match(state.candidates, detections, p.match_iou)
    by_candidate = {ci: di for di, ci in matched.items()}
    continued = [
        replace(c, box=detections[by_candidate[ci]].box,
                scores=(c.scores + (detections[by_candidate[ci]].score,))[-p.window:])
        if ci in by_candidate else replace(c, scores=(c.scores + (MISS,))[-p.window:])
        for ci, c in enumerate(state.candidates)
    ]
    owner: list[Candidate] = []  # per detection, in input order: the candidate it continued or began
    next_id = state.next_id
    for di, det in enumerate(detections):
        if di in matched:
            owner.append(continued[matched[di]])
        else:
            owner.append(Candidate(next_id, det.label, det.box, (det.score,)))
            next_id += 1
    started = [c for di, c in enumerate(owner) if di not in matched]
    kept = tuple(c for c in (*continued, *started) if not _gone(c, p))
    scored = tuple(replace(d, score=visit_score(c.scores, p)) for d, c in zip(detections, owner))
    return VisitState(kept, next_id), scored


def _gone(c: Candidate, p: VisitParams) -> bool:
    """True when the candidate's last ``window`` scores are all 0.0: misses, or detections the
    classifier gave 0.0, which say as little about a raccoon as a miss does."""
    recent = c.scores[-p.window:]
    return len(recent) >= p.window and not any(recent)
