"""The event page's score chart: per-frame scores over the event's time, as an inline SVG (pure).

Input rows as ``store.set_scores`` keeps them: ``(wall ts, visit score, classifier score or None,
detector score or None)``. x is time across [t0, t1], y the score 0..1 (1 at the top). The visit
score (what the threshold compared) is a line, the frame's own classifier score and the detector's
score are dots, the threshold a dashed line. Only numbers reach the markup.
"""

from __future__ import annotations

from collections.abc import Sequence

WIDTH, HEIGHT, PAD = 640, 160, 24


def _x(ts: float, t0: float, t1: float) -> float:
    return PAD + (WIDTH - 2 * PAD) * ((ts - t0) / (t1 - t0) if t1 > t0 else 0.5)


def _y(score: float) -> float:
    return PAD + (HEIGHT - 2 * PAD) * (1.0 - min(max(score, 0.0), 1.0))


def score_chart_svg(rows: Sequence[Sequence[float | None]], threshold: float) -> str:
    """An ``<svg>`` element (a string of markup made only of numbers and fixed text)."""
    if not rows:
        return ""
    t0, t1 = float(rows[0][0]), float(rows[-1][0])
    line = " ".join(f"{_x(float(r[0]), t0, t1):.1f},{_y(float(r[1] or 0.0)):.1f}" for r in rows)
    dots = []
    for r in rows:
        x = _x(float(r[0]), t0, t1)
        if r[2] is not None:
            dots.append(f'<circle class="clf" cx="{x:.1f}" cy="{_y(float(r[2])):.1f}" r="2.5"/>')
        if len(r) > 3 and r[3] is not None:
            dots.append(f'<circle class="det" cx="{x:.1f}" cy="{_y(float(r[3])):.1f}" r="2"/>')
    ty = _y(threshold)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="scores of {len(rows)} frames over {t1 - t0:.1f} s">'
        f'<rect class="frame" x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" height="{HEIGHT - 2 * PAD}"/>'
        f'<line class="thr" x1="{PAD}" y1="{ty:.1f}" x2="{WIDTH - PAD}" y2="{ty:.1f}"/>'
        f'<text x="{WIDTH - PAD}" y="{ty - 3:.1f}" text-anchor="end">threshold {threshold:.2f}</text>'
        f'<text x="{PAD}" y="{PAD - 6}">1.0</text><text x="{PAD}" y="{HEIGHT - 6}">0 s</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" text-anchor="end">{t1 - t0:.1f} s</text>'
        f'<polyline class="visit" points="{line}"/>{"".join(dots)}</svg>'
    )
