"""Capture: one thread per camera turns a video source into ``Frame`` values on the frame queue.

camera -> **capture** -> frame queue -> detector workers -> debounce -> ...

Per camera, a ``CaptureThread``:

* opens the source (``open_source``): webcam index/device through V4L2, or an RTSP/HTTP URL or a
  file through FFmpeg, always with open and read timeouts so a hung server cannot block a read
  for long (without them FFmpeg waits about 90 s);
* ``grab()``s every frame (cheap: demux only) and ``retrieve()``s (decodes) only the frames it
  hands on, sampled at ``detect_fps``;
* paces file sources at their native fps (``realtime``), loops them or stops at the end;
* never blocks on the queue (drop-oldest ``FrameQueue``), except a file camera with ``drain: true``
  (offline evaluation): it waits for room before each put, so the file is read as fast as the
  detectors take frames and none is dropped;
* on any failure (cannot open, read fails or times out, too many bad frames) marks the camera
  'down', releases the capture and retries with capped exponential back-off until stopped; it keeps
  why in a few words for /healthz (``CaptureSnapshot.reason``): a network source that did not open
  gets one TCP connect to its host, so "connection refused", "dns: name not resolved" and "timed
  out" are told apart from a server that answers but sends no stream.

Time bases: ``Frame.ts`` is ``clock.time()``, ``Frame.mono`` is ``clock.monotonic()``. ``Frame.seq``
counts every frame grabbed by this thread (0, 1, ...), so gaps in the handed-on ``seq`` are the
frames not decoded; for a file read once, ``seq`` is the frame's index in the file. A draining file
runs on file time instead: ``ts = time() at the first open + seq / fps`` (``mono`` likewise), so
every time the debounce and the motion gate compute is clip time, however fast the machine reads.
"""

from __future__ import annotations

import enum
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import structlog

from raccoon_watch.config import CameraConfig, redact_url
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.support.backoff import backoff_delay
from raccoon_watch.support.netdiag import probe_tcp, url_endpoint
from raccoon_watch.types import CaptureSnapshot, Frame

log = structlog.get_logger(__name__)

# FFmpeg options for every FFmpeg-backed open (read by OpenCV from the environment at each open).
# TCP for RTSP (no UDP loss, works through NAT) and small probing: a local stream opens in ~0.3 s
# instead of ~2 s. Harmless for files. A value already in the environment wins.
FFMPEG_CAPTURE_OPTIONS = "rtsp_transport;tcp|analyzeduration;100000|probesize;32768"
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", FFMPEG_CAPTURE_OPTIONS)

DEFAULT_FILE_FPS = 15.0  # when a file does not say its frame rate
MAX_BAD_FRAMES_IN_A_ROW = 30  # then the stream is treated as failed and reopened
MAX_PACING_LAG_S = 1.0
# Measured (OpenCV 5.0 wheel, FFmpeg RTSP over TCP, SIGSTOP-hung server): one grab() blocks for
# 3 x CAP_PROP_READ_TIMEOUT_MSEC before it fails (the read is retried after each interrupt). So an
# RTSP source gets a third of the configured read timeout, and a hung server fails a read after
# about ``read_timeout_s`` in total.
FFMPEG_RTSP_READ_TRIES = 3  # a paced file this far behind schedule restarts its schedule (no burst)

State = Literal["connecting", "up", "down", "stopped"]


class Clock(Protocol):
    """What capture needs of a clock; the ``time`` module is one."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SourceKind(str, enum.Enum):
    FILE = "file"
    RTSP = "rtsp"
    HTTP = "http"
    DEVICE = "device"


class SourceOpenError(Exception):
    """The source could not be opened (message is safe to log: URLs are redacted). ``cause``: why,
    in a few words and without the URL (for /healthz): ``no such file``, ``connection refused``,
    ``dns: name not resolved (<host>)``, ``timed out``, ..."""

    def __init__(self, message: str, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


PROBE_TIMEOUT_S = 2.0  # the TCP probe that says why a network source did not open


def open_failure_cause(source: str, kind: SourceKind, open_timeout_s: float) -> str:
    """Why ``source`` did not open, as far as can be told cheaply (OpenCV says only "not opened"):
    a file that is missing, not a file or not readable; a network source whose host does not resolve,
    refuses or does not answer (one TCP connect, ``netdiag.probe_tcp``); else what is left."""
    path = source.strip()
    if kind is SourceKind.FILE:
        if not os.path.exists(path):
            return "no such file"
        if not os.path.isfile(path):
            return "not a file"
        if not os.access(path, os.R_OK):
            return "permission denied"
        return "not a video OpenCV can open"
    if kind is SourceKind.DEVICE:
        if path.startswith("/dev/") and not os.path.exists(path):
            return "no such device"
        return "device did not open"
    endpoint = url_endpoint(path)
    if endpoint is None:
        return "no host in the URL"
    problem = probe_tcp(*endpoint, timeout=min(PROBE_TIMEOUT_S, open_timeout_s))
    return problem or "the server accepts connections, but the stream did not open"


def classify_source(source: str) -> SourceKind:
    """'0' or '/dev/video0' -> DEVICE, rtsp(s):// -> RTSP, http(s):// -> HTTP, anything else FILE."""
    text = source.strip()
    lower = text.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return SourceKind.RTSP
    if lower.startswith(("http://", "https://")):
        return SourceKind.HTTP
    if text.isdigit() or lower.startswith("/dev/video"):
        return SourceKind.DEVICE
    return SourceKind.FILE


