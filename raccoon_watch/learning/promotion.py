"""The promotion gate of a retrained classifier: it may not make things worse, and must make the site better.

Inputs are measured by ``train.classifier.retrain.measure`` with the shipped code (the whole model
folder, as the daemon runs it), for the deployed classifier and for the candidate, at the SAME
operating point (the deployed threshold):

- the standard set: the public raccoon test split (recall of its boxes, IoU 0.5) and the held-out
  raccoon-free photos (how many alert); never trained on, never used for a choice;
- the held-out part of the site's own feedback (``raccoon_watch.learning.feedback.split_site``: whole
  nights, both kinds on both sides), each visit judged the way the daemon judged it live
  (``raccoon_watch.learning.replay``: the deployed classifier's outcome is what the daemon did, the candidate
  replays the same visit through visit scoring, threshold and debounce): a "not a raccoon" visit
  that alerts, or a "raccoon" visit that does not, is one site error; and the mean visit score of
  each kind of held-out visit.

``judge_candidate`` promotes only when recall on the test split is no more than ``recall_drop`` below the
deployed model's, at most ``extra_false_alerts`` more held-out photos alert, and the site errors on
the held-out feedback are strictly fewer. ``wrong_visits`` / ``wrong_table`` name the held-out
visits either classifier got wrong, for the card, ``REFUSED.txt``, ``models list`` and the page.
Pure, tested as tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from raccoon_watch.learning.replay import VisitOutcome

DEFAULT_RECALL_DROP = 0.03  # about one raccoon box of the 40-photo test split's 45 (train/README.md)
DEFAULT_EXTRA_FALSE_ALERTS = 0  # not one more alerting held-out raccoon-free photo
SITE_SCORE_MARGIN = 0.05  # mean final score, on the 0..1 scale the threshold uses


@dataclass(frozen=True, slots=True)
class PromotionMetrics:
    """One classifier's measurements (see the module doc)."""

    recall: float  # test split boxes found at the operating point, 0..1
    false_alerts: int  # held-out raccoon-free photos with a detection >= the threshold
    negatives: int  # held-out raccoon-free photos measured
    site_errors: int  # held-out site visits judged wrong (false alert, or a raccoon missed)
    site_events: int  # held-out site visits measured
    site_not_raccoon_mean: float | None = None  # mean best visit score of the held-out "not a raccoon" visits
    site_raccoon_mean: float | None = None  # ... of the held-out "raccoon" visits

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def promotion_metrics(recall: float, false_alerts: int, negatives: int, outcomes: Sequence[VisitOutcome],
                 which: Literal["deployed", "candidate"]) -> PromotionMetrics:
    """One classifier's ``PromotionMetrics`` from the standard set's numbers and the judged held-out visits."""
    scores = {label: [o.deployed_score if which == "deployed" else o.candidate_score
                      for o in outcomes if o.label == label] for label in ("not_raccoon", "raccoon")}
    mean = {k: (sum(v) / len(v) if v else None) for k, v in scores.items()}
    return PromotionMetrics(recall, false_alerts, negatives, sum(o.wrong(which) for o in outcomes), len(outcomes),
                       mean["not_raccoon"], mean["raccoon"])


def wrong_visits(outcomes: Sequence[VisitOutcome]) -> tuple[VisitOutcome, ...]:
    """The held-out visits the deployed classifier or the candidate got wrong, oldest first."""
    wrong = [o for o in outcomes if o.wrong("deployed") or o.wrong("candidate")]
    return tuple(sorted(wrong, key=lambda o: (o.start_time is None, o.start_time or 0.0, o.event_id)))


def _when(start_time: float | None) -> str:
    return "-" if start_time is None else datetime.fromtimestamp(start_time).strftime("%Y-%m-%d %H:%M:%S")


def _alerts(alerted: bool) -> str:
    return "alert" if alerted else "no alert"


def wrong_table(outcomes: Sequence[VisitOutcome]) -> str:
    """``wrong_visits`` as plain text, one visit a line (REFUSED.txt, the command's stderr)."""
    wrong = wrong_visits(outcomes)
    if not wrong:
        return "no held-out visit was wrong for either classifier\n"
    head = f"{'event':<28} {'camera':<10} {'time':<19} {'verdict':<11} {'deployed':<20} {'candidate':<20} kept"
    lines = [head]
    for o in wrong:
        deployed = f"{o.deployed_score:.3f} {_alerts(o.deployed_alerted)}{' X' if o.wrong('deployed') else ''}"
        candidate = f"{o.candidate_score:.3f} {_alerts(o.candidate_alerted)}{' X' if o.wrong('candidate') else ''}"
        lines.append(f"{o.event_id:<28} {o.camera:<10} {_when(o.start_time):<19} {o.label:<11} {deployed:<20} "
                     f"{candidate:<20} {o.kept}{' (deployed: live)' if o.deployed_from == 'live' else ''}")
    return "\n".join(lines) + "\n(X: wrong; scores are visit scores, the threshold compares them)\n"


def site_better(deployed: PromotionMetrics, candidate: PromotionMetrics) -> bool:
    """Fewer held-out site errors, or as many with clearly lower scores on the not-raccoon frames
    and no clearly lower ones on the raccoon frames (see the module doc)."""
    if candidate.site_errors != deployed.site_errors:
        return candidate.site_errors < deployed.site_errors
    d_nr, c_nr = deployed.site_not_raccoon_mean, candidate.site_not_raccoon_mean
    if d_nr is None or c_nr is None or d_nr - c_nr < SITE_SCORE_MARGIN - 1e-9:
        return False
    d_r, c_r = deployed.site_raccoon_mean, candidate.site_raccoon_mean
    return d_r is None or c_r is None or c_r >= d_r - SITE_SCORE_MARGIN - 1e-9


@dataclass(frozen=True, slots=True)
class PromotionTolerance:
    recall_drop: float = DEFAULT_RECALL_DROP
    extra_false_alerts: int = DEFAULT_EXTRA_FALSE_ALERTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.recall_drop <= 1.0:
            raise ValueError(f"recall_drop must be in 0..1, got {self.recall_drop}")
        if self.extra_false_alerts < 0:
            raise ValueError(f"extra_false_alerts must be >= 0, got {self.extra_false_alerts}")


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    reasons: tuple[str, ...]  # why not (empty when promoted)


def judge_candidate(deployed: PromotionMetrics, candidate: PromotionMetrics,
                    tolerance: PromotionTolerance = PromotionTolerance()) -> PromotionDecision:
    """Promote the candidate or not, and why not (every failed check is named)."""
    reasons = []
    if deployed.negatives != candidate.negatives or deployed.site_events != candidate.site_events:
        reasons.append("deployed and candidate were measured on different sets")
    if candidate.recall < deployed.recall - tolerance.recall_drop - 1e-9:
        reasons.append(f"test-split recall {candidate.recall:.3f} is more than {tolerance.recall_drop} below the "
                       f"deployed {deployed.recall:.3f}")
    if candidate.false_alerts > deployed.false_alerts + tolerance.extra_false_alerts:
        reasons.append(f"{candidate.false_alerts} of {candidate.negatives} held-out raccoon-free photos alert, "
                       f"deployed {deployed.false_alerts} (allowed {tolerance.extra_false_alerts} more)")
    if candidate.site_events == 0:
        reasons.append("no held-out site feedback to compare on (needs feedback on at least two events)")
    elif not site_better(deployed, candidate):
        reasons.append(f"not better on the held-out site feedback: {candidate.site_errors} of "
                       f"{candidate.site_events} events wrong, deployed {deployed.site_errors}; mean scores "
                       f"not-raccoon {_f(candidate.site_not_raccoon_mean)} vs {_f(deployed.site_not_raccoon_mean)}, "
                       f"raccoon {_f(candidate.site_raccoon_mean)} vs {_f(deployed.site_raccoon_mean)}")
    return PromotionDecision(not reasons, tuple(reasons))


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
