"""Export a trained SSD to a deployable model directory, and promote it over the current one.

``export_model`` writes into ``out_dir``:

- ``saved_model/``: TF2 SavedModel, TF OD API serving signature ``serving_default``:
  ``input_tensor`` uint8 (N, H, W, 3) RGB, any N, H, W (resized inside to 300x300, bilinear, then
  (u8 - 128) / 128) -> ``detection_boxes`` (N, D, 4) [ymin, xmin, ymax, xmax] normalised to the
  input image and clipped to [0, 1]; ``detection_scores`` (N, D); ``detection_classes`` (N, D)
  float, 1-based (1 = labels[0]); ``num_detections`` (N,) float. Rows past num_detections are 0.
- ``model_float.tflite`` / ``model.tflite`` (full-integer int8, uint8 input): input uint8
  (1, 300, 300, 3) RGB quantized as (u8 - 128) / 128, like the stock COCO file; outputs in the
  stock order boxes (1, D, 4) [ymin, xmin, ymax, xmax] normalised (not clipped), classes (1, D)
  0-based float, scores (1, D), count (1,), from the built-in ``TFLite_Detection_PostProcess``
  custom op (tensor names ``TFLite_Detection_PostProcess``, ``...:1``, ``...:2``, ``...:3``).
- ``labelmap.pbtxt`` (ids from 1) and ``model_card.json`` (see ``train.model_card``).

Both formats run the same post-processing: sigmoid scores, best class per anchor, one
class-agnostic NMS over anchors (the op's ``use_regular_nms=False`` mode), D = max_detections.

``promote(candidate, target)`` replaces ``target`` unless its test AP@0.5 is higher (``--force``).
CLI: ``python -m train export --checkpoint CKPT --to models/raccoon [--force]``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from raccoon_watch.recognition.modelfiles import LABEL_MAP, MODEL_TFLITE, MODEL_TFLITE_FLOAT, SAVED_MODEL_DIR
from train import model_card

INPUT_SIZE = 300
SCORE_THRESHOLD = 0.01  # low, so AP sees the whole precision/recall curve; the daemon filters
IOU_THRESHOLD = 0.6  # as the stock COCO TFLite file
MAX_DETECTIONS = 10
MAX_CLASSES_PER_DETECTION = 1
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
TFLITE_FLOAT, TFLITE_INT8 = MODEL_TFLITE_FLOAT, MODEL_TFLITE
NUM_REPRESENTATIVE = 100  # calibration images for int8; more adds conversion time, not accuracy
SERVING_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
TFLITE_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
BOX_FORMAT = (
    "[ymin, xmin, ymax, xmax] normalised to the input image (0..1). SavedModel boxes are clipped to "
    "[0, 1]; TFLite boxes are not (clip them). SavedModel classes are 1-based (1 = labels[0]), TFLite "
    "classes 0-based (0 = labels[0]), as in the TF OD API and the stock TFLite SSDs."
)


class PromotionRefused(RuntimeError):
    """The target model scores higher on the test split than the candidate; str() says both."""


# ---------------------------------------------------------------- TensorFlow graph pieces

def _tf():
    import tensorflow as tf  # imported lazily: the CLI parser and promote() need no TensorFlow

    return tf


def agnostic_nms(boxes, scores, max_detections: int, iou_threshold: float, score_threshold: float):
    """Best class per anchor, then one NMS (TFLite op, use_regular_nms=False): see
    train.ssd.postprocess.agnostic_nms, imported lazily so promote() needs no TensorFlow."""
    from train.ssd.postprocess import agnostic_nms as nms

    return nms(boxes, scores, max_detections, iou_threshold, score_threshold)


def _frozen_call(keras_model):
    """f(images) -> model outputs with the weights baked in as constants.

    The TFLite converter (TF 2.21) leaves Keras 3 variables as VAR_HANDLE/READ_VARIABLE ops that
    calibration cannot run, and freezing the graph afterwards would inline the post-processing
    stub; calling the model statelessly on constants avoids both.
    """
    trainable = [v.numpy() for v in keras_model.trainable_variables]
    non_trainable = [v.numpy() for v in keras_model.non_trainable_variables]

    def call(images):
        tf = _tf()
        outputs, _ = keras_model.stateless_call(
            [tf.constant(v) for v in trainable], [tf.constant(v) for v in non_trainable],
            images, training=False)
        return outputs

    return call


def _postprocess_signature(num_classes: int, max_detections: int, score_threshold: float,
                           iou_threshold: float) -> str:
    """tf.function experimental_implements text the converter legalises to the custom op
    (as the TF OD API's export_tflite_graph_lib_tf2.SSDModule does)."""
    from train.ssd.box_coder import SCALE_FACTORS  # the op decodes with the training coder's scales

    sy, sx, sh, sw = SCALE_FACTORS
    attrs = [
        ("max_detections", "i", max_detections),
        ("max_classes_per_detection", "i", MAX_CLASSES_PER_DETECTION),
        ("detections_per_class", "i", max_detections),
        ("use_regular_nms", "b", "false"),
        ("nms_score_threshold", "f", f"{score_threshold:f}"),
        ("nms_iou_threshold", "f", f"{iou_threshold:f}"),
        ("y_scale", "f", f"{sy:f}"), ("x_scale", "f", f"{sx:f}"),
        ("h_scale", "f", f"{sh:f}"), ("w_scale", "f", f"{sw:f}"),
        ("num_classes", "i", num_classes),
    ]
    return " ".join([f'name: "{POSTPROCESS_OP}"'] + [
        f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}' for key, kind, value in attrs])


class ServingModule:
    """Builds the SavedModel: the Keras model (variables tracked) behind the TF OD API signature."""

    def __init__(self, keras_model, anchors: np.ndarray, input_size: int, score_threshold: float,
                 iou_threshold: float, max_detections: int):
        tf = _tf()
        from train.ssd.box_coder import decode  # the training coder (TensorFlow, so imported here)

        self.module = tf.Module()
        self.module.model = keras_model
        anchors_const = tf.constant(anchors, tf.float32)

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="input_tensor")])
        def serve(input_tensor):
            images = tf.image.resize(tf.cast(input_tensor, tf.float32), (input_size, input_size),
                                     method="bilinear")  # (N, S, S, 3) 0..255
            images = (images - 128.0) / 128.0  # as the stock file's input quantization
            box_encodings, class_logits = keras_model(images, training=False)
            boxes = decode(box_encodings, anchors_const)  # (N, A, 4) [ymin, xmin, ymax, xmax], not clipped
            scores = tf.sigmoid(class_logits)[..., 1:]  # (N, A, K): background dropped
            boxes, scores, classes, num = agnostic_nms(
                boxes, scores, max_detections, iou_threshold, score_threshold)
            return {
                "detection_boxes": tf.clip_by_value(boxes, 0.0, 1.0),
                "detection_scores": scores,
                "detection_classes": tf.cast(classes + 1, tf.float32),  # 1-based
                "num_detections": tf.cast(num, tf.float32),
            }

        self.module.serve = serve

    def save(self, path: Path) -> None:
        tf = _tf()
        tf.saved_model.save(self.module, str(path), signatures={"serving_default": self.module.serve})