def open_source(source: str, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """Open ``source`` and return an opened ``cv2.VideoCapture``; raise ``SourceOpenError`` if not.

    open_timeout_s bounds the open; read_timeout_s bounds how long one ``grab()`` may block on a
    silent source. Both go in through ``params`` so they apply to the open itself.
    """
    kind = classify_source(source)
    per_read_s = read_timeout_s / FFMPEG_RTSP_READ_TRIES if kind is SourceKind.RTSP else read_timeout_s
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(per_read_s * 1000)),
    ]  # fmt: skip
    if kind is SourceKind.DEVICE:
        cap = _open_device(source.strip(), params)
    else:
        cap = cv2.VideoCapture(source.strip(), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        what = {SourceKind.DEVICE: "camera device", SourceKind.FILE: "video file"}.get(kind, f"{kind.value} stream")
        cause = open_failure_cause(source, kind, open_timeout_s)
        raise SourceOpenError(f"cannot open {what} {redact_url(source)} ({cause})", cause)
    return cap


def probe_source(cfg: CameraConfig) -> bool:
    """Can ``cfg.source`` be opened right now? Opens, releases, logs why not (for the demo fallback)."""
    try:
        cap = open_source(cfg.source, cfg.open_timeout_s, cfg.read_timeout_s)
    except SourceOpenError as exc:
        log.info("camera_probe_failed", source=redact_url(cfg.source), error=str(exc))
        return False
    cap.release()
    return True


def _open_device(source: str, params: list[int]) -> cv2.VideoCapture:
    target: int | str = int(source) if source.isdigit() else source
    cap = cv2.VideoCapture(target, cv2.CAP_V4L2, params)
    if not cap.isOpened():
        # A V4L2 build that rejects the timeout params still opens without them.
        cap.release()
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
    return cap


def check_image(image: object) -> str | None:
    """None if ``image`` is a usable BGR frame (uint8, (H, W, 3), non-empty), else why not."""
    if image is None:
        return "empty"
    if not isinstance(image, np.ndarray):
        return f"not an array: {type(image).__name__}"
    if image.dtype != np.uint8:
        return f"dtype {image.dtype}, expected uint8"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"shape {image.shape}, expected (H, W, 3)"
    if image.shape[0] < 2 or image.shape[1] < 2:
        return f"too small: {image.shape}"
    return None


class RateSampler:
    """Says which frames to decode so that about ``rate`` per second of stream time are handed on.

    ``due(t)`` is called once per grabbed frame with its stream time (seconds, increasing). The
    schedule is drift-free (next = previous + 1/rate) but never tries to catch up a backlog.
    """

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.period = 1.0 / rate
        self._next: float | None = None

    def due(self, t: float) -> bool:
        if self._next is None or t + 1e-9 >= self._next:
            base = t if self._next is None or t - self._next >= self.period else self._next
            self._next = base + self.period
            return True
        return False

    def reset(self) -> None:
        self._next = None


@dataclass
class CameraStats:
    """Counters of one camera, written only by its capture thread (others only read them).

    state: 'connecting' (before the first open) | 'up' | 'down' (open or read failed; retrying)
        | 'stopped' (stop was set, or a non-looping file ended)
    frames_read: frames grabbed; frames_decoded: frames retrieved (decoded); frames_queued:
        frames put on the queue; frames_bad: decoded frames that were empty, corrupt or of the
        wrong dtype/shape
    frames_dropped: puts that evicted an older frame because the queue was full (the evicted
        frame may be another camera's: per-camera victims are ``FrameQueue.dropped_by_camera()``)
    reconnects: times the source came back after being down (a looping file's restart is not one)
    open_failures: failed opens; last_open_s: seconds the last successful open took
    last_frame_mono: time.monotonic() of the last frame grabbed (0 before any)
    width, height, fps: of the source (0 when unknown); last_error: why it last went down (for the
    log: may name the source, its password redacted); cause: the same in a few words without the
    source (for /healthz), e.g. "connection refused", "file ended (loop: false)"
    state_since: wall-clock time (``time()`` of the capture clock) the camera entered ``state`` (0: unknown)
    """

    camera: str
    kind: str = SourceKind.FILE.value
    state: State = "connecting"
    frames_read: int = 0
    frames_decoded: int = 0
    frames_queued: int = 0
    frames_dropped: int = 0
    frames_bad: int = 0
    reconnects: int = 0
    open_failures: int = 0
    last_open_s: float = 0.0
    last_frame_mono: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    last_error: str = ""
    cause: str = ""
    state_since: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _End(enum.Enum):
    """How one opened stream ended."""

    EOF = "eof"  # a file reached its end
    FAILED = "failed"  # read failed / timed out / too many bad frames
    STOPPED = "stopped"  # the stop event was set


@dataclass(frozen=True, slots=True)
class FileAnchor:
    """At monotonic time ``mono`` (the ``Frame.mono`` clock) a file camera showed second ``stream``
    of its file, in ``run`` (0 for the first pass through the file, +1 at each loop or reopen)."""

    mono: float
    stream: float
    run: int


class FileClock:
    """Which second of a file camera's file was on screen at a monotonic time: written by the
    camera's capture thread (``mark`` on every decoded frame), read by the clip cutter (``anchors``),
    which cuts an event's clip out of the file itself by stream copy (review/clipwindow.file_span). Monotonic,
    not wall-clock: a step of the wall clock during an event must not move its clip.

    Between anchors stream time advances 1:1 with monotonic time, as a paced file plays; a new anchor
    is kept when the file starts again (its stream time goes back) or the schedule slips by more than
    ``tolerance_s`` (a busy machine), so a mapped time is never further off than that. The newest
    ``keep`` anchors are kept (a looping 30 s file adds one per loop)."""

    def __init__(self, tolerance_s: float = 0.1, keep: int = 4096) -> None:
        self.tolerance_s = tolerance_s
        self._anchors: deque[FileAnchor] = deque(maxlen=keep)
        self._last_stream = math.inf
        self._lock = threading.Lock()

    def mark(self, mono: float, stream: float) -> None:
        with self._lock:
            last = self._anchors[-1] if self._anchors else None
            if last is None or stream < self._last_stream:
                self._anchors.append(FileAnchor(mono, stream, last.run + 1 if last else 0))
            elif abs(last.stream + (mono - last.mono) - stream) > self.tolerance_s:
                self._anchors.append(FileAnchor(mono, stream, last.run))
            self._last_stream = stream

    def anchors(self) -> tuple[FileAnchor, ...]:
        with self._lock:
            return tuple(self._anchors)


SampleHook = Callable[[Frame], Frame | None]
"""Called with every decoded frame before it is queued; returns the frame to queue (the same one,
or a copy with ``Frame.crop`` set, as ``motion.MotionGate`` does), or None to not queue it."""


class CaptureThread(threading.Thread):
    """Reads one camera into ``queue`` until ``stop`` is set (or a non-looping file ends).

    ``clock`` provides ``time()`` and ``monotonic()`` (the ``time`` module by default).
    ``sample_hook`` (optional) sees every decoded frame and decides whether (and as what) it is
    queued; for more control subclass and override ``should_decode`` (which grabbed frames to
    decode) and ``handle_frame`` (what to do with a decoded frame). A daemon thread: a read
    blocked in FFmpeg returns within ``read_timeout_s``, and the process may exit without waiting
    for it.
    """

    def __init__(
        self,
        name: str,
        cfg: CameraConfig,
        queue: FrameQueue,
        stop: threading.Event,
        clock: Clock = time,
        sample_hook: SampleHook | None = None,
        file_clock: FileClock | None = None,
    ) -> None:
        super().__init__(name=f"capture-{name}", daemon=True)
        self.camera = name
        self.cfg = cfg
        self.queue = queue
        self.stop_event = stop
        self.clock = clock
        self.sample_hook = sample_hook
        self.kind = classify_source(cfg.source)
        self.file_clock = file_clock if self.kind is SourceKind.FILE else None
        self.stats = CameraStats(camera=name, kind=self.kind.value, state_since=clock.time())
        self._sampler = RateSampler(cfg.detect_fps)
        self._seq = 0
        self._log = log.bind(camera=name, source=redact_url(cfg.source), kind=self.kind.value)
        self.drain = cfg.drain and self.kind is SourceKind.FILE
        self._file_t0: tuple[float, float] | None = None  # (time, monotonic) at the first open, drain only
        if cfg.drain and not self.drain:
            self._log.warning("drain_ignored_for_live_source")

    def snapshot(self) -> CaptureSnapshot:
        """This camera's counters now, as a frozen value (read from any thread, without locking:
        each counter is one attribute the capture thread replaces whole)."""
        st = self.stats
        return CaptureSnapshot(
            camera=self.camera, alive=self.is_alive(), state=str(st.state), frames_read=st.frames_read,
            frames_decoded=st.frames_decoded, frames_queued=st.frames_queued, frames_dropped=st.frames_dropped,
            frames_bad=st.frames_bad, reconnects=st.reconnects, open_failures=st.open_failures,
            last_frame_mono=st.last_frame_mono, reason=st.cause,
        )

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        failures = 0  # consecutive failed attempts, for the back-off
        was_down = False  # a successful open after this counts as a reconnect
        while not self.stop_event.is_set():
            cap = self._connect()
            if cap is None:
                failures += 1
                was_down = True
                self._backoff(failures)
                continue
            if was_down and self.stats.frames_read:
                self.stats.reconnects += 1
            was_down = False
            failures = 0
            try:
                end = self._stream(cap)
            except Exception as exc:  # an OpenCV surprise must not kill the camera thread
                self._log.exception("capture_error", error=str(exc))
                self.stats.last_error = f"capture error: {exc}"
                self.stats.cause = f"capture error: {type(exc).__name__}"
                end = _End.FAILED
            finally:
                cap.release()
            if end is _End.EOF:
                if self.cfg.loop:
                    self._log.info("file_looped", frames_read=self.stats.frames_read)
                    continue
                self._log.info("file_ended", frames_read=self.stats.frames_read)
                self.stats.cause = "file ended (loop: false)"
                break
            if end is _End.FAILED:
                self._mark_down(self.stats.last_error or "stream failed", self.stats.cause or "stream failed")
                was_down = True
                failures = 1
                self._backoff(failures)
        self.stats.state, self.stats.state_since = "stopped", self.clock.time()
        self._log.info("camera_stopped", **self._counters())

    def _connect(self) -> cv2.VideoCapture | None:
        started = self.clock.monotonic()
        try:
            cap = open_source(self.cfg.source, self.cfg.open_timeout_s, self.cfg.read_timeout_s)
        except SourceOpenError as exc:
            self.stats.open_failures += 1
            self._mark_down(str(exc), exc.cause)
            return None
        except cv2.error as exc:
            self.stats.open_failures += 1
            self._mark_down(f"OpenCV error on open: {exc}", "OpenCV error on open")
            return None
        self._on_open(cap, self.clock.monotonic() - started)
        return cap

    def _on_open(self, cap: cv2.VideoCapture, open_s: float) -> None:
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.stats.fps = fps if math.isfinite(fps) and 0 < fps <= 240 else 0.0
        self.stats.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.stats.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.stats.state, self.stats.state_since = "up", self.clock.time()
        self.stats.last_error = ""
        self.stats.cause = ""
        self.stats.last_open_s = open_s
        self._sampler.reset()
        if self.drain and self._file_t0 is None:
            self._file_t0 = (self.clock.time(), self.clock.monotonic())
        self._log.info(
            "camera_connected",
            width=self.stats.width,
            height=self.stats.height,
            fps=round(self.stats.fps, 2),
            open_s=round(open_s, 3),
            reconnects=self.stats.reconnects,
        )

    def _mark_down(self, why: str, cause: str) -> None:
        first = self.stats.state != "down"
        if first:
            self.stats.state_since = self.clock.time()
        self.stats.state = "down"
        self.stats.last_error = why
        self.stats.cause = cause
        # A camera that stays missing logs at warning once, then quietly at debug on each retry.
        (self._log.warning if first else self._log.debug)("camera_down", error=why, open_failures=self.stats.open_failures)

    def _backoff(self, failures: int) -> None:
        """Wait backoff_delay(failures) capped at reconnect_max_s (min(2**failures, cap) s), or less if stopped."""
        delay = backoff_delay(failures, base=1.0, cap=self.cfg.reconnect_max_s)
        self._log.debug("camera_retry", delay_s=delay, attempt=failures)
        self.stop_event.wait(delay)

    # --- one opened stream ---------------------------------------------------------------------

    def _stream(self, cap: cv2.VideoCapture) -> _End:
        """Grab until EOF, failure or stop; decode and hand on the sampled frames."""
        pace_fps = self.stats.fps or DEFAULT_FILE_FPS
        paced = self.kind is SourceKind.FILE and self.cfg.realtime and not self.drain
        schedule_t0 = self.clock.monotonic()
        index = 0  # frame index since this open
        bad_in_a_row = 0
        while not self.stop_event.is_set():
            if paced:
                schedule_t0 = self._pace(schedule_t0, index, pace_fps)
                if self.stop_event.is_set():
                    break
            if not cap.grab():
                if self.kind is SourceKind.FILE:
                    return _End.EOF
                self.stats.last_error = self.stats.cause = "read failed or timed out"
                return _End.FAILED
            self.stats.frames_read += 1
            seq, self._seq = self._seq, self._seq + 1
            stream_t = index / pace_fps if self.kind is SourceKind.FILE else self.clock.monotonic()
            index += 1
            if not self.should_decode(stream_t):
                self.stats.last_frame_mono = self.clock.monotonic()
                continue
            if self._decode(cap, seq, pace_fps, stream_t):
                bad_in_a_row = 0
            else:
                bad_in_a_row += 1
                if bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW:
                    self.stats.last_error = self.stats.cause = f"{bad_in_a_row} bad frames in a row"
                    return _End.FAILED
        return _End.STOPPED

    def _pace(self, t0: float, index: int, fps: float) -> float:
        """Sleep until frame ``index`` is due on the schedule t0 + index/fps; returns t0 (restarted
        when we fell more than MAX_PACING_LAG_S behind, e.g. after the machine was busy)."""
        now = self.clock.monotonic()
        due = t0 + index / fps
        if now - due > MAX_PACING_LAG_S:
            return now - index / fps
        if due > now:
            self.stop_event.wait(due - now)
        return t0

    def _decode(self, cap: cv2.VideoCapture, seq: int, fps: float, stream_t: float) -> bool:
        """Retrieve the grabbed frame; hand it on if usable. False if it was bad. ``fps``: the
        file's frame rate, for the file time of a draining source; ``stream_t``: the frame's second
        in the file (files; the FileClock's mark)."""
        ok, image = cap.retrieve()
        self.stats.frames_decoded += 1
        problem = check_image(image) if ok else "retrieve failed"
        if problem is not None:
            self.stats.frames_bad += 1
            self._log.debug("frame_bad", seq=seq, problem=problem)
            return False
        self._note_size(image)
        image.flags.writeable = False  # Frame images are never mutated after capture
        now_mono = self.clock.monotonic()
        self.stats.last_frame_mono = now_mono
        ts, mono = self.clock.time(), now_mono
        if self._file_t0 is not None:  # drain: file time
            ts, mono = self._file_t0[0] + seq / fps, self._file_t0[1] + seq / fps
        if self.file_clock is not None:
            self.file_clock.mark(mono, stream_t)  # the clip cutter maps monotonic ranges (review/clipwindow.file_span)
        self.handle_frame(Frame(camera=self.camera, seq=seq, ts=ts, mono=mono, image=image))
        return True

    def _note_size(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        if (width, height) != (self.stats.width, self.stats.height):
            if self.stats.width:
                self._log.info(
                    "camera_resolution_changed",
                    width=width,
                    height=height,
                    old_width=self.stats.width,
                    old_height=self.stats.height,
                )
            self.stats.width, self.stats.height = width, height

    # --- extension points ----------------------------------------------------------------------

    def should_decode(self, stream_t: float) -> bool:
        """Decode this grabbed frame? ``stream_t``: seconds of stream time (file position for
        files, monotonic clock for live sources). Default: sample at ``cfg.detect_fps``."""
        return self._sampler.due(stream_t)

    def handle_frame(self, frame: Frame) -> None:
        """A decoded, valid frame: ask ``sample_hook`` (None: drop it; else queue what it returns,
        e.g. the frame with a crop), then put it on the queue (never blocks, unless ``drain``:
        then it waits for room, checking the stop event)."""
        queued = self.sample_hook(frame) if self.sample_hook is not None else frame
        if queued is None:
            return
        if self.drain:
            while not self.queue.wait_for_room(timeout=0.25, camera=self.camera):
                if self.stop_event.is_set():
                    return
        if self.queue.put(queued) is not None:
            self.stats.frames_dropped += 1
        self.stats.frames_queued += 1

    def _counters(self) -> dict[str, object]:
        keys = ("frames_read", "frames_decoded", "frames_queued", "frames_dropped", "frames_bad", "reconnects")
        return {key: getattr(self.stats, key) for key in keys}
