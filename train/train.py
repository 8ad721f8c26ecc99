"""Fine-tune SSD-MobileNetV1 (from the COCO TFLite weights) into a raccoon detector.

    python -m train train --config train/configs/raccoon_ssd_mobilenet_v1.yaml --work-dir train/work

Custom loop with tf.GradientTape under a tf.distribute strategy (default: one machine; mirrored:
several GPUs; multi_worker: several processes or machines with TF_CONFIG set, tested with 2 workers
on one machine in tests/train/test_multi_worker.py; see train/README.md). Validation on a
split carved from the training data picks the best checkpoint and the deployed threshold; the
test split is never looked at. Writes to the work dir: checkpoints/ (resume), tensorboard/,
best.weights.h5, training_result.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import structlog
import tensorflow as tf

from train import data as data_lib
from train import metrics
from train.config import TrainConfig, load_config
from train.splits import make_plan
from train.ssd.anchors import generate_anchors
from train.ssd.head_init import class_head_init, head_columns
from train.ssd.losses import LossConfig, multibox_loss
from train.ssd.model import build_ssd, freeze_layers
from train.ssd.postprocess import postprocess
from train.ssd.targets import TargetAssigner
from train.ssd.tflite_import import import_tflite_weights

log = structlog.get_logger(__name__)
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "raccoon_ssd_mobilenet_v1.yaml"
PIPELINE_SEED_STRIDE = 1_000_003  # input pipeline i augments from seed + i * this: workers never share a stream


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to peak, then cosine decay to final_fraction * peak."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, final_fraction: float):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
        self.final_fraction = final_fraction

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.peak * step / max(self.warmup_steps, 1)
        progress = tf.clip_by_value((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, self.peak * cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "final_fraction": self.final_fraction}


STRATEGIES = ("default", "mirrored", "multi_worker", "multiworker")  # multiworker: the old spelling


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: this process's device; mirrored: every GPU of this machine; multi_worker: one replica
    per process of the cluster that ``TF_CONFIG`` describes (``tf.distribute.MultiWorkerMirroredStrategy``,
    gradients all-reduced every step; see train/README.md, "Train on more than one machine")."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name in ("multi_worker", "multiworker"):
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES[:3])}, got {name!r}")


def check_tf_config(text: str | None) -> None:
    """ValueError naming what is wrong with TF_CONFIG for a multi-worker run (None: unset)."""
    where = "(train/README.md, 'Train on more than one machine')"
    if not text:
        raise ValueError(f"--strategy multi_worker needs TF_CONFIG: the cluster's workers and this one's index {where}")
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"TF_CONFIG is not JSON ({exc}) {where}") from None
    workers = spec.get("cluster", {}).get("worker") if isinstance(spec, dict) and isinstance(spec.get("cluster"), dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not (isinstance(workers, list) and workers and all(isinstance(w, str) and ":" in w for w in workers)):
        raise ValueError(f'TF_CONFIG needs "cluster": {{"worker": ["host:port", ...]}}, got {text[:200]} {where}')
    if not (isinstance(task, dict) and task.get("type") in ("worker", "chief") and isinstance(task.get("index"), int)
            and 0 <= task["index"] < len(workers)):
        raise ValueError(f'TF_CONFIG needs "task": {{"type": "worker", "index": 0..{len(workers) - 1}}}, '
                         f"got {json.dumps(task)[:200]} {where}")


@dataclass(frozen=True)
class WorkerRole:
    """Who this process is in a multi-worker run: the chief (worker 0, or the only process) writes the
    work dir; any other worker runs the same steps (checkpoints, which every worker must save, and
    validation included) and writes them into ``work_dir/worker-<index>/``, never over the chief's files."""

    task_type: str | None
    task_id: int
    workers: int

    @property
    def is_chief(self) -> bool:
        return self.task_type in (None, "chief") or (self.task_type == "worker" and self.task_id == 0)

    def dir(self, work_dir: Path) -> Path:
        return work_dir if self.is_chief else work_dir / f"worker-{self.task_id}"


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return WorkerRole(None, 0, 1)
    spec = resolver.cluster_spec().as_dict()
    return WorkerRole(resolver.task_type, int(resolver.task_id or 0), sum(len(v) for v in spec.values()))


