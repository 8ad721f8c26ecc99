"""Find a model on disk and build the detector backend that runs it.

A model path may be:
- a model directory (what train/ exports to models/<name>/): ``model.tflite`` (else ``*int8*.tflite``,
  else the only ``*.tflite``; the card's ``"tflite"`` key names the file when several exist),
  ``saved_model/`` (a TF2 SavedModel), a label map (``labelmap.pbtxt``, ``label_map.pbtxt``,
  ``labels.txt``, ``labelmap.txt``) and ``model_card.json``;
- a ``.tflite`` file: the label map is looked for beside it (also ``*labelmap*.txt``/``*.pbtxt``, so
  the stock ``coco_labelmap.txt`` is found next to the COCO model);
- a SavedModel directory (has ``saved_model.pb``): label map and card in it or in its parent.

A model directory may also hold the second stage, the raccoon classifier (``create_recognizer``):
``classifier_card.json`` naming its ``tflite`` file (default ``classifier.tflite``), its
``input_size``, crop ``margin``, ``proposal_threshold``, ``max_candidates``, ``detector_weight``, how
proposals group into animals (``view_iou``, ``view_containment``, ``view_min_area``, ``views``), the system's deployed
``threshold`` (on the final score) and ``proposer.labels``, the detector labels it was
trained behind. A card without its file, a file without its card, another input size or other
proposer labels are ModelErrors naming the file. Folders without the card are single-stage.

From ``model_card.json`` the factory reads ``labels`` (list, class id 1 first), ``input_size``
([height, width] or one int) and the deployed ``threshold`` (also ``deployed_threshold`` or
``deploy.threshold``); a label map file wins over the card's labels.

A card is checked where it is read (``check_card``), each problem a ModelError naming the card and
the key: ``input_size`` must be one positive whole number or [height, width] of them, and must match
the model's own input tensor; ``tflite`` must name a file inside the model folder (a plain relative
name: no absolute path, no ``..``), so a card cannot make the daemon open ``/etc/passwd``. Lists
quoted in errors are cut (``quoted``): a 10,000-line label map gives a short line, not 129 KB.

``backend: auto`` picks TensorFlow when a SavedModel exists and TensorFlow sees a GPU, else TFLite
(TensorFlow is imported for the check only when a SavedModel exists, TensorFlow is installed and a
GPU driver is present). With only a SavedModel, ``auto`` uses TensorFlow on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from raccoon_watch.config import DEFAULT_MODEL_DIR, DetectorConfig, shared_dir
from raccoon_watch.recognition.detectors.base import DEFAULT_MIN_SCORE, Detector, ModelError, ModelNotFound
from raccoon_watch.recognition.imagemode import COLOR, IR, MODES
from raccoon_watch.recognition.labels import LabelMapError, load_labels, parse_lines
from raccoon_watch.recognition.modelfiles import (
    CLASSIFIER_CARD,
    CLASSIFIER_FILE,
    LABELMAP_NAMES,
    MODEL_CARD,
    MODEL_TFLITE,
    SAVED_MODEL_DIR,
    SAVED_MODEL_PB,
)
from raccoon_watch.recognition.recognizer import (
    DEFAULT_DETECTOR_WEIGHT,
    DEFAULT_MARGIN,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_PROPOSAL_THRESHOLD,
    DEFAULT_VIEW_CONTAINMENT,
    DEFAULT_VIEW_IOU,
    DEFAULT_VIEW_MIN_AREA,
    DEFAULT_VIEWS,
    HINT_MIN_DETECTOR_SCORE,
    RecognitionParams,
    Recognizer,
)

if TYPE_CHECKING:  # imported when a classifier stage is built, not at start-up
    from raccoon_watch.recognition.classifier import TFLiteClassifier
    from raccoon_watch.recognition.detectors.remote import RemoteLink

log = structlog.get_logger(__name__)

LABELMAP_GLOBS = ("*.pbtxt", "*labelmap*.txt", "*label_map*.txt", "*labels*.txt")
CARD_NAME = MODEL_CARD
CLASSIFIER_CARD_NAME = CLASSIFIER_CARD  # the names train/ and tests import from here
STOCK_MODEL = Path("pretrained") / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite"


@dataclass(frozen=True)
class ModelFiles:
    """What one model path holds; any of the parts may be missing."""

    path: Path
    tflite: Path | None = None
    saved_model: Path | None = None
    labelmap: Path | None = None
    card: dict[str, Any] = field(default_factory=dict)
    classifier: Path | None = None  # the second stage's .tflite, when the folder has one
    classifier_card: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        value = self.card.get("threshold", self.card.get("deployed_threshold"))
        if value is None and isinstance(self.card.get("deploy"), dict):
            value = self.card["deploy"].get("threshold")
        return float(value) if value is not None else None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the card declares, None without one (``check_card`` refused bad ones)."""
        return card_size(self.card.get("input_size"))


