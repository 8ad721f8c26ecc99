"""What C++ libraries print on file descriptor 2, routed into the structured log.

LiteRT's C++ logger writes ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight to
fd 2 the first time a process builds an XNNPACK interpreter; TensorFlow and absl print
``I0000 00:00:… file.cc:123] …`` lines when TensorFlow loads. Neither goes through Python's
logging, so in a JSON log they are lines that are not JSON. Neither library has a switch that
silences them: ``TF_CPP_MIN_LOG_LEVEL`` quiets TensorFlow's INFO and WARNING lines (set before it is
imported, ``support/logs.py``), not LiteRT's minimal logger.

``routed_native_stderr`` points fd 2 at a temporary file while such a library loads (milliseconds
for LiteRT's first interpreter, seconds for ``import tensorflow``), then logs each line it recognises through the stdlib logger ``raccoon_watch.native`` (INFO
at debug level, so it is not shown at the default level; warnings and errors as such) and writes
every other line (a JSON log line another thread wrote meanwhile, a traceback) back to stderr as it
was. Only one thread redirects at a time.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("raccoon_watch.native")

# LiteRT/TFLite minimal logger: "INFO: text", "WARNING: text", "ERROR: text"
_MINIMAL = re.compile(r"^(VERBOSE|DEBUG|INFO|WARNING|ERROR|FATAL|SILENT): (.*)$")
# absl / TensorFlow C++: "I0000 00:00:1796676579.193729    4582 cpu_feature_guard.cc:227] text"
_ABSL = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_LEVELS = {"VERBOSE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.DEBUG, "SILENT": logging.DEBUG,
           "WARNING": logging.WARNING, "ERROR": logging.ERROR, "FATAL": logging.CRITICAL,
           "I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
# absl's notice that it has not been initialised (TensorFlow has no say in that): news to nobody
_QUIET = ("All log messages before absl::InitializeLog() is called are written to STDERR",)
# a line of our own log (JSON, or the console renderer's "2026-12-07 21:02:52 [info ] ..."): never
# the continuation of a C++ line
_OWN_LINE = re.compile(r"^\s*(\{|\d{4}-\d\d-\d\d[ T])")

_lock = threading.Lock()


def parse_native_line(line: str) -> tuple[int, str, str | None] | None:
    """(logging level, message, C++ source location or None) for a line a C++ logger printed, else
    None. INFO lines map to DEBUG: start-up notes, not news for the log at the default level."""
    line = line.rstrip("\r\n")
    m = _ABSL.match(line)
    if m:
        return _LEVELS[m.group(1)], m.group(3), m.group(2)
    m = _MINIMAL.match(line)
    if m:
        level = logging.DEBUG if m.group(2).startswith(_QUIET) else _LEVELS[m.group(1)]
        return level, m.group(2), None
    return None


def replay(data: bytes, library: str) -> None:
    """Log the C++ lines in ``data`` (a line that follows one and is not JSON continues its message,
    as TensorFlow's two-line CPU notice does); write every other line back to stderr unchanged, in
    order."""
    pending: list = []  # [level, message, where] of the C++ line being read, until the next one

    def flush() -> None:
        if pending:
            level, message, where = pending
            if log.isEnabledFor(level):
                log.log(level, "%s: %s%s", library, message, f" ({where})" if where else "")
            pending.clear()

    for line in data.decode(errors="replace").splitlines():
        parsed = parse_native_line(line)
        if parsed is not None:
            flush()
            pending.extend(parsed)
        elif pending and line.strip() and not _OWN_LINE.match(line):
            pending[1] = f"{pending[1]} {line.strip()}"
        else:
            flush()
            if line.strip():
                try:
                    sys.stderr.write(line + "\n")
                    sys.stderr.flush()
                except (AttributeError, OSError, ValueError):
                    pass
    flush()


@contextmanager
def routed_native_stderr(library: str) -> Iterator[None]:
    """fd 2 goes to a temporary file inside the block; afterwards its lines are logged (``replay``).

    Keep the block short (loading a library, building a first interpreter): another thread's log
    lines written meanwhile come out when it ends. Where fd 2 cannot be redirected (no fd 2, no
    temporary folder) the block runs as is."""
    with _lock:
        try:
            _flush_stderr()
            saved = os.dup(2)
        except OSError:
            saved = -1
        tmp = None
        if saved >= 0:
            try:
                tmp = tempfile.TemporaryFile()
                os.dup2(tmp.fileno(), 2)
            except OSError:
                if tmp is not None:
                    tmp.close()
                tmp = None
                os.close(saved)
                saved = -1
        try:
            yield
        finally:
            data = b""
            if tmp is not None:
                _flush_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                try:
                    tmp.seek(0)
                    data = tmp.read()
                finally:
                    tmp.close()
            if data:
                replay(data, library)


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