def multi_worker_dataset(strategy, generator_for, assigner: TargetAssigner, global_batch: int):
    """Each worker's own input pipeline (``distribute_datasets_from_function``): worker ``i`` augments
    with its own seed (``generator_for(i)``) into batches of global_batch / workers, so the workers
    see different examples and one step trains on ``global_batch`` of them in all. Auto-sharding is
    off: a generator has no files to split."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch)
        dataset = data_lib.make_train_dataset(generator_for(context.input_pipeline_id), assigner, per_replica)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


def build_model(cfg: TrainConfig) -> keras.Model:
    """The SSD for [raccoon, *decoys] with COCO float weights, the configured head init (each decoy
    from its COCO predictor) and frozen layers."""
    columns = head_columns(cfg.model.head_init, cfg.data.decoys)
    model = build_ssd(num_classes=len(cfg.data.labels))
    import_tflite_weights(model, cfg.data.pretrained_path(), class_head_init(columns))
    freeze_layers(model, cfg.model.frozen_prefixes)
    return model


def predict(model: keras.Model, inputs: np.ndarray, anchors: np.ndarray, batch_size: int = 16,
            class_id: int = data_lib.ALERT_LABEL_ID - 1):
    """float32 (N, 300, 300, 3) -> per image list of (score, box [ymin, xmin, ymax, xmax] normalised)
    of the detections of 0-based class ``class_id`` (0 = the alert label), after class-agnostic NMS as
    in the TFLite model: a box the model calls a decoy (cat) is not a raccoon detection."""
    results = []
    for start in range(0, len(inputs), batch_size):
        boxes, logits = model(inputs[start:start + batch_size], training=False)
        nms_boxes, scores, classes, counts = postprocess(boxes, logits, anchors)
        for b, s, c, n in zip(nms_boxes, scores, classes, counts):
            results.append([(float(s[i]), tuple(float(v) for v in b[i])) for i in range(int(n)) if c[i] == class_id])
    return results


def validate(model, examples, inputs, anchors, cfg: TrainConfig, label: str) -> dict:
    """AP@0.5 of the alert label over positives and negatives together (detections on negatives are
    false positives), and the deployed threshold: the lowest with <= max_false_alert_rate of
    negatives alerting, in day photos and in IR night frames (``Example.night``) separately.
    Decoy boxes in the examples are not ground truth here."""
    detections = predict(model, inputs, anchors)
    gt, preds = {}, {}
    for i, (example, dets) in enumerate(zip(examples, detections)):
        gt[str(i)] = [metrics.GtBox(label, (b[1], b[0], b[3], b[2]))  # xyxy
                      for b, k in zip(example.boxes, example.labels) if k == data_lib.ALERT_LABEL_ID]
        preds[str(i)] = [metrics.PredBox(label, s, (b[1], b[0], b[3], b[2])) for s, b in dets]
    ap = metrics.voc_ap(gt, preds)[label]
    negatives = [k for k, v in gt.items() if not v]
    night = {str(i) for i, example in enumerate(examples) if example.night}
    groups = [[k for k in negatives if k not in night], [k for k in negatives if k in night]]
    point = metrics.choose_threshold(gt, preds, negatives, cfg.eval.max_false_alert_rate,
                                     min_threshold=cfg.eval.min_threshold,
                                     negative_groups=groups) if negatives else None
    return {"val_ap50": float(ap), **({f"val_{k}": v for k, v in asdict(point).items()} if point else {})}


class WeightAverage:
    """Exponential moving average of the trainable weights (TF OD API ``use_moving_average``):
    validated, kept and exported instead of the raw weights, which jump from step to step.
    The decay ramps up as min(decay, (1 + step) / (10 + step)), so early steps are not dominated
    by the starting weights."""

    def __init__(self, variables, decay: float):
        self.variables, self.decay = list(variables), decay
        self.averages = [tf.Variable(v, trainable=False, name=f"ema_{i}",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                         for i, v in enumerate(self.variables)]

    def update(self, step) -> None:
        """In the train step, after the optimizer: average <- d * average + (1 - d) * weight."""
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
        for average, variable in zip(self.averages, self.variables):
            average.assign(decay * average + (1.0 - decay) * variable)

    def swap(self) -> None:
        """Exchange weights and averages (call twice to undo)."""
        for average, variable in zip(self.averages, self.variables):
            current = tf.identity(variable)
            variable.assign(average)
            average.assign(current)


def make_train_step(model, optimizer, strategy, loss_cfg: LossConfig, average: WeightAverage | None = None):
    """A tf.function running one distributed step; returns the mean loss parts."""
    trainable = model.trainable_variables

    def step_fn(images, cls_targets, reg_targets):
        with tf.GradientTape() as tape:
            boxes, logits = model(images, training=True)
            losses = multibox_loss(boxes, logits, reg_targets, cls_targets, loss_cfg)
            scaled = losses["loss"] / strategy.num_replicas_in_sync
        grads = tape.gradient(scaled, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        if average is not None:
            average.update(optimizer.iterations)
        return losses

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(step_fn, args=batch)
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

    return train_step


def load_data(cfg: TrainConfig, args):
    """Decoded training and validation examples, night backgrounds and raccoon crops: from
    TFRecords (--train-records/--val-records, night frames named by --night-list) or straight from
    the shared data folder split by ``splits.make_plan``."""
    shared = cfg.data.shared_data_path()
    crops = data_lib.load_crops(shared / "night" / "positives_crops", limit=args.limit or None)  # tiny runs decode few
    if args.train_records:
        return (*_records_data(args), crops)
    limit = args.limit
    plan = make_plan(shared, cfg.data.val_positives, cfg.data.val_negatives)
    train_entries, val_entries = plan.train, plan.val
    if limit:  # tiny runs (tests): a few positives and negatives of each
        train_entries = [e for e in train_entries if not e.is_negative][:limit] + [e for e in train_entries if e.is_negative][:limit]
        val_entries = [e for e in val_entries if not e.is_negative][:limit] + [e for e in val_entries if e.is_negative][:limit]
    label_ids = {name: i + 1 for i, name in enumerate(cfg.data.labels)}
    if cfg.data.decoys:
        train_entries = with_decoys(train_entries, cfg, args.work_dir / "decoys.csv")
    train_examples = data_lib.examples_from_entries(train_entries, label_ids)
    val_examples = data_lib.examples_from_entries(val_entries, label_ids)
    night_dir = (shared / "night" / "negatives").resolve()
    for example, entry in [*zip(train_examples, train_entries), *zip(val_examples, val_entries)]:
        example.night = entry.path.resolve().parent == night_dir
    night = [ex for ex in train_examples if ex.night]
    log.info("data_loaded", train=len(train_examples), val=len(val_examples), night_backgrounds=len(night), crops=len(crops))
    return train_examples, val_examples, night, crops


def with_decoys(entries: list, cfg: TrainConfig, csv_path: Path) -> list:
    """The raccoon-free entries get the COCO teacher's decoy boxes (train/decoys.py), also written
    to csv_path to look at. Labelled afresh each run (seconds), so a changed config is never stale."""
    from train import decoys
    from train.splits import Entry
    from train.voc import write_csv

    pretrained = cfg.data.pretrained_path()
    rows, _ = decoys.label_decoys(pretrained, pretrained.parent / "coco_labelmap.txt",
                                  [e.path for e in entries if e.is_negative], cfg.data.decoys, cfg.data.teacher_min_score)
    write_csv(rows, csv_path)
    boxes: dict[str, list] = {}
    for row in rows:
        boxes.setdefault(row.filename, []).append(row)  # label_decoys names images by resolved path
    out = []
    for entry in entries:
        found = boxes.get(str(entry.path.resolve()), []) if entry.is_negative else []
        out.append(Entry(entry.path, tuple((r.xmin, r.ymin, r.xmax, r.ymax) for r in found), tuple(r.label for r in found))
                   if found else entry)
    log.info("decoys_attached", images=len(boxes), boxes=len(rows))
    return out


def _first_of_each(examples: list, limit: int) -> list:
    """The first ``limit`` examples with a raccoon and the first ``limit`` without."""
    return ([e for e in examples if data_lib.has_label(e, data_lib.ALERT_LABEL_ID)][:limit]
            + [e for e in examples if not data_lib.has_label(e, data_lib.ALERT_LABEL_ID)][:limit])


def _records_data(args):
    """(train examples, val examples, night backgrounds) from TFRecords."""
    if not args.val_records:
        raise ValueError("--train-records needs --val-records (validation chooses checkpoint and threshold)")
    train_examples, train_names = data_lib.examples_from_tfrecords(args.train_records)
    val_examples, val_names = data_lib.examples_from_tfrecords(args.val_records)
    night_names = set()
    if args.night_list:
        night_names = {Path(line.strip()).name for line in args.night_list.read_text().splitlines() if line.strip()}
    for example, name in [*zip(train_examples, train_names), *zip(val_examples, val_names)]:
        example.night = name in night_names and not len(example.boxes)
    night = [ex for ex in train_examples if ex.night]
    if args.limit:  # tiny runs (tests): a few positives and negatives of each
        train_examples, val_examples, night = (_first_of_each(e, args.limit) for e in (train_examples, val_examples, night))
    log.info("data_loaded", train=len(train_examples), val=len(val_examples), night_backgrounds=len(night))
    return train_examples, val_examples, night


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune the raccoon SSD", add_help=add_help)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--work-dir", type=Path, default=Path("train/work"), help="checkpoints, logs, weights")
    parser.add_argument("--steps", type=int, default=None, help="override optim.steps")
    parser.add_argument("--batch-size", type=int, default=None, help="override optim.batch_size")
    parser.add_argument("--eval-every", type=int, default=None, help="override eval.every_steps")
    parser.add_argument("--train-records", type=Path, nargs="+", help="training TFRecords (default: split ../shared/data directly)")
    parser.add_argument("--val-records", type=Path, nargs="+", help="validation TFRecords (positives and raccoon-free images)")
    parser.add_argument("--night-list", type=Path, help="text list of the IR night frames among the negatives (training: copy-paste "
                        "backgrounds; validation: their own false-alert group)")
    parser.add_argument("--limit", type=int, default=None, help="use only N positives + N negatives (smoke tests)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in work-dir")
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="multi_worker: one process per machine, TF_CONFIG set on each (train/README.md)")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = TF default)")
    parser.add_argument("--validate-config", action="store_true", help="check the YAML and exit")


def _apply_overrides(cfg: TrainConfig, args) -> TrainConfig:
    optim = cfg.optim.model_copy(update={k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size}.items() if v})
    if optim.warmup_steps > optim.steps:
        optim = optim.model_copy(update={"warmup_steps": max(optim.steps // 10, 0)})
    ev = cfg.eval.model_copy(update={"every_steps": args.eval_every} if args.eval_every else {})
    return cfg.model_copy(update={"optim": optim, "eval": ev})


def _setup(cfg: TrainConfig, args, strategy):
    """Model, optimizer, checkpoint manager (restored with --resume) inside the strategy scope."""
    with strategy.scope():
        model = build_model(cfg)
        schedule = WarmupCosine(cfg.optim.learning_rate, cfg.optim.warmup_steps, cfg.optim.steps,
                                cfg.optim.final_lr_fraction)
        optimizer = keras.optimizers.Adam(schedule, clipnorm=cfg.optim.clipnorm)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        average = WeightAverage(model.trainable_variables, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
        extra = {"weight_average": average.averages} if average else {}
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, **extra)
    manager = tf.train.CheckpointManager(ckpt, str(args.work_dir / "checkpoints"), max_to_keep=3)
    if args.resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        log.info("resumed", checkpoint=manager.latest_checkpoint, step=int(step.numpy()))
    return model, optimizer, step, manager, schedule, average


def main(args: argparse.Namespace) -> int:
    cfg = _apply_overrides(load_config(args.config), args)
    if args.validate_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    try:
        strategy = make_strategy(args.strategy)  # first: MultiWorkerMirroredStrategy must precede other TF work
    except ValueError as exc:
        log.error("bad_strategy", error=str(exc))
        print(f"train: {exc}", file=sys.stderr)
        return 2
    keras.utils.set_random_seed(cfg.seed)
    role = worker_role(strategy)
    args = argparse.Namespace(**{**vars(args), "work_dir": role.dir(args.work_dir)})  # a worker's own files
    args.work_dir.mkdir(parents=True, exist_ok=True)
    anchors = generate_anchors()
    train_examples, val_examples, night, crops = load_data(cfg, args)
    val_inputs = data_lib.eval_inputs(val_examples)
    model, optimizer, step, manager, schedule, average = _setup(cfg, args, strategy)
    current_step = lambda: int(step.numpy())
    state_path = args.work_dir / "training_result.json"
    state = json.loads(state_path.read_text()) if args.resume and state_path.exists() else {"history": []}
    aug_cfg = cfg.augment
    mix = cfg.mix
    drawn = [0]  # examples this process's input pipeline made (a multi-worker run's proof that it took part)

    def generator_for(pipeline: int):
        def generate():
            seed = cfg.seed + PIPELINE_SEED_STRIDE * pipeline + current_step()
            for example in data_lib.training_examples(train_examples, night, crops, aug_cfg, mix, seed):
                drawn[0] += 1
                yield example
        return generate

    if role.workers > 1:
        batches = iter(multi_worker_dataset(strategy, generator_for, TargetAssigner(anchors), cfg.optim.batch_size))
    else:
        dataset = data_lib.make_train_dataset(generator_for(0), TargetAssigner(anchors), cfg.optim.batch_size)
        batches = iter(strategy.experimental_distribute_dataset(dataset))
    train_step = make_train_step(model, optimizer, strategy, cfg.loss, average)
    writer = tf.summary.create_file_writer(str(args.work_dir / "tensorboard"))
    if "best" not in state:  # the COCO-initialised model is the first candidate
        _evaluate_and_keep(model, val_examples, val_inputs, anchors, cfg, args, state, current_step(), writer)
    from tqdm import tqdm

    started = time.monotonic()
    first_step = current_step()
    with tqdm(total=cfg.optim.steps, initial=first_step, desc="train", unit="step") as bar:
        while current_step() < cfg.optim.steps:
            losses = train_step(next(batches))
            step.assign_add(1)
            bar.update(1)
            bar.set_postfix(loss=f"{float(losses['loss']):.3f}")
            if current_step() % 10 == 0:
                with writer.as_default(step=current_step()):
                    for name, value in losses.items():
                        tf.summary.scalar(f"loss/{name}", value)
                    tf.summary.scalar("learning_rate", schedule(step))
            if current_step() % cfg.eval.every_steps == 0 or current_step() == cfg.optim.steps:
                manager.save(checkpoint_number=current_step())
                if average is not None:
                    average.swap()  # validate (and keep) the averaged weights
                # every worker validates (the same weights, so the same result) and writes its own
                # work dir: workers that run the same steps in the same order never wait on each other
                _evaluate_and_keep(model, val_examples, val_inputs, anchors, cfg, args, state, current_step(), writer)
                if average is not None:
                    average.swap()
    elapsed = time.monotonic() - started
    state["seconds_per_step"] = elapsed / max(current_step() - first_step, 1)
    state["config"] = cfg.model_dump()
    state["worker"] = {"task_type": role.task_type, "task_id": role.task_id, "workers": role.workers,
                       "replicas_in_sync": strategy.num_replicas_in_sync, "steps_run": current_step() - first_step,
                       "examples_drawn": drawn[0]}
    state_path.write_text(json.dumps(state, indent=2))
    log.info("training_done", best=state.get("best"), seconds_per_step=round(state["seconds_per_step"], 3),
             worker=role.task_id, workers=role.workers)
    return 0


def _evaluate_and_keep(model, val_examples, val_inputs, anchors, cfg, args, state, step, writer) -> None:
    """Validate; keep the weights if val AP@0.5 (negatives' detections count as false positives) improved."""
    result = {"step": step, **validate(model, val_examples, val_inputs, anchors, cfg, cfg.data.label)}
    state["history"].append(result)
    with writer.as_default(step=step):
        tf.summary.scalar("val/ap50", result["val_ap50"])
        if "val_threshold" in result:
            tf.summary.scalar("val/recall_at_threshold", result["val_recall"])
            tf.summary.scalar("val/false_alert_rate", result["val_false_alert_rate"])
    best = state.get("best")
    if best is None or result["val_ap50"] > best["val_ap50"]:
        state["best"] = result
        model.save_weights(str(args.work_dir / "best.weights.h5"))
    (args.work_dir / "training_result.json").write_text(json.dumps(state, indent=2))
    log.info("validated", **result)


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