def quoted(values: Any, limit: int = 6, each: int = 40) -> str:
    """A list for an error message, cut: "['a', 'b', ... 9,995 more]" (each item at most ``each`` chars)."""
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    shown = ", ".join(repr(str(v)[:each]) for v in items[:limit])
    more = len(items) - limit
    return f"[{shown}{f', ... {more:,} more' if more > 0 else ''}]"


def card_size(value: Any) -> tuple[int, int] | None:
    """A card's ``input_size`` as (height, width): one positive whole number, or [height, width];
    None when absent. ValueError for anything else (pure)."""
    if value is None:
        return None
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100_000
    if whole(value):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) in (2, 3) and all(whole(v) for v in value[:2]):
        return (value[0], value[1])  # a third entry (channels) is allowed and ignored
    raise ValueError(f"input_size {str(value)[:40]!r} is not [height, width] or one whole number of pixels")


def inside(directory: Path, name: Any, where: str) -> Path:
    """``directory / name`` for a file a card names; ModelError naming ``where`` (card and key) when
    the name is not a plain relative path inside the folder (absolute, ``..``, empty)."""
    text = str(name)
    parts = Path(text).parts
    if not isinstance(name, str) or not text or Path(text).is_absolute() or ".." in parts or "\x00" in text:
        raise ModelError(f"{where}: {text[:80]!r} must name a file inside {directory} (no absolute path, no '..')")
    return directory / text


def check_card(card: dict[str, Any], path: Path) -> dict[str, Any]:
    """The card, once its keys the factory uses are sound; ModelError naming the card and the key."""
    try:
        card_size(card.get("input_size"))
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None
    if "tflite" in card:
        inside(path.parent, card["tflite"], f"{path}: tflite")
    return card


def find_model(path: str | os.PathLike[str]) -> ModelFiles:
    """Inspect a model file or directory; ModelError when it holds no model."""
    p = Path(path)
    if not p.exists():
        raise ModelNotFound(f"{p}: model path not found", p)
    if p.is_file():
        return ModelFiles(p, tflite=p, labelmap=_find_labelmap(p.parent), card=_read_card(p.parent))
    if (p / SAVED_MODEL_PB).is_file():
        home = p if _find_labelmap(p) or (p / CARD_NAME).is_file() else p.parent
        return ModelFiles(p, saved_model=p, labelmap=_find_labelmap(home), card=_read_card(home))
    card = _read_card(p)
    tflite = _find_tflite(p, card)
    saved = p / SAVED_MODEL_DIR if (p / SAVED_MODEL_DIR / SAVED_MODEL_PB).is_file() else None
    if tflite is None and saved is None:
        raise ModelError(f"{p}: no model found (looked for model.tflite, *.tflite, saved_model/saved_model.pb)")
    classifier, classifier_card = _find_classifier(p)
    return ModelFiles(p, tflite=tflite, saved_model=saved, labelmap=_find_labelmap(p), card=card,
                      classifier=classifier, classifier_card=classifier_card)


def _find_classifier(directory: Path) -> tuple[Path | None, dict[str, Any]]:
    """The classifier stage of a model folder: (its .tflite, its card), or (None, {}) for none."""
    card = _read_card(directory, CLASSIFIER_CARD_NAME)
    if not card:
        if (directory / CLASSIFIER_FILE).exists():
            raise ModelError(f"{directory / CLASSIFIER_FILE}: classifier without its {CLASSIFIER_CARD_NAME} "
                             "(input size, margin and threshold are unknown); restore the card or remove the file")
        return None, {}
    name = card.get("tflite", CLASSIFIER_FILE)
    path = inside(directory, name, f"{directory / CLASSIFIER_CARD_NAME}: tflite")
    if not path.is_file():
        raise ModelError(f"{path}: the classifier stage named by {directory / CLASSIFIER_CARD_NAME} is missing")
    return path, card


