"""``python -m tools.bench_archive`` (``make bench-archive``): a season's archive, one process vs Ray.

    python -m tools.bench_archive [--photos 2000] [--workdir var/bench_archive] [--ray-address ADDR]
                                  [--skip-resume] [--output report.json]

Builds an archive of ``--photos`` photos from ``../shared/data`` (every shared photo, repeated into
``cam01/``, ``cam02/``... folders as symlinks: the same bytes, new names, nested as a camera-trap
card dump is) and measures, one after the other on this machine:

1. ``one_process``: ``raccoon-watch detect --json FILE...`` (the one-process path, its default 2
   TFLite threads) over every photo: photos/s from start to last record, model loading included;
2. ``ray``: ``raccoon-watch detect DIR --recursive --ray [ADDR] --output ...``: photos/s from start to
   the results file, Ray's start-up included; also its steady rate (photos between the first and
   the last checkpoint write / the time between them), which is what more nodes multiply;
3. ``resume``: the same Ray command on a fresh output, killed (SIGKILL: no clean-up) once its
   checkpoint holds half the photos, then run again to the end: the results must list every photo
   exactly once;
4. ``identical``: the one-process records and both Ray runs' records, sorted by file, are compared
   line by line (the JSON text).

Prints (and with ``--output`` writes) a JSON report; exit 1 when a correctness check fails.
The ``ray / one_process`` ratio is the issue-25 target (>= 0.8 on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def shared_photos(shared: Path) -> list[Path]:
    photos = sorted(p for p in (shared / "data").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"bench_archive: no photos under {shared / 'data'} (set RACCOON_SHARED)")
    return photos


def build_archive(root: Path, photos: list[Path], count: int) -> list[Path]:
    """``count`` symlinks under root/camNN/, NN-th pass over the shared photos; returns them sorted."""
    if root.exists():
        shutil.rmtree(root)
    made = []
    for i in range(count):
        source = photos[i % len(photos)]
        folder = root / f"cam{i // len(photos) + 1:02d}" / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"{i:05d}_{source.name}"
        link.symlink_to(source.resolve())
        made.append(link)
    return sorted(made, key=lambda p: p.relative_to(root).as_posix())


def detect_cmd() -> list[str]:
    return [str(BIN / "raccoon-watch"), "detect"]


def run_one_process(files: list[Path], out: Path) -> dict[str, Any]:
    started = time.monotonic()
    with open(out, "w") as fh:
        code = subprocess.run([*detect_cmd(), "--json", *map(str, files)], stdout=fh, stderr=subprocess.DEVNULL).returncode
    seconds = time.monotonic() - started
    return {"exit": code, "seconds": round(seconds, 1), "photos_per_s": round(len(files) / seconds, 3)}


def ray_args(root: Path, output: Path, address: str | None) -> list[str]:
    return [*detect_cmd(), str(root), "--recursive", "--output", str(output), "--ray", *([address] if address else [])]


def checkpoint_times(path: Path) -> list[float]:
    return [float(line) for line in path.read_text().split()] if path.exists() else []


def run_ray(root: Path, output: Path, address: str | None, count: int) -> dict[str, Any]:
    for stale in (output, Path(str(output) + ".checkpoint.jsonl")):
        stale.unlink(missing_ok=True)
    checkpoint = Path(str(output) + ".checkpoint.jsonl")
    started = time.monotonic()
    proc = subprocess.Popen(ray_args(root, output, address), stderr=subprocess.DEVNULL)
    seen: list[tuple[float, int]] = []  # (seconds since start, lines in the checkpoint)
    while proc.poll() is None:
        lines = _lines(checkpoint)
        if not seen or lines != seen[-1][1]:
            seen.append((time.monotonic() - started, lines))
        time.sleep(0.5)
    seconds = time.monotonic() - started
    first = next((s for s in seen if s[1] > 1), None)  # the header is line 1
    last = seen[-1] if seen else None
    steady = None
    if first and last and last[0] > first[0]:
        steady = round((last[1] - first[1]) / (last[0] - first[0]), 3)
    return {"exit": proc.returncode, "seconds": round(seconds, 1), "photos_per_s": round(count / seconds, 3),
            "first_record_after_s": round(first[0], 1) if first else None, "steady_photos_per_s": steady}


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def run_resume(root: Path, output: Path, address: str | None, count: int) -> dict[str, Any]:
    """Kill the Ray run once half the photos are in its checkpoint, rerun it; check the results."""
    checkpoint = Path(str(output) + ".checkpoint.jsonl")
    for stale in (output, checkpoint):
        stale.unlink(missing_ok=True)
    proc = subprocess.Popen(ray_args(root, output, address), stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and _lines(checkpoint) - 1 < count // 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started: a crash, no clean-up
    proc.wait()
    at_kill = _lines(checkpoint) - 1
    started = time.monotonic()
    code = subprocess.run(ray_args(root, output, address), stderr=subprocess.DEVNULL).returncode
    files = [json.loads(line)["image"] for line in output.read_text().splitlines()]
    return {"killed_at_records": at_kill, "rerun_exit": code, "rerun_seconds": round(time.monotonic() - started, 1),
            "records": len(files), "unique_files": len(set(files)),
            "exactly_one_per_photo": len(files) == len(set(files)) == count}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_archive", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench_archive")
    parser.add_argument("--ray-address", default=None, help="a running Ray cluster (default: a local Ray per run)")
    parser.add_argument("--skip-resume", action="store_true", help="no kill-and-rerun run")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    shared = Path(os.environ.get("RACCOON_SHARED", REPO.parent / "shared"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = args.workdir / "archive"
    files = build_archive(root, shared_photos(shared), args.photos)
    report: dict[str, Any] = {"photos": len(files), "cpus": os.cpu_count(), "load_avg_before": os.getloadavg()}
    report["one_process"] = run_one_process(files, args.workdir / "one_process.jsonl")
    report["ray"] = run_ray(root, args.workdir / "ray.jsonl", args.ray_address, len(files))
    report["load_avg_after"] = os.getloadavg()
    report["ray_vs_one_process"] = round(report["ray"]["photos_per_s"] / report["one_process"]["photos_per_s"], 3)
    one = (args.workdir / "one_process.jsonl").read_text().splitlines()
    ray = (args.workdir / "ray.jsonl").read_text().splitlines()
    report["identical"] = {"ray": sorted(one, key=lambda s: json.loads(s)["image"]) == ray}
    if not args.skip_resume:
        report["resume"] = run_resume(root, args.workdir / "resumed.jsonl", args.ray_address, len(files))
        resumed = (args.workdir / "resumed.jsonl").read_text().splitlines()
        report["identical"]["resumed"] = resumed == ray
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    ok = all(report["identical"].values()) and report.get("resume", {}).get("exactly_one_per_photo", True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
