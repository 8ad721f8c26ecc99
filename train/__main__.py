"""One CLI for the training pipeline: ``python -m train {voc2csv,split,decoys,csv2tfrecord,train,export,crops,classifier,classifier-export,evaluate,all}``.

``all`` runs every stage end to end into a work dir (default train/work, gitignored): the detector
(the proposer) first, then the raccoon classifier on crops of what that detector proposes, then the
two-stage folder is evaluated as the daemon runs it and promoted to --to (default models/raccoon)
through the export promotion gate:

    python -m train all --work-dir train/work --to models/raccoon
    python -m train all --classifier-only     # keep --to's detector, retrain the classifier (minutes)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

if importlib.util.find_spec("tensorflow") is None:  # `make run` installs the runtime only; `make train` adds it
    sys.exit("python -m train: the training pipeline needs TensorFlow, from the train extra: run "
             ".venv/bin/pip install -c requirements.lock -e '.[train]' (`make train` does)")

import structlog

from raccoon_watch.config import DEFAULT_THRESHOLD, shared_dir
from train import decoys, evaluate, export, splits, tfrecord, voc
from train import train as train_stage
from train.classifier import crops as crops_stage
from train.classifier import fit as classifier_stage
from train.classifier import stage as classifier_export_stage
from train.config import load_config

log = structlog.get_logger("train")
REPO = Path(__file__).resolve().parent.parent
STAGES = {  # name -> (module with add_arguments + main, help)
    "voc2csv": (voc, "labelImg Pascal VOC XML folder -> seed CSV"),
    "split": (splits, "train/val/test/held-out-negatives split of ../shared/data"),
    "decoys": (decoys, "label cats/dogs in the raccoon-free photos with the COCO model (decoy classes)"),
    "csv2tfrecord": (tfrecord, "CSV (+ negative images) -> TF OD API TFRecord + label map"),
    "train": (train_stage, "fine-tune the SSD from the COCO TFLite weights"),
    "evaluate": (evaluate, "AP@0.5, COCO mAP, false alerts, PR curve of a TFLite model or predictions"),
    "export": (export, "SavedModel + float/int8 TFLite + label map + model card, with promotion gate"),
    "crops": (crops_stage, "the classifier's crop dataset: labelled boxes and what the detector proposes"),
    "classifier": (classifier_stage, "fine-tune the ImageNet MobileNet raccoon classifier on the crops"),
    "classifier-export": (classifier_export_stage, "int8 classifier + thresholds chosen on validation + card, into a model folder"),
}


def add_all_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", type=Path, default=shared_dir(), help="the shared/ folder (data/, pretrained/)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "train" / "work", help="every intermediate file")
    parser.add_argument("--to", type=Path, default=REPO / "models" / "raccoon", help="model folder to promote into")
    parser.add_argument("--force", action="store_true", help="promote even if the current model's test AP is higher")
    parser.add_argument("--config", type=Path, default=train_stage.DEFAULT_CONFIG, help="training YAML")
    parser.add_argument("--steps", type=int, help="override the config's training steps")
    parser.add_argument("--batch-size", type=int, help="override the config's batch size")
    parser.add_argument("--eval-every", type=int, help="override the config's validation interval")
    parser.add_argument("--limit", type=int, help="N positives + N negatives only (smoke test)")
    parser.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = default)")
    parser.add_argument("--classifier-only", action="store_true",
                        help="keep --to's detector and retrain only the classifier stage (minutes)")
    parser.add_argument("--classifier-epochs", type=int, help="override the classifier's fine-tuning epochs")


def _run(name: str, argv: list[str]) -> None:
    module, _ = STAGES[name]
    parser = argparse.ArgumentParser(prog=f"python -m train {name}")
    module.add_arguments(parser)
    started = time.monotonic()
    shown = " ".join(shlex.quote(a) for a in argv)
    log.info("stage_start", stage=name, argv=shown if len(shown) < 400 else shown[:400] + " ...")
    code = module.main(parser.parse_args(argv))
    if code:
        raise SystemExit(f"stage {name} failed with exit code {code}")
    log.info("stage_done", stage=name, seconds=round(time.monotonic() - started, 1))


def _training_images(split_dir: Path, raccoon_images: Path) -> list[str]:
    """Image files the model trained on (int8 calibration, dataset hash); no test images."""
    rows = voc.read_csv(split_dir / "train_positives.csv")
    names = sorted({r.filename for r in rows})
    negatives = (split_dir / "train_negatives.txt").read_text().split()
    return [str(raccoon_images / n) for n in names] + negatives


def run_all(args: argparse.Namespace) -> int:
    """Every stage in order; intermediate files under --work-dir."""
    data, work = args.shared / "data", args.work_dir
    raccoons = data / "raccoon_dataset"
    split_dir = work / "split"
    candidate, eval_dir = work / "candidate", work / "eval"
    cfg = load_config(args.config)
    labels = ",".join(cfg.data.labels)
    pretrained = args.shared / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite"
    started = time.monotonic()
    if args.classifier_only:
        _run("split", ["--shared-data", str(data), "--output", str(split_dir)] + (["--limit", str(args.limit)] if args.limit else []))
        _copy_detector(args.to, candidate)
    else:
        _detector_stages(args, cfg, work, split_dir, candidate, pretrained, labels)
    _classifier_stages(args, work, split_dir, candidate, pretrained)
    metrics = {}
    for key, extra in (("test", []), ("test_detector_alone", ["--no-classifier"])):
        output = eval_dir / f"{key}.json"
        _run("evaluate", ["--model", str(candidate), "--csv", str(raccoons / "test_labels.csv"),
                          "--images", str(raccoons / "images"), "--negatives", str(split_dir / "heldout_negatives.txt"),
                          "--threshold", str(_deployed_threshold(candidate, extra)), "--output", str(output), *extra,
                          *_ir_threshold_flag(candidate, extra)])
        metrics[key] = export.model_card.summarize_evaluation(json.loads(output.read_text()))
    _promote_with_metrics(candidate, args.to, metrics, args.force)
    log.info("all_done", seconds=round(time.monotonic() - started, 1), model=str(args.to),
             test_ap50=metrics["test"].get("ap50"), deployed_threshold=_deployed_threshold(candidate, []))
    return 0


def _deployed_threshold(model_dir: Path, extra: list[str]) -> float:
    """The threshold the daemon would use: the classifier card's, or the detector card's alone."""
    from raccoon_watch.recognition.detectors import find_model

    files = find_model(model_dir)
    card = files.classifier_card if files.classifier is not None and not extra else files.card
    return float(card.get("threshold", card.get("deployed_threshold", DEFAULT_THRESHOLD)))


def _ir_threshold_flag(model_dir: Path, extra: list[str]) -> list[str]:
    """``--ir-threshold T`` when the classifier card has a threshold of its own for infrared frames."""
    from raccoon_watch.recognition.detectors import find_model
    from raccoon_watch.recognition.detectors.factory import card_ir_threshold

    files = find_model(model_dir)
    value = card_ir_threshold(files.classifier_card) if files.classifier is not None and not extra else None
    return [] if value is None else ["--ir-threshold", str(value)]


def _copy_detector(source: Path, candidate: Path) -> None:
    """The detector files of a model folder (not its classifier stage) into a fresh candidate."""
    import shutil

    from raccoon_watch.recognition.detectors.factory import CLASSIFIER_CARD_NAME, CLASSIFIER_FILE

    if candidate.exists():
        shutil.rmtree(candidate)
    shutil.copytree(source, candidate, ignore=shutil.ignore_patterns(CLASSIFIER_CARD_NAME, CLASSIFIER_FILE))


def _classifier_stages(args: argparse.Namespace, work: Path, split_dir: Path, candidate: Path, pretrained: Path) -> None:
    """Crops of what the candidate's detector proposes -> fine-tuned classifier -> into the candidate."""
    crops_dir, cls_dir = work / "crops", work / "classifier"
    data = args.shared / "data"
    _run("crops", ["--shared-data", str(data), "--proposer", str(candidate), "--coco-model", str(pretrained),
                   "--output", str(crops_dir)] + (["--limit", str(args.limit)] if args.limit else []))
    _run("classifier", ["--crops", str(crops_dir), "--work-dir", str(cls_dir), "--threads", str(args.threads),
                        "--imagenet", str(args.shared / "pretrained" / "imagenet" / "mobilenet_v1_0.75_192_quant.tflite")]
         + (["--epochs", str(args.classifier_epochs)] if args.classifier_epochs is not None else []))
    command = "python -m train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _run("classifier-export", ["--work-dir", str(cls_dir), "--crops", str(crops_dir), "--model-dir", str(candidate),
                               "--split-dir", str(split_dir), "--shared-data", str(data), "--training-command", command])


