"""Two-stage recognition: the detector proposes, the raccoon classifier decides.

    image (full resolution) --detector--> proposals (any animal-like box, low threshold)
          --crop each from the FULL image, with context--> classifier --> P(raccoon) per crop
          --> views of one animal grouped (``group_views``) --> Detection(score = final_score(
              mean of its best views' P, detector score), detector_score)

This is the one inference path: the daemon's detector workers, ``raccoon-watch detect`` and
``python -m train evaluate`` all call ``Recognizer.recognize``. The daemon's workers also pass
``CandidateHints`` per frame: where the router's tracks expect an animal, and (in infrared frames)
where the motion gate saw something move. ``extra_candidates`` turns them into candidates the
detector did not propose above the threshold, classified in the same batched call; without hints
(``detect``, ``train evaluate``) the result is exactly what it was without this. Camera-trap systems work the same way
(MegaDetector finds animals, SpeciesNet names them on crops), as does Frigate 0.17's object
classification.

Boxes: ``Box`` everywhere, normalised (xmin, ymin, xmax, ymax) of the FULL image passed in. Crop
windows are integer pixels (x0, y0, x1, y1) of that image, ends exclusive, like ``Frame.crop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np
import structlog

from raccoon_watch.motion import Crop, boxes_from_crop
from raccoon_watch.recognition.imagemode import IR, image_mode
from raccoon_watch.types import ORIGIN_MOTION, ORIGIN_TRACK, Box, Detection, box_area, box_iou

if TYPE_CHECKING:  # detectors/ imports this module (the factory builds Recognizers)
    from raccoon_watch.recognition.detectors.base import Detector

log = structlog.get_logger(__name__)

PixelWindow = tuple[int, int, int, int]
"""(x0, y0, x1, y1) integer pixels of an image, ends exclusive: ``image[y0:y1, x0:x1]``."""

DEFAULT_PROPOSAL_THRESHOLD = 0.1
DEFAULT_MARGIN = 0.2
DEFAULT_MAX_CANDIDATES = 8
DEFAULT_DETECTOR_WEIGHT = 0.0  # final score = P(raccoon) alone unless the classifier card says otherwise
# Views of one animal (``group_views``), chosen on validation (train/README.md, "The two stages"):
DEFAULT_VIEW_IOU = 0.3  # a proposal overlapping a better-proposed box this much is another view of it
DEFAULT_VIEW_CONTAINMENT = 0.7  # ... and so is one lying this much inside it (a head, a half)
DEFAULT_VIEW_MIN_AREA = 0.1  # a view smaller than this share of the animal's box is absorbed, not counted
DEFAULT_VIEWS = 2  # P(raccoon) of an animal = the mean of its best this-many views
HINT_MIN_DETECTOR_SCORE = 0.01
"""Two-stage detectors return proposals down to this score, so that a tracked animal the detector
still sees, only under the proposal threshold, is classified at the detector's box (``extra_candidates``)."""
DEFAULT_HINT_IOU = 0.3  # a hint overlapping a candidate this much is that candidate
DEFAULT_EXTRA_SCORE_FLOOR = 0.1  # detector score given to a hint or motion candidate (final_score's factor)
DEFAULT_MAX_EXTRA = 4  # hint and motion candidates classified per image, on top of max_candidates


