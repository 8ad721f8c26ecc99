"""``python -m tests.wedged_daemon run --config ...``: the real daemon with a detector that wedges.

For tests/test_notify.py: a worker stuck inside ``detect()`` must silence WATCHDOG=1. The fault is
real and injected here, never in the daemon's own code:

- every worker's recognizer blocks forever in ``recognize()`` (the worker's detect() call) once
  ``WEDGE_AFTER_S`` seconds have passed since it was made (as a hung GPU driver would);
- the liveness limit on one ``detect()`` call is ``DETECT_LIMIT_S`` instead of 30 s.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any, Callable

from raccoon_watch import app as app_module
from raccoon_watch.service import cli, notify
from raccoon_watch.service.liveness import LivenessLimits
from raccoon_watch.workers import DetectorWorker

WEDGE_AFTER_ENV = "WEDGE_AFTER_S"
DETECT_LIMIT_ENV = "DETECT_LIMIT_S"


def wedging(make_detector: Callable[[], Any], after_s: float) -> Callable[[], Any]:
    """``make_detector`` whose Recognizers' ``recognize()`` blocks forever ``after_s`` s after creation."""

    def make() -> Any:
        detector = make_detector()
        wedge_at = time.monotonic() + after_s
        real_recognize = detector.recognize

        def recognize(*args: Any, **kwargs: Any) -> Any:
            if time.monotonic() >= wedge_at:
                threading.Event().wait()  # never set: blocks this worker for good
            return real_recognize(*args, **kwargs)

        detector.recognize = recognize
        return detector

    return make


def main(argv: list[str]) -> int:
    after_s = float(os.environ[WEDGE_AFTER_ENV])

    class WedgingWorker(DetectorWorker):
        def __init__(self, index: int, make_detector: Callable[[], Any], *args: Any, **kwargs: Any) -> None:
            super().__init__(index, wedging(make_detector, after_s), *args, **kwargs)

    app_module.DetectorWorker = WedgingWorker  # type: ignore[misc]
    limits = LivenessLimits(detect_s=float(os.environ[DETECT_LIMIT_ENV]))
    notify.ServiceRuntime = functools.partial(notify.ServiceRuntime, limits=limits)  # type: ignore[misc]
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
