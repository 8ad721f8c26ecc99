"""What the event page shows beyond the event row: the per-frame scores the router saw during an
event, and its best frame without the box drawn (the feedback export's training image).

An App observer (router thread): ``on_result`` keeps, per camera, the last ``MAX_FRAMES`` results as
``(wall ts, visit score, classifier score, detector score)`` of the best candidate of each watched
label, and the frame of the best-scoring hit since that camera's last END; ``on_event(END)`` writes
the rows from 1 s before the first sighting to 1 s after the end, and the ``lookback`` rows before
those (``event_rows``), with ``store.set_scores``, and the frame (``store.write_frame``). The lookback
is the visit-scoring window: the visit score at the first sighting is the median of that many
frames, so with them the retrain gate can replay the visit as the daemon scored it
(``raccoon_watch.learning.replay``) even when frames came slower than 1 s can hold. Rows are picked by the
frames' monotonic times (the event's ``first_seen_mono`` .. ``last_seen_mono``), so a step of the
wall clock during the event loses none; the wall ts they carry is what people read.
A frame with no candidate counts as scores (0, None, None): the chart shows the gaps too.
Scores: ``visit`` is what the threshold compared (the median over the object's recent frames),
``classifier`` the frame's own final score, ``detector`` the proposer's score of that box.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

import structlog

from raccoon_watch.review.clips import sighting_span
from raccoon_watch.snapshot import encode_jpeg
from raccoon_watch.store import EventStore
from raccoon_watch.types import Detection, Event, EventKind, Frame, FrameResult
from raccoon_watch.visits import VisitParams

log = structlog.get_logger(__name__)

MAX_FRAMES = 3000  # per camera: 10 minutes at 5 fps
ScoreRow = tuple[float, ...]
"""(wall ts, visit score, classifier score | None, detector score | None[, xmin, ymin, xmax, ymax]): the
best candidate's box (normalised, ``types.Box``) follows when there is one, so a replay can tell the
animal from a still thing that was the best candidate before it came (``raccoon_watch.learning.replay``)."""


def score_row(result: FrameResult, hits: tuple[Detection, ...], labels: frozenset[str]) -> ScoreRow:
    """One frame's scores (pure): the best hit's visit score, and the best raw candidate of a watched
    label (its final and detector scores, and its box); no candidate: (ts, 0.0, None, None)."""
    visit = max((d.score for d in hits if d.label in labels), default=0.0)
    raw = [d for d in result.detections if d.label in labels]
    best = max(raw, key=lambda d: d.score, default=None)
    if best is None:
        return (result.frame.ts, visit, None, None)
    return (result.frame.ts, visit, best.score, best.detector_score, *best.box)


def event_rows(rows: Sequence[tuple[float, ScoreRow]], first: float, last: float, lookback: int) -> list[ScoreRow]:
    """The rows of an event seen from ``first`` to ``last`` (monotonic; ``rows``: (monotonic time,
    row), oldest first): those from ``first`` - 1 s to ``last`` + 1 s, and the ``lookback`` rows
    before them. Pure."""
    start = next((i for i, (mono, _) in enumerate(rows) if mono >= first - 1.0), None)
    if start is None:  # none of the event's own frames are left: no frames before them either
        return []
    return [row for mono, row in rows[max(0, start - lookback):] if mono <= last + 1.0]


class EventTrace:
    def __init__(self, store: EventStore, labels: Mapping[str, frozenset[str]],
                 lookback: int = VisitParams().window) -> None:
        self.store = store
        self.labels = dict(labels)  # camera -> labels that raise its events
        self.lookback = lookback  # rows kept before the first sighting's second (the visit window)
        # per camera: (frame's monotonic time, its score row)
        self._rows: dict[str, deque[tuple[float, ScoreRow]]] = {cam: deque(maxlen=MAX_FRAMES) for cam in self.labels}
        self._best: dict[tuple[str, str], tuple[float, Frame]] = {}  # (camera, label) -> (score, frame)

    def on_result(self, result: FrameResult, hits: tuple[Detection, ...]) -> None:
        cam = result.frame.camera
        if cam not in self._rows:
            return
        self._rows[cam].append((result.frame.mono, score_row(result, hits, self.labels[cam])))
        for d in hits:
            key = (cam, d.label)
            if key not in self._best or d.score > self._best[key][0]:
                self._best[key] = (d.score, result.frame)

    def on_event(self, event: Event) -> None:
        if event.kind is not EventKind.END:
            return
        rows = self._rows.get(event.camera, ())
        first, last = sighting_span(event)
        self.store.set_scores(event.id, event_rows(list(rows), first, last, self.lookback))
        best = self._best.pop((event.camera, event.label), None)
        if best is not None:
            try:
                self.store.write_frame(event.camera, event.id, encode_jpeg(best[1].image, quality=92))
            except ValueError as exc:
                log.error("frame_encode_failed", event_id=event.id, error=str(exc))