def _find_tflite(directory: Path, card: dict[str, Any]) -> Path | None:
    if "tflite" in card:  # check_card refused a name outside the folder
        named = inside(directory, card["tflite"], f"{directory / CARD_NAME}: tflite")
        if named.is_file():
            return named
    if (directory / MODEL_TFLITE).is_file():
        return directory / MODEL_TFLITE
    candidates = [c for c in sorted(directory.glob("*.tflite")) if c.name != CLASSIFIER_FILE]
    int8 = [c for c in candidates if "int8" in c.name]
    return int8[0] if int8 else candidates[0] if len(candidates) == 1 else None


def _find_labelmap(directory: Path) -> Path | None:
    for name in LABELMAP_NAMES:
        if (directory / name).is_file():
            return directory / name
    for pattern in LABELMAP_GLOBS:
        found = sorted(directory.glob(pattern))
        if len(found) == 1:
            return found[0]
    return None


def _read_card(directory: Path, name: str = CARD_NAME) -> dict[str, Any]:
    path = directory / name
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ModelError(f"{path}: unreadable model card: {exc}") from None
    if not isinstance(card, dict):
        raise ModelError(f"{path}: model card must be a JSON object")
    return check_card(card, path)


def _labels_for(files: ModelFiles, labelmap: Path | None) -> tuple[str, ...]:
    source = labelmap or files.labelmap
    if labelmap is not None and not Path(labelmap).exists():
        raise ModelNotFound(f"{labelmap}: label map not found", Path(labelmap))
    try:
        if source is not None:
            return load_labels(source)
        if isinstance(files.card.get("labels"), list) and files.card["labels"]:
            return parse_lines("\n".join(map(str, files.card["labels"])), f"{files.path}/{CARD_NAME}")
    except LabelMapError as exc:
        raise ModelError(str(exc)) from None
    raise ModelError(f"{files.path}: no label map beside the model ({', '.join(LABELMAP_NAMES)}) "
                     f"and no 'labels' in {CARD_NAME}; set detector.labelmap")


GPU_DRIVER_PATHS = (Path("/proc/driver/nvidia"), Path("/dev/kfd"))  # NVIDIA (CUDA) and AMD (ROCm) drivers


def _gpu_visible() -> bool:
    """True when TensorFlow sees a GPU. TensorFlow (seconds and hundreds of MB to import) is only
    imported when it is installed and a GPU driver is present, so a CPU box stays on TFLite cheaply."""
    if importlib.util.find_spec("tensorflow") is None or not any(p.exists() for p in GPU_DRIVER_PATHS):
        return False
    from raccoon_watch.recognition.detectors.tensorflow import visible_gpus

    return bool(visible_gpus())


def choose_backend(requested: str, files: ModelFiles) -> str:
    """'tflite' or 'tensorflow' for this model; ModelError when the requested one has no model file.
    ``remote``'s local models are picked as ``auto``'s."""
    if requested == "remote":
        requested = "auto"
    if requested == "tflite" and files.tflite is None:
        raise ModelError(f"{files.path}: backend 'tflite' needs a .tflite model; found only a SavedModel")
    if requested == "tensorflow" and files.saved_model is None:
        raise ModelError(f"{files.path}: backend 'tensorflow' needs a SavedModel; found only {files.tflite}")
    if requested != "auto":
        return requested
    if files.saved_model is not None and (files.tflite is None or _gpu_visible()):
        return "tensorflow"
    return "tflite"


def create_detector(cfg: DetectorConfig, model_dir: Path | None = None, *,
                    min_score: float = DEFAULT_MIN_SCORE) -> Detector:
    """Build the backend for ``model_dir`` (default: cfg.model, else resolve_default_model())."""
    files = find_model(model_dir or cfg.model or resolve_default_model())
    backend = choose_backend(cfg.backend, files)
    if backend == "tflite" and files.tflite is not None:  # "not a model" before "no label map"
        from raccoon_watch.recognition.detectors.tflite import read_model

        read_model(files.tflite)
    labels = _labels_for(files, cfg.labelmap)
    if backend == "tensorflow":
        from raccoon_watch.recognition.detectors.tensorflow import TensorFlowDetector

        assert files.saved_model is not None
        return _size_checked(files, files.saved_model, TensorFlowDetector(
            files.saved_model, labels, min_score=min_score, threshold=files.threshold,
            batch_size=cfg.batch_size, input_size=files.input_size))
    from raccoon_watch.recognition.detectors.tflite import TFLiteDetector

    assert files.tflite is not None
    return _size_checked(files, files.tflite, TFLiteDetector(
        files.tflite, labels, num_threads=cfg.num_threads, min_score=min_score, threshold=files.threshold,
        batch_size=cfg.batch_size))