class TFLiteModule:
    """The graph the TFLite converter sees: normalised float input -> raw outputs -> the
    post-processing op stub (legalised to TFLite_Detection_PostProcess by the converter)."""

    def __init__(self, keras_model, anchors: np.ndarray, num_classes: int, input_size: int,
                 score_threshold: float, iou_threshold: float, max_detections: int):
        tf = _tf()
        call = _frozen_call(keras_model)
        signature = _postprocess_signature(num_classes, max_detections, score_threshold, iou_threshold)

        @tf.function(experimental_implements=signature)
        def postprocess_stub(box_encodings, class_predictions, anchors):
            # No TF equivalent; the converter replaces this call by the custom op.
            # Outputs in the op's order: boxes, classes, scores, count.
            boxes = tf.constant(0.0, tf.float32, name="boxes")
            classes = tf.constant(0.0, tf.float32, name="classes")
            scores = tf.constant(0.0, tf.float32, name="scores")
            num = tf.constant(0.0, tf.float32, name="num_detections")
            return boxes, classes, scores, num

        @tf.function(input_signature=[tf.TensorSpec(
            [1, input_size, input_size, 3], tf.float32, name="normalized_input_image_tensor")])
        def inference(image):
            box_encodings, class_logits = call(image)  # (1, A, 4), (1, A, K + 1)
            class_predictions = tf.sigmoid(class_logits)  # background column kept: op skips it
            anchor_const = tf.constant(anchors, tf.float32, name="anchors")  # (A, 4) yc, xc, h, w
            # The op's outputs map to the stub's by position (the TF OD API reverses its
            # returned tuple only to name its SavedModel outputs; TF 2.21 keeps this order).
            boxes, classes, scores, num = postprocess_stub(box_encodings, class_predictions, anchor_const)
            return {"detection_boxes": boxes, "detection_classes": classes,
                    "detection_scores": scores, "num_detections": num}

        self.module = tf.Module()
        self.inference = inference

    def convert(self, representative: Callable[[], Iterator[list[np.ndarray]]] | None) -> bytes:
        """Float TFLite, or full-integer int8 with uint8 input when ``representative`` is given."""
        tf = _tf()
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [self.inference.get_concrete_function()], self.module)
        converter.allow_custom_ops = True
        if representative is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
        return _stock_output_order(converter.convert())


