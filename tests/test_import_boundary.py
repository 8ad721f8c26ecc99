"""The arrows point down: the daemon package never loads ``train``, ``tools`` or (on TFLite) TensorFlow.

A fresh interpreter, started outside the checkout, imports ``raccoon_watch.app`` and runs the CLI's
start-up paths in-process (``check-config`` on the example config with ``backend: tflite``, which
loads the model; the ``bench``, ``retrain`` and ``detect`` parsers), then lists what ``sys.modules``
holds. ``bench`` runs ``tools.bench`` in a child process, so its imports stay out of this one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = ("train", "tools", "tensorflow", "keras")

_PROBE = """
import contextlib, io, json, sys
import raccoon_watch.app
from raccoon_watch.service.cli import main

codes = {}
for argv in (["check-config", sys.argv[1]], ["bench", "--help"], ["retrain", "--help"], ["detect", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes[argv[0]] = main(argv)
        except SystemExit as exc:
            codes[argv[0]] = exc.code
forbidden = tuple(sys.argv[2].split(","))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def test_the_daemon_loads_nothing_from_train_tools_or_tensorflow(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "config.example.yaml").read_text())
    config["detector"]["backend"] = "tflite"
    config["storage"] = {**config.get("storage", {}), "path": str(tmp_path / "var")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), ",".join(FORBIDDEN)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == {"check-config": 0, "bench": 0, "retrain": 0, "detect": 0}, result
    assert result["loaded"] == [], f"the daemon package loaded {result['loaded']}"


# The top of the package is the flow, in its order, and one folder per cluster that is not a stage
# (raccoon_watch/__init__.py maps them). A new module goes into its room, not beside the stages.
FLOW = {"capture", "motion", "framequeue", "schedule", "workers", "router", "tracking", "filters", "visits",
        "debounce", "snapshot", "app", "types", "config", "demo", "__init__", "__main__"}
ROOMS = {"recognition", "learning", "store", "review", "web", "api", "service", "support", "sinks", "archive"}


def test_the_top_level_holds_only_the_flow_and_its_rooms() -> None:
    top = REPO / "raccoon_watch"
    modules = {p.stem for p in top.glob("*.py")}
    packages = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    strays = sorted(p.name for p in top.iterdir()
                    if p.name != "__pycache__" and p.stem not in modules | packages)
    assert modules == FLOW, f"modules beside the stages: {sorted(modules - FLOW)}; missing: {sorted(FLOW - modules)}"
    assert packages == ROOMS, f"new packages: {sorted(packages - ROOMS)}; missing: {sorted(ROOMS - packages)}"
    assert strays == [], f"neither a module nor a package: {strays}"
