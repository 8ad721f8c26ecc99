"""Retrain the raccoon classifier on a site's feedback, starting from the DEPLOYED classifier; measure it.

``raccoon-watch retrain`` (raccoon_watch/service/retrain_cmd.py) calls ``retrain`` and ``measure_both``; this
module is imported only then (it needs TensorFlow; the daemon never imports train/).

1. Start: a float Keras classifier (``train.classifier.model.build_classifier``) with the weights
   recovered from the deployed int8 ``classifier.tflite`` itself (``recover_float_weights``: every
   conv, depthwise conv and the head, dequantized with their per-channel scales), or from a float
   ``.weights.h5`` the train pipeline wrote when one is given. So a second retrain starts from the
   first one's result, and "deployed" is always exactly what runs.
2. Data: a sample of the shipped classifier's training crops (``train.classifier.crops``: rebuilt
   once from ../shared into a cache folder; its validation part measures the modes) plus the site's
   crops: each judged event's box cut from its frame by ``recognition.classifier_crop`` (the daemon's
   own crop), labelled by the verdict, and for "not a raccoon" frames also every other proposal of
   the detector (the cat's other views, the bowl, the shadow) as negatives.
3. Fit: the frozen trunk (Conv2d_0..11) runs once per view (``fit.cache_views``; the site's crops get
   several augmented views), then ``steps`` Adam steps on batches that are ``site_share`` site views.
   Mode ``head``: only the logit layer trains; ``blocks``: also Conv2d_12/13; ``auto``: both are
   fitted from the same start and ``choose_mode`` keeps one by the validation crops AT THE DEPLOYED
   THRESHOLD (the gate judges there; AP alone once kept a head fit whose scores had sunk below it).
4. Export: int8 TFLite (``train.classifier.export``), calibrated on training crops.

``measure`` runs a model folder as the daemon does (``train.evaluate.predict_with_model``) on the
public test split and the held-out raccoon-free photos at one threshold (``StandardMeasure``), and
on the kept frame of each held-out site visit (``KeptScore``: the final score there of the object
the verdict is about, and the frame's image mode); ``raccoon_watch.learning.replay`` turns those into the
visit's outcome the way the daemon scores a visit, and ``raccoon_watch.learning.promotion`` into ``PromotionMetrics``.
Boxes: site samples carry pixels (xmin, ymin, xmax, ymax) of their frame; crops use normalised ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from raccoon_watch.filters import DetectionFilter, eligible
from raccoon_watch.learning.feedback import SiteSample
from raccoon_watch.learning.promotion import DEFAULT_RECALL_DROP
from raccoon_watch.learning.retrain_options import DEFAULT_BASE_LIMIT, DEFAULT_MODE, DEFAULT_STEPS, MODES, RetrainMode
from raccoon_watch.learning.site_models import CLASSIFIER_CARD, CLASSIFIER_FILE, model_version
from raccoon_watch.recognition.detectors.base import normalise
from raccoon_watch.recognition.recognizer import classifier_crop
from raccoon_watch.support.imagefile import DEFAULT_MAX_PIXELS, read_image
from raccoon_watch.types import Detection, box_iou

log = structlog.get_logger(__name__)

MODE_RECALL_DROP = DEFAULT_RECALL_DROP  # auto: recall on validation crops at the deployed threshold may drop as much as the gate allows
DEFAULT_BATCH = 32
LEARNING_RATES = {"head": 2e-4, "blocks": 5e-5}
DEFAULT_VAL_LIMIT = 600
SITE_VIEWS = 4  # the crop itself + 3 augmented views per site crop
SITE_SHARE = 0.25  # of each batch, at most
SITE_WEIGHT = 4.0  # a site crop is drawn this many times as often as a shipped one, up to SITE_SHARE
SAME_BOX_IOU = 0.9  # a proposal this close to the judged box is that box, not "another proposal"
SITE_HIT_IOU = 0.1  # a detection of a "raccoon" event's frame counts when it overlaps its box this much
WEIGHT_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
CALIBRATION_LIMIT = 200


# ---------------------------------------------------------------- start from the deployed file


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """int8/int32 tensor -> float32 with its (per-channel) scales; float tensors pass through."""
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), np.float64)
    if values.dtype == np.float32 or scales.size == 0:
        return values.astype(np.float32)
    zero_points = np.asarray(params.get("zero_points", np.zeros_like(scales)), np.float64)
    shape = [1] * values.ndim
    if scales.size > 1:
        shape[int(params.get("quantized_dimension", 0))] = scales.size
    return ((values.astype(np.float64) - zero_points.reshape(shape)) * scales.reshape(shape)).astype(np.float32)


def recover_float_weights(model: Any, tflite_path: Path) -> int:
    """Set every Conv2D / DepthwiseConv2D / Dense of ``model`` from the classifier TFLite file, in
    graph order (the file is this architecture exported by ``train.classifier.export``). TFLite
    layouts: conv [out, kh, kw, in], depthwise [1, kh, kw, C], dense [out, in]. ValueError when the
    file's layers do not match the model's. Returns the number of layers set."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] in WEIGHT_KINDS]
    layers = [lay for lay in model.layers
              if isinstance(lay, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))]
    if len(ops) != len(layers):
        raise ValueError(f"{tflite_path}: {len(ops)} weighted ops, the classifier has {len(layers)} layers")
    for op, layer in zip(ops, layers):
        w_index, b_index = int(op["inputs"][1]), int(op["inputs"][2])
        weight = _dequantize(interp.get_tensor(w_index), details[w_index])
        bias = _dequantize(interp.get_tensor(b_index), details[b_index]) if b_index >= 0 else None
        kernel = weight.T if op["op_name"] == "FULLY_CONNECTED" else np.transpose(weight, (1, 2, 3, 0))
        if kernel.shape != tuple(layer.kernel.shape):
            raise ValueError(f"{tflite_path}: {op['op_name']} weights {kernel.shape} do not fit {layer.name} "
                             f"{tuple(layer.kernel.shape)}")
        bias = bias if bias is not None else np.zeros(kernel.shape[-1] if op["op_name"] != "DEPTHWISE_CONV_2D"
                                                      else kernel.shape[2], np.float32)
        layer.set_weights([kernel, bias.reshape(tuple(layer.bias.shape))])
    return len(layers)