@dataclass(frozen=True, slots=True)
class RecognitionParams:
    """How proposals become classifier crops.

    proposal_threshold: detector score from which a box is a candidate (the detector's job is recall).
    margin: context added on each side of a candidate box, as a share of the box's longer side.
    max_candidates: best-scoring candidates classified per image (bounds the cost of a busy frame).
    label: the label a classified candidate carries (the classifier's positive class).
    detector_weight: exponent of the detector score in the final score (``final_score``).
    view_iou, view_containment, view_min_area, views: how proposals are grouped into animals
    (``group_views``).
    hint_iou, extra_score_floor, max_extra: candidates from hints (``extra_candidates``).
    """

    proposal_threshold: float = DEFAULT_PROPOSAL_THRESHOLD
    margin: float = DEFAULT_MARGIN
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    label: str = "raccoon"
    detector_weight: float = DEFAULT_DETECTOR_WEIGHT
    view_iou: float = DEFAULT_VIEW_IOU
    view_containment: float = DEFAULT_VIEW_CONTAINMENT
    view_min_area: float = DEFAULT_VIEW_MIN_AREA
    views: int = DEFAULT_VIEWS
    hint_iou: float = DEFAULT_HINT_IOU
    extra_score_floor: float = DEFAULT_EXTRA_SCORE_FLOOR
    max_extra: int = DEFAULT_MAX_EXTRA

    def __post_init__(self) -> None:
        if not 0.0 <= self.proposal_threshold <= 1.0:
            raise ValueError(f"proposal_threshold must be in 0..1, got {self.proposal_threshold}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"margin must be in 0..2, got {self.margin}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if not 0.0 <= self.detector_weight <= 1.0:
            raise ValueError(f"detector_weight must be in 0..1, got {self.detector_weight}")
        for name in ("view_iou", "view_containment"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.view_min_area <= 1.0:
            raise ValueError(f"view_min_area must be in 0..1, got {self.view_min_area}")
        if self.views < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if not 0.0 < self.hint_iou <= 1.0:
            raise ValueError(f"hint_iou must be in (0, 1], got {self.hint_iou}")
        if not 0.0 <= self.extra_score_floor <= 1.0:
            raise ValueError(f"extra_score_floor must be in 0..1, got {self.extra_score_floor}")
        if self.max_extra < 0:
            raise ValueError(f"max_extra must be >= 0, got {self.max_extra}")


@dataclass(frozen=True, slots=True)
class CandidateHints:
    """Where to look in one image besides the detector's proposals (the detector workers build one per
    frame). Boxes normalised (xmin, ymin, xmax, ymax) of the FULL image.

    tracked: the predicted boxes of the router's tracks (``TrackHint.box_at`` the frame's time).
    moving: the motion gate's regions of this frame (``Frame.motion_regions``); used in infrared frames only.
    """

    tracked: tuple[Box, ...] = ()
    moving: tuple[Box, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tracked or self.moving)


class Classifier(Protocol):
    name: str
    input_size: tuple[int, int]  # (height, width) of a crop

    def classify(self, crops_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """P(positive class) per crop, float (N,); crops are RGB uint8 (height, width, 3)."""

    def close(self) -> None: ...


def crop_window(box: Box, width: int, height: int, margin: float) -> PixelWindow:
    """The classifier's view of a normalised (xmin, ymin, xmax, ymax) box in a width x height image.

    A square around the box centre, of side (1 + 2 * margin) * the box's longer side in pixels,
    moved inside the image where it sticks out, and cut to the image where it is larger than it
    (then it is not square). At least 1 x 1 pixel.
    """
    xmin, ymin, xmax, ymax = (min(max(v, 0.0), 1.0) for v in box)
    cx, cy = (xmin + xmax) / 2.0 * width, (ymin + ymax) / 2.0 * height
    side = max((xmax - xmin) * width, (ymax - ymin) * height, 1.0) * (1.0 + 2.0 * margin)
    spans = []
    for centre, limit in ((cx, width), (cy, height)):
        extent = min(side, float(limit))
        start = min(max(centre - extent / 2.0, 0.0), limit - extent)
        lo = int(round(start))
        hi = max(lo + 1, min(limit, int(round(start + extent))))
        spans.append((lo, hi))
    (x0, x1), (y0, y1) = spans
    return x0, y0, x1, y1


def classifier_crop(image_bgr: np.ndarray, box: Box, margin: float, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (height, width, 3) crop of a BGR uint8 image around a normalised box, resized to
    ``size`` = (height, width): INTER_AREA when shrinking (no aliasing), INTER_LINEAR when enlarging.
    Train-time crops are cut by this same function."""
    h, w = image_bgr.shape[:2]
    x0, y0, x1, y1 = crop_window(box, w, h, margin)
    patch = image_bgr[y0:y1, x0:x1]
    out_h, out_w = size
    shrinking = patch.shape[0] > out_h or patch.shape[1] > out_w
    patch = cv2.resize(patch, (out_w, out_h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)


def final_score(probability: float, detector_score: float, detector_weight: float) -> float:
    """The score thresholds, visits and the debounce use: P(raccoon) x detector_score ** weight.

    With weight 0 it is the classifier's probability alone. A small weight (the shipped 0.1: a
    detector score of 0.05 costs a quarter, 0.5 costs 7 %) ranks a well-proposed animal above a
    faint proposal the classifier happens to like. Chosen on validation (train/README.md,
    "The two stages").
    """
    return float(probability) * max(float(detector_score), 1e-6) ** detector_weight


def _inside(box: Box, outer: Box) -> float:
    """Share of ``box``'s area inside ``outer`` (both normalised xmin, ymin, xmax, ymax)."""
    area = box_area(box)
    inter = box_area((max(box[0], outer[0]), max(box[1], outer[1]), min(box[2], outer[2]), min(box[3], outer[3])))
    return inter / area if area > 0 else 0.0


def group_views(candidates: Sequence[Detection], probabilities: Sequence[float],
                params: RecognitionParams) -> list[Detection]:
    """One detection per animal from classified proposals: the detector frames, the classifier names.

    The SSD proposes several boxes per animal (the whole body, the head, a half, a looser box).
    Taken in the detector's order, a proposal that overlaps an earlier kept box by IoU >=
    ``view_iou`` or lies ``view_containment`` of its area inside it is another VIEW of that
    animal, not an animal of its own. Each animal keeps its best-proposed box (the detector's
    localisation) and its P(raccoon) is the mean of its ``views`` best views' probabilities: a cat
    whose ear crop alone looks like a raccoon stays a cat, and a raccoon seen well in two crops
    is sure. A view smaller than ``view_min_area`` of the animal's box (a patch of fur or grass
    inside it) is absorbed without a vote. Score = ``final_score(that mean, the kept box's detector score, detector_weight)``.

    candidates: detections with detector scores in ``score``, boxes normalised (xmin, ymin, xmax,
    ymax); probabilities: P(raccoon) per candidate, same order. Returns best final score first.
    """
    if len(candidates) != len(probabilities):
        raise ValueError(f"expected one probability per candidate, got {len(probabilities)} for {len(candidates)}")
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].score, reverse=True)
    animals: list[tuple[Detection, list[float]]] = []
    for i in order:
        det, probability = candidates[i], float(probabilities[i])
        for kept, views in animals:
            if box_iou(det.box, kept.box) >= params.view_iou or _inside(det.box, kept.box) >= params.view_containment:
                if box_area(det.box) >= params.view_min_area * box_area(kept.box):
                    views.append(probability)
                break
        else:
            animals.append((det, [probability]))
    out = []
    for kept, views in animals:
        probability = sum(sorted(views, reverse=True)[:params.views]) / min(len(views), params.views)
        out.append(replace(kept, label=params.label, detector_score=kept.score,
                           score=final_score(probability, kept.score, params.detector_weight)))
    return sorted(out, key=lambda d: (d.score, d.detector_score or 0.0), reverse=True)


def extra_candidates(candidates: Sequence[Detection], below: Sequence[Detection], hints: CandidateHints,
                     mode: str, params: RecognitionParams) -> list[Detection]:
    """Candidates the proposals above the threshold missed, from one image's hints. Pure.

    candidates: the image's proposals already chosen (score >= proposal_threshold); below: its other
    proposals, under the threshold (the detector returns them down to ``HINT_MIN_DETECTOR_SCORE``);
    mode: the image's ``imagemode.image_mode``. All boxes normalised (xmin, ymin, xmax, ymax).

    In order, each hint not already covered by a candidate (IoU >= ``hint_iou`` with one chosen so
    far) adds one:

    ==============================================  =========================================  ========
    hint                                            candidate                                  origin
    ==============================================  =========================================  ========
    tracked box, a proposal below overlaps it       the best such proposal (the detector's     detector
    (IoU >= hint_iou)                               box, its score)
    tracked box, no proposal there                  the predicted box itself                   track
    moving region, infrared image                   the region's box                           motion
    moving region, colour image                     none (daylight motion is leaves, shadows)  -
    ==============================================  =========================================  ========

    Their score (the detector score ``final_score`` weighs) is at least ``extra_score_floor``, and at
    most ``max_extra`` are added, tracked ones first.
    """
    taken = [d.box for d in candidates]
    out: list[Detection] = []

    def covered(box: Box) -> bool:
        return any(box_iou(box, other) >= params.hint_iou for other in taken)

    def add(hint: Box, det: Detection) -> None:
        if len(out) < params.max_extra and not covered(hint) and not covered(det.box):
            out.append(replace(det, score=max(det.score, params.extra_score_floor)))
            taken.append(det.box)

    for box in hints.tracked:
        seen = [d for d in below if box_iou(d.box, box) >= params.hint_iou]
        add(box, max(seen, key=lambda d: d.score) if seen else Detection(params.label, 0.0, box, origin=ORIGIN_TRACK))
    if mode == IR:
        for box in hints.moving:
            add(box, Detection(params.label, 0.0, box, origin=ORIGIN_MOTION))
    return out


def _region(image: np.ndarray, crop: PixelWindow | None) -> np.ndarray:
    if crop is None:
        return image
    x0, y0, x1, y1 = crop
    return image[y0:y1, x0:x1]


class Recognizer:
    """A detector, and optionally a classifier that rescores its candidates.

    Without a classifier it is the detector alone (old single-stage model folders): scores are the
    detector's. With one, every detection above ``proposal_threshold`` (best ``max_candidates`` per
    image) is cropped from the full image and classified; all crops of one ``recognize`` call go to
    the classifier in one batched call; the views of one animal become one detection
    (``group_views``) scored by ``final_score``. The detector's score stays in ``detector_score``.
    """

    def __init__(self, detector: Detector, classifier: Classifier | None = None,
                 params: RecognitionParams = RecognitionParams(), threshold: float | None = None,
                 ir_threshold: float | None = None, review_threshold: float | None = None,
                 ir_review_threshold: float | None = None) -> None:
        self.detector = detector
        self.classifier = classifier
        self.params = params
        self.threshold = threshold if threshold is not None else detector.threshold
        self.ir_threshold = ir_threshold  # the card's threshold for infrared frames; None: ``threshold``
        # the card's review thresholds (``review_thresholds``): None, None = no detections, only alerts
        self.review_threshold = review_threshold
        self.ir_review_threshold = ir_review_threshold  # None: ``review_threshold``
        self.name = detector.name if classifier is None else f"{detector.name}+{classifier.name}"
        self.labels = detector.labels
        self.max_batch = detector.max_batch
        self.input_size = detector.input_size

    def recognize(self, images: Sequence[np.ndarray], crops: Sequence[PixelWindow | None] | None = None,
                  hints: Sequence[CandidateHints | None] | None = None) -> list[list[Detection]]:
        """Detections per image, boxes normalised (xmin, ymin, xmax, ymax) of the FULL image, best first,
        each carrying its image's mode (``imagemode.image_mode``: which threshold applies to it).

        images: BGR uint8 (H, W, 3). crops: per image None (detect on all of it) or the pixel window
        the detector should look at (the motion gate's crop); the classifier always crops from the
        full image. hints: per image None or where else to look (``extra_candidates``; with a
        classifier stage only: the detector alone has nothing to judge them with).
        """
        crops = list(crops) if crops is not None else [None] * len(images)
        if len(crops) != len(images):
            raise ValueError(f"expected one crop (or None) per image, got {len(crops)} for {len(images)} images")
        hints = list(hints) if hints is not None else [None] * len(images)
        if len(hints) != len(images):
            raise ValueError(f"expected one hint (or None) per image, got {len(hints)} for {len(images)} images")
        found = self.detector.detect([_region(im, c) for im, c in zip(images, crops)])
        per_image = [
            list(dets) if c is None else boxes_from_crop(list(dets), Crop(*c), im.shape[1], im.shape[0])
            for im, c, dets in zip(images, crops, found)
        ]
        modes = [image_mode(im) for im in images]
        if self.classifier is not None:
            per_image = self._classify(images, per_image, modes, hints)
        return [[replace(d, mode=mode) for d in dets] for dets, mode in zip(per_image, modes)]

    def threshold_for(self, mode: str | None) -> float | None:
        """The deployed threshold for a detection of this image mode (the cards'), None if unknown."""
        return self.ir_threshold if mode == IR and self.ir_threshold is not None else self.threshold

    def _classify(self, images: Sequence[np.ndarray], per_image: list[list[Detection]], modes: Sequence[str],
                  hints: Sequence[CandidateHints | None]) -> list[list[Detection]]:
        p = self.params
        candidates = []
        for dets, mode, hint in zip(per_image, modes, hints):
            chosen = [d for d in dets if d.score >= p.proposal_threshold][:p.max_candidates]
            if hint:
                below = [d for d in dets if d.score < p.proposal_threshold]
                chosen += extra_candidates(chosen, below, hint, mode, p)
            candidates.append(chosen)
        patches = [classifier_crop(im, d.box, p.margin, self.classifier.input_size)
                   for im, cands in zip(images, candidates) for d in cands]
        if not patches:
            return [[] for _ in images]
        scores = iter(self.classifier.classify(patches).tolist())
        return [group_views(cands, [next(scores) for _ in cands], p) for cands in candidates]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``recognize`` on whole images (the Detector interface)."""
        return self.recognize(images)

    def close(self) -> None:
        self.detector.close()
        if self.classifier is not None:
            self.classifier.close()