def _stock_output_order(tflite_bytes: bytes) -> bytes:
    """Reorder the subgraph outputs to the stock boxes, classes, scores, count and name them
    like the stock file, so index-based and name-based readers both work."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_bytes))
    subgraph = model.subgraphs[0]
    by_key = {o.name.decode(): o.tensorIndex for o in model.signatureDefs[0].outputs}
    if set(by_key) != set(TFLITE_OUTPUTS):
        raise ValueError(f"unexpected TFLite signature outputs {sorted(by_key)}")
    order = [by_key[key] for key in TFLITE_OUTPUTS]
    subgraph.outputs = np.array(order, dtype=np.int32)
    for i, index in enumerate(order):
        subgraph.tensors[index].name = (POSTPROCESS_OP + (f":{i}" if i else "")).encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def representative_dataset(images: Sequence[np.ndarray], input_size: int = INPUT_SIZE,
                           limit: int = NUM_REPRESENTATIVE):
    """Calibration generator: RGB uint8 images of any size -> [(1, S, S, 3) float32 in [-1, 1)].

    A first synthetic frame holds every value 0..255 so the calibrated input range is exactly
    [-1, 127/128], i.e. uint8 scale 1/128 and zero point 128, like the stock model.
    """
    if not images:
        raise ValueError("int8 export needs at least one representative image")
    tf = _tf()
    ramp = np.tile(np.arange(256, dtype=np.float32), input_size * input_size * 3 // 256 + 1)
    ramp = ramp[: input_size * input_size * 3].reshape(1, input_size, input_size, 3)

    def generate():
        yield [(ramp - 128.0) / 128.0]
        for image in list(images)[:limit]:
            if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise ValueError(f"representative images must be RGB uint8 (H, W, 3), got "
                                 f"{image.dtype} {image.shape}")
            resized = tf.image.resize(image[None].astype(np.float32), (input_size, input_size))
            yield [((resized.numpy() - 128.0) / 128.0).astype(np.float32)]

    return generate


# ---------------------------------------------------------------- files beside the model

def measure_latency_ms(tflite_paths: Sequence[Path], num_threads: int = 2, runs: int = 50,
                       warmup: int = 5) -> dict[str, dict]:
    """Median / p90 ms of ``invoke()`` per file on one random frame, files interleaved run by run
    so that load from other processes on the machine hits every file alike."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    rng = np.random.default_rng(0)
    for path in tflite_paths:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        frame = rng.integers(0, 256, detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], frame)
        interpreters[str(path)] = interpreter
    times: dict[str, list[float]] = {key: [] for key in interpreters}
    for run in range(warmup + runs):
        for key, interpreter in interpreters.items():
            start = time.perf_counter()
            interpreter.invoke()
            if run >= warmup:
                times[key].append((time.perf_counter() - start) * 1000.0)
    return {Path(key).name: {"median": round(float(np.median(t)), 2),
                             "p90": round(float(np.percentile(t, 90)), 2),
                             "threads": num_threads, "runs": runs}
            for key, t in times.items()}


