"""A site's feedback folder, read for retraining: what is usable, what is not and why, and the split.

The folder is what ``raccoon-watch export-feedback DIR`` writes (``raccoon_watch.learning.export_feedback``):

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
frames of one visit are never on both sides. It is stratified by label: it picks the set of whole
nights whose held-out share of marked visits is closest to ``holdout_share`` among those that give
BOTH sides at least ``minimum`` raccoon and ``minimum`` raccoon-free visits (``choose_nights``). With
feedback from one night only it holds out the latest whole events of each label instead
(``choose_events``), and says so. When no split reaches the minimum, the split says how many more
marked visits of each kind it lacks (``Shortfall``) and, at this porch's pace so far, from how many
more nights (``nights_needed``): the gate then does not judge (``need_more_message``). All pure,
tested as tables.

Why ``DEFAULT_MIN_VISITS`` = 3 of each kind on each side: with one or two held-out visits of a kind,
one visit is half or all of that kind and the gate's "fewer mistakes" is decided by a single visit
(the measured porch: 1 raccoon in training, 7 held out, and the candidate lost); held-out raccoons
are what shows a candidate that fixed the cat by pushing every night score under the threshold (the
public test split is day photos), and training raccoons are what keeps it from learning "not this
porch". Three is the least at which one visit is at most a third of its kind on its side, and a
porch with raccoons reaches it in a few nights (the measured porch: 7 raccoon and 16 raccoon-free
visits in one night).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from raccoon_watch.support.imagefile import DEFAULT_MAX_PIXELS, read_image

LABELS_CSV = "labels.csv"
EVENTS_CSV = "events.csv"
IMAGE_DIR = "images"
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
EVENT_COLUMNS = ("filename", "event_id", "camera", "start_time")
SITE_LABELS = ("raccoon", "not_raccoon")
DEFAULT_HOLDOUT_SHARE = 0.3  # of the marked visits, held out for the gate (whole nights, latest preferred)
DEFAULT_MIN_VISITS = 3  # raccoon and raccoon-free visits each side needs before the gate judges (module doc)
SEARCH_NIGHTS = 10  # held-out nights are chosen among the latest this many (2**10 sets); older ones train
MAX_NIGHTS_AHEAD = 60  # nights_needed looks this far ahead at most
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
    start_time: float | None = None  # wall clock s of the event (events.csv), None without a row

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
class Mix:
    """Marked visits (events, not frames) of each kind. Counts are whole numbers, except in the
    average night ``nights_needed`` imagines."""

    raccoon: float = 0
    not_raccoon: float = 0

    def __add__(self, other: Mix) -> Mix:
        return Mix(self.raccoon + other.raccoon, self.not_raccoon + other.not_raccoon)

    @property
    def total(self) -> float:
        return self.raccoon + self.not_raccoon

    def to_dict(self) -> dict[str, float]:
        return {"raccoon": _num(self.raccoon), "not_raccoon": _num(self.not_raccoon)}


def _num(value: float) -> float:
    return int(value) if float(value).is_integer() else round(float(value), 2)


@dataclass(frozen=True, slots=True)
class Shortfall:
    """How many more marked visits of each kind each side of a split needs to reach the minimum."""

    holdout: Mix = Mix()
    train: Mix = Mix()

    @property
    def raccoon(self) -> int:
        return math.ceil(self.holdout.raccoon + self.train.raccoon - 1e-9)

    @property
    def not_raccoon(self) -> int:
        return math.ceil(self.holdout.not_raccoon + self.train.not_raccoon - 1e-9)

    @property
    def met(self) -> bool:
        return self.raccoon == 0 and self.not_raccoon == 0


def shortfall(holdout: Mix, train: Mix, minimum: int) -> Shortfall:
    """What ``holdout`` and ``train`` lack of ``minimum`` visits of each kind (pure)."""
    def lack(m: Mix) -> Mix:
        return Mix(max(0.0, minimum - m.raccoon), max(0.0, minimum - m.not_raccoon))
    return Shortfall(lack(holdout), lack(train))


def _empty_cells(holdout: Mix, train: Mix) -> int:
    """Sides x kinds without a single visit: a split should have both kinds on both sides."""
    return sum(v <= 0 for v in (holdout.raccoon, holdout.not_raccoon, train.raccoon, train.not_raccoon))


def choose_nights(nights: Sequence[Mix], share: float = DEFAULT_HOLDOUT_SHARE,
                  minimum: int = DEFAULT_MIN_VISITS) -> tuple[int, ...]:
    """Which whole nights to hold out (indices into ``nights``, oldest first; ascending). Pure.

    Among the non-empty sets of nights (never all of them) drawn from the latest ``SEARCH_NIGHTS``,
    the one with, in order: the smallest shortfall of ``minimum`` visits of each kind on both sides;
    the fewest sides without a kind; the held-out share of visits closest to ``share``; the later
    nights. Fewer than two nights: ()."""
    if len(nights) < 2:
        return ()
    total = sum(nights, Mix())
    first = max(0, len(nights) - SEARCH_NIGHTS)
    pool = range(first, len(nights))
    best: tuple[tuple[object, ...], tuple[int, ...]] | None = None
    for size in range(1, len(pool) + 1):
        for held in itertools.combinations(pool, size):
            if len(held) == len(nights):
                continue
            out = sum((nights[i] for i in held), Mix())
            rest = Mix(total.raccoon - out.raccoon, total.not_raccoon - out.not_raccoon)
            short = shortfall(out, rest, minimum)
            key = (round(short.holdout.total + short.train.total, 6), _empty_cells(out, rest),
                   round(abs(out.total - share * total.total), 6), tuple(-i for i in reversed(held)))
            if best is None or key < best[0]:
                best = (key, held)
    assert best is not None
    return best[1]


def choose_events(labels: Sequence[str], share: float = DEFAULT_HOLDOUT_SHARE,
                  minimum: int = DEFAULT_MIN_VISITS) -> tuple[int, ...]:
    """One night (or nights unknown): which whole events to hold out, by label (indices into
    ``labels``, the events oldest first; ascending). Per label, the latest k of its n events, k
    chosen by: the smallest shortfall of ``minimum`` on both sides, both sides non-empty when n >= 2,
    k closest to ``share`` * n, then the larger k. Pure."""
    held: list[int] = []
    for label in SITE_LABELS:
        mine = [i for i, lab in enumerate(labels) if lab == label]
        n = len(mine)
        k = min(range(n + 1), key=lambda k: (max(0, minimum - k) + max(0, minimum - (n - k)),
                                             n >= 2 and k in (0, n), abs(k - share * n), -k))
        held += mine[n - k:]
    return tuple(sorted(held))


def nights_needed(nights: Sequence[Mix], share: float = DEFAULT_HOLDOUT_SHARE,
                  minimum: int = DEFAULT_MIN_VISITS) -> int | None:
    """How many more nights like the average night so far (visits of each kind a night) until some
    split of whole nights reaches the minimum: 0 when one does now; None when no number of such
    nights would (a kind never marked yet) or there are no nights. Pure."""
    if not nights:
        return None
    average = Mix(sum(n.raccoon for n in nights) / len(nights), sum(n.not_raccoon for n in nights) / len(nights))
    if minimum > 0 and (average.raccoon == 0 or average.not_raccoon == 0):
        return None  # nights like these never bring the kind that is missing
    for ahead in range(MAX_NIGHTS_AHEAD + 1):
        future = [*nights, *[average] * ahead]
        held = choose_nights(future, share, minimum)
        if not held:
            continue
        out = sum((future[i] for i in held), Mix())
        rest = Mix(sum(n.raccoon for n in future) - out.raccoon, sum(n.not_raccoon for n in future) - out.not_raccoon)
        if shortfall(out, rest, minimum).met:
            return ahead
    return None


@dataclass(frozen=True, slots=True)
class SiteSplit:
    train: tuple[SiteSample, ...]
    holdout: tuple[SiteSample, ...]
    by: str  # SPLIT_BY_NIGHT | SPLIT_BY_EVENT
    holdout_groups: tuple[str, ...]  # the held-out nights (by night) or event ids (by event)
    train_mix: Mix = Mix()  # marked visits (events) of each kind on each side
    holdout_mix: Mix = Mix()
    minimum: int = 0
    short: Shortfall = Shortfall()
    nights_needed: int | None = 0  # more nights at this site's pace until the minimum is reached

    @property
    def enough(self) -> bool:
        """True when both sides have ``minimum`` visits of each kind: the gate can judge."""
        return self.short.met

    def need_more_message(self) -> str:
        """"need 3 more raccoon visits marked (from 1 more night)"; "" when there is enough."""
        if self.enough:
            return ""
        parts = [f"{n} more {kind} visit{'s' if n != 1 else ''}"
                 for n, kind in ((self.short.raccoon, "raccoon"), (self.short.not_raccoon, "raccoon-free")) if n]
        if self.nights_needed:
            when = f"from {self.nights_needed} more night{'s' if self.nights_needed != 1 else ''}"
        elif not self._nights_known():
            when = "how many nights is unknown: the feedback does not say when its events were (events.csv)"
        else:
            missing = [k for k, v in (("raccoon", self.train_mix.raccoon + self.holdout_mix.raccoon),
                                      ("raccoon-free", self.train_mix.not_raccoon + self.holdout_mix.not_raccoon)) if not v]
            when = (f"no {' or '.join(missing)} visit is marked yet, so no pace to count nights by" if missing
                    else f"more than {MAX_NIGHTS_AHEAD} nights at this pace")
        return f"need {' and '.join(parts)} marked ({when})"

    def _nights_known(self) -> bool:
        return all(s.night != UNKNOWN_NIGHT for s in (*self.train, *self.holdout))

    def to_dict(self) -> dict[str, object]:
        """The split as the card and ``models list`` show it."""
        return {"by": self.by, "holdout_groups": list(self.holdout_groups), "minimum_per_kind_and_side": self.minimum,
                "train_visits": self.train_mix.to_dict(), "holdout_visits": self.holdout_mix.to_dict(),
                "enough": self.enough, "need_more": {"raccoon": self.short.raccoon, "not_raccoon": self.short.not_raccoon,
                                                     "nights": self.nights_needed} if not self.enough else None,
                "message": self.need_more_message()}


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
        return None, f"{len(CSV_COLUMNS) + len(row[None] or [])} fields, expected {len(CSV_COLUMNS)}"  # type: ignore[index]
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
    night, start = UNKNOWN_NIGHT, None
    if info.get("start_time"):
        try:
            start = float(info["start_time"])
            if not math.isfinite(start):
                raise ValueError
            night = night_of(start, tz)
        except (ValueError, OverflowError, OSError):
            return None, f"{EVENTS_CSV}: start_time {info['start_time'][:30]!r} is not a time"
    event_id = info.get("event_id") or Path(name).stem
    return SiteSample(event_id, info.get("camera", ""), night, label, image_dir / name, w, h, (x0, y0, x1, y1),
                      start), None


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


def _event_labels(samples: Sequence[SiteSample]) -> dict[str, str]:
    """event id -> its label, events in the order the export wrote them (oldest first)."""
    labels: dict[str, str] = {}
    for s in samples:
        labels.setdefault(s.event_id, s.label)
    return labels


def _mix(labels: Sequence[str]) -> Mix:
    return Mix(sum(lab == "raccoon" for lab in labels), sum(lab != "raccoon" for lab in labels))


def split_site(samples: Sequence[SiteSample], holdout_share: float = DEFAULT_HOLDOUT_SHARE,
               minimum: int = DEFAULT_MIN_VISITS) -> SiteSplit:
    """Hold out whole nights (``choose_nights``), or with fewer than two known nights whole events
    (``choose_events``), stratified by label, and say what is missing for the gate to judge. Pure."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in (0, 1), got {holdout_share}")
    if minimum < 0:
        raise ValueError(f"minimum must be >= 0, got {minimum}")
    events = _event_labels(samples)
    night_of_event = {s.event_id: s.night for s in samples}
    nights = sorted({s.night for s in samples if s.night != UNKNOWN_NIGHT})
    per_night = [_mix([lab for e, lab in events.items() if night_of_event[e] == n]) for n in nights]
    pace = nights_needed(per_night, holdout_share, minimum) if len(nights) == len(
        {s.night for s in samples}) else None
    if len(nights) >= 2 and all(s.night != UNKNOWN_NIGHT for s in samples):
        by = SPLIT_BY_NIGHT
        held = tuple(nights[i] for i in choose_nights(per_night, holdout_share, minimum))
        out_events = {e for e in events if night_of_event[e] in held}
    else:
        by = SPLIT_BY_EVENT
        ids = list(events)
        chosen = choose_events([events[e] for e in ids], holdout_share, minimum) if len(ids) >= 2 else ()
        held = tuple(ids[i] for i in chosen)
        out_events = set(held)
    train_mix = _mix([lab for e, lab in events.items() if e not in out_events])
    holdout_mix = _mix([lab for e, lab in events.items() if e in out_events])
    short = shortfall(holdout_mix, train_mix, minimum)
    return SiteSplit(tuple(s for s in samples if s.event_id not in out_events),
                     tuple(s for s in samples if s.event_id in out_events), by, held,
                     train_mix, holdout_mix, minimum, short, pace)
