"""``raccoon-watch retrain`` and ``raccoon-watch models``: the site learns its porch.

    raccoon-watch retrain --config my.yaml [--feedback DIR] [--steps 150] [--mode auto|head|blocks]
    raccoon-watch models --config my.yaml list | rollback | promote NAME [--force]

``retrain``: exports the feedback from the event store into ``<storage>/feedback`` (or reads the
folder given with ``--feedback``), reports and skips every unusable row (``learning.feedback``), holds out
whole nights for the gate with raccoon and raccoon-free visits on both sides (``split_site``). With
fewer than ``--min-visits`` of each kind on either side it stops there: it says how many more marked
visits (and nights) it needs, trains nothing and promotes nothing (exit 5). Otherwise it fine-tunes
the classifier that runs now (the site's promoted one, or the model folder's) on the shipped
training crops plus the site's crops (train/classifier/retrain.py, imported only here: TensorFlow is
loaded by this command, never by the daemon), measures deployed and candidate the same way, judges
each held-out visit as the daemon did live (``raccoon_watch.learning.replay``) and lets
``raccoon_watch.learning.promotion.judge_candidate`` promote it or not. The candidate folder stays under
``<storage>/models/candidates/`` either way; its card says what data, how many site crops, both
measurements, every held-out visit's outcome, which ones either classifier got wrong, and the gate's
reasons. Promotion moves the ``current`` link (``site_models``); the daemon takes the new classifier
on SIGHUP (``systemctl reload raccoon-watch``). Every run ends by writing
``<storage>/models/last_retrain.json`` (the page's Classifier tab shows it).

``retrain`` runs at idle priority with one thread unless told otherwise (``--priority``, ``--threads``;
``retrain_priority``), whoever starts it. ``models promote`` of a candidate the gate refused stops with
exit 4 and asks for ``--force``; with it, it promotes and logs ``classifier_promoted`` with
``forced=true`` and the gate's reasons.

Exit codes: 0 promoted (or ``--no-promote`` and the gate passed); 4 the gate refused (the candidate
is kept, with REFUSED.txt; ``models promote`` of it without ``--force``); 5 too little feedback to judge (nothing trained, nothing refused: mark
more visits); 2 bad input (config, no usable feedback, no shared data, a feedback image
replaced by an unreadable one during the run); 3 model unusable, or no TensorFlow in this install
(``make run`` installs none: the message names the extra to add). Feedback images are read through
``imagefile.read_image``, the capped per-file reader of ``detect`` (``--max-megapixels``): a non-image,
a truncated JPEG or an image declaring more pixels is one skipped row (``feedback_skipped``, with its
event), never a traceback. A run that stops before its candidate is whole (an error, Ctrl-C,
SIGTERM) removes its ``candidates/.tmp-*`` folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import structlog

from raccoon_watch.learning import site_models
from raccoon_watch.learning.feedback import DEFAULT_HOLDOUT_SHARE, DEFAULT_MIN_VISITS, SiteSample, SiteSplit
from raccoon_watch.learning.promotion import (
    DEFAULT_EXTRA_FALSE_ALERTS,
    DEFAULT_RECALL_DROP,
    PromotionTolerance,
    judge_candidate,
    promotion_metrics,
    wrong_table,
    wrong_visits,
)
from raccoon_watch.learning.retrain_options import (
    DEFAULT_BASE_LIMIT,
    DEFAULT_MODE,
    DEFAULT_STEPS,
    MODES,
    TRAIN_EXTRA_HINT,
    training_missing,
)
from raccoon_watch.learning.retrain_priority import (
    DEFAULT_PRIORITY,
    DEFAULT_THREADS,
    PRIORITIES,
    THREADS_ENV,
    apply_tf_env,
    default_threads,
    lower_priority,
    release_heap_early,
)
from raccoon_watch.store.retention import MB
from raccoon_watch.support.imagefile import DEFAULT_MAX_PIXELS

log = structlog.get_logger("raccoon_watch.retrain")

COMMANDS = ("retrain", "models")
EXIT_BAD_INPUT, EXIT_MODEL, EXIT_REFUSED, EXIT_NEED_MORE = 2, 3, 4, 5
OUTCOME_PROMOTED, OUTCOME_PASSED, OUTCOME_REFUSED, OUTCOME_NEED_MORE = "promoted", "passed", "refused", "need_more"



# `make run` installs the runtime only (LiteRT, no TensorFlow); retraining needs the train extra
def add_parsers(sub: Any) -> None:
    """The ``retrain`` and ``models`` subcommands of ``raccoon-watch``."""
    r = sub.add_parser("retrain", help="fine-tune the raccoon classifier on this site's feedback; promote it "
                       "only if the gate finds it no worse on the standard set and better on held-out site feedback")
    r.add_argument("--config", "-c", required=True, type=Path, help="YAML config file (storage.path, the model)")
    r.add_argument("--feedback", type=Path, help="an exported feedback folder (default: export the store's "
                   "feedback into <storage>/feedback first)")
    r.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimizer steps per mode (default {DEFAULT_STEPS})")
    r.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                   help="train the head only, also the last two blocks, or both and keep the better (default)")
    r.add_argument("--base-crops", type=Path, help="folder with the shipped training crops (train.npz, val.npz); "
                   "default <storage>/retrain/base_crops, built there once from the shared data and kept under "
                   "storage.base_crops_mb")
    r.add_argument("--base-build-limit", type=int, help="build the base crops from N positives + N negatives "
                   "per split only (tests)")
    r.add_argument("--base-limit", type=int, default=DEFAULT_BASE_LIMIT, help="shipped training crops used per retrain")
    r.add_argument("--holdout-share", type=float, default=DEFAULT_HOLDOUT_SHARE,
                   help="share of the marked visits held out for the gate, as whole nights (default 0.3)")
    r.add_argument("--min-visits", type=int, default=DEFAULT_MIN_VISITS,
                   help="raccoon and raccoon-free visits the gate needs on each side of the split before it "
                   f"judges (default {DEFAULT_MIN_VISITS}); fewer: exit 5, saying how many more to mark")
    r.add_argument("--recall-drop", type=float, default=DEFAULT_RECALL_DROP,
                   help="test-split recall the candidate may lose at the operating point (default 0.03)")
    r.add_argument("--extra-false-alerts", type=int, default=DEFAULT_EXTRA_FALSE_ALERTS,
                   help="more alerting held-out raccoon-free photos allowed (default 0)")
    r.add_argument("--weights", type=Path, help="start from these float .weights.h5 (from `python -m train "
                   "classifier`) instead of the deployed int8 file's recovered weights")
    r.add_argument("--threads", type=int, default=default_threads(),
                   help=f"TensorFlow / LiteRT threads (default {DEFAULT_THREADS}, or ${THREADS_ENV})")
    r.add_argument("--priority", choices=PRIORITIES, default=DEFAULT_PRIORITY,
                   help="idle (default): the idle CPU class and nice 19, so detection never waits for the "
                   "retrain; normal: as started (a machine with no daemon on it)")
    r.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                   help="skip feedback images larger than this, read from the header before decoding "
                   "(default: %(default)g, as detect)")
    r.add_argument("--no-promote", action="store_true", help="measure and keep the candidate, never promote")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("models", help="the site's retrained classifiers: list, roll back, promote one")
    m.add_argument("--config", "-c", required=True, type=Path, help="YAML config file (for storage.path)")
    m.add_argument("action", choices=("list", "rollback", "promote"))
    m.add_argument("name", nargs="?", help="candidate folder name (promote)")
    m.add_argument("--force", action="store_true", help="promote a candidate the gate refused (logged as forced)")


def _import_training() -> ModuleType:
    """``train.classifier.retrain`` from the checkout this package is in.

    ``train/`` is not installed (only ``raccoon_watch`` is): this command, never the daemon, finds it
    next to the package, as ``python -m train`` does from the repository root."""
    from raccoon_watch.config import REPO_ROOT

    if (REPO_ROOT / "train").is_dir() and str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    return importlib.import_module("train.classifier.retrain")


def main(args: argparse.Namespace) -> int:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    from raccoon_watch.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"raccoon-watch: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "models":
        return _models(cfg, args)
    return _retrain(cfg, args)


def _models(cfg: Any, args: argparse.Namespace) -> int:
    root = site_models.models_root(cfg.storage.path)
    if args.action == "list":
        now = site_models.current(root)
        rows = []
        for folder in site_models.list_candidates(root):
            card = _card(folder)
            gate = card.get("gate", {})
            rows.append({"name": folder.name, "current": now is not None and folder.resolve() == now,
                         "promoted_by_gate": gate.get("promote"), "reasons": gate.get("reasons", []),
                         "site_crops": card.get("retrain", {}).get("data", {}).get("site_crops"),
                         "wrong": gate.get("wrong", [])})
        listing: dict[str, Any] = {"current": now.name if now else site_models.SHIPPED, "candidates": rows}
        last = site_models.last_retrain(root)
        if last is not None:
            listing["last_retrain"] = last
        print(json.dumps(listing, indent=1))
        return 0
    try:
        if args.action == "rollback":
            now, was = site_models.roll_back(root)
            print(json.dumps({"current": now.name if now else site_models.SHIPPED,
                              "previous": was.name if was else site_models.SHIPPED}))
        else:
            if not args.name:
                print("raccoon-watch models promote: name the candidate (see `models list`)", file=sys.stderr)
                return EXIT_BAD_INPUT
            folder = root / site_models.CANDIDATES / args.name
            if not folder.is_dir() or "/" in args.name:
                print(f"raccoon-watch models promote: no candidate {args.name!r} under {folder.parent}", file=sys.stderr)
                return EXIT_BAD_INPUT
            refused = refused_reasons(folder)
            if refused is not None and not getattr(args, "force", False):
                print(f"raccoon-watch models promote: the gate refused {args.name}: {'; '.join(refused) or 'see REFUSED.txt'}. "
                      "Promote it anyway with --force", file=sys.stderr)
                return EXIT_REFUSED
            site_models.promote(root, folder)
            if refused is not None:
                log.warning("classifier_promoted", candidate=args.name, forced=True, gate_reasons=refused)
            else:
                log.info("classifier_promoted", candidate=args.name, forced=False)
            print(json.dumps({"current": args.name, "forced": refused is not None}))
    except FileNotFoundError as exc:
        print(f"raccoon-watch models: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("raccoon-watch models: send SIGHUP (systemctl reload raccoon-watch) for the daemon to switch", file=sys.stderr)
    return 0


def refused_reasons(folder: Path) -> list[str] | None:
    """The gate's reasons when it refused the candidate in ``folder`` (its REFUSED.txt exists, or its
    card says the gate did not promote it), else None."""
    gate = _card(folder).get("gate")
    gate = gate if isinstance(gate, dict) else {}
    if not (folder / site_models.REFUSED_FILE).is_file() and gate.get("promote") is not False:
        return None
    reasons = gate.get("reasons")
    return [str(r) for r in reasons] if isinstance(reasons, list) else []


def _card(folder: Path) -> dict[str, Any]:
    try:
        card = json.loads((folder / site_models.CLASSIFIER_CARD).read_text())
        return card if isinstance(card, dict) else {}
    except (OSError, ValueError):
        return {}


def _feedback_folder(cfg: Any, args: argparse.Namespace) -> tuple[Path, list[dict[str, str]]]:
    """The folder to read, and the events the export skipped (with why)."""
    if args.feedback is not None:
        return args.feedback, []
    from raccoon_watch.learning.export_feedback import export_feedback_report
    from raccoon_watch.store import EventStore

    folder = Path(cfg.storage.path) / "feedback"
    store = EventStore(cfg.storage.path)
    try:
        report = export_feedback_report(store, folder)
    finally:
        store.close()
    return folder, [{"where": f"event {eid}", "reason": why} for eid, why in report.skipped]


def _thresholds(cfg: Any, card: dict[str, Any]) -> Any:
    """The daemon-wide ``app.Thresholds`` (alert and review, colour and infrared) as the daemon takes
    them from the config and the classifier card (``App.thresholds_for``)."""
    from raccoon_watch.app import Thresholds, deployed_thresholds, review_thresholds
    from raccoon_watch.recognition.detectors.factory import card_ir_threshold, card_review_thresholds

    d = cfg.detector
    card_threshold = card.get("threshold")
    alert, ir_alert = deployed_thresholds(d.threshold, d.ir_threshold,
                                          None if card_threshold is None else float(card_threshold),
                                          card_ir_threshold(card))
    review, ir_review = review_thresholds(d.review_threshold, d.ir_review_threshold, *card_review_thresholds(card))
    return Thresholds(alert, ir_alert, review, ir_review)


def _filter_for(cfg: Any, thresholds: Any) -> Any:
    """camera name -> the detection filter the daemon applies to it (cameras not in the config: the
    daemon-wide labels and thresholds)."""
    from raccoon_watch.app import camera_filter
    from raccoon_watch.filters import DetectionFilter

    default = DetectionFilter(labels=frozenset(cfg.detector.labels), threshold=thresholds.alert,
                              ir_threshold=thresholds.ir_alert, review_threshold=thresholds.review,
                              ir_review_threshold=thresholds.ir_review)
    filters = {name: camera_filter(cam, cfg, thresholds) for name, cam in cfg.cameras.items()}
    return lambda camera: filters.get(camera, default)


def _kept_visits(cfg: Any, holdout: tuple[SiteSample, ...]) -> dict[str, Any]:
    """event id -> ``replay.KeptVisit``: the store's record of each held-out event (what the daemon
    did, its per-frame scores), or only the verdict for an event this store does not have."""
    from raccoon_watch.learning.replay import KeptVisit, kept_visit_from_event
    from raccoon_watch.store import EventStore
    from raccoon_watch.store.events import EventRow
    from raccoon_watch.store.schema import DB_NAME

    rows: dict[str, EventRow] = {}
    if (Path(cfg.storage.path) / DB_NAME).is_file():  # never create a store just to look
        store = EventStore(cfg.storage.path)
        try:
            for s in holdout:
                row = store.get_event(s.event_id)
                if row is not None:
                    rows[s.event_id] = row
        finally:
            store.close()
    visits = {}
    for s in holdout:
        if s.event_id in visits:
            continue
        row = rows.get(s.event_id)
        visits[s.event_id] = (kept_visit_from_event(row, s.label) if row is not None
                              else KeptVisit(s.event_id, s.camera, s.start_time, s.label))
    return visits


def _need_more(root: Path, split: SiteSplit, usable: int, problems: list[dict[str, str]]) -> int:
    """Too little feedback to judge a candidate: say what is missing, train and promote nothing."""
    message = split.need_more_message()
    held, trained = split.holdout_mix, split.train_mix
    report = {"time": time.time(), "outcome": OUTCOME_NEED_MORE, "message": message, "candidate": None,
              "split": split.to_dict(), "feedback_usable": usable, "feedback_skipped": len(problems)}
    site_models.write_last_retrain(root, report)
    log.info("retrain_needs_more", **split.to_dict())
    print(json.dumps({"promoted": False, "need_more": True, "message": message, "split": split.to_dict()}))
    print(f"raccoon-watch retrain: too little feedback to judge a candidate: {message}. The gate needs at least "
          f"{split.minimum} raccoon and {split.minimum} raccoon-free marked visits held out (whole nights) and as "
          f"many to train on; held out now: {held.raccoon:g} raccoon, {held.not_raccoon:g} raccoon-free; training: "
          f"{trained.raccoon:g} raccoon, {trained.not_raccoon:g} raccoon-free. Nothing was trained or promoted.",
          file=sys.stderr)
    return EXIT_NEED_MORE


def _retrain(cfg: Any, args: argparse.Namespace) -> int:
    from raccoon_watch.config import shared_dir
    from raccoon_watch.learning.feedback import read_feedback, split_site
    from raccoon_watch.recognition.detectors import find_model, resolve_default_model
    from raccoon_watch.recognition.detectors.base import ModelError

    started = time.monotonic()
    missing = training_missing()
    if missing:  # before any work: nothing here runs without TensorFlow
        print(f"raccoon-watch retrain: {missing}", file=sys.stderr)
        return EXIT_MODEL
    threads = int(getattr(args, "threads", DEFAULT_THREADS))
    if threads < 1:
        print(f"raccoon-watch retrain: --threads must be at least 1, got {threads}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # before any thread starts (LiteRT's, TensorFlow's): new threads inherit nice and the CPU class
    log.info("retrain_priority", threads=threads, **lower_priority(getattr(args, "priority", DEFAULT_PRIORITY)))
    apply_tf_env(threads)
    release_heap_early()  # before TensorFlow allocates: its freed buffers go back to the system
    max_mp = float(getattr(args, "max_megapixels", DEFAULT_MAX_PIXELS / 1e6))
    if not (math.isfinite(max_mp) and max_mp > 0):
        print(f"raccoon-watch retrain: --max-megapixels must be a positive number, got {max_mp}", file=sys.stderr)
        return EXIT_BAD_INPUT
    max_pixels = int(max_mp * 1e6)
    try:
        tolerance = PromotionTolerance(args.recall_drop, args.extra_false_alerts)
        if args.min_visits < 0:
            raise ValueError(f"--min-visits must be >= 0, got {args.min_visits}")
        if not 0.0 < args.holdout_share < 1.0:
            raise ValueError(f"--holdout-share must be in (0, 1), got {args.holdout_share}")
        model_dir = Path(cfg.detector.model or resolve_default_model())
        files = find_model(model_dir)
        if files.classifier is None:
            raise ModelError(f"{model_dir}: no classifier stage to retrain ({site_models.CLASSIFIER_CARD})")
        _thresholds(cfg, files.classifier_card)  # a card with a bad threshold: bad input, before any work
    except ValueError as exc:
        print(f"raccoon-watch retrain: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelError as exc:
        print(f"raccoon-watch retrain: {exc}", file=sys.stderr)
        return EXIT_MODEL
    shared = shared_dir()
    if not (shared / "data" / "raccoon_dataset" / "test_labels.csv").is_file():
        print(f"raccoon-watch retrain: the shared data is not at {shared} (set RACCOON_SHARED): it holds the "
              "shipped training crops' sources and the gate's test split", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder, problems = _feedback_folder(cfg, args)
    try:
        samples, row_problems = read_feedback(folder, max_pixels=max_pixels)
    except ValueError as exc:
        print(f"raccoon-watch retrain: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problems += [p.to_dict() for p in row_problems]
    for p in problems:
        log.warning("feedback_skipped", where=p["where"], reason=p["reason"])
    if not samples:
        print(f"raccoon-watch retrain: no usable feedback in {folder} ({len(problems)} rows skipped): mark some "
              "events raccoon / not a raccoon on the review page first", file=sys.stderr)
        return EXIT_BAD_INPUT
    split = split_site(samples, args.holdout_share, args.min_visits)
    log.info("retrain_feedback", usable=len(samples), skipped=len(problems), train_events=len({s.event_id for s in split.train}),
             holdout_events=len({s.event_id for s in split.holdout}), split=split.by, holdout=list(split.holdout_groups),
             train_visits=split.train_mix.to_dict(), holdout_visits=split.holdout_mix.to_dict())
    if not split.enough:
        return _need_more(site_models.models_root(cfg.storage.path), split, len(samples), problems)
    try:
        rt = _import_training()  # TensorFlow from here on
    except ImportError as exc:
        print(f"raccoon-watch retrain: needs TensorFlow and the train extra ({TRAIN_EXTRA_HINT}): {exc}",
              file=sys.stderr)
        return EXIT_MODEL

    root = site_models.models_root(cfg.storage.path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        staging = site_models.staging_dir(root, stamp)
    except OSError as exc:
        print(f"raccoon-watch retrain: cannot write a candidate under {root}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    checked = CheckedInput(model_dir, files.classifier_card, shared, split, len(samples), problems, folder,
                           tolerance, started, max_pixels)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None  # stop: SystemExit, cleanup runs
    try:
        return _fit_gate_install(cfg, args, rt, checked, root, staging, stamp)
    except (ValueError, OSError) as exc:  # a feedback image replaced mid-run, a folder that cannot be written
        print(f"raccoon-watch retrain: {str(exc)[:500]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelError as exc:
        print(f"raccoon-watch retrain: {str(exc)[:500]}", file=sys.stderr)
        return EXIT_MODEL
    except RuntimeError as exc:  # the base crops could not be built from the shared data
        print(f"raccoon-watch retrain: {str(exc)[:500]}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if staging.exists():  # not installed as a candidate: whatever stopped the run, no half candidate stays
            shutil.rmtree(staging, ignore_errors=True)
            log.warning("retrain_staging_removed", folder=str(staging))


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True, slots=True)
class CheckedInput:
    """What the checks before TensorFlow found: the model, the shared data, the usable feedback."""

    model_dir: Path
    classifier_card: dict[str, Any]
    shared: Path
    split: Any  # sitefeedback.SiteSplit
    usable: int  # feedback rows read and kept
    problems: list[dict[str, str]]  # rows skipped, with the event and why
    folder: Path
    tolerance: PromotionTolerance
    started: float  # monotonic
    max_pixels: int


def _fit_gate_install(cfg: Any, args: argparse.Namespace, rt: Any, inp: CheckedInput, root: Path, staging: Path,
                      stamp: str) -> int:
    """Fit the candidate into ``staging``, measure both, let the gate decide, install (and promote)."""
    deployed = site_models.current(root) or inp.model_dir
    work = Path(cfg.storage.path) / "retrain"
    # the default folder is the store's, under storage.base_crops_mb; a folder given with --base-crops is left as it is
    cap = None if args.base_crops else int(cfg.storage.base_crops_mb * MB)
    base = rt.ensure_base_crops(args.base_crops or work / "base_crops", inp.model_dir, inp.shared, args.base_build_limit,
                                cap)
    opts = rt.RetrainOptions(deployed=deployed, model_dir=inp.model_dir, base_crops=base, out=staging, work=work,
                             steps=args.steps, mode=args.mode, base_limit=args.base_limit, threads=args.threads,
                             float_weights=args.weights, progress=not args.quiet, max_pixels=inp.max_pixels)
    result = rt.retrain(opts, inp.split.train)
    thresholds = _thresholds(cfg, inp.classifier_card)
    filter_for = _filter_for(cfg, thresholds)
    threshold = thresholds.alert  # the standard set (photos, colour) is measured at the alert threshold
    standard = rt.StandardSet.from_shared(inp.shared / "data")
    split = inp.split
    measured = {}
    for name, classifier_dir in (("deployed", deployed), ("candidate", staging)):
        folder_for = rt.system_folder(classifier_dir, inp.model_dir, work / "eval", name)
        measured[name] = rt.measure(folder_for, threshold, standard, split.holdout, filter_for, threads=args.threads,
                                    max_pixels=inp.max_pixels)
    outcomes = _judge(cfg, split, measured, filter_for, site_models.model_version(deployed / site_models.CLASSIFIER_FILE))
    metrics = {name: promotion_metrics(m[0].recall, m[0].false_alerts, m[0].negatives, outcomes, name)  # type: ignore[arg-type]
               for name, m in measured.items()}
    for name, m in metrics.items():
        log.info("retrain_measured", model=name, **m.to_dict())
    decision = judge_candidate(metrics["deployed"], metrics["candidate"], inp.tolerance)
    wrong = wrong_visits(outcomes)
    card = result.card
    card["retrain"]["data"].update({"feedback_folder": str(inp.folder), "feedback_usable": inp.usable,
                                    "feedback_skipped": inp.problems[:200], "split": split.by,
                                    "holdout_groups": list(split.holdout_groups), "site_split": split.to_dict(),
                                    "site_train_events": len({s.event_id for s in split.train}),
                                    "site_holdout_events": len({s.event_id for s in split.holdout})})
    card["gate"] = {"promote": decision.promote, "reasons": list(decision.reasons),
                    "tolerance": {"recall_drop": inp.tolerance.recall_drop,
                                  "extra_false_alerts": inp.tolerance.extra_false_alerts},
                    "deployed": {**metrics["deployed"].to_dict(), **measured["deployed"][0].detail},
                    "candidate": {**metrics["candidate"].to_dict(), **measured["candidate"][0].detail},
                    "site_holdout": [o.to_dict() for o in outcomes], "wrong": [o.to_dict() for o in wrong],
                    "replay_disagrees_with_live": sum(o.replay_agrees is False for o in outcomes)}
    card["retrain"]["total_seconds"] = round(time.monotonic() - inp.started, 1)
    (staging / site_models.CLASSIFIER_CARD).write_text(json.dumps(card, indent=1) + "\n")
    if not decision.promote:
        (staging / site_models.REFUSED_FILE).write_text(
            "".join(f"{r}\n" for r in decision.reasons) + "\nHeld-out visits either classifier got wrong:\n"
            + wrong_table(outcomes))
    name = f"{stamp}-{site_models.model_version(staging / site_models.CLASSIFIER_FILE)}"
    candidate = site_models.install_candidate(root, staging, name)
    promoted = decision.promote and not args.no_promote
    if promoted:
        site_models.promote(root, candidate)
    outcome = OUTCOME_PROMOTED if promoted else (OUTCOME_PASSED if decision.promote else OUTCOME_REFUSED)
    site_models.write_last_retrain(root, {"time": time.time(), "outcome": outcome, "candidate": name,
                                          "message": "; ".join(decision.reasons), "split": split.to_dict(),
                                          "wrong": [o.to_dict() for o in wrong]})
    summary = {"candidate": str(candidate), "promoted": promoted, "reasons": list(decision.reasons),
               "deployed": metrics["deployed"].to_dict(), "measured_candidate": metrics["candidate"].to_dict(),
               "wrong": [o.to_dict() for o in wrong], "site_crops": card["retrain"]["data"]["site_crops"],
               "mode": card["retrain"]["mode"], "seconds": card["retrain"]["total_seconds"]}
    log.info("retrain_done", promoted=promoted, candidate=name, reasons=list(decision.reasons),
             wrong=[o.event_id for o in wrong])
    print(json.dumps(summary))
    print(f"raccoon-watch retrain: held-out visits either classifier got wrong:\n{wrong_table(outcomes)}", file=sys.stderr)
    if promoted:
        print("raccoon-watch retrain: promoted; send SIGHUP (systemctl reload raccoon-watch) to switch", file=sys.stderr)
    return 0 if decision.promote else EXIT_REFUSED


def _judge(cfg: Any, split: SiteSplit, measured: dict[str, Any], filter_for: Any, deployed_version: str) -> list[Any]:
    """Each held-out visit's outcome for both classifiers, judged as the daemon judges a visit."""
    from raccoon_watch.app import debounce_params, visit_params
    from raccoon_watch.learning.replay import ReplayRules, judge_visit

    visits = _kept_visits(cfg, split.holdout)
    outcomes = []
    for event_id, visit in visits.items():
        dep, cand = measured["deployed"][1].get(event_id), measured["candidate"][1].get(event_id)
        if dep is None or cand is None:
            continue
        rules = ReplayRules(filter_for(visit.camera), visit_params(cfg), debounce_params(cfg), mode=dep.mode)
        outcome = judge_visit(visit, dep.score, cand.score, rules, deployed_version)
        if outcome.replay_agrees is False:
            log.warning("retrain_replay_disagrees", event_id=event_id, live_alerted=visit.live_alerted,
                        note="replaying the live trace does not give what the daemon did; the live outcome is used")
        outcomes.append(outcome)
    return outcomes