def _size_checked(files: ModelFiles, model_file: Path, detector: Detector) -> Detector:
    """The loaded detector, closed and refused (ModelError) when its card's input_size disagrees."""
    try:
        _check_size(files, detector.input_size, model_file)
    except ModelError:
        detector.close()
        raise
    return detector


def _check_size(files: ModelFiles, model_size: tuple[int, int], model_file: Path) -> None:
    """The card's ``input_size`` must be what the model's input tensor takes (0: any size)."""
    declared = files.input_size
    if declared is None:
        return
    if any(m and m != d for m, d in zip(model_size, declared)):
        raise ModelError(f"{files.path / CARD_NAME}: input_size {list(declared)} but {model_file.name} takes "
                         f"{list(model_size)} (height, width): the card is not this model's")


def create_recognizer(cfg: DetectorConfig, model_dir: Path | None = None, *,
                      min_score: float = DEFAULT_MIN_SCORE, classifier_dir: Path | None = None,
                      remote: RemoteLink | None = None) -> Recognizer:
    """The detector of ``model_dir`` (default: cfg.model, else resolve_default_model()) and, when
    the folder has one and ``cfg.classifier`` is on, its classifier stage: what every caller runs.
    ``classifier_dir``: a folder holding another classifier stage (``classifier.tflite`` and its
    card: a site's retrained one, ``raccoon_watch.learning.site_models``), used instead of the folder's own.

    ``backend: remote``: those local models (picked as ``auto``) behind a ``RemoteRecognizer`` that
    asks ``cfg.remote.url`` first (raccoon_watch.recognition.detectors.remote); ``remote``: the link its workers
    share (the daemon makes one; without it each recognizer gets its own)."""
    if cfg.backend == "remote":
        from raccoon_watch.recognition.detectors.remote import RemoteLink as Link
        from raccoon_watch.recognition.detectors.remote import RemoteRecognizer

        assert cfg.remote is not None  # DetectorConfig refuses backend remote without its section
        local = create_recognizer(cfg.model_copy(update={"backend": "auto", "remote": None}), model_dir,
                                  min_score=min_score, classifier_dir=classifier_dir)
        link = remote if remote is not None else Link(cfg.remote)
        link.local = local.name
        return RemoteRecognizer(local, link)
    path = model_dir or cfg.model or resolve_default_model()
    files = find_model(path)
    if classifier_dir is not None and cfg.classifier:
        classifier, classifier_card = _find_classifier(Path(classifier_dir))
        if classifier is None:
            raise ModelError(f"{classifier_dir}: no {CLASSIFIER_CARD_NAME} here")
        files = replace(files, classifier=classifier, classifier_card=classifier_card)
    if not (cfg.classifier and files.classifier is not None):
        return Recognizer(create_detector(cfg, path, min_score=min_score))
    card, card_path = files.classifier_card, files.classifier.parent / CLASSIFIER_CARD_NAME
    try:
        params = RecognitionParams(
            proposal_threshold=float(cfg.proposal_threshold if cfg.proposal_threshold is not None
                                     else card.get("proposal_threshold", DEFAULT_PROPOSAL_THRESHOLD)),
            margin=float(card.get("margin", DEFAULT_MARGIN)),
            max_candidates=int(card.get("max_candidates", DEFAULT_MAX_CANDIDATES)),
            label=str(card.get("label", cfg.labels[0])),
            detector_weight=float(card.get("detector_weight", DEFAULT_DETECTOR_WEIGHT)),
            view_iou=float(card.get("view_iou", DEFAULT_VIEW_IOU)),
            view_containment=float(card.get("view_containment", DEFAULT_VIEW_CONTAINMENT)),
            view_min_area=float(card.get("view_min_area", DEFAULT_VIEW_MIN_AREA)),
            views=int(card.get("views", DEFAULT_VIEWS)),
        )
        threshold = float(card["threshold"]) if card.get("threshold") is not None else None
        ir_threshold = card_ir_threshold(card)
        review, ir_review = card_review_thresholds(card)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{card_path}: bad value: {str(exc)[:120]}") from None
    from raccoon_watch.recognition.classifier import TFLiteClassifier

    # proposals under the threshold too: a tracked animal's (recognition.extra_candidates); only
    # those >= proposal_threshold are classified without hints, so detect/evaluate are unchanged
    detector = create_detector(cfg, path, min_score=min(min_score, params.proposal_threshold, HINT_MIN_DETECTOR_SCORE))
    try:
        stage = TFLiteClassifier(files.classifier, num_threads=cfg.num_threads)
        _check_stages(files, card, detector, stage)
    except ModelError:
        detector.close()
        raise
    return Recognizer(detector, stage, params, threshold=threshold, ir_threshold=ir_threshold,
                      review_threshold=review, ir_review_threshold=ir_review)


