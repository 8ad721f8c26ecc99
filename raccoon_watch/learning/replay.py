"""Replay a held-out visit the way the daemon scored it live, so the gate's "wrong" means what happened.

What is kept of a visit (``store/``, ``review/eventtrace.py``):

- the event row: it exists because the visit reached the alert threshold (an ``alert``; a row whose
  ``severity`` says ``detection`` did not alert), its best visit score (``top_score``) and the
  classifier version that scored it (``model_version``);
- its trace (``scores``): per frame the router processed, from the visit window's frames before
  the first sighting to 1 s after the end (``eventtrace.event_rows``), ``[wall ts, visit score,
  final score of the frame's best candidate of a watched label (None: no candidate), detector
  score]``; events stored before the lookback began keep from 1 s before the first sighting only,
  which may miss the first frames of a visit when frames came slowly (``replay_agrees`` says so);
- ONE image: the clean best frame (``frames/<camera>/<id>.jpg``), the frame of the best visit score.
  The other frames' images are gone (a clip, where the camera records one, is not used here).

So the deployed classifier's outcome on a held-out event is what the daemon did (``live``), when the
version that scored it live is the one deployed now. A candidate (or a deployed classifier that is
not the one that ran live) is judged on the SAME visit: the proposer is the same detector, so the
frames in which the visit had a candidate are the same, and only the classifier's score of it
changes. Its change is measured on the kept frame, where both were run with the daemon's own
recognizer (``score_shift``: in logits, the candidate's score there minus the reference's), and moved
onto every frame of the trace (``shift_scores``); those per-frame scores then go through the
daemon's own visit scoring (``visits.step``: median of the recent scores, padded with misses up to
``min_frames``), thresholds (``filters.meets_review_threshold`` and ``meets_threshold``, for the kept
frame's image mode, as the router counts them) and debounce (``debounce.step``: ``min_frames``
counting frames of ``window`` start an event): it alerts when the debounce STARTs an event with
severity ALERT (a detection that is upgraded later alerts too). With no trace (a feedback folder of
stills, not from this store) only the kept frame exists: it is replayed as a still seen for
``visit.window`` frames, for the deployed classifier and the candidate alike, and the outcome says
``kept: best_frame``.

Whether the visit's track moved (the router counts only what moved, ``tracking``) is the visit's,
not the classifier's: a stored event counted, so its track had moved, and the replay takes it as
moving; a still from a feedback folder is taken as moving too (the same for both classifiers).
The trace keeps the best candidate of each frame and its box: the replay follows those boxes through
``visits.step`` as the router did, so a still thing that was the best candidate before the animal
came (a bowl at 0.02) stays a visit of its own. Rows written without a box (before boxes were kept)
are followed as one object.
Everything here is pure and tested as tables (tests/test_gate_replay.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from raccoon_watch import debounce, visits
from raccoon_watch.debounce import CameraState, DebounceParams, Observation
from raccoon_watch.filters import DetectionFilter, meets_review_threshold, meets_threshold
from raccoon_watch.store.events import EventRow
from raccoon_watch.types import Box, Detection, EventKind, Severity
from raccoon_watch.visits import VisitParams, VisitState

KEPT_TRACE, KEPT_BEST_FRAME = "trace", "best_frame"
FROM_LIVE, FROM_REPLAY = "live", "replayed"
DETECTION = Severity.DETECTION.value  # an event row's severity that did not alert (rows before severity: alerts)
SCORE_EPS = 1e-3  # scores are clipped to [eps, 1 - eps] before logits: a 0.0 or 1.0 would be infinite
REPLAY_BOX: Box = (0.25, 0.25, 0.75, 0.75)  # the trace has no boxes: one object, followed frame to frame
REPLAY_CAMERA = "replay"
FRAME_S = 1.0  # seconds between the frames of a replayed still (only debounce's end_after reads them)

TraceFrame = tuple[float, float | None, Box | None]
"""(wall ts, final score of the frame's best candidate (None: no candidate in that frame), its box
normalised (xmin, ymin, xmax, ymax); None: not kept)."""


@dataclass(frozen=True, slots=True)
class KeptVisit:
    """What is kept of one held-out visit, and the user's verdict on it.

    trace: the live per-frame scores, oldest first (empty: none kept). kept_live_score: the live final
    score in the kept frame (the trace frame of the best visit score; None without a trace).
    live_alerted / live_score / live_version: the event row (None: the event is not in this store)."""

    event_id: str
    camera: str
    start_time: float | None
    label: str  # "raccoon" | "not_raccoon"
    trace: tuple[TraceFrame, ...] = ()
    kept_live_score: float | None = None
    live_alerted: bool | None = None
    live_score: float | None = None
    live_version: str | None = None

    @property
    def kept(self) -> str:
        return KEPT_TRACE if self.trace else KEPT_BEST_FRAME


@dataclass(frozen=True, slots=True)
class ReplayRules:
    """The daemon's rules for one visit: its camera's filter (thresholds per image mode), the image
    mode of the kept frame, visit scoring and debounce. ``label``: what the classifier's detections
    are called (the filter's labels must hold it)."""

    filter: DetectionFilter
    visit: VisitParams = VisitParams()
    debounce: DebounceParams = DebounceParams()
    mode: str | None = None
    label: str = "raccoon"

    @property
    def threshold(self) -> float:
        return self.filter.threshold_for(self.mode)


def kept_visit_from_event(row: EventRow, sample_label: str) -> KeptVisit:
    """A ``store.get_event`` row and the verdict -> ``KeptVisit`` (pure).

    Trace rows that are not [ts, visit, score, detector] numbers are left out."""
    trace: list[TraceFrame] = []
    best_visit, kept_live = -1.0, None
    for r in row.scores:
        if not isinstance(r, (list, tuple)) or len(r) < 3 or not _is_number(r[0]):
            continue
        score = float(r[2]) if _is_number(r[2]) else None
        box = tuple(float(v) for v in r[4:8]) if len(r) >= 8 and all(_is_number(v) for v in r[4:8]) else None
        trace.append((float(r[0]), score, box))  # type: ignore[arg-type]
        visit = float(r[1]) if _is_number(r[1]) else 0.0
        if visit > best_visit:  # the first frame of the best visit score: the one eventtrace kept
            best_visit, kept_live = visit, score
    return KeptVisit(row.id, row.camera, _float(row.start_time), sample_label, tuple(trace), kept_live,
                     row.severity != DETECTION, _float(row.top_score), row.model_version or None)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _float(value: object) -> float | None:
    return float(value) if _is_number(value) else None  # type: ignore[arg-type]


def _logit(p: float) -> float:
    p = min(max(p, SCORE_EPS), 1.0 - SCORE_EPS)
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def score_shift(reference: float, model: float) -> float:
    """How much ``model`` moved the kept frame's score away from ``reference``, in logits."""
    return _logit(model) - _logit(reference)


def shift_scores(scores: Sequence[float | None], shift: float) -> tuple[float | None, ...]:
    """Each frame's score moved by ``shift`` logits (frames without a candidate stay None); a zero
    shift returns the scores as they were."""
    if shift == 0.0:
        return tuple(scores)
    return tuple(None if s is None else _sigmoid(_logit(s) + shift) for s in scores)


def replay(frames: Sequence[TraceFrame], rules: ReplayRules) -> tuple[float, bool, int]:
    """Run per-frame scores through the daemon's visit scoring, threshold and debounce.

    Returns (best visit score of the visit, whether the debounce STARTed an event = it alerted, the
    frames replayed)."""
    vstate, cstate = VisitState(), CameraState(REPLAY_CAMERA)
    best, alerted = 0.0, False
    for ts, score, box in frames:
        seen = () if score is None else (Detection(rules.label, float(score), box or REPLAY_BOX, mode=rules.mode),)
        vstate, scored = visits.step(vstate, seen, rules.visit)
        hits = tuple(d for d in scored if meets_review_threshold(d, rules.filter))  # as the router counts
        alerting = tuple(d for d in hits if meets_threshold(d, rules.filter))
        best = max([best, *(d.score for d in scored)])
        obs = Observation(REPLAY_CAMERA, ts, hits, mono=ts, alerting=alerting)
        cstate, events = debounce.step(cstate, obs, (rules.label,), rules.debounce)
        alerted = alerted or any(e.kind is EventKind.START and e.severity is Severity.ALERT for e in events)
    return best, alerted, len(frames)


def still_frames(score: float | None, rules: ReplayRules) -> tuple[TraceFrame, ...]:
    """A kept frame alone, as a still the camera saw for ``visit.window`` frames."""
    return tuple((i * FRAME_S, score, None) for i in range(rules.visit.window))


@dataclass(frozen=True, slots=True)
class VisitOutcome:
    """One held-out visit, judged for the deployed classifier and the candidate (see the module doc).

    *_score: the best visit score (what the threshold compares); *_alerted: it alerts. deployed_from:
    ``live`` (what the daemon did) or ``replayed``. replay_agrees: for a live outcome, whether
    replaying the trace unchanged gives the same (None: not checked)."""

    event_id: str
    camera: str
    start_time: float | None
    label: str
    threshold: float
    mode: str | None
    kept: str
    frames: int
    deployed_score: float
    deployed_alerted: bool
    deployed_from: str
    candidate_score: float
    candidate_alerted: bool
    in_store: bool = False
    replay_agrees: bool | None = None

    def wrong(self, which: Literal["deployed", "candidate"]) -> bool:
        """A raccoon visit that does not alert, or a raccoon-free one that does."""
        alerted = self.deployed_alerted if which == "deployed" else self.candidate_alerted
        return alerted != (self.label == "raccoon")

    def to_dict(self) -> dict[str, object]:
        return {"event_id": self.event_id, "camera": self.camera, "start_time": self.start_time,
                "verdict": self.label, "threshold": round(self.threshold, 4), "mode": self.mode, "kept": self.kept,
                "frames": self.frames, "deployed_score": round(self.deployed_score, 4),
                "deployed_alerted": self.deployed_alerted, "deployed_from": self.deployed_from,
                "deployed_wrong": self.wrong("deployed"), "candidate_score": round(self.candidate_score, 4),
                "candidate_alerted": self.candidate_alerted, "candidate_wrong": self.wrong("candidate"),
                "in_store": self.in_store, "replay_agrees": self.replay_agrees}


def judge_visit(visit: KeptVisit, kept_deployed: float, kept_candidate: float, rules: ReplayRules,
                deployed_version: str | None) -> VisitOutcome:
    """The visit's outcome for the deployed classifier and the candidate.

    kept_deployed / kept_candidate: each one's final score in the kept frame, run offline with the
    daemon's recognizer (0.0: nothing there). deployed_version: ``site_models.model_version`` of the
    deployed classifier; the live outcome stands for it when the event's version is the same (or
    the event predates versions)."""
    live_is_deployed = visit.live_version is None or visit.live_version == deployed_version
    times, scores, boxes = zip(*visit.trace) if visit.trace else ((), (), ())
    if visit.trace and (live_is_deployed or visit.kept_live_score is None):
        reference = kept_deployed  # both run offline on the same kept JPEG
    else:
        reference = visit.kept_live_score if visit.kept_live_score is not None else kept_deployed

    def frames_for(kept_score: float) -> tuple[TraceFrame, ...]:
        if not visit.trace:
            return still_frames(kept_score, rules)
        if reference <= SCORE_EPS:  # the reference found nothing in the kept frame: no scale to move by
            if kept_score <= SCORE_EPS:  # nor did this one: no sign of a change, the visit as it was
                return visit.trace
            return tuple(zip(times, (None if s is None else kept_score for s in scores), boxes))
        return tuple(zip(times, shift_scores(scores, score_shift(reference, kept_score)), boxes))

    cand_score, cand_alerted, frames = replay(frames_for(kept_candidate), rules)
    agrees = None
    if visit.live_alerted is not None and live_is_deployed:
        dep_score = visit.live_score if visit.live_score is not None else 0.0
        dep_alerted, dep_from = visit.live_alerted, FROM_LIVE
        if visit.trace:
            agrees = replay(visit.trace, rules)[1] == visit.live_alerted
    else:
        dep_score, dep_alerted, _ = replay(frames_for(kept_deployed), rules)
        dep_from = FROM_REPLAY
    return VisitOutcome(visit.event_id, visit.camera, visit.start_time, visit.label, rules.threshold, rules.mode,
                        visit.kept, frames, dep_score, dep_alerted, dep_from, cand_score, cand_alerted,
                        visit.live_alerted is not None, agrees)

