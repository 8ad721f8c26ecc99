"""Event clips: a rolling buffer of stream-copied segments per camera, cut per event without re-encoding.

    camera ──► (capture.py decodes what the detector needs)
       └─────► SegmentRecorder: ``ffmpeg -i <rtsp> -map 0:v:0 -c copy -f segment`` (no decode), one process
               per RTSP/HTTP camera, writing ``<storage>/recordings/<camera>/<run>-NNNNNN.ts``
    Event END ──► ClipService: the segments covering [first sighting - pre_roll, last sighting + post_roll],
               joined (MPEG-TS concatenates byte by byte) ──► remuxed to MP4 (``-c copy``) ──►
               ``ffmpeg -ss .. -i full.mp4 -t .. -c copy -movflags +faststart`` ──► clips/<camera>/<id>.mp4

This is how NVRs (Frigate's recorder) do it: the camera's own H.264 is kept as it came, so recording
costs a demux and a file write, never a decode. Segments are MPEG-TS, which stays readable up to
the last packet if the process dies mid-segment. The cut seeks in an MP4 (which has an index;
seeking in MPEG-TS with stream copy lands on the keyframe *after* the wanted time), so the clip
holds the frames from the keyframe at or before its start and an edit list makes players begin at
the wanted frame itself.
Audio is not kept (``-map 0:v:0``). Browsers play the clip when the camera sends H.264 (H.265 is
copied as it is, and most browsers cannot play it).

Times of segments, on the monotonic clock (as ``Frame.mono`` and the events' ``first_seen_mono`` /
``last_seen_mono``, so a step of the wall clock during an event moves no clip): ffmpeg's segment list
gives each closed segment's start and end in stream seconds; the file is closed at or a little after
its end arrived (never before: a write can be late, not early; the first segments of a run are
written in a burst after ffmpeg's probing). The recorder sees a new segment within ``poll_s`` of its
close and dates the close on the monotonic clock (now, less how long ago the file's mtime says it
was closed, that lag capped at ``MAX_CLOSE_LAG_S`` so a wall step in between cannot move it). Each
run's offset (monotonic - stream) is the smallest of the last ``OFFSET_SAMPLES`` (close - end)
pairs, a min-filter as NTP uses; on a live camera it lands within 0.1 s of when a capture reading
the same stream sees the frame (tests/test_clips.py measures it). The closed segments are listed in
``index.jsonl`` beside them with wall times (the monotonic clock does not survive a reboot), so a
restarted daemon can still cut the clip of an event it was cutting when it died; wall and monotonic
times are converted with the offset between the two clocks at that moment (``wall_offset``).

Failure policy: the recorder is a separate process; when it exits (camera gone, bad URL) it is
restarted with capped back-off and the camera's detection never notices. An event whose range has
no segment, or whose cut fails, gets ``clip_state = missing`` and a ``clip_reason`` that says why;
one that was being cut when the daemon died is cut (or marked missing) at the next start.

Retention: before each cut the store makes room under ``storage.clip_retention_mb`` for a clip as big
as the last one, and after it enforces the cap itself, keeping the new clip
(``EventStore.enforce_retention``): the clips are over their cap by at most the clip being written.

File cameras record nothing: the file already holds every packet. Their capture thread keeps a
``capture.FileClock`` (which second of the file was on screen at which wall time), and an event's
clip is cut out of the source file itself, by the same stream-copy cut, as soon as the event ends
(``file_span`` maps the clip's monotonic range to seconds of the pass through the file that showed
the first sighting; a clip is cut to the file's end when the file looped during it). Webcams record
nothing (``recording_reason`` says why): they give raw frames that would have to be encoded.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.capture import Clock, FileAnchor, FileClock, SourceKind, classify_source
from raccoon_watch.config import CameraConfig, ClipsConfig, redact_url
from raccoon_watch.review.clipwindow import (
    ClipJob,
    Segment,
    clip_window,
    coverage_note,
    covered_seconds,
    file_span,
    parse_list_line,
    select_segments,
    sighting_span,
    wall_offset,
)
from raccoon_watch.review.ffmpeg import cut_command, record_command, remux_command
from raccoon_watch.store import EventStore
from raccoon_watch.store.retention import CLIP_DIR
from raccoon_watch.store.schema import CLIP_MISSING, CLIP_PENDING, CLIP_READY
from raccoon_watch.support.backoff import backoff_delay
from raccoon_watch.types import Event, EventKind

log = structlog.get_logger(__name__)

RECORDINGS_DIR = "recordings"
INDEX_NAME = "index.jsonl"
OFFSET_SAMPLES = 10
MAX_CLOSE_LAG_S = 10.0  # a segment seen later than this after its mtime: dated at most this far back
CUT_TIMEOUT_S = 60.0
RECORDED_KINDS = (SourceKind.RTSP, SourceKind.HTTP)  # an ffmpeg recorder per camera
CLIPPED_KINDS = (*RECORDED_KINDS, SourceKind.FILE)  # files: cut from the file itself
CLIP_URL = "/events/{id}/clip.mp4"








def recording_reason(cam: CameraConfig, clips: ClipsConfig) -> str | None:
    """None when this camera records clips, else why not (shown on the event page)."""
    if not clips.enabled:
        return "clips are switched off (clips.enabled: false)"
    kind = classify_source(cam.source)
    if kind not in CLIPPED_KINDS:
        return f"a {kind.value} camera records no clips (only rtsp://, http:// and file cameras have H.264 to copy)"
    return None






















class SegmentRecorder(threading.Thread):
    """Keeps one ffmpeg recorder running for one camera and the list of its closed segments."""

    def __init__(self, camera: str, source: str, root: Path, clips: ClipsConfig, stop: threading.Event,
                 poll_s: float = 0.25, clock: Clock = time) -> None:
        super().__init__(name=f"recorder-{camera}", daemon=True)
        self.camera = camera
        self.source = source
        self.dir = root / RECORDINGS_DIR / camera
        self.clips = clips
        self._halt = stop
        self._poll_s = poll_s
        self._clock = clock  # time() only to read file mtimes and write the index; segments are monotonic
        self._lock = threading.Lock()
        self._segments: list[Segment] = []
        self._keep_from: dict[str, float] = {}  # event id -> monotonic time its clip still needs
        self.state = "starting"
        self.last_error = ""
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = log.bind(camera=camera, source=redact_url(source))

    # --- read from other threads ----------------------------------------------------------------
    def segments(self) -> list[Segment]:
        with self._lock:
            return list(self._segments)

    def hold(self, event_id: str, since: float | None) -> None:
        """Keep segments from ``since`` (monotonic) on until released (None): an open or uncut event's range."""
        with self._lock:
            if since is None:
                self._keep_from.pop(event_id, None)
            else:
                self._keep_from[event_id] = since

    def covered_until(self) -> float:
        """Monotonic end of the newest closed segment (-inf before any)."""
        with self._lock:
            return self._segments[-1].end if self._segments else float("-inf")

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._load_index()
        failures = 0
        while not self._halt.is_set():
            started = time.monotonic()
            self._record_once()
            if self._halt.is_set():
                break
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            self.restarts += 1
            self.state = "down"
            delay = backoff_delay(failures, base=1.0, cap=30.0)
            self._log.warning("recorder_exited", error=self.last_error[:300], retry_in_s=delay)
            self._halt.wait(delay)
        self.state = "stopped"

    def _record_once(self) -> None:
        try:  # again at each (re)start: the storage folder may have been deleted under a running recorder
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.last_error = f"cannot make {self.dir}: {exc.strerror or exc}"
            return
        run = f"{int(time.time() * 1000)}"
        cmd = record_command(self.clips.ffmpeg, self.source, self.dir, run, self.clips.segment_s)
        list_path = self.dir / f"{run}.csv"
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        except OSError as exc:
            self.last_error = f"cannot run {self.clips.ffmpeg}: {exc.strerror or exc}"
            return
        self.state = "recording"
        self._log.info("recorder_started", segment_s=self.clips.segment_s)
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.extend(self._proc.stderr or []), daemon=True)
        reader.start()
        seen = 0
        offsets: list[float] = []
        try:
            while not self._halt.is_set():
                seen = self._read_list(list_path, seen, offsets)
                self._prune()
                if self._proc.poll() is not None:
                    self._read_list(list_path, seen, offsets)
                    break
                self._halt.wait(self._poll_s)
        finally:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            reader.join(timeout=1)
            tail = b"".join(stderr)[-300:].decode(errors="replace").strip()
            self.last_error = redact_url(tail) or f"ffmpeg exited with status {self._proc.returncode}"
            list_path.unlink(missing_ok=True)

    def _read_list(self, list_path: Path, seen: int, offsets: list[float]) -> int:
        """New closed segments from ffmpeg's list since line ``seen``; returns the new line count."""
        try:
            lines = list_path.read_text(errors="replace").splitlines()
        except OSError:
            return seen
        for line in lines[seen:]:
            parsed = parse_list_line(line)
            if parsed is None:
                continue
            name, start, end = parsed
            path = self.dir / Path(name).name
            try:
                closed_wall = path.stat().st_mtime
            except OSError:
                continue
            lag = min(max(0.0, self._clock.time() - closed_wall), MAX_CLOSE_LAG_S)
            closed_at = self._clock.monotonic() - lag
            offsets.append(closed_at - end)
            del offsets[:-OFFSET_SAMPLES]
            offset = min(offsets)
            segment = Segment(path, start + offset, end + offset)
            with self._lock:
                self._segments.append(segment)
            self._append_index(segment)
        return len(lines)

    def _prune(self) -> None:
        """Delete segments older than buffer_s, except those an open or uncut event still needs."""
        now = self._clock.monotonic()
        with self._lock:
            keep_from = min([now - self.clips.buffer_s, *self._keep_from.values()])
            old = [s for s in self._segments if s.end < keep_from]
            if not old:
                return
            self._segments = [s for s in self._segments if s.end >= keep_from]
            kept = list(self._segments)
        for s in old:
            try:
                s.path.unlink(missing_ok=True)
            except OSError as exc:
                self._log.warning("segment_delete_failed", path=str(s.path), reason=exc.strerror)
        self._write_index(kept)

    # --- index.jsonl: the closed segments with wall times, for a restart ------------------------
    @staticmethod
    def _index_line(s: Segment, offset: float) -> str:
        return json.dumps({"name": s.path.name, "start": s.start + offset, "end": s.end + offset}) + "\n"

    def _append_index(self, s: Segment) -> None:
        try:
            with open(self.dir / INDEX_NAME, "a", encoding="utf-8") as fh:
                fh.write(self._index_line(s, wall_offset(self._clock)))
        except OSError as exc:
            self._log.warning("segment_index_failed", reason=exc.strerror)

    def _write_index(self, kept: list[Segment]) -> None:
        tmp = self.dir / f".{INDEX_NAME}.tmp"
        try:
            offset = wall_offset(self._clock)
            tmp.write_text("".join(self._index_line(s, offset) for s in kept))
            os.replace(tmp, self.dir / INDEX_NAME)
        except OSError as exc:
            self._log.warning("segment_index_failed", reason=exc.strerror)

    def _load_index(self) -> None:
        """Segments of earlier runs that are still on disk (a restart can cut their events' clips),
        and the last, unfinished segment of each run that died with the daemon (``unlisted_tail``)."""
        found = []
        try:
            lines = (self.dir / INDEX_NAME).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        offset = wall_offset(self._clock)  # the index holds wall times: back to this process's monotonic clock
        for line in lines:
            try:
                rec = json.loads(line)
                seg = Segment(self.dir / Path(rec["name"]).name, float(rec["start"]) - offset,
                              float(rec["end"]) - offset)
            except (ValueError, KeyError, TypeError):
                continue
            if seg.path.is_file():
                found.append(seg)
        found += unlisted_tails(found, self.clips.ffmpeg)
        with self._lock:
            self._segments = sorted(found, key=lambda s: s.start)
        for stale in self.dir.glob("*.csv"):  # lists of runs that died with the daemon
            stale.unlink(missing_ok=True)

    def stop_process(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()


def _die_with_parent() -> None:
    """In the recorder's child, before exec: SIGTERM when the daemon dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG), so no ffmpeg outlives it and keeps writing into the buffer."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _probe_duration(ffmpeg: str, path: Path) -> float | None:
    """Seconds of video in a (possibly cut-off) segment, by ffprobe beside ``ffmpeg``; None if unknown."""
    ffprobe = str(Path(ffmpeg).with_name("ffprobe")) if "/" in ffmpeg else "ffprobe"
    try:
        done = subprocess.run([ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                              capture_output=True, text=True, timeout=20, check=False)
        return float(done.stdout.strip())
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def unlisted_tails(listed: Sequence[Segment], ffmpeg: str) -> list[Segment]:
    """The segment each run was writing when the daemon died: the file after a run's last listed one
    (``<run>-NNNNNN.ts``), starting where that one ended, as long as ffprobe says it holds."""
    last: dict[str, Segment] = {}
    for s in listed:
        run = s.path.stem.rsplit("-", 1)[0]
        if run not in last or s.path.name > last[run].path.name:
            last[run] = s
    tails = []
    for run, s in last.items():
        number = int(s.path.stem.rsplit("-", 1)[1])
        tail = s.path.with_name(f"{run}-{number + 1:06d}.ts")
        duration = _probe_duration(ffmpeg, tail) if tail.is_file() else None
        if duration:
            tails.append(Segment(tail, s.end, s.end + duration))
    return tails


def cut_clip(segments: Sequence[Segment], job: ClipJob, out: Path, ffmpeg: str) -> str | None:
    """Cut ``job``'s range out of ``segments`` into ``out`` (atomic: temp file, then rename).
    Returns None when the clip is written, else why not."""
    chosen = select_segments(segments, job.start, job.end)
    note = coverage_note(chosen, job.start, job.end)
    if not chosen:
        return note
    if note:
        log.info("clip_partial", event_id=job.event_id, camera=job.camera, note=note)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = chosen[0].path.parent  # beside the segments: in clips/ only the clip itself is written
    joined = work / f".{out.stem}.joined.ts"
    full = work / f".{out.stem}.full.mp4"
    tmp = out.with_name(f".{out.stem}.tmp.mp4")
    start = max(job.start, chosen[0].start)
    try:
        with open(joined, "wb") as fh:
            for s in chosen:
                fh.write(s.path.read_bytes())
        return _run_cut([remux_command(ffmpeg, joined, full),
                         cut_command(ffmpeg, full, start - chosen[0].start, job.end - start, tmp)], tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        return f"ffmpeg could not cut the clip: {exc}"
    finally:
        joined.unlink(missing_ok=True)
        full.unlink(missing_ok=True)


def cut_file_clip(source: Path, anchors: Sequence[FileAnchor], job: ClipJob, seen: float, out: Path,
                  ffmpeg: str) -> str | None:
    """Cut ``job``'s range out of a file camera's own file into ``out`` by stream copy (atomic).
    ``seen``: the event's first sighting (monotonic), which picks the pass through the file.
    Returns None when the clip is written, else why not."""
    span = file_span(anchors, job.start, job.end, seen)
    if span is None:
        return "the file camera had shown no frame of this event (its file position is unknown)"
    if not source.is_file():
        return f"the camera's file {source} is gone"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.mp4")
    return _run_cut([cut_command(ffmpeg, source, span[0], span[1], tmp)], tmp, out)


def _run_cut(commands: Sequence[list[str]], tmp: Path, out: Path) -> str | None:
    """Run the ffmpeg ``commands`` in turn; the last writes ``tmp``, renamed to ``out`` when non-empty."""
    try:
        for cmd in commands:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=CUT_TIMEOUT_S,
                                  check=False)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                err = done.stderr.decode(errors="replace").strip()[-200:]
                return f"ffmpeg could not cut the clip: {err or done.returncode}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        tmp.unlink(missing_ok=True)
        return f"ffmpeg could not cut the clip: {exc}"
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return "ffmpeg wrote an empty clip"
    os.replace(tmp, out)
    return None


class ClipService:
    """Owns the recorders and the cutter thread; ``on_event`` is an App observer callback.

    START: the event's clip is ``pending`` (its segments are held), or ``missing`` with the reason the
    camera records none. END: a job to cut once the recorder has closed the segment holding
    ``end_time + post_roll`` (or ``post_roll + 3 x segment_s + 5`` s after the END at most).
    """

    def __init__(self, store: EventStore, cameras: Mapping[str, CameraConfig], clips: ClipsConfig,
                 stop: threading.Event) -> None:
        self.store = store
        self.clips = clips
        self._halt = stop
        self.reasons = {name: recording_reason(cam, clips) for name, cam in cameras.items() if cam.enabled}
        clipped = [name for name, reason in self.reasons.items() if reason is None]
        self.recorders = {
            name: SegmentRecorder(name, cameras[name].source, store.path, clips, stop)
            for name in clipped if classify_source(cameras[name].source) in RECORDED_KINDS
        }
        # file cameras: cut from the file itself; their capture threads mark these (App wires them)
        self.file_clocks = {name: FileClock() for name in clipped if name not in self.recorders}
        self.file_sources = {name: Path(cameras[name].source.strip()) for name in self.file_clocks}
        self._jobs: queue.Queue[tuple[float, ClipJob]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="clip-cutter", daemon=True)
        self.cut = 0
        self.missing = 0
        self._last_clip_bytes = 0  # the last clip's size: the room made before the next cut

    def has_clip(self, camera: str) -> bool:
        """True when events of this camera get a clip (recorded; it is ready after the event ends)."""
        return camera in self.recorders or camera in self.file_clocks

    def event_fields(self, event: Event) -> dict[str, Any]:
        """What the MQTT event payloads add: ``has_clip`` and the clip's URL path."""
        has = self.has_clip(event.camera)
        return {"has_clip": has, "clip_path": CLIP_URL.format(id=event.id) if has else None}

    def start(self) -> None:
        for recorder in self.recorders.values():
            recorder.start()
        self._thread.start()
        self._recover()

    def stop(self) -> None:
        for recorder in self.recorders.values():
            recorder.stop_process()
            recorder.join(timeout=4)
        self._thread.join(timeout=2)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """camera -> recording state, for the page and /healthz."""
        out: dict[str, dict[str, Any]] = {}
        for name, reason in self.reasons.items():
            rec = self.recorders.get(name)
            state = rec.state if rec else ("from the file" if name in self.file_clocks else "off")
            out[name] = {"recording": state, "reason": reason or (rec.last_error if rec else ""),
                         "restarts": rec.restarts if rec else 0}
        return out

    # --- observer ------------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        rec = self.recorders.get(event.camera)
        if event.kind is EventKind.START:
            if not self.has_clip(event.camera):
                self.store.set_clip(event.id, CLIP_MISSING, reason=self.reasons.get(event.camera) or "not recorded")
                return
            if rec is not None:
                rec.hold(event.id, sighting_span(event)[0] - self.clips.pre_roll)
            self.store.set_clip(event.id, CLIP_PENDING)
        elif event.kind is EventKind.END and self.has_clip(event.camera):
            seen, last = sighting_span(event)
            start, end = clip_window(seen, last, self.clips)
            self._enqueue(ClipJob(event.id, event.camera, start, end, seen))

    def _enqueue(self, job: ClipJob) -> None:
        if job.camera in self.file_clocks:  # the file already holds the post-roll: cut now
            self._jobs.put((time.monotonic(), job))
            return
        deadline = time.monotonic() + max(0.0, job.end - time.monotonic()) + 3 * self.clips.segment_s + 5.0
        self._jobs.put((deadline, job))

    def _recover(self) -> None:
        """Events left ``pending`` by a daemon that died: cut them now from what is on disk."""
        for row in self.store.events_with("clip_pending"):
            rec = self.recorders.get(row.camera)
            if rec is None:
                reason = ("the daemon stopped before the clip was cut, and where the file camera was in its file "
                          "then is not kept" if row.camera in self.file_clocks else "the camera no longer records clips")
                self.store.set_clip(row.id, CLIP_MISSING, reason=reason)
                continue
            offset = wall_offset()  # the row's times are wall-clock: on this process's monotonic clock
            first = row.start_time - offset
            last = (row.end_time or row.updated) - offset
            start, end = clip_window(first, last, self.clips)
            rec.hold(row.id, start)
            self._jobs.put((time.monotonic() + 3 * self.clips.segment_s + 5.0, ClipJob(row.id, row.camera, start, end)))
            log.info("clip_recovering", event_id=row.id, camera=row.camera)

    # --- cutter thread -------------------------------------------------------------------------
    def _run(self) -> None:
        waiting: list[tuple[float, ClipJob]] = []
        while not self._halt.is_set():
            try:
                waiting.append(self._jobs.get(timeout=0.25))
            except queue.Empty:
                pass
            now = time.monotonic()
            still = []
            for deadline, job in waiting:
                rec = self.recorders.get(job.camera)
                if rec is None or rec.covered_until() >= job.end or now >= deadline:
                    self._cut(rec, job)
                else:
                    still.append((deadline, job))
            waiting = still

    def _cut(self, rec: SegmentRecorder | None, job: ClipJob) -> None:
        out = self.store.media_path(CLIP_DIR, job.camera, job.event_id)
        # room first for a clip as big as the last one; once it is written, the cap itself: the clips
        # are over their cap by at most this clip, and only while it is written (one cutter thread)
        self.store.enforce_retention({CLIP_DIR: self._last_clip_bytes})
        t0 = time.monotonic()
        covered = 0.0
        try:
            if rec is not None:
                segments = rec.segments()
                why = cut_clip(segments, job, out, self.clips.ffmpeg)
                covered = covered_seconds(select_segments(segments, job.start, job.end), job.start, job.end)
            else:
                anchors = self.file_clocks[job.camera].anchors()
                why = cut_file_clip(self.file_sources[job.camera], anchors, job, job.seen or job.start, out,
                                    self.clips.ffmpeg)
                covered = (_probe_duration(self.clips.ffmpeg, out) or 0.0) if why is None else 0.0
        except OSError as exc:
            why = f"cannot write the clip: {exc.strerror or exc}"
        if rec is not None:
            rec.hold(job.event_id, None)
        if why is None:
            self.cut += 1
            self.store.set_clip(job.event_id, CLIP_READY, clip=out)
            try:
                self._last_clip_bytes = out.stat().st_size
            except OSError:
                pass
            self.store.enforce_retention(keep=(job.event_id,))
            log.info("clip_ready", event_id=job.event_id, camera=job.camera, seconds=round(covered, 1),
                     wanted_s=round(job.end - job.start, 1), cut_s=round(time.monotonic() - t0, 2),
                     source="file" if rec is None else "recording")
        else:
            self.missing += 1
            self.store.set_clip(job.event_id, CLIP_MISSING, reason=why)
            log.warning("clip_missing", event_id=job.event_id, camera=job.camera, reason=why)