def card_ir_threshold(card: dict[str, Any]) -> float | None:
    """The classifier card's threshold for infrared/monochrome frames (``thresholds.ir``), None when the
    card has one threshold for every mode. Raises ValueError for a value outside 0..1."""
    thresholds = card.get("thresholds") or {}
    if not isinstance(thresholds, dict):
        raise ValueError(f"thresholds must be a mapping of image mode to threshold, got {thresholds!r:.60}")
    value = thresholds.get("ir")
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"thresholds.ir must be in 0..1, got {value}")
    return value


def card_review_thresholds(card: dict[str, Any]) -> tuple[float | None, float | None]:
    """The classifier card's review thresholds (``review_thresholds: {"color": x, "ir": y}``): a visit
    over its mode's review threshold but under the alert one is a detection. (None, None) when the card
    has none: no detections. Raises ValueError for a value outside 0..1 or above its mode's threshold."""
    review = card.get("review_thresholds") or {}
    if not isinstance(review, dict):
        raise ValueError(f"review_thresholds must be a mapping of image mode to threshold, got {review!r:.60}")
    unknown = sorted(set(review) - set(MODES))
    if unknown:
        raise ValueError(f"review_thresholds: unknown image mode {unknown[0]!r}, expected one of {list(MODES)}")
    threshold = float(card["threshold"]) if card.get("threshold") is not None else None
    ir_threshold = card_ir_threshold(card)
    alert = {COLOR: threshold, IR: ir_threshold if ir_threshold is not None else threshold}
    out: dict[str, float | None] = {}
    for mode in MODES:
        value = review.get(mode)
        if value is not None:
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"review_thresholds.{mode} must be in 0..1, got {value}")
            limit = alert[mode]
            if limit is not None and value > limit:
                raise ValueError(f"review_thresholds.{mode} ({value}) is above that mode's threshold ({alert[mode]})")
        out[mode] = value
    return out[COLOR], out[IR]


def _check_stages(files: ModelFiles, card: dict[str, Any], detector: Detector, classifier: TFLiteClassifier) -> None:
    """The classifier must be the one its card describes, trained behind this detector."""
    card_path = files.classifier.parent / CLASSIFIER_CARD_NAME  # type: ignore[union-attr]
    expected = card_size(card.get("input_size"))  # check_card refused a bad one
    if expected is not None and expected != classifier.input_size:
        raise ModelError(f"{card_path}: input_size {list(expected)} but {files.classifier} takes "
                         f"{list(classifier.input_size)}")
    proposer = card.get("proposer", {}).get("labels") if isinstance(card.get("proposer"), dict) else None
    if proposer is not None and (not isinstance(proposer, list) or tuple(map(str, proposer)) != tuple(detector.labels)):
        raise ModelError(f"{card_path}: the classifier was trained behind a detector with labels {quoted(proposer)}, "
                         f"but {files.path}'s detector has {len(detector.labels) - 1:,} labels {quoted(detector.labels)}")


def resolve_default_model() -> Path:
    """The bundled models/raccoon when it holds a model, else the stock COCO TFLite in shared/ (warned)."""
    try:
        find_model(DEFAULT_MODEL_DIR)
        return DEFAULT_MODEL_DIR
    except ModelError as exc:
        reason = str(exc)
    fallback = shared_dir() / STOCK_MODEL
    if not fallback.is_file():
        raise ModelError(f"no default model: {reason}; and the stock COCO model is not at {fallback} "
                         "(set RACCOON_SHARED or pass --model)")
    log.warning("default_model_fallback", reason=reason, model=str(fallback),
                note="stock COCO model: raccoons show up as cat/dog/bear")
    return fallback