# ---------------------------------------------------------------- export

def export_model(keras_model, anchors: np.ndarray, labels: Sequence[str], out_dir: str | Path,
                 representative_images: Sequence[np.ndarray], input_size: int = INPUT_SIZE,
                 score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD,
                 max_detections: int = MAX_DETECTIONS, card: dict | None = None,
                 reference_tflite: str | Path | None = None, latency_runs: int = 50) -> dict:
    """Write saved_model/, model_float.tflite, model.tflite, labelmap.pbtxt, model_card.json.

    anchors: (A, 4) [ycenter, xcenter, h, w] normalised, in the model's output order.
    card: optional ``metrics``, ``deployed_threshold``, ``training`` {command, config},
        ``dataset`` ({"files", "sha256"}) or ``dataset_files`` (paths hashed here).
    reference_tflite: a model timed alongside (the stock COCO file), recorded in the card.
    Returns the model card.
    """
    from train.ssd.box_coder import SCALE_FACTORS
    from train.tfrecord import write_label_map  # the label map training reads (ids from 1)

    anchors = np.asarray(anchors, dtype=np.float32)
    num_outputs = keras_model.outputs[1].shape[-1]
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must be (A, 4) [ycenter, xcenter, h, w], got {anchors.shape}")
    if num_outputs != len(labels) + 1:
        raise ValueError(f"model has {num_outputs} class outputs, expected {len(labels)} labels + "
                         "background")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = dict(card or {})

    ServingModule(keras_model, anchors, input_size, score_threshold, iou_threshold,
                  max_detections).save(out / SAVED_MODEL_DIR)
    tflite = TFLiteModule(keras_model, anchors, len(labels), input_size, score_threshold,
                          iou_threshold, max_detections)
    (out / TFLITE_FLOAT).write_bytes(tflite.convert(None))
    (out / TFLITE_INT8).write_bytes(
        tflite.convert(representative_dataset(representative_images, input_size)))
    write_label_map(list(labels), out / LABEL_MAP)

    timed = [out / TFLITE_INT8, out / TFLITE_FLOAT]
    if reference_tflite is not None and Path(reference_tflite).is_file():
        timed.append(Path(reference_tflite))
    latency: dict = {"load_average_1min": round(os.getloadavg()[0], 2)}  # other jobs skew it
    latency.update(measure_latency_ms(timed, runs=latency_runs))
    if reference_tflite is not None and Path(reference_tflite).name in latency:
        reference = Path(reference_tflite).name
        latency["reference"] = reference
        latency["int8_vs_reference"] = round(
            latency[TFLITE_INT8]["median"] / latency[reference]["median"], 3)

    dataset = card.get("dataset")
    if dataset is None and card.get("dataset_files"):
        dataset = model_card.dataset_sha256(card["dataset_files"])
    artifacts = {name: model_card.artifact_entry(out / name)
                 for name in (SAVED_MODEL_DIR, TFLITE_FLOAT, TFLITE_INT8, LABEL_MAP)}
    result = model_card.build_card(
        labels=list(labels), input_size=input_size, box_format=BOX_FORMAT,
        outputs=_outputs_doc(max_detections), metrics=card.get("metrics"),
        postprocessing={"score": "sigmoid", "nms": "class-agnostic on the best class per anchor "
                        "(TFLite_Detection_PostProcess, use_regular_nms=false)",
                        "score_threshold": score_threshold, "iou_threshold": iou_threshold,
                        "max_detections": max_detections, "box_coder_scales": SCALE_FACTORS},
        deployed_threshold=card.get("deployed_threshold"), training=card.get("training"),
        dataset=dataset, artifacts=artifacts, latency_ms=latency)
    model_card.write_card(result, out)
    return result


