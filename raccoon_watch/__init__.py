"""raccoon_watch: a real-time doorbell-camera raccoon detector.

The top level is the flow, one module per stage; ``app.py`` is the one place that wires them:

    camera ─► capture.py ─► motion.py ─► framequeue.py ─► workers.py ─► router.py ─► store/ ─► sinks/
              (decode,       (gate,       (fair, newest    (threads:     tracking.py     (SQLite,   log, mqtt +
               reconnect)     crops)       frame first)     recognition/) filters.py      outbox,    control,
                                                                          visits.py       media)     discovery,
                                                                          debounce.py                pushover
                                                                          snapshot.py

- values that travel between stages: ``types.py`` (Frame, Detection, FrameResult, Event; Box order);
  configuration and its one set of defaults: ``config.py``; detection hours: ``schedule.py``; the
  no-camera demo clip: ``demo.py``.

Every cluster that is not a stage has its own folder, in layer order (imports point down this list,
never up; tests/test_import_boundary.py checks it):

- ``service/``: the commands (``cli.py``, ``detect_cmd.py``, ``retrain_cmd.py``), ``preflight.py``
  (what ``check-config`` checks beyond the schema; the exit codes), ``notify.py`` (sd_notify,
  SIGHUP), ``liveness.py`` (watchdog), ``health.py`` (/healthz and the page's server);
- ``api/``: ``raccoon-watch serve``, a DeepStack/CodeProject.AI-compatible recognizer API
  (its wire format, ``recognition/deepstack.py``, is also what the remote detector backend speaks);
- ``archive/``: a whole archive (``detect DIR --recursive``, resumable, optionally on Ray,
  MegaDetector's batch format);
- ``web/``: the review page: the HTTP layer (``httpserver.py``: uvicorn in a thread on a bound
  socket), ``pages.py``, ``auth.py``, ``chart.py``, ``retrain_job.py`` ("Retrain now"), templates;
- ``review/``: what the page shows of an event: ``clips.py`` (ffmpeg recorder per camera, a clip cut
  per event; ``clipwindow.py`` its pure window maths, ``ffmpeg.py`` its commands), ``eventtrace.py``
  (per-frame scores and the clean best frame), ``live.py`` (newest frame per camera);
- ``learning/``: feedback in, a better classifier out: ``feedback.py``, ``export_feedback.py``,
  ``replay.py``, ``promotion.py`` (the promotion gate), ``site_models.py``, ``hotswap.py``,
  ``retrain_options.py``, ``retrain_priority.py``;
- ``sinks/``: where alerts go: ``log.py``, ``pushover.py``, ``mqtt.py`` (outbox sender),
  ``mqtt_control.py`` (commands and verdicts), ``discovery.py`` (Home Assistant);
- ``store/``: ``EventStore`` built from ``db.py`` (resilient connection), ``schema.py``,
  ``salvage.py``, ``events.py`` (``EventRow``), ``outbox.py`` (``OutboxRow``), ``media.py`` and
  ``retention.py``, ``lock.py`` (one daemon per folder);
- ``recognition/``: ``recognizer.py`` (the one inference path), ``detectors/`` (backends),
  ``classifier.py``, ``imagemode.py``, ``labels.py``, ``modelfiles.py`` (a model folder's names),
  ``records.py`` (a photo's ``detect --json`` record), ``deepstack.py`` (the DeepStack wire format);
- ``support/``: ``logs.py``, ``metrics.py``, ``nativelog.py``, ``backoff.py``, ``netdiag.py``,
  ``imagefile.py``.

Developer tools (bench, clip making and evaluation) live in ``tools/``, training in ``train/`` and
the stand-ins the tests and tools share in ``testkit/``; none is installed (they run from the
checkout with ``python -m``) and the daemon imports none of them: ``raccoon-watch bench`` runs
``python -m tools.bench`` as a child process, and ``raccoon-watch retrain`` loads
``train.classifier.retrain`` only when it runs (tests/test_import_boundary.py keeps it so, and keeps
the top level to the flow and these folders). Leaf modules both sides import:
``recognition/modelfiles.py`` (a model folder's file names), ``learning/retrain_options.py`` (the
retrain's modes and defaults).
"""

import os as _os

# OpenCV reads these once, when cv2 is first imported, and every module that imports cv2 imports this
# package first: set here, before anything else, so OpenCV/FFmpeg do not print their own
# "[ WARN:...]" lines on every failed open or read (our capture logs say it once, structured).
# setdefault: an operator's own value still wins.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