def _detector_stages(args: argparse.Namespace, cfg, work: Path, split_dir: Path, candidate: Path, pretrained: Path,
                     labels: str) -> None:
    """VOC -> CSV -> split -> TFRecords -> fine-tuned SSD -> exported into the candidate folder."""
    data = args.shared / "data"
    raccoons = data / "raccoon_dataset"
    records, train_dir = work / "records", work / "train"
    _run("voc2csv", ["--annotations", str(raccoons / "annotations"), "--images", str(raccoons / "images"),
                     "--output", str(work / "csv" / "raccoon_labels.csv")])
    _run("split", ["--shared-data", str(data), "--output", str(split_dir)] + (["--limit", str(args.limit)] if args.limit else []))
    train_negatives = ["--negatives", str(split_dir / "train_negatives.txt")]
    if cfg.data.decoys:  # the teacher's cat/dog boxes ride in the train record like any labelled image
        decoy_csv, plain = work / "csv" / "decoys.csv", split_dir / "train_negatives_plain.txt"
        _run("decoys", ["--model", str(pretrained), "--label-map", str(pretrained.parent / "coco_labelmap.txt"),
                        *train_negatives, "--classes", ",".join(cfg.data.decoys),
                        "--min-score", str(cfg.data.teacher_min_score), "--output", str(decoy_csv), "--unlabelled", str(plain)])
        train_negatives = ["--csv", str(decoy_csv), "--images", "/", "--negatives", str(plain)]  # CSV paths are absolute
    _run("csv2tfrecord", ["--csv", str(split_dir / "train_positives.csv"), "--images", str(raccoons / "images"),
                          "--csv", str(data / "extra_raccoons" / "positives.csv"), "--images", str(data / "extra_raccoons"),
                          "--csv", str(data / "night" / "positives" / "positives.csv"), "--images", str(data / "night" / "positives"),
                          *(_night_extra_flags(split_dir, data) if cfg.data.night_extra else []), *train_negatives, "--labels", labels, "--output", str(records / "train.tfrecord")])
    _run("csv2tfrecord", ["--csv", str(split_dir / "val_positives.csv"), "--images", str(raccoons / "images"),
                          "--negatives", str(split_dir / "val_negatives.txt"),
                          "--labels", labels, "--output", str(records / "val.tfrecord")])
    train_argv = ["--config", str(args.config), "--work-dir", str(train_dir),
                  "--train-records", str(records / "train.tfrecord"), "--val-records", str(records / "val.tfrecord"),
                  "--night-list", str(split_dir / "night_negatives.txt"), "--threads", str(args.threads)]
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--eval-every", args.eval_every), ("--limit", args.limit)):
        if value:
            train_argv += [flag, str(value)]
    _run("train", train_argv)
    command = "python -m train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _run("export", ["--checkpoint", str(train_dir), "--to", str(candidate), "--force", "--labels", labels,
                    "--config", str(args.config), "--training-command", command,
                    "--reference-tflite", str(pretrained),
                    "--dataset-files", str(split_dir / "train_positives.csv"), str(split_dir / "val_positives.csv"),
                    "--images", *_training_images(split_dir, raccoons / "images")])


