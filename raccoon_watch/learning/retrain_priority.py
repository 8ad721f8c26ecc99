"""How a retrain yields the machine to detection, defined once for every way it is started.

``raccoon-watch retrain`` from a shell, the review page's "Retrain now" (``web/retrain_job.py``) and
``raccoon-watch-retrain.service`` all run the same command, and the command itself drops its own
priority before TensorFlow starts a thread (``lower_priority``): the idle CPU class (``SCHED_IDLE``:
the scheduler weighs it 3 against a nice-0 thread's 1024 and a nice-19 one's 15, so it runs on CPU
time nothing else wants) where the kernel has it, and nice 19 either way (nice is also what the I/O scheduler derives a process's I/O priority from). It trains with
``DEFAULT_THREADS`` TensorFlow thread (``tf_env`` sets the thread pools' and OpenMP's sizes before
TensorFlow is imported). ``--priority normal`` and ``--threads N`` override both (a machine with no
daemon on it).

``tf_env`` also silences TensorFlow's C++ side (absl, oneDNN, cpu_feature_guard lines on stderr) at
its source: those lines are not the retrain's, and the page shows only the retrain's own lines
(``web/retrain_job.retrain_lines``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping, MutableMapping
from typing import Literal, get_args

Priority = Literal["idle", "normal"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
DEFAULT_PRIORITY: Priority = "idle"
DEFAULT_THREADS = 1  # TensorFlow intra-op threads (inter-op: always 1)
IDLE_NICE = 19
THREADS_ENV = "RACCOON_RETRAIN_THREADS"  # overrides DEFAULT_THREADS (the systemd unit sets it)


def default_threads(environ: Mapping[str, str] = os.environ) -> int:
    """``$RACCOON_RETRAIN_THREADS`` when it is a whole number >= 1, else ``DEFAULT_THREADS`` (pure)."""
    value = environ.get(THREADS_ENV, "")
    return int(value) if value.isascii() and value.isdigit() and int(value) >= 1 else DEFAULT_THREADS


def tf_env(threads: int) -> dict[str, str]:
    """Environment for a process about to import TensorFlow: ``threads`` compute threads, and no C++
    log lines (TF_CPP_MIN_LOG_LEVEL=3: errors too, which reach Python as exceptions anyway;
    GLOG_minloglevel / ABSL_MIN_LOG_LEVEL for the absl logger newer builds use)."""
    n = str(max(1, int(threads)))
    return {"OMP_NUM_THREADS": n, "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3", "ABSL_MIN_LOG_LEVEL": "3"}


def apply_tf_env(threads: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """``tf_env`` into this process's environment (before TensorFlow is imported; a value the caller
    set already is kept, except the thread counts, which follow ``threads``)."""
    for key, value in tf_env(threads).items():
        if key in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            environ[key] = value
        else:
            environ.setdefault(key, value)


def lower_priority(priority: Priority) -> dict[str, object]:
    """Drop this process's CPU priority for ``priority`` "idle" (nothing for "normal"); returns what
    it now runs at, for the log: ``{"priority", "nice", "sched"}``. Call it before any thread is
    started: Linux keeps nice and the scheduling class per thread, and new threads inherit them."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    sched = "other"
    if priority == "idle":
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < IDLE_NICE:
            try:
                os.nice(IDLE_NICE - current)
            except OSError:
                pass
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            except OSError:  # a sandbox that forbids it: nice 19 alone
                pass
    if hasattr(os, "sched_getscheduler"):
        policy = os.sched_getscheduler(0)
        sched = "idle" if policy == getattr(os, "SCHED_IDLE", -1) else ("batch" if policy == getattr(os, "SCHED_BATCH", -1) else "other")
    return {"priority": priority, "nice": os.getpriority(os.PRIO_PROCESS, 0), "sched": sched}


HEAP_RELEASE_BYTES = 128 * 1024
"""glibc's malloc: blocks from this size are mmapped (and unmapped when freed), and a free top of the
heap over it is trimmed. Its defaults grow the mmap threshold up to 32 MB as TensorFlow frees large
buffers, so the heap keeps them: a 5-step retrain peaked at 1.47 GB in a fresh install, 1.35 GB with
this (tests/test_retrain_input.py; issue 21's limit is 1.5 GB)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def release_heap_early(threshold: int = HEAP_RELEASE_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds for this process (call before TensorFlow allocates);
    True when set, False where the C library is not glibc (nothing changes there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
