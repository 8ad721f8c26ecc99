"""The checkpoint of an archive run: one JSON line per finished file, appended as results arrive.

    {"checkpoint": 1, "settings": {...}}                 first line: what the records were made with
    {"file": "2024/cam1/IMG_0001.JPG", "record": {...}}  then one line per finished file, any order

A rerun with the same checkpoint skips the files it lists, so a crash at photo 90,000 costs the
photos in flight, not the 89,999 before. Rules:

- only the driver writes it (the workers return records), one ``write`` per batch, flushed and
  fsync'd, so a kill leaves whole lines and at most one torn last line; a torn last line is cut off
  when the file is opened again (``open_checkpoint``), its file is simply done again;
- a second run on the same checkpoint at the same time is refused (an exclusive ``flock``);
- records made with other settings (model files, thresholds, labels...) are never mixed: opening a
  checkpoint whose first line names other settings is an error that says which differ;
- a file listed twice (it cannot happen with one writer, but a hand-merged file might) counts once:
  the first line wins.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = 1


class CheckpointError(ValueError):
    """The checkpoint cannot be used: other settings, another run holds it, or it is not one."""


@dataclass
class Checkpoint:
    """An open checkpoint: ``done`` maps relative file -> record; ``append`` adds finished files."""

    path: Path
    settings: dict[str, Any]
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    _fh: IO[bytes] | None = None

    def append(self, finished: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Write (relative file, record) pairs not already done; returns how many were new."""
        if self._fh is None:
            raise CheckpointError(f"{self.path}: checkpoint is closed")
        lines = []
        for relative, record in finished:
            if relative not in self.done:
                self.done[relative] = record
                lines.append(json.dumps({"file": relative, "record": record}) + "\n")
        if lines:
            _write(self._fh, lines)
        return len(lines)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # releases the flock
            self._fh = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_checkpoint(path: Path, settings: dict[str, Any]) -> Checkpoint:
    """Open (or create) the checkpoint at ``path`` for a run with ``settings`` (JSON-able), locked
    against other runs. CheckpointError names the problem when it cannot be used."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+b")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise CheckpointError(f"{path}: another run is using this checkpoint (wait for it, or use another --checkpoint)") from None
    try:
        fh.seek(0)
        done, good_end = _parse(fh.read(), path, settings)
        fh.truncate(good_end)  # a torn last line from a kill: cut off, its file is done again
        if good_end == 0:
            _write(fh, [json.dumps({"checkpoint": FORMAT, "settings": settings}, sort_keys=True) + "\n"])
    except BaseException:
        fh.close()
        raise
    return Checkpoint(path, settings, done, fh)


def _write(fh: IO[bytes], lines: list[str]) -> None:
    fh.write("".join(lines).encode("utf-8"))  # "a" mode: always at the end
    fh.flush()
    os.fsync(fh.fileno())


def _parse(data: bytes, path: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """(done records, byte length of the whole lines) of an existing checkpoint's bytes. Only a last
    line without its newline can be torn (a kill mid-write); any other bad line is an error."""
    done: dict[str, dict[str, Any]] = {}
    whole = data[:data.rfind(b"\n") + 1]  # b"" when no line is complete
    for number, raw in enumerate(whole.splitlines(), start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            raise CheckpointError(f"{path}:{number}: not a checkpoint line ({raw[:60]!r}); is this file a checkpoint?") from None
        if number == 1:
            _check_header(entry, path, settings)
        elif isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("record"), dict):
            done.setdefault(entry["file"], entry["record"])
        else:
            raise CheckpointError(f"{path}:{number}: expected {{\"file\", \"record\"}}, got {raw[:60]!r}")
    return done, len(whole)


def _check_header(entry: Any, path: Path, settings: dict[str, Any]) -> None:
    if not (isinstance(entry, dict) and entry.get("checkpoint") == FORMAT and isinstance(entry.get("settings"), dict)):
        raise CheckpointError(f"{path}: not a checkpoint of this version (first line {json.dumps(entry)[:80]})")
    theirs = entry["settings"]
    differ = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} then, {settings.get(k)!r} now" for k in differ)
        raise CheckpointError(f"{path}: made with other settings ({shown}); delete it to start afresh, "
                              "or use another --checkpoint")