# ---------------------------------------------------------------- data


def ensure_base_crops(folder: Path, model_dir: Path, shared: Path, limit: int | None = None,
                      max_bytes: int | None = None) -> Path:
    """The shipped classifier's crop dataset (train.npz, val.npz) in ``folder``; built once from
    ``shared`` with the crops stage (the proposer = the model folder's detector) when missing, then
    cut down to ``max_bytes`` when given (``cap_base_crops``; storage.base_crops_mb)."""
    if not ((folder / "train.npz").is_file() and (folder / "val.npz").is_file()):
        from train.classifier import crops as crops_stage

        log.info("retrain_building_base_crops", folder=str(folder), limit=limit,
                 note="once: the shipped training crops, cut again from the shared data (minutes)")
        folder.mkdir(parents=True, exist_ok=True)
        coco = shared / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite"
        parser = argparse.ArgumentParser()
        crops_stage.add_arguments(parser)  # the crop stage's own defaults (the shipped recipe), not a copy of them
        argv = ["--shared-data", str(shared / "data"), "--proposer", str(model_dir), "--output", str(folder),
                *(["--coco-model", str(coco)] if coco.is_file() else []), *(["--limit", str(limit)] if limit else [])]
        code = crops_stage.main(parser.parse_args(argv))
        if code:
            raise RuntimeError(f"building the base crops into {folder} failed ({code})")
    if max_bytes is not None:
        cap_base_crops(folder, max_bytes)
    return folder


# ---------------------------------------------------------------- the base crops under their cap

BASE_PARTS = ("train", "val")
SCENES = "scenes"  # the crop stage's pasted night scenes: cut into the .npz files, never read again


def base_crop_counts(n_train: int, n_val: int, crop_bytes: float, max_bytes: int,
                     want_val: int = DEFAULT_VAL_LIMIT) -> tuple[int, int]:
    """How many (train, val) crops to keep so that they fit in ``max_bytes`` at ``crop_bytes`` each
    (pure). The validation part first, up to the ``want_val`` a retrain measures on; the training
    part the rest (a retrain samples ``--base-limit`` of it); then validation again with what is left."""
    fit = int(max_bytes // crop_bytes)
    if n_train + n_val <= fit:
        return n_train, n_val
    k_val = min(n_val, want_val, fit)
    k_train = min(n_train, fit - k_val)
    return k_train, min(n_val, fit - k_train)


def stratified_keep(strata: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``k`` of the items, each stratum (e.g. label x day/night) keeping its share
    (largest remainder), drawn at random within it."""
    names, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    share = counts * k / len(strata)
    quota = np.floor(share).astype(int)
    for i in np.argsort(-(share - quota), kind="stable")[: k - int(quota.sum())]:
        quota[i] += 1
    keep = [rng.permutation(np.flatnonzero(inverse == i))[: quota[i]] for i in range(len(names))]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)


def cap_base_crops(folder: Path, max_bytes: int, seed: int = 0) -> dict[str, Any] | None:
    """Keep ``folder``'s base crops under ``max_bytes``: the pasted scenes go (their crops are in the
    .npz files), and when train.npz + val.npz are still over, each part keeps a stratified sample
    (label x group) of ``base_crop_counts`` crops, written in place (temp file, rename). Returns what
    was kept (also added to crops.json), or None when nothing had to change."""
    from train.classifier.crops import load_part, save_arrays

    shutil.rmtree(folder / SCENES, ignore_errors=True)
    paths = {part: folder / f"{part}.npz" for part in BASE_PARTS}
    total = sum(p.stat().st_size for p in paths.values())
    if total <= max_bytes:
        return None
    parts = {part: load_part(path) for part, path in paths.items()}
    sizes = {part: len(data["labels"]) for part, data in parts.items()}
    payload = sum(v.nbytes for data in parts.values() for v in data.values())  # the rest: headers, whatever the count
    crop_bytes = payload / max(1, sum(sizes.values()))
    kept = dict(zip(BASE_PARTS, base_crop_counts(sizes["train"], sizes["val"], crop_bytes,
                                                 max_bytes - (total - payload))))
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {"max_bytes": max_bytes, "bytes_before": total}
    for part, data in parts.items():
        keep = stratified_keep(np.char.add(data["labels"].astype(str), data["groups"].astype(str)), kept[part], rng)
        save_arrays({k: v[keep] for k, v in data.items()}, paths[part])
        summary[part] = {"crops": len(keep), "of": sizes[part], "positives": int(data["labels"][keep].sum())}
    summary["bytes"] = sum(p.stat().st_size for p in paths.values())
    info = folder / "crops.json"
    try:
        record = json.loads(info.read_text())
    except (OSError, ValueError):
        record = {}
    record["capped"] = summary
    info.write_text(json.dumps(record, indent=1) + "\n")
    log.info("retrain_base_crops_capped", folder=str(folder), **summary)
    return summary


@dataclass(frozen=True, slots=True)
class SiteCrops:
    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    labels: np.ndarray  # (N,) int8, 1 raccoon
    events: int
    judged: int  # crops of the judged boxes
    other_proposals: int  # negatives from the other proposals of "not a raccoon" frames


def site_crops(samples: Sequence[SiteSample], model_dir: Path, card: dict[str, Any], threads: int = 1,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> SiteCrops:
    """The site's training crops (see the module doc), cut as the daemon cuts them. Frames are read
    through ``imagefile.read_image`` (capped at ``max_pixels`` before decoding), as ``detect`` reads."""
    from raccoon_watch.config import DetectorConfig
    from raccoon_watch.recognition.detectors import create_detector

    size = tuple(int(v) for v in card.get("input_size", (192, 192)))[:2]
    margin = float(card.get("margin", 0.2))
    proposal = float(card.get("proposal_threshold", 0.05))
    max_candidates = int(card.get("max_candidates", 8))
    detector = create_detector(DetectorConfig(model=model_dir, backend="tflite", num_threads=threads), min_score=proposal)
    crops, labels, others = [], [], 0
    try:
        for sample in samples:
            image, why = read_image(sample.image, max_pixels)
            if image is None:  # checked when read; a file replaced since then is skipped, never a traceback
                log.warning("retrain_frame_unreadable", event_id=sample.event_id, file=sample.image.name, reason=why)
                continue
            judged = sample.box
            crops.append(classifier_crop(image, judged, margin, size))
            labels.append(int(sample.is_raccoon))
            if sample.is_raccoon:
                continue
            for det in detector.detect([image])[0][:max_candidates]:
                if box_iou(det.box, judged) < SAME_BOX_IOU:
                    crops.append(classifier_crop(image, det.box, margin, size))
                    labels.append(0)
                    others += 1
    finally:
        detector.close()
    judged_n = len(crops) - others
    return SiteCrops(np.stack(crops) if crops else np.zeros((0, *size, 3), np.uint8), np.array(labels, np.int8),
                     len({s.event_id for s in samples}), judged_n, others)


# ---------------------------------------------------------------- fit


def recall_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """Share of the positive crops scoring at least ``threshold`` (pure; 0 without positives)."""
    positive = labels == 1
    return float((scores[positive] >= threshold).mean()) if positive.any() else 0.0


def choose_mode(before_recall: float, fitted: dict[str, dict[str, float]], recall_drop: float) -> str:
    """The mode ``auto`` keeps (pure). ``fitted``: mode -> {"ap", "recall_at_threshold"} on the
    validation crops; ``before_recall``: the deployed classifier's recall there at its threshold.
    Among the modes that keep recall at the deployed threshold within ``recall_drop`` of before, the
    best AP (head on a tie); when none does, the one that loses the least recall."""
    keeping = [m for m, v in fitted.items() if v["recall_at_threshold"] >= before_recall - recall_drop - 1e-9]
    if keeping:
        return max(keeping, key=lambda m: (fitted[m]["ap"], m == "head"))
    return max(fitted, key=lambda m: (fitted[m]["recall_at_threshold"], fitted[m]["ap"]))


@dataclass(frozen=True, slots=True)
class RetrainOptions:
    deployed: Path  # the classifier folder running now (classifier.tflite + classifier_card.json)
    model_dir: Path  # the model folder with the detector (proposer)
    base_crops: Path  # train.npz / val.npz of train.classifier.crops
    out: Path  # (staging) folder for the candidate's classifier.tflite + card
    work: Path  # scratch (weights)
    steps: int = DEFAULT_STEPS
    mode: RetrainMode = DEFAULT_MODE
    batch_size: int = DEFAULT_BATCH
    base_limit: int = DEFAULT_BASE_LIMIT
    val_limit: int = DEFAULT_VAL_LIMIT
    site_views: int = SITE_VIEWS
    site_share: float = SITE_SHARE
    seed: int = 0
    threads: int = 2
    float_weights: Path | None = None
    progress: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS  # the largest site frame read (--max-megapixels)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.steps < 1 or self.batch_size < 2 or self.base_limit < 1 or self.site_views < 1:
            raise ValueError("steps >= 1, batch_size >= 2, base_limit >= 1 and site_views >= 1 are required")
        if not 0.0 < self.site_share < 1.0:
            raise ValueError(f"site_share must be in (0, 1), got {self.site_share}")


@dataclass(frozen=True, slots=True)
class RetrainResult:
    card: dict[str, Any]
    tflite: Path
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def _subsample(part: dict[str, np.ndarray], limit: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if len(part["labels"]) <= limit:
        return part
    keep = np.sort(rng.permutation(len(part["labels"]))[:limit])
    return {k: v[keep] for k, v in part.items()}


def _fit_mode(mode: str, top: Any, base: tuple[np.ndarray, np.ndarray], site: tuple[np.ndarray, np.ndarray],
              opts: RetrainOptions, rng: np.random.Generator) -> list[float]:
    """``opts.steps`` Adam steps of ``top`` (head only, or head + last blocks); returns the losses."""
    import keras
    import tensorflow as tf

    from train.classifier.model import HEAD

    variables = top.get_layer(HEAD).trainable_variables if mode == "head" else top.trainable_variables
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(LEARNING_RATES[mode], opts.steps, alpha=0.1))
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.05)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, top(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    # few site crops must not be hammered: their share grows with their number, up to site_share
    share = min(opts.site_share, SITE_WEIGHT * len(site[0]) / max(1, len(site[0]) + len(base[0])))
    n_site = max(1, int(round(opts.batch_size * share))) if len(site[0]) else 0
    n_base = opts.batch_size - n_site
    losses = []
    bar = _progress(opts.steps, f"retrain ({mode})", opts.progress)
    base_positives = np.flatnonzero(base[1] == 1)
    for _ in range(opts.steps):
        b = rng.integers(0, len(base[0]), n_base)
        s = rng.integers(0, len(site[0]), n_site) if n_site else np.zeros(0, int)
        # a site's feedback is mostly "not a raccoon": as many base raccoons in the batch as the site part
        # has extra negatives, so it teaches "not THIS cat" without pulling every score down
        extra = min(n_base, int((site[1][s] == 0).sum() - (site[1][s] == 1).sum()))
        if extra > 0 and len(base_positives):
            b[:extra] = rng.choice(base_positives, extra)
        x = np.concatenate([base[0][b], site[0][s]]).astype(np.float32)
        y = np.concatenate([base[1][b], site[1][s]]).astype(np.float32)[:, None]
        losses.append(float(step(tf.constant(x), tf.constant(y))))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return losses


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, mininterval=1.0)


def retrain(opts: RetrainOptions, train_samples: Sequence[SiteSample]) -> RetrainResult:
    """Fit the candidate from the deployed classifier and write it to ``opts.out``; the card has
    everything but the gate (``measure_both`` + ``raccoon_watch.learning.promotion.judge_candidate``)."""
    import keras
    import tensorflow as tf

    from train.classifier import export, fit
    from train.classifier.crops import load_part
    from train.classifier.model import build_classifier

    started = time.monotonic()
    if opts.threads:
        tf.config.threading.set_intra_op_parallelism_threads(opts.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    deployed_file, deployed_card = opts.deployed / CLASSIFIER_FILE, json.loads((opts.deployed / CLASSIFIER_CARD).read_text())
    notes = []

    def start_model() -> Any:
        model = build_classifier()
        if opts.float_weights is not None:
            model.load_weights(opts.float_weights)
        else:
            recover_float_weights(model, deployed_file)
        return model

    start = (f"float weights {opts.float_weights}" if opts.float_weights is not None else
             f"float weights recovered from the deployed int8 {CLASSIFIER_FILE} ({model_version(deployed_file)})")
    models = {m: start_model() for m in (("head", "blocks") if opts.mode == "auto" else (opts.mode,))}
    first = next(iter(models.values()))
    trunk, _, _ = fit.split_model(first)
    base_train = _subsample(load_part(opts.base_crops / "train.npz"), opts.base_limit, rng)
    base_val = _subsample(load_part(opts.base_crops / "val.npz"), opts.val_limit, rng)
    site = site_crops(train_samples, opts.model_dir, deployed_card, threads=opts.threads, max_pixels=opts.max_pixels)
    log.info("retrain_data", base_train=len(base_train["labels"]), base_val=len(base_val["labels"]),
             site_crops=len(site.labels), site_events=site.events, site_other_proposals=site.other_proposals)
    base_x, base_y, _ = fit.cache_views(trunk, base_train["crops"], base_train["labels"], rng, views=(1, 1))
    site_x, site_y, _ = (fit.cache_views(trunk, site.crops, site.labels, rng, views=(opts.site_views, opts.site_views))
                         if len(site.labels) else (np.zeros((0, *base_x.shape[1:]), np.float16), np.zeros(0, np.float32), None))
    val_x = trunk.predict(normalise(base_val["crops"]), batch_size=64, verbose=0).astype(np.float16)
    log.info("retrain_views_cached", base=len(base_x), site=len(site_x), seconds=round(time.monotonic() - started, 1))

    deployed_threshold = float(deployed_card.get("threshold", 0.5))

    def val_metrics(top: Any) -> dict[str, Any]:
        scores = fit._sigmoid(np.asarray(top.predict(val_x, batch_size=256, verbose=0)).reshape(-1))
        return {**fit.crop_metrics(base_val["labels"], scores, base_val["groups"]),
                "recall_at_threshold": round(recall_at(base_val["labels"], scores, deployed_threshold), 4)}

    before = val_metrics(fit.split_model(first)[1])
    results = {}
    for mode, model in models.items():
        top = fit.split_model(model)[1]
        t0 = time.monotonic()
        losses = _fit_mode(mode, top, (base_x, base_y), (site_x, site_y), opts, rng)
        results[mode] = {"val": val_metrics(top), "loss_first": round(losses[0], 4), "loss_last": round(float(np.mean(losses[-10:])), 4),
                         "seconds": round(time.monotonic() - t0, 1)}
        log.info("retrain_mode_fitted", mode=mode, **results[mode]["val"], seconds=results[mode]["seconds"])
    chosen = (choose_mode(before["recall_at_threshold"], {m: r["val"] for m, r in results.items()}, MODE_RECALL_DROP)
              if opts.mode == "auto" else opts.mode)
    if opts.mode == "auto":
        notes.append(f"kept {chosen}: validation crops at the deployed threshold {deployed_threshold}: recall "
                     f"{before['recall_at_threshold']} before, head {results['head']['val']['recall_at_threshold']}, "
                     f"blocks {results['blocks']['val']['recall_at_threshold']}; AP head {results['head']['val']['ap']}, "
                     f"blocks {results['blocks']['val']['ap']}")
    opts.work.mkdir(parents=True, exist_ok=True)
    weights = opts.work / "candidate.weights.h5"
    models[chosen].save_weights(weights)
    opts.out.mkdir(parents=True, exist_ok=True)
    tflite = export.export_classifier(weights, base_train["crops"][:CALIBRATION_LIMIT], opts.out / CLASSIFIER_FILE)
    seconds = round(time.monotonic() - started, 1)
    card = {k: v for k, v in deployed_card.items() if k not in ("metrics", "training", "latency_ms", "artifacts",
                                                                 "git_revision", "seconds", "retrain", "gate")}
    card.update({
        "artifacts": {CLASSIFIER_FILE: {"bytes": tflite.stat().st_size, "sha256": _sha256(tflite)}},
        "retrain": {
            "started_from": {"version": model_version(deployed_file), "folder": str(opts.deployed), "how": start},
            "mode": chosen, "modes_fitted": results, "steps": opts.steps, "batch_size": opts.batch_size,
            "site_share_of_batch": opts.site_share, "learning_rate": LEARNING_RATES[chosen],
            "data": {"base_crops": str(opts.base_crops), "base_train_crops": int(len(base_train["labels"])),
                     "base_train_positives": int(base_train["labels"].sum()),
                     "site_crops": int(len(site.labels)), "site_events": site.events,
                     "site_judged_crops": site.judged, "site_other_proposals": site.other_proposals,
                     "site_raccoon_crops": int(site.labels.sum()), "site_views_per_crop": opts.site_views},
            "validation_crops": {"deployed": before, "candidate": results[chosen]["val"]},
            "seconds": seconds, "threads": opts.threads, "notes": notes,
        },
    })
    (opts.out / CLASSIFIER_CARD).write_text(json.dumps(card, indent=1) + "\n")
    log.info("retrain_candidate_written", folder=str(opts.out), mode=chosen, seconds=seconds)
    return RetrainResult(card, tflite, seconds, tuple(notes))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- measure (the gate's numbers)


def system_folder(classifier_dir: Path, model_dir: Path, work: Path, name: str) -> Path:
    """A model folder of ``model_dir``'s detector with ``classifier_dir``'s classifier (symlinks)."""
    if classifier_dir.resolve() == model_dir.resolve():
        return model_dir
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    for entry in model_dir.iterdir():
        if entry.is_file() and entry.name not in (CLASSIFIER_FILE, CLASSIFIER_CARD):
            _link(entry, folder / entry.name)
    for file in (CLASSIFIER_FILE, CLASSIFIER_CARD):
        _link(classifier_dir / file, folder / file)
    return folder


def _link(target: Path, link: Path) -> None:
    link.unlink(missing_ok=True)
    os.symlink(target.resolve(), link)


@dataclass(frozen=True, slots=True)
class StandardSet:
    """The public test split (CSV rows, pixel boxes) and the held-out raccoon-free photos."""

    rows: tuple[Any, ...]
    images: tuple[Path, ...]
    negatives: tuple[Path, ...]

    @classmethod
    def from_shared(cls, shared_data: Path) -> StandardSet:
        from train import splits
        from train.voc import read_csv

        raccoons = shared_data / "raccoon_dataset"
        rows = read_csv(raccoons / "test_labels.csv")
        images = tuple(raccoons / "images" / n for n in dict.fromkeys(r.filename for r in rows))
        negatives = tuple(e.path for e in splits.make_plan(shared_data).heldout_negatives)
        return cls(tuple(rows), images, negatives)


class UnreadableImage(ValueError):
    """An image the gate must measure no longer reads (a feedback file replaced during the retrain)."""


def checked_reader(max_pixels: int) -> Any:
    """``path -> BGR image`` through ``imagefile.read_image``; UnreadableImage naming the file and why."""

    def read(path: Path) -> np.ndarray:
        image, why = read_image(Path(path), max_pixels)
        if image is None:
            raise UnreadableImage(f"{path}: {why}")
        return image

    return read


@dataclass(frozen=True, slots=True)
class StandardMeasure:
    recall: float  # test split boxes found at the threshold, 0..1
    false_alerts: int  # held-out raccoon-free photos with a detection >= the threshold
    negatives: int
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class KeptScore:
    """A model's final score in a held-out visit's kept frame (``kept_score``) and the frame's mode."""

    score: float
    mode: str | None


def kept_score(detections: Sequence[Detection], sample: SiteSample, flt: DetectionFilter) -> float:
    """The final score a model gives the verdict's object in the kept frame (pure). Detections: the
    recognizer's, boxes normalised. Only those the camera's filter lets count (label, area, zones,
    masks) are looked at; for a "raccoon" visit only those on its box (IoU >= ``SITE_HIT_IOU``: the
    raccoon, not the bowl beside it), for a "not a raccoon" one any (whatever alerts is an alert).
    0.0 when there is none."""
    seen = [d for d in detections if eligible(d, flt)]
    if sample.is_raccoon:
        seen = [d for d in seen if box_iou(d.box, sample.box) >= SITE_HIT_IOU]
    return max((d.score for d in seen), default=0.0)


def measure(folder: Path, threshold: float, standard: StandardSet, holdout: Sequence[SiteSample],
            filter_for: Callable[[str], DetectionFilter], threads: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS,
            ) -> tuple[StandardMeasure, dict[str, KeptScore]]:
    """Run ``folder`` (detector + classifier, the daemon's code): the standard set scored at
    ``threshold``, and the kept frame of each held-out visit (event id -> ``KeptScore``; an event
    with several rows keeps its first), with ``filter_for(camera)`` the camera's detection filter.
    Every image is read through ``imagefile.read_image`` (``checked_reader``): the site's frames were
    checked when the feedback was read, so an UnreadableImage here means one was replaced since."""
    from train import evaluate, metrics

    visits = list({s.event_id: s for s in reversed(holdout)}.values())[::-1]  # first row of each event
    records = list(evaluate.predict_with_model(folder, [*standard.images, *standard.negatives,
                                                        *(s.image for s in visits)],
                                               num_threads=threads, read=checked_reader(max_pixels)))
    n_std = len(standard.images) + len(standard.negatives)
    gt = evaluate.ground_truth(list(standard.rows), list(standard.negatives))
    preds = evaluate.records_to_predictions(records[:n_std])
    negative_ids = [p.name for p in standard.negatives]
    point = metrics.operating_point(gt, preds, threshold, negative_ids)
    alerting = [n for n in negative_ids if max((p.score for p in preds.get(n, ())), default=0.0) >= threshold]
    kept = {}
    for sample, record in zip(visits, records[n_std:]):
        w, h = float(record["width"]), float(record["height"])  # boxes: pixels -> normalised (xmin, ymin, xmax, ymax)
        dets = [Detection(d["label"], float(d["score"]), (d["box"][0] / w, d["box"][1] / h, d["box"][2] / w,
                                                           d["box"][3] / h), mode=record.get("mode"))
                for d in record["detections"]]
        kept[sample.event_id] = KeptScore(kept_score(dets, sample, filter_for(sample.camera)), record.get("mode"))
    detail = {"threshold": threshold, "test_recall": round(float(point.recall), 4),
              "test_precision": _round(point.precision), "heldout_false_alert_rate": _round(point.false_alert_rate),
              "heldout_alerting": alerting}
    return StandardMeasure(float(point.recall), len(alerting), len(negative_ids), detail), kept


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 4)  # NaN -> None (JSON)
