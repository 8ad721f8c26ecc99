"""Archive recognition on Ray: Ray Data streams the files through a pool of recognizer actors.

Why Ray (and Ray Data rather than tasks of our own): one command runs on a laptop and on a cluster,
``ray.init()`` starting a local Ray or joining one at ADDRESS; Ray Data's ``map_batches`` over an
actor pool is its batch-inference pattern: each actor loads the model once, blocks of file names
stream to whichever actor is free (a slow node takes fewer), a dead actor is restarted and its
block retried, and back-pressure keeps results flowing to the driver while the pool works. We keep
only the driver's part: the checkpoint, the progress bar and the results file.

The files are read by the actors, from the path the driver walked: on a cluster the archive must be
mounted at the same path on every node (NFS, a bucket mount), and every node needs the same
``raccoon-watch[scale]`` install (``ray start`` from that environment, with ``RAY_worker_niceness=0``
so the recognizers are not reniced to 15: see ``run_ray``).

Each actor asks for ``settings.threads`` CPUs and runs TFLite with that many threads; the pool has
``workers`` actors (default: the cluster's CPUs / threads, so a 2-core machine runs 2 single-thread
recognizers side by side rather than one with 2 threads: decoding, cropping and the classifier's
Python run in parallel too).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from raccoon_watch.archive.runner import DEFAULT_BATCH, OnDone
from raccoon_watch.archive.walk import ArchiveFile
from raccoon_watch.archive.worker import FileRecognizer, RecognitionSettings

WORKER_NICENESS = "RAY_worker_niceness"
RAY_MISSING = "--ray needs Ray: pip install 'raccoon-watch[scale]' (ray[data])"


class RecognizeBatch:
    """The Ray Data UDF: one ``FileRecognizer`` per actor; a batch of files -> their records as JSON
    strings (Arrow keeps one string column instead of guessing a schema for nested records)."""

    def __init__(self, settings: RecognitionSettings) -> None:
        self.worker = FileRecognizer(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        relative, paths, kinds = (list(batch[k]) for k in ("relative", "path", "kind"))
        records = [json.dumps(self.worker.record(str(p), str(k))) for p, k in zip(paths, kinds)]
        return {"relative": [str(r) for r in relative], "record": records}


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def run_ray(todo: Sequence[ArchiveFile], settings: RecognitionSettings, on_done: OnDone, address: str | None = None,
            workers: int | None = None, batch_size: int = DEFAULT_BATCH) -> int:
    """Recognize ``todo`` on Ray (``address`` None: a local Ray, started and stopped here; a Ray that
    is already initialised in this process is used as it is). Returns the number of actors."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(f"{RAY_MISSING} ({exc})") from None
    started = not ray.is_initialized()
    if started and address is None:
        # Ray renices its workers to 15 by default, to keep its own processes responsive; here the
        # workers ARE the job, and at nice 15 a busy machine starves them (measured: 0.8 photos/s
        # against 11 for one process at the caller's niceness). A cluster sets it at `ray start`.
        os.environ.setdefault(WORKER_NICENESS, "0")
    if started:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours is on stderr
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        size = workers or max(1, cluster_cpus() // max(1, settings.threads))
        if not todo:
            return size
        items = [{"relative": f.relative, "path": f.path, "kind": f.kind} for f in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
        ds = ds.map_batches(RecognizeBatch, fn_constructor_kwargs={"settings": settings}, batch_size=batch_size,
                            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=max(1, settings.threads),
                            batch_format="numpy")
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            on_done([(str(r), json.loads(str(s))) for r, s in zip(out["relative"], out["record"])])
        return size
    finally:
        if started:
            ray.shutdown()
