"""Train the raccoon crop classifier: a frozen-feature baseline, then fine-tuning (LP-FT).

1. Baseline ("linear probe"): the ImageNet MobileNetV1 embeddings of the crops, frozen, and a
   logistic-regression head fitted on them. Its validation numbers are reported as the baseline.
2. Fine-tune: the head starts from the probe (Kumar et al. 2022, "Fine-Tuning can Distort
   Pretrained Features": linear probe, then fine-tune, beats either alone); the last two blocks
   (Conv2d_12, Conv2d_13) and the head train, on views of every crop augmented for night/IR
   cameras (IR look, grayscale, colour, blur, JPEG, flips). The frozen trunk (Conv2d_0 ..
   Conv2d_11, 85 % of the compute) runs once per view and its output is cached, so an epoch costs
   under a minute on a 2-core CPU. Validation AP on the validation crops is measured
   after every epoch; the best epoch is kept, the probe itself (epoch 0) included (the stop step
   is chosen on validation, never on a test split).

Inputs: ``train.npz`` / ``val.npz`` of ``train.classifier.crops``. Outputs in --work-dir:
``classifier.weights.h5`` (best epoch), ``classifier_result.json`` (baseline and per-epoch metrics).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import structlog

from raccoon_watch.recognition.detectors.base import normalise
from train import augment
from train.classifier.crops import load_part
from train.classifier.model import EMBEDDING, HEAD, build_classifier, import_imagenet_weights

log = structlog.get_logger(__name__)

WEIGHTS_FILE = "classifier.weights.h5"
RESULT_FILE = "classifier_result.json"
MAX_NEGATIVE_SHARE = 0.05  # crop-level operating point reported per epoch
TRUNK_END = "Conv2d_11_pointwise_relu6"  # frozen up to here; its output (N, 12, 12, 384) is cached
POSITIVE_VIEWS = 3  # cached views per crop: the crop itself, then augmented ones
NEGATIVE_VIEWS = 2
CACHE_CHUNK = 256
LOW_RES_PROBABILITY = 0.3
LOW_RES_SCALE = (0.2, 0.6)  # of the crop side
IR_NIGHT_SHARE = 0.25  # views given the trail-camera IR look (augment.ir_night)
GRAYSCALE_SHARE = 0.15
COLOUR_END = 0.9  # views below this (after the other looks) get colour jitter; the rest no look
# --porch-ir-share: views given the porch webcam IR look (augment.porch_ir), taken from colour jitter's
# share. 0 in the shipped recipe: 0.18 with night_extra's crops measured no better (train/README.md § 5b)


def augment_crop(crop: np.ndarray, rng: np.random.Generator, porch_ir_share: float = 0.0) -> np.ndarray:
    """One camera-like variant of an RGB uint8 crop (same size): flip, low resolution, then one look
    (trail-camera IR, porch-webcam IR, grayscale or colour jitter), blur, JPEG. Uses train.augment's transforms."""
    none = np.zeros((0, 4), np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < LOW_RES_PROBABILITY:  # a distant animal: few real pixels, upscaled into the crop
        side = crop.shape[0]
        small = max(8, int(side * rng.uniform(*LOW_RES_SCALE)))
        crop = cv2.resize(cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA), (side, side),
                          interpolation=cv2.INTER_LINEAR)
    look = rng.random()
    if look < IR_NIGHT_SHARE:
        crop, _ = augment.ir_night(np.ascontiguousarray(crop), none, rng)
    elif look < IR_NIGHT_SHARE + porch_ir_share:
        crop, _ = augment.porch_ir(np.ascontiguousarray(crop), none, rng)
    elif look < IR_NIGHT_SHARE + porch_ir_share + GRAYSCALE_SHARE:
        crop, _ = augment.grayscale(np.ascontiguousarray(crop), none)
    elif look < COLOUR_END:
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


def linear_probe(train_emb, train_y, epochs: int = 300, l2: float = 1e-3):
    """Logistic regression on frozen embeddings (full-batch Adam); returns (kernel (D, 1), bias (1,))."""
    import keras

    probe = keras.Sequential([keras.Input((train_emb.shape[1],)),
                              keras.layers.Dense(1, kernel_regularizer=keras.regularizers.l2(l2))])
    probe.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    probe.fit(train_emb, train_y.astype(np.float32), batch_size=len(train_emb), epochs=epochs, verbose=0)
    kernel, bias = probe.layers[-1].get_weights()
    return kernel, bias


def split_model(model):
    """(trunk, top, embed): trunk = input -> TRUNK_END (frozen), top = TRUNK_END -> logit and
    embed = TRUNK_END -> pooled embedding, sharing the full model's layers (training top trains it)."""
    import keras

    trunk = keras.Model(model.input, model.get_layer(TRUNK_END).output)
    inputs = keras.Input(trunk.output.shape[1:], name="trunk_features")
    x, after, embedding = inputs, False, None
    for layer in model.layers:
        if after and not isinstance(layer, keras.layers.InputLayer):
            x = layer(x)
            if layer.name == EMBEDDING:
                embedding = x
        after = after or layer.name == TRUNK_END
    return trunk, keras.Model(inputs, x), keras.Model(inputs, embedding)