def _outputs_doc(max_detections: int) -> dict:
    d = max_detections
    return {
        SAVED_MODEL_DIR: {
            "signature": "serving_default",
            "input": "input_tensor uint8 [N, H, W, 3] RGB, any size (resized inside)",
            "detection_boxes": f"float32 [N, {d}, 4]", "detection_scores": f"float32 [N, {d}]",
            "detection_classes": f"float32 [N, {d}] 1-based", "num_detections": "float32 [N]"},
        "tflite": {
            "input": "uint8 [1, 300, 300, 3] RGB, scale 1/128 zero point 128",
            "outputs": [f"boxes float32 [1, {d}, 4]", f"classes float32 [1, {d}] 0-based",
                        f"scores float32 [1, {d}]", "count float32 [1]"],
            "postprocessing_op": POSTPROCESS_OP},
    }


# ---------------------------------------------------------------- promotion gate

def promote(candidate_dir: str | Path, target_dir: str | Path, force: bool = False) -> Path:
    """Replace ``target_dir`` by a copy of ``candidate_dir`` unless the target's test AP@0.5 is
    higher than the candidate's (PromotionRefused; ``force`` overrides). A candidate without a
    test AP never replaces a target that has one, unless forced. The swap is atomic on Linux
    (renameat2 RENAME_EXCHANGE); elsewhere two renames with the old model restored on failure."""
    candidate, target = Path(candidate_dir), Path(target_dir)
    new_card = model_card.read_card(candidate)
    if target.exists() and not force:
        try:
            old_ap = model_card.ap50_on_test(model_card.read_card(target))
        except model_card.ModelCardError:
            old_ap = None  # no readable card: nothing to protect
        new_ap = model_card.ap50_on_test(new_card)
        if old_ap is not None and (new_ap is None or old_ap > new_ap):
            raise PromotionRefused(
                f"{target} has test AP@0.5 {old_ap:.4f}, candidate {candidate} has "
                f"{'none' if new_ap is None else f'{new_ap:.4f}'}; use --force to replace it anyway")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    shutil.copytree(candidate, staging, dirs_exist_ok=True)
    os.chmod(staging, 0o755)
    if not target.exists():
        os.rename(staging, target)
        return target
    if _rename_exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old model
        return target
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old)
    return target


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    rename_exchange, at_fdcwd = 2, -100
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


# ---------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="trained weights: a `train train` work dir (its best.weights.h5 and "
                             "training_result.json), a .weights.h5 file, a tf.train.Checkpoint "
                             "prefix or folder, or a .tflite SSD to re-export (e.g. the stock COCO)")
    parser.add_argument("--to", required=True, type=Path, help="model folder to write, e.g. models/raccoon")
    parser.add_argument("--force", action="store_true",
                        help="replace --to even if its test AP@0.5 is higher")
    parser.add_argument("--labels", default="raccoon",
                        help="comma-separated labels in class order, or a label map file")
    parser.add_argument("--metrics", type=Path, help="`train evaluate` metrics JSON on the test "
                        "split (its map50 is the AP@0.5 the promotion gate compares)")
    parser.add_argument("--deployed-threshold", type=float, help="score the daemon alerts at "
                        "(default: val_threshold from the work dir's training_result.json)")
    parser.add_argument("--config", type=Path, help="training YAML config to record in the card")
    parser.add_argument("--training-command", help="command that trained the checkpoint")
    parser.add_argument("--images", type=Path, nargs="+", default=[],
                        help="training images (files or folders): int8 calibration + dataset hash")
    parser.add_argument("--csv", type=Path, help="seed-format CSV (train_labels.csv): keep only "
                        "the --images it names, so test images stay out of calibration")
    parser.add_argument("--dataset-files", type=Path, nargs="*", default=[],
                        help="extra files (CSV, XML) to include in the dataset hash")
    parser.add_argument("--reference-tflite", type=Path,
                        help="TFLite model timed alongside, e.g. the stock COCO file")
    parser.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD)
    parser.add_argument("--iou-threshold", type=float, default=IOU_THRESHOLD)
    parser.add_argument("--max-detections", type=int, default=MAX_DETECTIONS)


