"""Validation clips with a known raccoon timeline, for ``tools.eval_clips``, built from real photos.

    python -m tools.make_clips [--output var/clips/val] [--per-group 10] [--seed 0] [--small]

Writes ``<group>_<NN>.mp4`` (H.264, libx264 superfast, CRF 23 capped at 4 Mbit/s, yuv420p, 15 fps) and ``clips.csv`` (``clip,group,start_s,
end_s``; one row per visit, one empty row for a raccoon-free clip) plus ``manifest.json`` (what each
clip was made of). Deterministic for a seed. Groups:

* ``night``: a porch-like night scene: a night negative frame (``../shared/data/night/negatives``)
  cover-scaled to 1920x1080, with a night raccoon crop (``night/positives_crops``) pasted small
  (5-10 % of the frame width, as on a real porch camera), fading in, moving slowly for 6-12 s and
  fading out; IR look (grey, a touch of lamp flicker, sensor noise) and H.264 compression.
* ``cat``: the same, with a cat cut out of a cat photo of ``../shared/data/negatives`` (the cat box
  found by the stock COCO SSD through ``create_detector``). Raccoon-free: any event is false.
* ``empty``: the night scene alone for 30 s: only sensor noise and lamp flicker. Raccoon-free.
* ``day``: a Ken-Burns move (a slow pan and zoom of a 16:9 window) over a raccoon dataset photo; the
  visit is the frames where at least a fifth of a raccoon box is inside the window (a raccoon
  partly in view is in view: an alert then is right).

Which photos (never the public test split, only the validation part of ``train/splits.py``'s plan):
backgrounds are the plan's night ``val_negatives``, cats the plan's day ``val_negatives`` with a cat
in them, day photos the plan's ``val_positives``. The night raccoon crops are not in the plan: they
are held out by SOURCE: the classifier trains on the ``bcc_crop_game`` group, so the clips use
only the other groups (``bcc_crop_gait``, ``bcc_crop_glass``, ``bcc_crop_pipe``, ``bcc_crop_ub_*``).

Frame indices count from 0 and equal ``Frame.seq`` of the file read once; a visit [a, b) in frames
is written as ``start_s = a / fps``, ``end_s = b / fps``. Boxes here are pixels (xmin, ymin, xmax, ymax).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from raccoon_watch.demo import cover
from tools.video import write_clip

DEFAULT_OUTPUT = Path("var/clips/val")
FPS = 15.0
FULL_SIZE = (1920, 1080)  # (width, height)
SMALL_SIZE = (480, 270)  # --small (tests)
GROUPS = ("night", "cat", "empty", "day")
TRAINING_CROP_GROUP = "bcc_crop_game"  # the classifier trains on these: never in a validation clip
PASTE_WIDTH = (0.05, 0.10)  # pasted subject width, fraction of the frame width
SPEED_PX_S = (0.01, 0.04)  # subject speed, fraction of the frame width per second
FADE_S = 0.5
NIGHT_NOISE, DAY_NOISE = 5.0, 2.0  # sensor noise sigma, grey levels
NOISE_PATTERNS = 8
FLICKER = 0.03  # lamp flicker: brightness varies by +-3 %
CAT_MIN_SCORE = 0.5
PRESET = "superfast"  # libx264: about twice as fast to make as veryfast on this 2-core machine
BoxPx = tuple[int, int, int, int]


@dataclass(frozen=True)
class Timing:
    """Seconds: empty lead-in, subject in view, empty tail (the subject's part may be 0)."""

    lead_s: float
    visit_s: float
    tail_s: float


FULL_TIMING = {"paste": ((3.0, 6.0), (6.0, 12.0), (4.0, 8.0)), "empty": 30.0, "day": 10.0}
SMALL_TIMING = {"paste": ((1.0, 1.0), (3.0, 3.0), (1.0, 1.0)), "empty": 4.0, "day": 4.0}


@dataclass(frozen=True)
class PasteSpec:
    """A subject crop moving over a still background. Present in frames [appear, leave)."""

    background: Path
    subject: Path | None  # None: no subject (empty scene)
    subject_box: BoxPx | None  # the part of ``subject`` to paste
    night: bool
    frames: int
    appear: int
    leave: int
    width_px: int  # pasted width
    start_xy: tuple[float, float]  # top-left of the pasted crop at ``appear``, pixels
    velocity: tuple[float, float]  # pixels per frame
    flip: bool
    flicker_hz: float
    seed: int


@dataclass(frozen=True)
class KenBurnsSpec:
    """A 16:9 window moving linearly from ``start`` to ``end`` (pixels of the photo, xmin, ymin, xmax, ymax)."""

    photo: Path
    boxes: tuple[BoxPx, ...]
    frames: int
    start: tuple[float, float, float, float]
    end: tuple[float, float, float, float]
    seed: int


@dataclass
class ClipPlan:
    name: str
    group: str
    spec: PasteSpec | KenBurnsSpec
    size: tuple[int, int]
    fps: float = FPS
    visits: list[tuple[int, int]] = field(default_factory=list)  # [appear, leave) frame ranges


# --- sources -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    night_backgrounds: tuple[Path, ...]
    raccoon_crops: tuple[Path, ...]
    cats: tuple[tuple[Path, BoxPx], ...]
    day_photos: tuple[tuple[Path, tuple[BoxPx, ...]], ...]


def validation_split(shared_data: Path) -> tuple[list[Path], dict[str, list[BoxPx]]]:
    """(val negatives, {val positive photo name: boxes}) from train/splits.py's plan."""
    from train.splits import make_plan, write_plan

    with tempfile.TemporaryDirectory(prefix="raccoon-split-") as tmp:
        files = write_plan(make_plan(shared_data), shared_data, Path(tmp))
        negatives = [Path(line) for line in files["val_negatives"].read_text().split()]
        with open(files["val_positives"], newline="") as fh:
            positives: dict[str, list[BoxPx]] = {}
            for r in csv.DictReader(fh):
                positives.setdefault(r["filename"], []).append((int(r["xmin"]), int(r["ymin"]), int(r["xmax"]), int(r["ymax"])))
    test = {r for r in _csv_names(shared_data / "raccoon_dataset" / "test_labels.csv")}
    if test & set(positives):
        raise RuntimeError(f"validation positives overlap the public test split: {sorted(test & set(positives))}")
    return negatives, positives


def _csv_names(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return [r["filename"] for r in csv.DictReader(fh)]


def holdout_crops(crop_dir: Path) -> list[Path]:
    """Night raccoon crops of every source group but the one the classifier trains on."""
    crops = sorted(p for p in crop_dir.glob("bcc_crop_*.jpg") if not p.name.startswith(TRAINING_CROP_GROUP + "_"))
    if not crops:
        raise FileNotFoundError(f"no held-out night crops (bcc_crop_* but {TRAINING_CROP_GROUP}) in {crop_dir}")
    return crops


def find_cats(photos: Sequence[Path], coco_model: Path) -> list[tuple[Path, BoxPx]]:
    """Each photo with its best COCO 'cat' box (pixels), when the stock SSD finds one >= CAT_MIN_SCORE."""
    from raccoon_watch.config import DetectorConfig
    from raccoon_watch.recognition.detectors import create_detector
    from raccoon_watch.types import box_to_pixels

    detector = create_detector(DetectorConfig(backend="tflite", num_threads=2), coco_model)
    out = []
    try:
        for path in photos:
            image = cv2.imread(str(path))
            if image is None:
                continue
            cats = [d for d in detector.detect([image])[0] if d.label == "cat" and d.score >= CAT_MIN_SCORE]
            if cats:
                best = max(cats, key=lambda d: d.score)
                out.append((path, box_to_pixels(best.box, image.shape[1], image.shape[0])))
    finally:
        detector.close()
    return out


def gather_sources(shared: Path, need_cats: bool = True) -> Sources:
    data = shared / "data"
    negatives, positives = validation_split(data)
    night_dir = (data / "night" / "negatives").resolve()
    night_bg = tuple(p for p in negatives if p.resolve().parent == night_dir)
    cat_photos = [p for p in negatives if p.resolve().parent != night_dir and "cat" in p.name]
    cats = tuple(find_cats(cat_photos, shared / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite")) if need_cats else ()
    images = data / "raccoon_dataset" / "images"
    day = tuple((images / name, tuple(boxes)) for name, boxes in sorted(positives.items()))
    return Sources(night_bg, tuple(holdout_crops(data / "night" / "positives_crops")), cats, day)


# --- planning ----------------------------------------------------------------------------------------


def plan_clips(sources: Sources, per_group: int, seed: int, small: bool = False,
               groups: Sequence[str] = GROUPS) -> list[ClipPlan]:
    """Every clip's spec, drawn from ``seed`` (one generator per group, so groups do not shift each other)."""
    size = SMALL_SIZE if small else FULL_SIZE
    timing = SMALL_TIMING if small else FULL_TIMING
    plans: list[ClipPlan] = []
    for g_index, group in enumerate(groups):
        rng = np.random.default_rng([seed, g_index])
        for k in range(per_group):
            name = f"{group}_{k:02d}"
            clip_seed = int(rng.integers(2**31))
            if group == "day":
                photo, boxes = sources.day_photos[int(rng.integers(len(sources.day_photos)))]
                plans.append(_ken_burns_plan(name, photo, boxes, size, round(timing["day"] * FPS), rng, clip_seed))
                continue
            background = sources.night_backgrounds[int(rng.integers(len(sources.night_backgrounds)))]
            if group == "empty":
                frames = round(timing["empty"] * FPS)
                spec = PasteSpec(background, None, None, True, frames, frames, frames, 0, (0, 0), (0, 0), False,
                                 float(rng.uniform(0.2, 1.0)), clip_seed)
                plans.append(ClipPlan(name, group, spec, size))
                continue
            if group == "night":
                subject = sources.raccoon_crops[int(rng.integers(len(sources.raccoon_crops)))]
                box = None
            elif group == "cat":
                if not sources.cats:
                    raise RuntimeError("no cat found in the validation cat photos")
                subject, box = sources.cats[int(rng.integers(len(sources.cats)))]
            else:
                raise ValueError(f"unknown group {group!r}; expected one of {GROUPS}")
            plans.append(_paste_plan(name, group, background, subject, box, size, timing["paste"], rng, clip_seed))
    return plans


def _paste_plan(name: str, group: str, background: Path, subject: Path, box: BoxPx | None, size: tuple[int, int],
                timing: tuple[tuple[float, float], ...], rng: np.random.Generator, seed: int) -> ClipPlan:
    width, height = size
    lead, visit, tail = (float(rng.uniform(lo, hi)) for lo, hi in timing)
    appear, leave = round(lead * FPS), round((lead + visit) * FPS)
    frames = leave + round(tail * FPS)
    w_px = max(8, round(float(rng.uniform(*PASTE_WIDTH)) * width))
    aspect = _aspect(subject, box)
    h_px = max(4, round(w_px * aspect))
    speed = float(rng.uniform(*SPEED_PX_S)) * width / FPS  # px per frame
    direction = 1.0 if rng.random() < 0.5 else -1.0
    travel = speed * (leave - appear)
    # the whole path inside the frame, the feet in the lower half (the porch floor)
    x_lo, x_hi = (0.0, width - w_px - travel) if direction > 0 else (travel, width - w_px)
    x0 = float(rng.uniform(x_lo, max(x_lo, x_hi)))
    y0 = float(rng.uniform(0.55 * height, 0.92 * height)) - h_px
    spec = PasteSpec(background, subject, box, True, frames, appear, leave, w_px, (x0, max(0.0, y0)),
                     (direction * speed, float(rng.uniform(-0.1, 0.1)) * speed), direction < 0,
                     float(rng.uniform(0.2, 1.0)), seed)
    return ClipPlan(name, group, spec, size, visits=[(appear, leave)] if group != "cat" else [])


def _aspect(subject: Path, box: BoxPx | None) -> float:
    if box is not None:
        return (box[3] - box[1]) / max(1, box[2] - box[0])
    image = cv2.imread(str(subject))
    if image is None:
        raise FileNotFoundError(f"not readable: {subject}")
    return image.shape[0] / image.shape[1]


def _ken_burns_plan(name: str, photo: Path, boxes: tuple[BoxPx, ...], size: tuple[int, int], frames: int,
                    rng: np.random.Generator, seed: int) -> ClipPlan:
    image = cv2.imread(str(photo))
    if image is None:
        raise FileNotFoundError(f"not readable: {photo}")
    ph, pw = image.shape[:2]
    aspect = size[1] / size[0]
    full_w = min(pw, ph / aspect)

    def window(zoom: float, cx: float, cy: float) -> tuple[float, float, float, float]:
        w = full_w * zoom
        h = w * aspect
        x0 = min(max(cx - w / 2, 0.0), pw - w)
        y0 = min(max(cy - h / 2, 0.0), ph - h)
        return (x0, y0, x0 + w, y0 + h)

    ux0, uy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    ux1, uy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    # from a zoomed-in side (the raccoon may be out of view) to a wider window on the raccoons
    start = window(float(rng.uniform(0.45, 0.6)), float(rng.choice([0.0, pw])), float(rng.uniform(0, ph)))
    end = window(float(rng.uniform(0.8, 1.0)), (ux0 + ux1) / 2, (uy0 + uy1) / 2)
    if rng.random() < 0.5:
        start, end = end, start  # half the clips pan away from the raccoon instead
    spec = KenBurnsSpec(photo, boxes, frames, start, end, seed)
    present = [i for i in range(frames) if _raccoon_in_window(boxes, _window_at(spec, i))]
    visits = _runs(present)
    return ClipPlan(name, "day", spec, size, visits=visits)


def _window_at(spec: KenBurnsSpec, i: int) -> tuple[float, float, float, float]:
    t = i / max(1, spec.frames - 1)
    t = 0.5 - 0.5 * math.cos(math.pi * t)  # ease in and out
    return tuple(a + (b - a) * t for a, b in zip(spec.start, spec.end))  # type: ignore[return-value]


IN_VIEW_FRACTION = 0.2  # a day raccoon is in view when this much of its box is inside the window


def _raccoon_in_window(boxes: Sequence[BoxPx], win: tuple[float, float, float, float]) -> bool:
    """At least IN_VIEW_FRACTION of some raccoon box's area inside the window."""
    for xmin, ymin, xmax, ymax in boxes:
        iw = max(0.0, min(xmax, win[2]) - max(xmin, win[0]))
        ih = max(0.0, min(ymax, win[3]) - max(ymin, win[1]))
        if iw * ih >= IN_VIEW_FRACTION * (xmax - xmin) * (ymax - ymin):
            return True
    return False


def _runs(indices: Sequence[int]) -> list[tuple[int, int]]:
    """[0, 1, 2, 5, 6] -> [(0, 3), (5, 7)]."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


# --- rendering ---------------------------------------------------------------------------------------


def _noise(size: tuple[int, int], sigma: float, seed: int, channels: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """NOISE_PATTERNS sensor-noise frames, each as (positive part, negative part) uint8 arrays of
    shape (H, W) or (H, W, channels), so that adding one is two saturating OpenCV ops."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(NOISE_PATTERNS):
        n = np.rint(rng.normal(0.0, sigma, (size[1], size[0]))).clip(-255, 255).astype(np.int16)
        pos, neg = np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)
        if channels > 1:
            pos, neg = cv2.merge([pos] * channels), cv2.merge([neg] * channels)
        out.append((pos, neg))
    return out


def _add_noise(image: np.ndarray, noise: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return cv2.subtract(cv2.add(image, noise[0]), noise[1])


def _subject_patch(spec: PasteSpec) -> tuple[np.ndarray, np.ndarray]:
    """(patch BGR, alpha float32 0..1 with feathered edges), ``spec.width_px`` wide."""
    assert spec.subject is not None
    image = cv2.imread(str(spec.subject))
    if image is None:
        raise FileNotFoundError(f"not readable: {spec.subject}")
    if spec.subject_box is not None:
        x0, y0, x1, y1 = spec.subject_box
        image = image[y0:y1, x0:x1]
    if spec.flip:
        image = image[:, ::-1]
    h = max(4, round(spec.width_px * image.shape[0] / image.shape[1]))
    patch = cv2.resize(np.ascontiguousarray(image), (spec.width_px, h), interpolation=cv2.INTER_AREA)
    alpha = np.zeros((h, spec.width_px), np.float32)
    border = max(1, round(0.12 * min(h, spec.width_px)))
    alpha[border:-border or None, border:-border or None] = 1.0
    k = 2 * border + 1
    alpha = cv2.GaussianBlur(alpha, (k, k), 0)
    return patch, alpha


def render_paste(plan: ClipPlan, paste: bool = True) -> Iterator[np.ndarray]:
    """The frames of a PasteSpec clip: grey uint8 (H, W), the IR look. ``paste=False``: the same
    frames without the subject (for tests)."""
    spec = plan.spec
    assert isinstance(spec, PasteSpec)
    background = cv2.cvtColor(cover(cv2.imread(str(spec.background)), plan.size), cv2.COLOR_BGR2GRAY)
    noise = _noise(plan.size, NIGHT_NOISE, spec.seed)
    patch = alpha = None
    if spec.subject is not None and paste:
        patch, alpha = _subject_patch(spec)
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY).astype(np.float32)
    fade = max(1, round(FADE_S * plan.fps))
    for i in range(spec.frames):
        image = background.copy()
        if patch is not None and alpha is not None and spec.appear <= i < spec.leave:
            strength = min(1.0, (i - spec.appear + 1) / fade, (spec.leave - i) / fade)
            x = round(spec.start_xy[0] + spec.velocity[0] * (i - spec.appear))
            y = round(spec.start_xy[1] + spec.velocity[1] * (i - spec.appear))
            _blend(image, patch, alpha * strength, x, y)
        gain = 1.0 + FLICKER * math.sin(2 * math.pi * spec.flicker_hz * i / plan.fps)
        yield _add_noise(cv2.convertScaleAbs(image, alpha=gain), noise[i % NOISE_PATTERNS])


def _blend(image: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend grey float ``patch`` onto grey uint8 ``image`` at top-left (x, y), clipped to the
    image, in place. The patch's brightness is matched to 1.3 x the background under it (an IR-lit animal)."""
    h, w = alpha.shape
    H, W = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    sub = image[y0:y1, x0:x1].astype(np.float32)
    p = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    target = float(np.clip(1.3 * sub.mean(), 60.0, 170.0))
    p = np.clip(p * (target / max(1.0, float(p.mean()))), 0, 255)
    image[y0:y1, x0:x1] = np.rint(sub * (1.0 - a) + p * a).astype(np.uint8)


def render_ken_burns(plan: ClipPlan) -> Iterator[np.ndarray]:
    spec = plan.spec
    assert isinstance(spec, KenBurnsSpec)
    photo = cv2.imread(str(spec.photo))
    noise = _noise(plan.size, DAY_NOISE, spec.seed, channels=3)
    for i in range(spec.frames):
        x0, y0, x1, y1 = _window_at(spec, i)
        # an affine map of the window onto the frame: sub-pixel smooth, no jitter
        sx, sy = plan.size[0] / (x1 - x0), plan.size[1] / (y1 - y0)
        m = np.float32([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
        frame = cv2.warpAffine(photo, m, plan.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        yield _add_noise(frame, noise[i % NOISE_PATTERNS])


def render(plan: ClipPlan) -> Iterator[np.ndarray]:
    return render_ken_burns(plan) if isinstance(plan.spec, KenBurnsSpec) else render_paste(plan)


# --- output ------------------------------------------------------------------------------------------


def write_clips(plans: Sequence[ClipPlan], out_dir: Path, log: object = None) -> Path:
    """Encode every clip, then write clips.csv and manifest.json; returns the CSV's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, manifest = [], []
    for n, plan in enumerate(plans, start=1):
        path = out_dir / f"{plan.name}.mp4"
        codec = write_clip(render(plan), path, plan.size, plan.fps, max_rate="4M" if plan.size[0] >= 1280 else "1M",
                           preset=PRESET)
        visits = plan.visits
        rows += [(path.name, plan.group, f"{a / plan.fps:.3f}", f"{b / plan.fps:.3f}") for a, b in visits] or [
            (path.name, plan.group, "", "")]
        manifest.append({"clip": path.name, "group": plan.group, "codec": codec, "fps": plan.fps,
                         "width": plan.size[0], "height": plan.size[1], "frames": plan.spec.frames,
                         "visits_frames": visits, "spec": _jsonable(asdict(plan.spec))})
        if log is not None:
            print(f"make_clips: [{n}/{len(plans)}] {path}", file=log, flush=True)
    csv_path = out_dir / "clips.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip", "group", "start_s", "end_s"])
        writer.writerows(rows)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return csv_path


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.make_clips", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder (default: %(default)s)")
    parser.add_argument("--shared", type=Path, default=None, help="the shared/ folder (default: $RACCOON_SHARED, ../shared)")
    parser.add_argument("--per-group", type=int, default=8, help="clips per group (default 8)")
    parser.add_argument("--group", action="append", choices=GROUPS, default=None, help="only these groups (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help=f"{SMALL_SIZE[0]}x{SMALL_SIZE[1]}, short clips (tests)")
    return parser


def main(args: argparse.Namespace) -> int:
    from raccoon_watch.config import shared_dir

    shared = args.shared or shared_dir()
    groups = tuple(args.group or GROUPS)
    sources = gather_sources(shared, need_cats="cat" in groups)
    plans = plan_clips(sources, args.per_group, args.seed, args.small, groups)
    csv_path = write_clips(plans, args.output, log=sys.stderr)
    print(f"make_clips: {len(plans)} clips, {csv_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
