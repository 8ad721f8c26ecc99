"""A site's feedback folder, read for retraining: what is usable, what is not and why, and the split.

The folder is what ``raccoon-watch export-feedback DIR`` writes (``raccoon_watch.export_feedback``):

    DIR/labels.csv   filename,width,height,class,xmin,ymin,xmax,ymax   (train/'s CSV; class raccoon |
                     not_raccoon; integer pixels of the image, xmin < xmax <= width, ymin < ymax <= height)
    DIR/events.csv   filename,event_id,camera,start_time               (which event, and when: wall clock s)
    DIR/images/...   the events' clean best frames

A folder edited by hand may break any of it. ``read_feedback`` never raises for what is in the
files: every row it cannot use becomes a ``Problem`` naming the event (or the file and line) and the
reason, and is skipped; nothing in the folder is changed or deleted. Reasons: a malformed row, an
unknown class, a box outside its image, an image that is gone (the event's frame was swept), the same
frame labelled both ways (all its rows are skipped: the user has not decided), and an image file
that is not one ``detect`` would read: each is read once through ``imagefile.read_image``, the same
capped, per-file reader (``max_pixels`` from its header before decoding, a truncated JPEG, a
non-image, a file too long), and must be as large as its row says.

``split_site`` holds out part of the feedback for the promotion gate, by NIGHT (the evening and the
morning after are one night) and, inside that, whole events: never by frame, so near-identical
frames of one visit are never on both sides. With feedback from one night only it falls back to
whole events, and says so. Both are pure functions, tested as tables.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from raccoon_watch.imagefile import DEFAULT_MAX_PIXELS, read_image

LABELS_CSV = "labels.csv"
EVENTS_CSV = "events.csv"
IMAGE_DIR = "images"
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
EVENT_COLUMNS = ("filename", "event_id", "camera", "start_time")
SITE_LABELS = ("raccoon", "not_raccoon")
DEFAULT_HOLDOUT_SHARE = 0.3  # of the nights, the latest, held out for the gate
NIGHT_STARTS_HOUR = 12  # an event before noon belongs to the night that began the evening before
UNKNOWN_NIGHT = "unknown"
SPLIT_BY_NIGHT, SPLIT_BY_EVENT = "by_night", "by_event"
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class SiteSample:
    """One judged event: its frame, the box the user judged (pixels xmin, ymin, xmax, ymax of the
    image, ends exclusive) and the verdict. ``night`` is the local date the night began
    (``night_of``), ``UNKNOWN_NIGHT`` without an events.csv row."""

    event_id: str
    camera: str
    night: str
    label: str
    image: Path
    width: int
    height: int
    box_px: tuple[int, int, int, int]

    @property
    def is_raccoon(self) -> bool:
        return self.label == "raccoon"

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The box normalised (xmin, ymin, xmax, ymax), as ``raccoon_watch.types.Box``."""
        x0, y0, x1, y1 = self.box_px
        return (x0 / self.width, y0 / self.height, x1 / self.width, y1 / self.height)


@dataclass(frozen=True, slots=True)
class Problem:
    """A feedback row that was skipped: which event (or file:line) and why."""

    where: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "reason": self.reason[:MAX_REASON]}


@dataclass(frozen=True, slots=True)
class SiteSplit:
    train: tuple[SiteSample, ...]
    holdout: tuple[SiteSample, ...]
    by: str  # SPLIT_BY_NIGHT | SPLIT_BY_EVENT
    holdout_groups: tuple[str, ...]


def night_of(start_time: float, tz: tzinfo | None = None) -> str:
    """The night an event belongs to: the local date of (start_time - 12 h), e.g. 23:30 on 3 May and
    02:00 on 4 May are both night "YYYY-05-03". ``tz`` None = the machine's local time zone."""
    moment = datetime.fromtimestamp(start_time, tz) if tz is not None else datetime.fromtimestamp(start_time)
    return (moment - timedelta(hours=NIGHT_STARTS_HOUR)).date().isoformat()


