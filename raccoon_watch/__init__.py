"""raccoon_watch: a real-time doorbell-camera raccoon detector.

Where each file sits in the flow (one module per stage; ``app.py`` is the one place that wires them):

    camera ─► capture.py ─► motion.py ─► framequeue.py ─► workers.py ─► recognition.py ─► router.py ─► store.py ─► sinks/
              (decode,       (gate,       (drop-oldest)    (threads)     detectors/ propose   filters.py      (SQLite,     log, mqtt +
               reconnect)     crops)                                      classifier.py decides visits.py     outbox)      discovery,
                                                                                                debounce.py                pushover
                                                                                                snapshot.py

- values that travel between stages: ``types.py`` (Frame, Detection, FrameResult, Event; Box order);
- configuration and its one set of defaults: ``config.py``; model label maps: ``labels.py``;
  image files with limits: ``imagefile.py``; capped back-off: ``backoff.py``; why a connection
  failed, in a few words (DNS, refused, timed out): ``netdiag.py``; what C++ libraries (LiteRT,
  TensorFlow) print on stderr, routed into the log: ``nativelog.py``;
- the service around the pipeline, in ``service/``: ``cli.py`` (commands), ``preflight.py`` (what
  ``check-config`` checks beyond the schema; the exit codes), ``notify.py`` (sd_notify,
  SIGHUP), ``liveness.py`` (watchdog), ``health.py`` (/healthz and the page's server), ``metrics.py``
  (/metrics), ``logs.py`` (structured logs, secret redaction);
- the review page: ``clips.py`` (ffmpeg stream-copy recorder per camera, a clip cut per event),
  ``eventtrace.py`` (per-frame scores and the clean best frame of each event), ``live.py`` (newest
  frame per camera for the live view), ``web/`` (pages, auth, score chart, templates) served by
  ``service/health.py``'s server, ``export_feedback.py`` (verdicts as train/ CSV);
- learning from feedback: ``sitefeedback.py`` (a feedback folder read with every bad row named, the
  split by night and whole event), ``gate.py`` (the promotion gate, pure), ``site_models.py``
  (candidates and the ``current``/``previous`` links), ``hotswap.py`` (a new classifier loaded in the
  background and taken between frames on SIGHUP), ``retrain_cmd.py`` (``raccoon-watch retrain`` and
  ``models``);
- one-shot use of the same recognition: ``detect_cmd.py``; the no-camera demo clip: ``demo.py``;
- a whole archive (``detect DIR --recursive``, resumable, optionally on Ray, MegaDetector's batch
  format): ``archive/`` (walk, checkpoint, worker, clip visits, runner, megadetector, cli).

Developer tools (bench, clip making and evaluation) live in ``tools/``, training in ``train/`` and
the stand-ins the tests and tools share in ``testkit/``; none is installed (they run from the
checkout with ``python -m``) and the daemon imports none of them: ``raccoon-watch bench`` runs
``python -m tools.bench`` as a child process, and ``raccoon-watch retrain`` loads
``train.classifier.retrain`` only when it runs (tests/test_import_boundary.py keeps it so). Leaf
modules both sides import: ``modelfiles.py`` (a model folder's file names), ``retrain_options.py``
(the retrain's modes and defaults).
"""

import os as _os

# OpenCV reads these once, when cv2 is first imported, and every module that imports cv2 imports this
# package first: set here, before anything else, so OpenCV/FFmpeg do not print their own
# "[ WARN:...]" lines on every failed open or read (our capture logs say it once, structured).
# setdefault: an operator's own value still wins.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
