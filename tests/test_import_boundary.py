"""The arrows point down: the daemon package never loads ``train``, ``tools`` or (on TFLite) TensorFlow.

A fresh interpreter, started outside the checkout, imports ``raccoon_watch.app`` and runs the CLI's
start-up paths in-process (``check-config`` on the example config with ``backend: tflite``, which
loads the model; the ``bench``, ``retrain`` and ``detect`` parsers), then lists what ``sys.modules``
holds. ``bench`` runs ``tools.bench`` in a child process, so its imports stay out of this one.
"""

from __future__ import annotations

import ast
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


# The rooms in layer order, top first (raccoon_watch/__init__.py lists them so): a module imports from
# its own room, from rooms below it and from the flat modules, never from a room above it; and only
# service/ (the commands) imports the wiring in app.py. Type-only imports count too: an arrow is an arrow.
LAYERS = ("service", "api", "archive", "web", "review", "learning", "sinks", "store", "recognition", "support")


def upward_imports(root: Path) -> list[str]:
    """``file: module`` for every import in a room of ``root`` that points at a higher room or at app."""
    rank = {room: i for i, room in enumerate(LAYERS)}
    found = []
    for path in sorted(root.rglob("*.py")):
        room = path.relative_to(root).parts[0]
        if room not in rank:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != root.name or len(parts) < 2:
                    continue
                target = parts[1]
                if (target in rank and rank[target] < rank[room]) or (target == "app" and room != "service"):
                    found.append(f"{path.relative_to(root.parent)}: {name}")
                    break
    return found


def test_every_room_imports_only_downwards() -> None:
    assert set(LAYERS) == ROOMS
    assert upward_imports(REPO / "raccoon_watch") == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check fails on a type-only import of a higher room (as support/metrics.py once had)."""
    pkg = tmp_path / "raccoon_watch"
    for room in ("support", "store"):
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "support" / "metrics.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from raccoon_watch.store import EventStore\n")
    (pkg / "store" / "db.py").write_text("from raccoon_watch.support import metrics\n")
    assert upward_imports(pkg) == ["raccoon_watch/support/metrics.py: raccoon_watch.store"]