def parse_rows(label_rows: list[dict[str, str | None]], events: dict[str, dict[str, str]],
               existing: frozenset[str], image_dir: Path, tz: tzinfo | None = None,
               ) -> tuple[list[SiteSample], list[Problem]]:
    """labels.csv rows (csv.DictReader dicts; row i is line i + 2) -> usable samples and problems.

    events: filename -> its events.csv row; existing: the file names present under images/."""
    samples: list[SiteSample] = []
    problems: list[Problem] = []
    verdicts: dict[str, set[str]] = {}
    for i, row in enumerate(label_rows):
        name = (row.get("filename") or "").strip()
        info = events.get(name, {})
        where = f"event {info['event_id']}" if info.get("event_id") else f"{LABELS_CSV}:{i + 2} ({name or 'no filename'})"
        sample, reason = _parse_row(row, info, name, existing, image_dir, tz)
        if reason is not None:
            problems.append(Problem(where, reason))
            continue
        assert sample is not None
        verdicts.setdefault(name, set()).add(sample.label)
        samples.append(sample)
    both = {name for name, labels in verdicts.items() if len(labels) > 1}
    for name in sorted(both):
        ids = sorted({s.event_id for s in samples if s.image.name == name})
        problems.append(Problem(f"event {', '.join(ids)}", f"frame {name} is labelled both raccoon and not_raccoon"))
    seen: set[tuple[str, tuple[int, int, int, int]]] = set()
    kept = []
    for s in samples:  # the same row twice (an export run again by hand into the CSV) counts once
        if s.image.name in both or (s.image.name, s.box_px) in seen:
            continue
        seen.add((s.image.name, s.box_px))
        kept.append(s)
    return kept, problems


def _parse_row(row: dict[str, str | None], info: dict[str, str], name: str, existing: frozenset[str],
               image_dir: Path, tz: tzinfo | None) -> tuple[SiteSample | None, str | None]:
    missing = [c for c in CSV_COLUMNS if row.get(c) in (None, "")]
    if missing:
        return None, f"missing {', '.join(missing)}"
    if None in row:  # csv.DictReader puts extra fields under the key None
        return None, f"{len(CSV_COLUMNS) + len(row[None] or [])} fields, expected {len(CSV_COLUMNS)}"  # type: ignore[arg-type]
    label = (row["class"] or "").strip()
    if label not in SITE_LABELS:
        return None, f"class {label[:40]!r} is not one of {', '.join(SITE_LABELS)}"
    try:
        w, h, x0, y0, x1, y1 = (int(str(row[c]).strip()) for c in ("width", "height", "xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        return None, "width, height and the box must be whole pixels"
    if w <= 0 or h <= 0:
        return None, f"image size {w}x{h} is not positive"
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        return None, f"box ({x0}, {y0}, {x1}, {y1}) is empty or outside the {w}x{h} image"
    if "/" in name or "\\" in name or name.startswith("."):
        return None, f"filename {name[:60]!r} must be a plain file name under {IMAGE_DIR}/"
    if name not in existing:
        return None, f"its frame {IMAGE_DIR}/{name} is gone (swept by retention, or never exported)"
    night = UNKNOWN_NIGHT
    if info.get("start_time"):
        try:
            start = float(info["start_time"])
            if not math.isfinite(start):
                raise ValueError
            night = night_of(start, tz)
        except (ValueError, OverflowError, OSError):
            return None, f"{EVENTS_CSV}: start_time {info['start_time'][:30]!r} is not a time"
    event_id = info.get("event_id") or Path(name).stem
    return SiteSample(event_id, info.get("camera", ""), night, label, image_dir / name, w, h, (x0, y0, x1, y1)), None


def check_images(samples: list[SiteSample], max_pixels: int = DEFAULT_MAX_PIXELS,
                 ) -> tuple[list[SiteSample], list[Problem]]:
    """The samples whose image ``read_image`` decodes at the size their row says; a Problem for each
    other one. Each file is decoded once and let go (one image in memory at a time)."""
    verdicts: dict[Path, str | None] = {}
    kept: list[SiteSample] = []
    problems: list[Problem] = []
    for s in samples:
        if s.image not in verdicts:
            image, why = read_image(s.image, max_pixels)
            if image is not None and (image.shape[1], image.shape[0]) != (s.width, s.height):
                why = f"{LABELS_CSV} says {s.width}x{s.height}, the image is {image.shape[1]}x{image.shape[0]}"
            verdicts[s.image] = why
            del image
        why = verdicts[s.image]
        if why is None:
            kept.append(s)
        else:
            problems.append(Problem(f"event {s.event_id}", f"{IMAGE_DIR}/{s.image.name}: {why}"))
    return kept, problems


def read_feedback(folder: Path, tz: tzinfo | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[list[SiteSample], list[Problem]]:
    """Read an exported feedback folder (see the module doc). A missing folder or labels.csv is a
    ValueError naming the path: there is nothing to retrain on; everything else is a Problem.
    ``max_pixels``: the largest image read (``--max-megapixels``), checked before decoding."""
    labels = folder / LABELS_CSV
    if not labels.is_file():
        raise ValueError(f"{labels}: no feedback here (run `raccoon-watch export-feedback {folder}` first)")
    problems: list[Problem] = []
    try:  # NUL bytes (a binary paste, a broken disk) would stop the csv module: dropped, the row then fails alone
        text = labels.read_text(encoding="utf-8", errors="replace").replace("\x00", "")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = tuple(reader.fieldnames or ())
        rows = list(reader)
    except (OSError, csv.Error) as exc:
        raise ValueError(f"{labels}: unreadable: {exc}") from None
    if header[:len(CSV_COLUMNS)] != CSV_COLUMNS:
        raise ValueError(f"{labels}: header {','.join(header)[:120]!r}, expected {','.join(CSV_COLUMNS)}")
    events: dict[str, dict[str, str]] = {}
    events_path = folder / EVENTS_CSV
    if events_path.is_file():
        try:
            with open(events_path, newline="", encoding="utf-8", errors="replace") as fh:
                for row in csv.DictReader(fh):
                    if row.get("filename"):
                        events[str(row["filename"]).strip()] = {k: str(v or "") for k, v in row.items() if k}
        except (OSError, csv.Error) as exc:
            problems.append(Problem(str(events_path), f"unreadable ({exc}); events have no night, split by event"))
    image_dir = folder / IMAGE_DIR
    existing = frozenset(p.name for p in image_dir.iterdir() if p.is_file()) if image_dir.is_dir() else frozenset()
    samples, row_problems = parse_rows(rows, events, existing, image_dir, tz)
    samples, image_problems = check_images(samples, max_pixels)
    return samples, problems + row_problems + image_problems


def split_site(samples: list[SiteSample] | tuple[SiteSample, ...],
               holdout_share: float = DEFAULT_HOLDOUT_SHARE) -> SiteSplit:
    """Hold out the LATEST nights (about ``holdout_share`` of them, at least one, never all) for the
    gate; with fewer than two known nights, the latest whole events instead. Pure."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share}")
    nights = sorted({s.night for s in samples if s.night != UNKNOWN_NIGHT})
    if len(nights) >= 2 and all(s.night != UNKNOWN_NIGHT for s in samples):
        by, groups, key = SPLIT_BY_NIGHT, nights, (lambda s: s.night)
    else:
        by = SPLIT_BY_EVENT
        first: dict[str, int] = {}
        for i, s in enumerate(samples):  # events in the order the export wrote them (oldest first)
            first.setdefault(s.event_id, i)
        groups = sorted(first, key=lambda e: first[e])
        key = lambda s: s.event_id  # noqa: E731
    if len(groups) < 2:
        return SiteSplit(tuple(samples), (), by, ())
    n_out = min(len(groups) - 1, max(1, round(holdout_share * len(groups))))
    held = tuple(groups[-n_out:])
    return SiteSplit(tuple(s for s in samples if key(s) not in held), tuple(s for s in samples if key(s) in held),
                     by, held)
