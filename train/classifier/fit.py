"""Train the raccoon crop classifier: a frozen-feature baseline, then fine-tuning (LP-FT).

1. Baseline ("linear probe"): the ImageNet MobileNetV1 embeddings of the crops, frozen, and a
   logistic-regression head fitted on them. Its validation numbers are reported as the baseline.
2. Fine-tune: the head starts from the probe (Kumar et al. 2022, "Fine-Tuning can Distort
   Pretrained Features": linear probe, then fine-tune, beats either alone), blocks Conv2d_6 and up
   train with augmentation for night/IR cameras (IR look, grayscale, colour, blur, JPEG, flips).
   Validation AP on the validation crops is measured after every epoch; the best epoch is kept
   (the stop step is chosen on validation, never on a test split).

Inputs: ``train.npz`` / ``val.npz`` of ``train.classifier.crops``. Outputs in --work-dir:
``classifier.weights.h5`` (best epoch), ``classifier_result.json`` (baseline and per-epoch metrics).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import structlog

from raccoon_watch.detectors.base import normalise
from train import augment
from train.classifier.crops import load_part
from train.classifier.model import HEAD, build_classifier, embedding_model, freeze, import_imagenet_weights

log = structlog.get_logger(__name__)

WEIGHTS_FILE = "classifier.weights.h5"
RESULT_FILE = "classifier_result.json"
MAX_NEGATIVE_SHARE = 0.05  # crop-level operating point reported per epoch


def augment_crop(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One camera-like variant of an RGB uint8 crop (same size): flip, then one look (IR night,
    grayscale or colour jitter), blur, JPEG. Uses train.augment's transforms."""
    none = np.zeros((0, 4), np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    look = rng.random()
    if look < 0.25:
        crop, _ = augment.ir_night(np.ascontiguousarray(crop), none, rng)
    elif look < 0.4:
        crop, _ = augment.grayscale(np.ascontiguousarray(crop), none)
    elif look < 0.9:
        crop, _ = augment.color_jitter(np.ascontiguousarray(crop), none, rng)
    if rng.random() < 0.15:
        crop, _ = augment.blur(np.ascontiguousarray(crop), none, rng)
    if rng.random() < 0.3:
        crop, _ = augment.jpeg_recompress(np.ascontiguousarray(crop), none, rng)
    return np.ascontiguousarray(crop)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """All-point AP of scores for labels 1 (ties broken pessimistically)."""
    order = np.lexsort((labels, -scores))  # among equal scores, negatives first
    hits = labels[order] == 1
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def crop_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict:
    """AP, and recall at the score where at most MAX_NEGATIVE_SHARE of each group's negative crops
    pass (crop level; the system's photo-level operating point is chosen after export)."""
    threshold = 0.0
    for group in np.unique(groups):
        neg = np.sort(scores[(groups == group) & (labels == 0)])[::-1]
        if len(neg):
            allowed = int(np.floor(MAX_NEGATIVE_SHARE * len(neg)))
            threshold = max(threshold, float(neg[allowed]) + 1e-6 if allowed < len(neg) else 0.0)
    out = {"ap": round(average_precision(labels, scores), 4), "threshold": round(threshold, 4),
           "recall": round(float((scores[labels == 1] >= threshold).mean()), 4)}
    for group in np.unique(groups):
        sel = groups == group
        out[f"recall_{group}"] = round(float((scores[sel & (labels == 1)] >= threshold).mean()), 4) if (sel & (labels == 1)).any() else None
        out[f"negatives_passing_{group}"] = round(float((scores[sel & (labels == 0)] >= threshold).mean()), 4)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def linear_probe(train_emb, train_y, val_emb, val_y, epochs: int = 300, l2: float = 1e-3):
    """Logistic regression on frozen embeddings (full-batch Adam); returns (kernel (D, 1), bias (1,))."""
    import keras

    probe = keras.Sequential([keras.Input((train_emb.shape[1],)),
                              keras.layers.Dense(1, kernel_regularizer=keras.regularizers.l2(l2))])
    probe.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    probe.fit(train_emb, train_y.astype(np.float32), batch_size=len(train_emb), epochs=epochs, verbose=0)
    kernel, bias = probe.layers[-1].get_weights()
    return kernel, bias


def _batches(crops, labels, batch_size, rng):
    order = rng.permutation(len(crops))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        x = np.stack([augment_crop(crops[i], rng) for i in idx])
        yield normalise(x), labels[idx].astype(np.float32)[:, None]


def predict_scores(model, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    logits = model.predict(normalise(crops), batch_size=batch_size, verbose=0)
    return _sigmoid(np.asarray(logits).reshape(-1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train classifier``."""
    parser.add_argument("--crops", type=Path, required=True, help="folder with train.npz and val.npz (train crops)")
    parser.add_argument("--imagenet", type=Path, required=True, help="mobilenet_v1_0.75_192_quant.tflite")
    parser.add_argument("--work-dir", type=Path, required=True, help="weights and result JSON go here")
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs (0: baseline head only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="Adam peak, cosine decay")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train, val = load_part(args.crops / "train.npz"), load_part(args.crops / "val.npz")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model = build_classifier()
    import_imagenet_weights(model, args.imagenet)
    features = embedding_model(model)
    train_emb = features.predict(normalise(train["crops"]), batch_size=64, verbose=0)
    val_emb = features.predict(normalise(val["crops"]), batch_size=64, verbose=0)
    kernel, bias = linear_probe(train_emb, train["labels"], val_emb, val["labels"])
    baseline = crop_metrics(val["labels"], _sigmoid(val_emb @ kernel[:, 0] + bias[0]), val["groups"])
    log.info("classifier_baseline", seconds=round(time.monotonic() - started), **baseline)
    model.get_layer(HEAD).set_weights([kernel, bias])
    result = {"baseline_frozen_features": baseline, "epochs": [], "crops": {
        "train": int(len(train["labels"])), "train_positives": int(train["labels"].sum()),
        "val": int(len(val["labels"])), "val_positives": int(val["labels"].sum())}}
    best_ap, weights_path = baseline["ap"], args.work_dir / WEIGHTS_FILE
    model.save_weights(weights_path)
    result["best_epoch"] = 0
    if args.epochs > 0:
        best_ap = _fine_tune(model, train, val, args, rng, result, weights_path, best_ap)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["best"] = result["epochs"][result["best_epoch"] - 1]["val"] if result["best_epoch"] else baseline
    (args.work_dir / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    log.info("classifier_trained", best_epoch=result["best_epoch"], val_ap=best_ap, seconds=result["seconds"])
    return 0


def _fine_tune(model, train, val, args, rng, result, weights_path: Path, best_ap: float) -> float:
    import keras
    import tensorflow as tf

    freeze(model)
    steps_per_epoch = len(train["labels"]) // args.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps_per_epoch * args.epochs, alpha=0.02)
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.05)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for epoch in range(1, args.epochs + 1):
        t0, losses = time.monotonic(), []
        for x, y in _batches(train["crops"], train["labels"], args.batch_size, rng):
            losses.append(float(step(tf.constant(x), tf.constant(y))))
        metrics = crop_metrics(val["labels"], predict_scores(model, val["crops"]), val["groups"])
        result["epochs"].append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val": metrics,
                                 "seconds": round(time.monotonic() - t0, 1)})
        log.info("classifier_epoch", epoch=epoch, loss=result["epochs"][-1]["loss"], seconds=result["epochs"][-1]["seconds"], **metrics)
        if metrics["ap"] > best_ap:
            best_ap = metrics["ap"]
            result["best_epoch"] = epoch
            model.save_weights(weights_path)
    return best_ap