def cache_views(trunk, crops: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                views: tuple[int, int] = (NEGATIVE_VIEWS, POSITIVE_VIEWS),
                porch_ir_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trunk features (float16) of every crop's views: (features, labels, is_plain)."""
    index = [(i, v) for i in range(len(crops)) for v in range(views[int(labels[i])])]
    feats, out_labels, plain = [], [], []
    for start in range(0, len(index), CACHE_CHUNK):
        chunk = index[start:start + CACHE_CHUNK]
        batch = np.stack([crops[i] if v == 0 else augment_crop(crops[i], rng, porch_ir_share) for i, v in chunk])
        feats.append(trunk.predict(normalise(batch), batch_size=64, verbose=0).astype(np.float16))
        out_labels += [labels[i] for i, _ in chunk]
        plain += [v == 0 for _, v in chunk]
    return np.concatenate(feats), np.array(out_labels, np.float32), np.array(plain)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train classifier``."""
    parser.add_argument("--crops", type=Path, required=True, help="folder with train.npz and val.npz (train crops)")
    parser.add_argument("--imagenet", type=Path, required=True, help="mobilenet_v1_0.75_192_quant.tflite")
    parser.add_argument("--work-dir", type=Path, required=True, help="weights and result JSON go here")
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs (0: the frozen-feature head only)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="Adam peak, cosine decay")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--porch-ir-share", type=float, default=0.0,
                        help="share of augmented views given the porch webcam IR look (augment.porch_ir)")


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
    trunk, top, embed = split_model(model)
    train_x, train_y, plain = cache_views(trunk, train["crops"], train["labels"], rng,
                                          porch_ir_share=args.porch_ir_share)
    val_x = trunk.predict(normalise(val["crops"]), batch_size=64, verbose=0).astype(np.float16)
    log.info("classifier_views_cached", views=len(train_x), seconds=round(time.monotonic() - started))
    train_emb = embed.predict(train_x[plain], batch_size=256, verbose=0)
    val_emb = embed.predict(val_x, batch_size=256, verbose=0)
    kernel, bias = linear_probe(train_emb, train_y[plain])
    baseline = crop_metrics(val["labels"], _sigmoid(val_emb @ kernel[:, 0] + bias[0]), val["groups"])
    log.info("classifier_baseline", seconds=round(time.monotonic() - started), **baseline)
    model.get_layer(HEAD).set_weights([kernel, bias])
    result = {"baseline_frozen_features": baseline, "epochs": [], "best_epoch": 0, "crops": {
        "train": int(len(train["labels"])), "train_positives": int(train["labels"].sum()),
        "train_views": int(len(train_x)), "val": int(len(val["labels"])), "val_positives": int(val["labels"].sum())}}
    weights_path = args.work_dir / WEIGHTS_FILE
    model.save_weights(weights_path)
    best_ap = baseline["ap"]
    if args.epochs > 0:
        best_ap = _fine_tune(model, top, (train_x, train_y), (val_x, val), args, rng, result, weights_path, best_ap)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["best"] = result["epochs"][result["best_epoch"] - 1]["val"] if result["best_epoch"] else baseline
    (args.work_dir / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    log.info("classifier_trained", best_epoch=result["best_epoch"], val_ap=best_ap, seconds=result["seconds"])
    return 0


def _fine_tune(model, top, train_xy, val_data, args, rng, result, weights_path: Path, best_ap: float) -> float:
    import keras
    import tensorflow as tf

    (train_x, train_y), (val_x, val) = train_xy, val_data
    steps_per_epoch = len(train_x) // args.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps_per_epoch * args.epochs, alpha=0.05)
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.05)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, top(x, training=True))
        grads = tape.gradient(loss, top.trainable_variables)
        optimizer.apply_gradients(zip(grads, top.trainable_variables))
        return loss

    for epoch in range(1, args.epochs + 1):
        t0, losses = time.monotonic(), []
        order = rng.permutation(len(train_x))
        for start in range(0, steps_per_epoch * args.batch_size, args.batch_size):
            idx = order[start:start + args.batch_size]
            losses.append(float(step(tf.constant(train_x[idx], tf.float32), tf.constant(train_y[idx, None]))))
        scores = _sigmoid(np.asarray(top.predict(val_x, batch_size=256, verbose=0)).reshape(-1))
        metrics = crop_metrics(val["labels"], scores, val["groups"])
        result["epochs"].append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "val": metrics,
                                 "seconds": round(time.monotonic() - t0, 1)})
        log.info("classifier_epoch", epoch=epoch, loss=result["epochs"][-1]["loss"], seconds=result["epochs"][-1]["seconds"], **metrics)
        if metrics["ap"] > best_ap:
            best_ap = metrics["ap"]
            result["best_epoch"] = epoch
            model.save_weights(weights_path)
    return best_ap
