"""``raccoon-watch serve``: the raccoon recognizer as a DeepStack / CodeProject.AI-compatible HTTP API.

    raccoon-watch serve                                  # 127.0.0.1:32168, the bundled model
    raccoon-watch serve --config serve.yaml              # the config's detector (model, cards) and serve sections
    raccoon-watch serve --host 0.0.0.0 --api-key-file /etc/raccoon-watch/api_key

Frigate (``detectors: {deepstack: {type: deepstack, api_url: http://HOST:32168/v1/vision/custom/raccoon}}``),
Blue Iris and Agent DVR call it as they call DeepStack or CodeProject.AI Server (README, "Use it
from Frigate / Blue Iris / Agent DVR"); so does another raccoon-watch with ``detector.backend:
remote``. The models are loaded as the daemon and ``detect`` load them (``create_recognizer``: the
same folder, cards and thresholds; ``detector.model`` or the bundled one), and answers go through
``Recognizer.recognize``, the one inference path. See ``raccoon_watch.api.server`` for the
endpoints, limits and refusals.

Settings: the ``serve`` section of ``--config`` (a daemon config or one without cameras), then the
options here. Binding anything but loopback needs an API key (``serve.api_key``, or
``--api-key-file``: a key on the command line would show in ``ps``). Exit status: 0 after SIGTERM or
Ctrl-C; 2 a bad config or option (the message names the key: ``serve.api_key``, ``serve.port``, ...)
or a port that cannot be bound; 3 the model is missing or not a model (as the other commands).
Logs go to stderr (JSON unless a terminal); the key is never logged.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from raccoon_watch.config import ConfigError, DetectorConfig, ServeConfig, ServeFileConfig, load_config

log = structlog.get_logger("raccoon_watch.serve")

EXIT_CONFIG, EXIT_MODEL = 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help="YAML config: its detector and serve sections (cameras optional)")
    parser.add_argument("--model", type=Path, help="model directory or file (default: detector.model, else the bundled one)")
    parser.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1); another than loopback needs a key")
    parser.add_argument("--port", type=int, help="port (default: serve.port, 32168, CodeProject.AI's)")
    parser.add_argument("--api-key-file", type=Path, help="a file holding the API key (overrides serve.api_key)")
    parser.add_argument("--workers", type=int, help="inference threads (default: serve.workers, 2)")


def effective(args: argparse.Namespace) -> tuple[ServeFileConfig, ServeConfig]:
    """The config file (or the defaults) with the options applied; ConfigError naming the key."""
    cfg = load_config(args.config, ServeFileConfig) if args.config else ServeFileConfig()
    assert isinstance(cfg, ServeFileConfig)
    update: dict[str, Any] = {}
    for key in ("host", "port", "workers"):
        if getattr(args, key) is not None:
            update[key] = getattr(args, key)
    if args.api_key_file is not None:
        try:
            update["api_key"] = args.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--api-key-file {args.api_key_file}: cannot read it: {exc}") from None
    try:
        serve = ServeConfig.model_validate({**dict(cfg.serve), **update})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"serve{'.' + key if key else ''}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError("invalid serve settings:\n  " + "\n  ".join(problems)) from None
    if args.model is not None:
        cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"model": args.model})})
    return cfg, serve


def recognizer_config(detector: DetectorConfig, serve: ServeConfig) -> DetectorConfig:
    """The daemon's detector section as the server loads it: its own threads; a remote backend's
    local models (a server answers with the models it has, it does not forward)."""
    return detector.model_copy(update={"num_threads": serve.num_threads, "remote": None,
                                       "backend": "auto" if detector.backend == "remote" else detector.backend})


def main(args: argparse.Namespace) -> int:
    try:
        cfg, serve = effective(args)
    except ConfigError as exc:
        print(f"raccoon-watch serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from raccoon_watch.support.logs import setup_logging

    setup_logging(cfg.logging.level, cfg.logging.format)
    from raccoon_watch.web.httpserver import BindError, bind_listener

    try:  # bound before the model loads: a taken port is a config error at once
        listener = bind_listener(serve.host, serve.port, section="serve")
    except BindError as exc:
        print(f"raccoon-watch serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from raccoon_watch.api.server import DeepStackApi, InferencePool, endpoints
    from raccoon_watch.recognition.detectors import ModelError, create_recognizer, resolve_default_model

    try:
        model = cfg.detector.model or resolve_default_model()
        recognizer = create_recognizer(recognizer_config(cfg.detector, serve), model)
    except ModelError as exc:
        listener.close()
        log.error("model_unusable", error=str(exc))
        print(f"raccoon-watch serve: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    pool = InferencePool(recognizer, serve.workers, serve.queue_size, int(serve.max_megapixels * 1e6),
                         label=cfg.detector.labels[0])
    pool.warm_up()
    api = DeepStackApi(pool, serve, model=str(model))
    from raccoon_watch.web.httpserver import ServerThread

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = ServerThread(api, listener, name="serve")
    try:
        server.start()
        log.info("serve_listening", host=serve.host, port=server.port, endpoints=list(endpoints()),
                 model=str(model), recognizer=recognizer.name, workers=serve.workers, queue_size=serve.queue_size,
                 max_upload_mb=serve.max_upload_mb, api_key=serve.api_key is not None,
                 keyless_clients=len(serve.keyless_clients))
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        pool.close()
        log.info("serve_stopped", answers={str(k): v for k, v in sorted(api.answers.items())})
    return 0


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raccoon-watch serve", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser
