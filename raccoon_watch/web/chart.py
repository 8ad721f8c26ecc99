"""The event page's score chart: per-frame scores over the event's span, as an inline SVG (pure).

Input rows as ``store.set_scores`` keeps them: ``(wall ts, visit score, classifier score or None,
detector score or None)``. The time axis is the event's span ``(first, last)`` (wall seconds): from
its first sighting to its last, the same span its Duration says (``event_span``); the rows the store
keeps around it (the visit window before the first sighting, a second either side, for the retrain's
replay) are left out. y is the score 0..1 (1 at the top). The visit score (what the threshold
compared) is a line, the frame's own classifier score and the detector's score are dots, the
threshold a dashed line. Only numbers reach the markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from raccoon_watch.store.events import EventRow

WIDTH, HEIGHT, PAD = 640, 160, 24
# a row's wall ts and the span's ends may differ a little: the store rounds ts to 0.1 ms, and the
# event's end is its start plus monotonic time (the wall clock may be slewed meanwhile)
EDGE_S = 0.02


def duration_text(seconds: float) -> str:
    """How long something lasted, for people: "0.8 s", "12 s", "3.5 min"; the list, the event page's
    Duration and the chart's axis all write it this way."""
    s = max(0.0, seconds)
    if round(s, 1) < 10:
        return f"{s:.1f} s"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def event_span(row: EventRow) -> tuple[float, float] | None:
    """(first sighting, last sighting) of a stored event in wall seconds; None while it is open.
    A row from before ``first_seen`` was stored starts at its ``start_time`` (the START)."""
    if row.end_time is None:
        return None
    first = row.first_seen or row.start_time
    return min(first, row.end_time), row.end_time


def rows_in_span(rows: Sequence[Sequence[float | None]], span: tuple[float, float] | None) -> list[Sequence[float | None]]:
    """The score rows of the sighting span (all of them when ``span`` is None)."""
    if span is None:
        return list(rows)
    return [r for r in rows if span[0] - EDGE_S <= float(r[0]) <= span[1] + EDGE_S]


def _x(ts: float, t0: float, t1: float) -> float:
    frac = min(max((ts - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 0.5
    return PAD + (WIDTH - 2 * PAD) * frac


def _y(score: float) -> float:
    return PAD + (HEIGHT - 2 * PAD) * (1.0 - min(max(score, 0.0), 1.0))


def score_chart_svg(rows: Sequence[Sequence[float | None]], threshold: float,
                    span: tuple[float, float] | None = None) -> str:
    """An ``<svg>`` element (a string of markup made only of numbers and fixed text); "" when no row
    lies in ``span`` (None: the rows' own first to last)."""
    rows = rows_in_span(rows, span)
    if not rows:
        return ""
    t0, t1 = span if span is not None else (float(rows[0][0]), float(rows[-1][0]))
    line = " ".join(f"{_x(float(r[0]), t0, t1):.1f},{_y(float(r[1] or 0.0)):.1f}" for r in rows)
    dots = []
    for r in rows:
        x = _x(float(r[0]), t0, t1)
        if r[2] is not None:
            dots.append(f'<circle class="clf" cx="{x:.1f}" cy="{_y(float(r[2])):.1f}" r="2.5"/>')
        if len(r) > 3 and r[3] is not None:
            dots.append(f'<circle class="det" cx="{x:.1f}" cy="{_y(float(r[3])):.1f}" r="2"/>')
    ty = _y(threshold)
    length = duration_text(t1 - t0)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="scores of {len(rows)} frames over {length}">'
        f'<rect class="frame" x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}"/>'
        f'<line class="thr" x1="{PAD}" y1="{ty:.1f}" x2="{WIDTH - PAD}" y2="{ty:.1f}"/>'
        f'<text x="{WIDTH - PAD}" y="{ty - 3:.1f}" text-anchor="end">threshold {threshold:.2f}</text>'
        f'<text x="{PAD}" y="{PAD - 6}">1.0</text><text x="{PAD}" y="{HEIGHT - 6}">0 s</text>'
        f'<text class="axis-end" x="{WIDTH - PAD}" y="{HEIGHT - 6}" text-anchor="end">{length}</text>'
        f'<polyline class="visit" points="{line}"/>{"".join(dots)}</svg>'
    )
