"""Training on several workers: ``python -m train train --strategy multi_worker`` as 2 real worker
processes on this machine (TF_CONFIG on 127.0.0.1), a few steps of the real training loop on a
handful of shared photos. Both take part (each made examples, the gradients were all-reduced: their
weights end identical, and moved from the start), and the chief's checkpoint restores into a fresh model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from testkit.ports import free_port
from train.train import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[2]
STEPS = 2
DEADLINE_S = 240  # the whole test is meant to stay under 2 min in CI; this only stops a hung collective


def _tiny_config(tmp_path: Path, shared: Path) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["data"]["shared_data"] = str(shared / "data")
    config["data"]["pretrained"] = str(shared / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite")
    config["data"]["val_positives"], config["data"]["val_negatives"] = 2, 2
    config["optim"].update(steps=STEPS, batch_size=2, warmup_steps=0)
    # only the 12 box/class predictor convs train (the feature extractor, extra layers included, is
    # frozen): the all-reduce, checkpoint and restore are the same code for any set of trainable
    # weights, and the first step's trace and backward pass cost ~2 CPU-s less per worker
    config["model"]["frozen_prefixes"] = ["Conv2d_"]
    config["eval"]["every_steps"] = STEPS
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start_workers(config: Path, work: Path, ports: list[int], shared: Path) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "RACCOON_SHARED": str(shared), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(work.parent / f"worker-{index}.log", "w") as log:  # the worker keeps its own copy
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "train", "train", "--strategy", "multi_worker", "--config", str(config),
                 "--work-dir", str(work), "--limit", "1", "--threads", "1"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _wait(procs: list[subprocess.Popen]) -> list[int | None]:
    """Exit codes once all have exited; a worker that fails ends the others at once (they would
    wait for it until the deadline), and so does the deadline (a hung collective)."""
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [p.returncode for p in procs]


def _run_workers(config: Path, work: Path, shared: Path, logs: list[Path]) -> None:
    """Start the workers and wait for them. A port checked free can be taken before TF binds it (by
    another pytest session on this machine): then once more on fresh ports."""
    for attempt in (1, 2):
        codes = _wait(_start_workers(config, work, [free_port(), free_port()], shared))
        if codes == [0] * len(codes):
            return
        tails = "\n".join(f"--- {log.name}\n" + log.read_text()[-3000:] for log in logs)
        if attempt == 1 and "Could not start gRPC server" in tails:
            shutil.rmtree(work, ignore_errors=True)
            continue
        pytest.fail(f"workers exited {codes}\n{tails}")


@pytest.mark.slow
def test_two_workers_train_together_and_the_checkpoint_restores(shared_dir, tmp_path):
    import tensorflow as tf

    from train.config import load_config
    from train.train import build_model

    config = _tiny_config(tmp_path, shared_dir)
    work = tmp_path / "work"
    started = time.monotonic()
    _run_workers(config, work, shared_dir, [tmp_path / "worker-0.log", tmp_path / "worker-1.log"])
    seconds = time.monotonic() - started

    chief, other = (json.loads((d / "training_result.json").read_text()) for d in (work, work / "worker-1"))
    for index, result in enumerate((chief, other)):
        assert result["worker"]["task_id"] == index and result["worker"]["workers"] == 2
        assert result["worker"]["replicas_in_sync"] == 2  # one replica per process, synchronised
        assert result["worker"]["steps_run"] == STEPS
        assert result["worker"]["examples_drawn"] >= 1  # each worker's own pipeline fed its replica
    assert [h["step"] for h in chief["history"]] == [0, STEPS]  # the chief validated and kept the best
    assert (work / "best.weights.h5").is_file()

    chief_ckpt = tf.train.latest_checkpoint(str(work / "checkpoints"))
    other_ckpt = tf.train.latest_checkpoint(str(work / "worker-1" / "checkpoints"))
    assert chief_ckpt.endswith(f"ckpt-{STEPS}") and other_ckpt.endswith(f"ckpt-{STEPS}")
    chief_vars, other_vars = tf.train.load_checkpoint(chief_ckpt), tf.train.load_checkpoint(other_ckpt)
    weights = [name for name in chief_vars.get_variable_to_shape_map() if name.startswith("model/")
               and "OPTIMIZER_SLOT" not in name and name.endswith("VARIABLE_VALUE")]
    assert weights
    for name in weights:  # all-reduced gradients: both workers hold the same weights after every step
        np.testing.assert_array_equal(chief_vars.get_tensor(name), other_vars.get_tensor(name), err_msg=name)

    cfg = load_config(config)
    model = build_model(cfg)  # the COCO-initialised start point
    start = [v.numpy().copy() for v in model.trainable_variables]
    tf.train.Checkpoint(model=model).restore(chief_ckpt).expect_partial().assert_existing_objects_matched()
    moved = [not np.array_equal(a, v.numpy()) for a, v in zip(start, model.trainable_variables)]
    assert any(moved), "the restored weights are the start point: nothing was trained or restored"
    print(f"multi-worker test: 2 workers, {STEPS} steps, {seconds:.1f} s for the workers")


@pytest.mark.parametrize(("tf_config", "message"), [
    (None, "needs TF_CONFIG"),
    ("{cluster", "TF_CONFIG is not JSON"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', '"worker": ["host:port"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', '"index": 0..0'),
])
def test_a_bad_tf_config_is_named_before_any_work(monkeypatch, capsys, tmp_path, tf_config, message):
    from train.__main__ import main as train_cli

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert train_cli(["train", "--strategy", "multi_worker", "--work-dir", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_the_training_pipeline_leaves_no_autotune_thread_to_wait_for_at_exit():
    """Deleting a tf.data iterator waits for its autotune thread, which held multi-worker runs 10-40 s
    after their last step; the training pipeline's parallelism is fixed, so autotune stays off."""
    from train.data import make_train_dataset
    from train.ssd.anchors import generate_anchors
    from train.ssd.targets import TargetAssigner

    dataset = make_train_dataset(lambda: iter(()), TargetAssigner(generate_anchors()), batch_size=2)
    assert dataset.options().autotune.enabled is False