def _image_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--images: {path} does not exist")
    return files


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot decode image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _labels(spec: str) -> list[str]:
    if Path(spec).is_file():
        from raccoon_watch.recognition.labels import load_labels

        return list(load_labels(spec)[1:])
    return [label.strip() for label in spec.split(",") if label.strip()]


BEST_WEIGHTS = "best.weights.h5"  # written by `train train` into its work dir
TRAINING_RESULT = "training_result.json"


def load_model(checkpoint: str | Path, num_classes: int):
    """Build MODEL's SSD and load weights: a work dir with best.weights.h5, a .weights.h5 file,
    a .tflite (stock COCO weights), or a tf.train.Checkpoint (prefix or folder, key ``model``)."""
    import tensorflow as tf

    from train.ssd.model import build_ssd

    model = build_ssd(num_classes)
    path = Path(checkpoint)
    if path.is_dir() and (path / BEST_WEIGHTS).is_file():
        path = path / BEST_WEIGHTS
    if path.name.endswith(".weights.h5"):
        model.load_weights(str(path))
    elif path.suffix == ".tflite":
        from train.ssd.tflite_import import import_tflite_weights

        import_tflite_weights(model, path)
    else:
        prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path)
        if prefix is None:
            raise FileNotFoundError(f"--checkpoint: no checkpoint in {path}")
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial().assert_existing_objects_matched()
    return model


def main(args: argparse.Namespace) -> int:
    from train.ssd.anchors import generate_anchors

    labels = _labels(args.labels)
    image_files = _image_files(args.images)
    if args.csv:
        import csv

        with open(args.csv, newline="") as handle:
            names = {row["filename"] for row in csv.DictReader(handle)}
        image_files = [p for p in image_files if p.name in names]
    if not image_files:
        raise SystemExit("export: --images must name the training images (int8 calibration)")
    rng = np.random.default_rng(0)
    calibration = rng.permutation(len(image_files))[:NUM_REPRESENTATIVE]
    result_path = Path(args.checkpoint) / TRAINING_RESULT
    training_result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    threshold = args.deployed_threshold
    if threshold is None:
        threshold = (training_result.get("best") or {}).get("val_threshold")
    metrics = {}
    if args.metrics:
        metrics["test"] = model_card.summarize_evaluation(json.loads(args.metrics.read_text()))
    if training_result.get("best"):
        metrics["validation"] = training_result["best"]
    card: dict = {
        "metrics": metrics,
        "deployed_threshold": threshold,
        "training": {"command": args.training_command,
                     "config": _read_yaml(args.config) or training_result.get("config")},
        "dataset_files": image_files + ([args.csv] if args.csv else []) + list(args.dataset_files),
    }
    model = load_model(args.checkpoint, len(labels))
    args.to.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{args.to.name}.export-", dir=args.to.parent) as tmp:
        export_model(model, generate_anchors(), labels, tmp,
                     [_read_rgb(image_files[i]) for i in calibration],
                     score_threshold=args.score_threshold, iou_threshold=args.iou_threshold,
                     max_detections=args.max_detections, card=card,
                     reference_tflite=args.reference_tflite)
        try:
            promote(tmp, args.to, force=args.force)
        except PromotionRefused as exc:
            print(f"export: refused: {exc}")
            return 1
    print(f"export: wrote {args.to}")
    return 0


def _read_yaml(path: Path | None) -> dict | None:
    if path is None:
        return None
    import yaml

    return {"path": str(path), "content": yaml.safe_load(path.read_text())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