def _night_extra_flags(split_dir: Path, data: Path) -> list[str]:
    """csv2tfrecord flags for the real night photos the split gives the detector (training sources only)."""
    positives, negatives = split_dir / "night_extra_train_positives.csv", split_dir / "night_extra_train_negatives.txt"
    if not positives.is_file():
        return []
    flags = ["--negatives", str(negatives)] if negatives.is_file() and negatives.read_text().strip() else []
    if positives.read_text().count("\n") > 1:  # more than the header
        flags = ["--csv", str(positives), "--images", str(data / "night_extra" / "images"), *flags]
    return flags


def _promote_with_metrics(candidate: Path, target: Path, metrics: dict, force: bool) -> None:
    """Record the test metrics in the candidate's card, then promote it through the gate."""
    card = export.model_card.read_card(candidate)
    card["metrics"] = {**card.get("metrics", {}), **metrics}
    export.model_card.write_card(card, candidate)
    try:
        export.promote(candidate, target, force=force)
    except export.PromotionRefused as exc:
        log.warning("promotion_refused", reason=str(exc))
        raise SystemExit(f"all: not promoted: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in STAGES.items():
        module.add_arguments(sub.add_parser(name, help=help_text))
    add_all_arguments(sub.add_parser("all", help="every stage end to end, then promote to --to"))
    args = parser.parse_args(argv)
    if args.command == "all":
        return run_all(args)
    return STAGES[args.command][0].main(args)


if __name__ == "__main__":
    raise SystemExit(main())
