"""The files still to do -> records, handed to ``on_done`` batch by batch as they finish.

    run_local(todo, settings, on_done, batch_size)      this process, one recognizer
    ray_runner.run_ray(todo, settings, on_done, ...)    a pool of recognizer actors on a Ray cluster

Both call ``on_done([(relative file, record), ...])`` in the calling thread (the driver), which
writes the checkpoint; the order of batches is whatever finishes first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from raccoon_watch.archive.walk import ArchiveFile
from raccoon_watch.archive.worker import FileRecognizer, RecognitionSettings

Finished = list[tuple[str, dict[str, Any]]]
OnDone = Callable[[Finished], None]
DEFAULT_BATCH = 8  # files per batch: a checkpoint write per batch, at most this many redone after a kill


def batches(todo: Sequence[ArchiveFile], size: int) -> list[list[ArchiveFile]]:
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [list(todo[i:i + size]) for i in range(0, len(todo), size)]


def run_local(todo: Sequence[ArchiveFile], settings: RecognitionSettings, on_done: OnDone,
              batch_size: int = DEFAULT_BATCH) -> None:
    """Every file in this process with one recognizer (``settings.threads`` TFLite threads)."""
    if not todo:
        return
    worker = FileRecognizer(settings)
    try:
        for batch in batches(todo, batch_size):
            on_done([(f.relative, worker.record(f.path, f.kind)) for f in batch])
    finally:
        worker.close()


class Progress:
    """A one-line progress report on stderr: files done of total, rate, time left. On a terminal the
    line is redrawn in place; otherwise (logs, CI) a line at most every ``every_s`` seconds."""

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.2 if self.tty else every_s
        self.clock = clock
        self.started = clock()
        self.shown = -1e9

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = f", {left / rate:.0f} s left" if rate > 0 and left else ""
        return f"archive: {self.done}/{self.total} files, {rate:.1f} files/s{eta}"

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now - self.shown >= self.every_s or self.done >= self.total:
            self.shown = now
            self.stream.write(("\r" + self.line() + "\033[K") if self.tty else self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
