"""raccoon-watch command line: run, serve, check-config, detect, export-feedback, retrain, models, hash-password.

Exit codes of ``run`` and ``check-config`` (``preflight.EXIT_CODES``, shown by ``--help``): 0 ok; 1
unexpected error; 2 a configuration problem, the message naming the key (an unknown key, with "did
you mean"; ``detector.model`` not found; ``http.port`` taken, found before any camera starts; the
store in use by another daemon, naming its PID; check-config also: a file camera's source missing);
3 the model is there but cannot be used. ``check-config`` checks what ``run`` would meet
(``preflight``): the same model load, the same port bind, the file sources.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import structlog

from raccoon_watch import __version__
from raccoon_watch.config import Config, ConfigError, effective_config, load_config, redact_url
from raccoon_watch.service import preflight
from raccoon_watch.service.preflight import EXIT_CODES, EXIT_CONFIG, EXIT_MODEL
from raccoon_watch.web.httpserver import bind_listener

BENCH_PROG_ENV = "RACCOON_WATCH_BENCH_PROG"  # = tools.bench.PROG_ENV: the usage line names the command the user typed

__all__ = ["EXIT_CONFIG", "EXIT_MODEL", "main"]

log = structlog.get_logger("raccoon_watch")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raccoon-watch", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon", epilog=EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", "-c", required=True, type=Path, help="YAML config file")
    run.add_argument("--demo-if-no-camera", action="store_true",
                     help="when no camera opens, watch a demo clip built from ../shared instead")

    check = sub.add_parser(
        "check-config", help="validate a config and what it names (model, file cameras, port); print it, secrets masked",
        description="Validate the config (unknown keys get a 'did you mean'), then check what it names as run "
                    "would meet it: the model loads (the start-up check itself, no camera opened), file cameras "
                    "exist and read, http.port can be bound, MQTT TLS files exist. Live cameras (webcam, RTSP, "
                    "HTTP) that do not answer are warnings: run retries them. Prints the effective config "
                    "(secrets masked) on stdout and one line per problem, naming its key, on stderr.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("config", type=Path)

    export = sub.add_parser("export-feedback", help="write the events judged on the review page as training "
                            "data: DIR/images + DIR/labels.csv in the CSV format train/ reads")
    export.add_argument("dir", type=Path)
    export.add_argument("--config", "-c", required=True, type=Path, help="YAML config file (for storage.path)")

    sub.add_parser("hash-password", help="read a password on stdin, print its argon2 hash for http.password_hash")

    from raccoon_watch.service import detect_cmd

    detect_cmd.add_arguments(sub.add_parser("detect", help="one-shot detection on images or a video"))
    from raccoon_watch.api import serve_cmd

    serve_cmd.add_arguments(sub.add_parser("serve", help="the recognizer as a DeepStack/CodeProject.AI-compatible "
                                           "HTTP API (Frigate, Blue Iris, Agent DVR, another raccoon-watch)"))
    from raccoon_watch.service import retrain_cmd

    retrain_cmd.add_parsers(sub)  # retrain, models (the site learns its porch)

    # the benchmark is a checkout tool (tools/bench.py), parsed there: the daemon never imports tools
    sub.add_parser("bench", add_help=False, help="replay generated clips through the pipeline; print JSON "
                   "(tools.bench, from a checkout; `raccoon-watch bench --help` for its options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config)
    if args.command == "run":
        return _run(args)
    if args.command == "export-feedback":
        return _export_feedback(args.config, args.dir)
    if args.command == "hash-password":
        return _hash_password()
    if args.command in ("retrain", "models"):
        from raccoon_watch.service import retrain_cmd

        return retrain_cmd.main(args)
    if args.command == "detect":
        from raccoon_watch.service import detect_cmd

        return detect_cmd.main(args)
    if args.command == "serve":
        from raccoon_watch.api import serve_cmd

        return serve_cmd.main(args)
    return 1


def _bench(argv: list[str]) -> int:
    """``raccoon-watch bench ...`` = ``python -m tools.bench ...`` from the checkout this package is in.

    A child process: the daemon package never imports ``tools`` (nor puts the checkout on its own
    ``sys.path``). The child's output is relayed through this process's ``sys.stdout``/``sys.stderr``."""
    from raccoon_watch.config import REPO_ROOT

    if not (REPO_ROOT / "tools" / "bench.py").is_file():
        print(f"raccoon-watch bench: needs a source checkout (no tools/bench.py under {REPO_ROOT})", file=sys.stderr)
        return 1
    env = {**os.environ, BENCH_PROG_ENV: "raccoon-watch bench",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    child = subprocess.Popen([sys.executable, "-m", "tools.bench", *argv], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1)
    assert child.stdout is not None and child.stderr is not None
    relay = threading.Thread(target=_relay, args=(child.stderr, sys.stderr), name="bench-stderr", daemon=True)
    relay.start()
    try:
        _relay(child.stdout, sys.stdout)
        return child.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT (one process group): let it finish its cleanup
        return child.wait()
    finally:
        relay.join(timeout=5)


def _relay(source: IO[str], target: IO[str]) -> None:
    for line in source:
        target.write(line)
        target.flush()


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"raccoon-watch: {exc}", file=sys.stderr)
        return None


def _check_config(path: Path) -> int:
    cfg = _load(path)
    if cfg is None:
        return EXIT_CONFIG
    from raccoon_watch.support.logs import setup_logging

    setup_logging("warning", cfg.logging.format)  # the model loader's warnings, on stderr; stdout is the config
    print(json.dumps(effective_config(cfg), indent=2, default=str), flush=True)
    found = preflight.check_world(cfg)
    for problem in found:
        print(f"raccoon-watch: {'warning: ' if problem.code == preflight.WARNING else ''}{problem}", file=sys.stderr)
    code = preflight.exit_code(found)
    if code:
        count = sum(p.code != preflight.WARNING for p in found)
        print(f"{path}: {count} problem(s); exit {code}", file=sys.stderr)
        return code
    from raccoon_watch.capture import SourceKind, classify_source

    files = sum(c.enabled and classify_source(c.source) is SourceKind.FILE for c in cfg.cameras.values())
    checked = ["model loads", *([f"{files} file camera(s) read"] if files else []),
               *(["http.port free"] if cfg.http.enabled else [])]
    print(f"{path}: configuration OK ({len(cfg.cameras)} camera(s); {', '.join(checked)})", file=sys.stderr)
    return 0


def _export_feedback(config: Path, out: Path) -> int:
    cfg = _load(config)
    if cfg is None:
        return EXIT_CONFIG
    from raccoon_watch.learning.export_feedback import export_feedback
    from raccoon_watch.store import EventStore

    store = EventStore(cfg.storage.path)
    try:
        summary = export_feedback(store, out)
    finally:
        store.close()
    print(json.dumps({"path": str(out), **summary}))
    return 0


def _hash_password() -> int:
    import getpass

    from argon2 import PasswordHasher

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("raccoon-watch: a password needs at least 8 characters", file=sys.stderr)
        return EXIT_CONFIG
    print(PasswordHasher().hash(password))
    return 0


def _with_demo_cameras(cfg: Config) -> Config:
    """Swap every camera that cannot open for the demo clip (so `make run` shows events anywhere)."""
    from raccoon_watch.capture import probe_source
    from raccoon_watch.demo import ensure_demo_clip

    dead = [name for name, cam in cfg.cameras.items() if cam.enabled and not probe_source(cam)]
    if len(dead) < sum(c.enabled for c in cfg.cameras.values()):
        return cfg
    from raccoon_watch.config import shared_dir

    clip = ensure_demo_clip(shared_dir())
    log.warning("no_camera_opened_using_demo", cameras=dead, demo_clip=str(clip))
    cams = {name: cam.model_copy(update={"source": str(clip), "loop": True, "realtime": True})
            for name, cam in cfg.cameras.items()}
    return cfg.model_copy(update={"cameras": cams})


def _run(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_CONFIG
    from raccoon_watch.support.logs import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.format)  # (OpenCV's own log level: raccoon_watch/__init__.py)
    from raccoon_watch.store.lock import StorageLock, StorageLocked

    lock = StorageLock(cfg.storage.path)  # first, before the heavy imports: a second daemon leaves at once
    try:
        lock.acquire()
    except StorageLocked as exc:
        log.error("storage_locked", path=str(exc.lock_file), holder_pid=exc.holder_pid)
        print(f"raccoon-watch: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for name, cam in cfg.cameras.items():
        log.info("camera_configured", camera=name, source=redact_url(cam.source), detect_fps=cam.detect_fps)
    listener = None
    if cfg.http.enabled:  # bound before anything starts: a taken port is a config error, not a daemon without a page
        try:
            listener = bind_listener(cfg.http.host, cfg.http.port,
                                     loopback_only=cfg.http.review and not cfg.http.login_required)
        except OSError as exc:
            log.error("http_bind_failed", host=cfg.http.host, port=cfg.http.port, error=str(exc))
            print(f"raccoon-watch: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if args.demo_if_no_camera:
        cfg = _with_demo_cameras(cfg)

    from raccoon_watch.app import App
    from raccoon_watch.recognition.detectors.base import ModelError

    app = None
    try:
        app = App(cfg, storage_lock=lock)  # App.stop releases it
        app.start()
    except ModelError as exc:  # the check check-config runs too (preflight.check_model)
        problem = preflight.model_problem(exc, cfg)
        log.error("model_unusable", key=problem.key, error=str(exc), exit_code=problem.code)
        print(f"raccoon-watch: {problem}", file=sys.stderr)
        if app is not None:
            app.stop()
        else:
            lock.release()
        if listener is not None:
            listener.close()
        return problem.code
    from raccoon_watch.service.notify import ServiceRuntime

    service = ServiceRuntime(app, args.config, listener=listener)  # sd_notify READY/STATUS/WATCHDOG/STOPPING, /healthz
    _install_signal_handlers(app)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: service.request_reload())
    try:
        service.start()
        while not app.wait(service.tick_s):
            app.housekeeping()
            service.tick()
    finally:
        service.stop()
        app.stop()
    return 0


def _install_signal_handlers(app: Any) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        app.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


if __name__ == "__main__":
    sys.exit(main())
