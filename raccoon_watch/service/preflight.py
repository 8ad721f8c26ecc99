"""What ``check-config`` checks beyond the schema: the world the config names, as far as this machine
can see it, with the same code ``run`` uses, and the exit codes both commands share.

Exit codes (``run`` and ``check-config`` alike; ``EXIT_CODES`` is the text ``--help`` shows):

    0  ok
    1  an unexpected error (a bug: the traceback says where)
    2  a configuration problem, the message naming the key: the YAML does not validate (an unknown
       key, with "did you mean `detect_fps`?" for a near miss), or it names something that is not
       there or not usable: ``detector.model`` / ``detector.labelmap`` not found, a file camera's
       ``cameras.<name>.source`` missing or not a readable video (check-config), ``http.port``
       taken, MQTT TLS files missing (check-config); or (``run``) the store is in use by another
       daemon (the message names its PID)
    3  the model is there but cannot be used: not a model, a damaged file, a card that does not
       match it (or no model at all when ``detector.model`` is not set and none is bundled)

Checks, each problem one line naming its key:

* ``detector.model``: ``App.check_model``, the start-up model check itself (the site's promoted
  classifier, else the model folder's own, loaded and closed), without opening a camera or the
  store. A path that does not exist is 2 (``ModelNotFound``), a model that does not load 3
  (``model_problem``, which ``run`` uses too).
* ``cameras.<name>.source`` of an enabled file camera: the file exists, is readable, OpenCV opens it
  and reads one frame (``capture.open_source``, what the capture thread does). Live sources (webcam,
  RTSP, HTTP) may be down for a while and ``run`` retries them, so they are warnings: a device path
  that is missing, an RTSP/HTTP host that does not resolve, refuses or does not answer
  (``netdiag.probe_tcp``).
* ``http.port`` (with ``http.enabled``): the bind ``run`` does (``httpserver.bind_listener``),
  closed at once. A port held by the running daemon of this same store (it holds the store's lock
  and answers /healthz on that port) is a note, not a problem: a restart frees it for the new one.
* ``mqtt.tls.ca_file`` / ``cert_file`` / ``key_file``: the files exist. ``mqtt.host``: a broker
  that does not resolve, refuses or does not answer is a warning (``run`` retries it; /healthz says
  which of these it is).

``run`` is more lenient about cameras on purpose: a camera that cannot be opened at start is
reported down on /healthz and retried, so a file that appears later (a mount) or a camera that
boots after the daemon is picked up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raccoon_watch.config import Config, redact_url
from raccoon_watch.support.netdiag import probe_tcp, url_endpoint

if TYPE_CHECKING:  # the checks import what they use when they run: every CLI command imports this module
    from raccoon_watch.recognition.detectors.base import ModelError

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_MODEL = 3
WARNING = 0  # a Problem's code when it is only worth saying

EXIT_CODES = """exit codes (run and check-config):
  0  ok
  1  unexpected error
  2  configuration problem, the message names the key: invalid YAML or an unknown key (with "did you
     mean"); detector.model or detector.labelmap not found; http.port taken; check-config also: a
     file camera's source missing or not a readable video, MQTT TLS files missing; run also: the
     store is in use by another daemon (its PID is named)
  3  the model is there but cannot be used (not a model, damaged, a card that does not match it)"""

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``key`` (``cameras.porch.source``), what is wrong, and the exit code it calls for
    (``WARNING``: none, only said)."""

    key: str
    message: str
    code: int = EXIT_CONFIG

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def exit_code(problems: list[Problem]) -> int:
    """2 when any problem is a configuration problem, 3 when the only ones are the model's, else 0."""
    codes = {p.code for p in problems if p.code != WARNING}
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    return EXIT_MODEL if codes else EXIT_OK


def model_problem(exc: ModelError, cfg: Config) -> Problem:
    """A ModelError as a Problem: a path the config names that does not exist is a configuration
    problem (2, naming ``detector.model`` or ``detector.labelmap``); anything else the model's (3)."""
    from raccoon_watch.recognition.detectors.base import ModelNotFound

    if isinstance(exc, ModelNotFound):
        for key, value in (("detector.model", cfg.detector.model), ("detector.labelmap", cfg.detector.labelmap)):
            if value is not None and Path(value) == exc.path:
                return Problem(key, f"{value}: not found (no such file or folder)", EXIT_CONFIG)
    return Problem("detector.model", f"the model cannot be used: {exc}", EXIT_MODEL)


def check_model(cfg: Config) -> list[Problem]:
    """The start-up model check (``App.check_model``), nothing else started."""
    from raccoon_watch.app import App
    from raccoon_watch.recognition.detectors.base import ModelError

    try:
        App(cfg).check_model()
    except ModelError as exc:
        return [model_problem(exc, cfg)]
    return []


def check_sources(cfg: Config) -> list[Problem]:
    """Enabled file cameras must open and give a frame; live sources only warn (``run`` retries them)."""
    from raccoon_watch.capture import SourceKind, SourceOpenError, classify_source, open_source

    problems = []
    for name, cam in cfg.cameras.items():
        if not cam.enabled:
            continue
        key = f"cameras.{name}.source"
        kind = classify_source(cam.source)
        if kind is SourceKind.FILE:
            try:
                cap = open_source(cam.source, cam.open_timeout_s, cam.read_timeout_s)
            except SourceOpenError as exc:
                problems.append(Problem(key, f"{cam.source}: {exc.cause or exc}"))
                continue
            try:
                readable = cap.grab()
            finally:
                cap.release()
            if not readable:
                problems.append(Problem(key, f"{cam.source}: OpenCV opens it but reads no frame (empty or damaged)"))
        elif kind is SourceKind.DEVICE:
            device = cam.source.strip()
            if device.startswith("/dev/") and not Path(device).exists():
                problems.append(Problem(key, f"{device}: no such device now; run starts and retries it", WARNING))
        else:
            endpoint = url_endpoint(cam.source)
            if endpoint is None:
                problems.append(Problem(key, f"{redact_url(cam.source)}: no host in the URL"))
                continue
            why = probe_tcp(*endpoint, timeout=min(PROBE_TIMEOUT_S, cam.open_timeout_s))
            if why is not None:
                problems.append(Problem(key, f"{redact_url(cam.source)}: not reachable now ({why}); "
                                             "run starts and retries it", WARNING))
    return problems


def check_port(cfg: Config) -> list[Problem]:
    """The HTTP bind of ``run``, released at once; a port the running daemon of this store holds is a note."""
    http = cfg.http
    if not http.enabled:
        return []
    from raccoon_watch.store.lock import LOCK_NAME, is_locked, read_holder
    from raccoon_watch.web.httpserver import bind_listener

    try:
        sock = bind_listener(http.host, http.port, loopback_only=http.review and not http.login_required)
    except OSError as exc:
        text = str(exc)
        key = "http.host" if text.startswith("http.host") else "http.port"
        message = text[len(key):].strip() if text.startswith(key) else text  # "8765 on 127.0.0.1 cannot be bound: ..."
        if key == "http.port" and is_locked(cfg.storage.path) and answers_healthz(http.host, http.port):
            pid = read_holder(Path(cfg.storage.path) / LOCK_NAME)
            return [Problem(key, f"{http.port} is in use by the running daemon of this storage.path"
                                 f"{f' (PID {pid})' if pid else ''}; a restart frees it for this configuration",
                            WARNING)]
        return [Problem(key, message)]
    sock.close()
    return []


def answers_healthz(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does a raccoon-watch daemon answer /healthz at ``host``:``port``?"""
    import urllib.request

    netloc = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{netloc}:{port}/healthz", timeout=timeout) as resp:
            body = json.loads(resp.read(1 << 20))
    except Exception as exc:
        body = _http_error_body(exc)
    return isinstance(body, dict) and "status" in body and "cameras" in body


def _http_error_body(exc: Exception) -> object:
    try:
        return json.loads(exc.read(1 << 20))  # type: ignore[attr-defined]
    except Exception:
        return None


def check_paths(cfg: Config) -> list[Problem]:
    """Files the config names that ``run`` opens later (MQTT TLS)."""
    problems = []
    tls = cfg.mqtt.tls if cfg.mqtt is not None and cfg.mqtt.enabled else None
    for field in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, field, None) if tls is not None else None
        if value is not None and not Path(value).is_file():
            problems.append(Problem(f"mqtt.tls.{field}", f"{value}: no such file"))
    return problems


def check_broker(cfg: Config) -> list[Problem]:
    """An MQTT broker that cannot be reached now: a warning (``run`` retries it)."""
    mqtt = cfg.mqtt
    if mqtt is None or not mqtt.enabled:
        return []
    why = probe_tcp(mqtt.host, mqtt.port, timeout=PROBE_TIMEOUT_S)
    if why is None:
        return []
    return [Problem("mqtt.host", f"{mqtt.host}:{mqtt.port} not reachable now ({why}); run starts and retries it",
                    WARNING)]


def check_world(cfg: Config) -> list[Problem]:
    """Everything above, in the order a reader fixes things: paths, model, cameras, port, broker."""
    return [*check_paths(cfg), *check_model(cfg), *check_sources(cfg), *check_port(cfg), *check_broker(cfg)]
