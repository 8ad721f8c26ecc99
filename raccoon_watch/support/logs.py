"""structlog set-up: JSON lines for journald, colours on a TTY, secrets scrubbed everywhere.

Other libraries' stdlib logging (TensorFlow/absl, paho) goes through the same processors via
``ProcessorFormatter``. Every value passes ``scrub``: URL passwords become ``***`` and every value
registered with ``register_secret`` (tokens, MQTT passwords) is replaced wherever it appears; the
rendered line is scrubbed once more, so a traceback (rendered without local variables, which is
where secrets live) cannot carry one either. ``filter_by_level`` runs first, so a debug line costs
nothing when debug is off; string values are cut to ``MAX_VALUE_CHARS`` and anything that came from
outside (a request line, an API error body, a payload) should go through ``clip`` before it is logged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

import structlog

from raccoon_watch.config import redact_url

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never print this value (tokens, passwords). Short values are ignored to avoid false hits."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


MAX_VALUE_CHARS = 2000  # any one logged string value, after scrubbing
CLIP_CHARS = 200  # default for outside input (request lines, API bodies, payloads)


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (for input from outside)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


def scrub(text: str) -> str:
    text = redact_url(text)
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _scrub_value(value: str) -> str:
    # scrub before cutting: a cut could split a secret and leave its first half unmatched
    return clip(scrub(value), MAX_VALUE_CHARS)


def _scrub_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = _scrub_value(value)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
            event_dict[key] = type(value)(_scrub_value(v) if isinstance(v, str) else v for v in value)
    return event_dict


def _scrub_rendered(_logger: Any, _name: str, line: Any) -> Any:
    """After the renderer: the whole line, tracebacks included, scrubbed once more."""
    return scrub(line) if isinstance(line, str) else line


_DICT_TRACEBACKS_WITHOUT_LOCALS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def setup_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the stdlib root logger once for the process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub_processor,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True, exception_formatter=structlog.dev.plain_traceback)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([] if use_console else [_DICT_TRACEBACKS_WITHOUT_LOCALS]),
            renderer,
            _scrub_rendered,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "urllib3", "uvicorn"):  # uvicorn: "Started server process"
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
