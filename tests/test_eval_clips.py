"""tools.eval_clips: the interval/overlap scoring as tables, CLIPS.csv parsing, and a real run of the
daemon (the shipped model) on a tiny clip set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.media import CLIP_FPS, Clip, make_clip
from tools import eval_clips
from tools.eval_clips import ClipScore, Interval, VisitScore, read_clips_csv, score_clip, summarize

V = Interval

# --- scoring -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "visits, starts, expected_visits, expected_false",
    [
        # visit found: one START inside, 1.5 s after the raccoon came in view
        ([V(10, 20)], [11.5], [(1, 1.5)], []),
        # missed: no START at all
        ([V(10, 20)], [], [(0, None)], []),
        # two events for one visit: both match, the first gives the time to first alert
        ([V(10, 30)], [12.0, 25.0], [(2, 2.0)], []),
        # false event: far from the visit
        ([V(10, 20)], [11.0, 40.0], [(1, 1.0)], [40.0]),
        # grace: 2 s after the raccoon left still counts (the confirming frames lag), 2.5 s does not
        ([V(10, 20)], [21.5], [(1, 11.5)], []),
        ([V(10, 20)], [22.5], [(0, None)], [22.5]),
        # grace before: a START 1 s early (the interval was marked late) counts, negative alert time
        ([V(10, 20)], [9.0], [(1, -1.0)], []),
        # raccoon-free clip: every START is false
        ([], [3.0, 50.0], [], [3.0, 50.0]),
        # two visits, a START each; a START in both windows counts for the first visit only
        ([V(5, 8), V(9, 15)], [6.0, 9.5], [(2, 1.0), (0, None)], []),
        ([V(5, 8), V(20, 25)], [6.0, 21.0], [(1, 1.0), (1, 1.0)], []),
    ],
)
def test_score_clip(visits, starts, expected_visits, expected_false) -> None:
    score = score_clip(visits, starts, duration_s=60.0)
    assert [(v.events, v.first_alert_s) for v in score.visits] == expected_visits
    assert list(score.false_starts_s) == expected_false


@pytest.mark.parametrize(
    "visits, duration, free",
    [([], 60.0, 60.0), ([V(10, 20)], 60.0, 50.0), ([V(10, 20), V(15, 30)], 60.0, 40.0), ([V(50, 70)], 60.0, 50.0)],
)
def test_raccoon_free_time_is_the_clip_minus_the_visits(visits, duration, free) -> None:
    assert score_clip(visits, [], duration).raccoon_free_s == pytest.approx(free)


def test_summarize_counts_visits_alerts_and_false_events_per_hour() -> None:
    scores = [
        ClipScore((VisitScore(0, 5, 1, 1.0), VisitScore(10, 15, 2, 3.0)), (), 1800.0),
        ClipScore((VisitScore(0, 5, 0, None),), (), 0.0),
        ClipScore((), (100.0,), 1800.0),
    ]
    s = summarize(scores)
    assert (s["visits_found"], s["visits_total"], s["visits_missed"]) == (2, 3, 1)
    assert s["first_alert_s"] == {"median": 2.0, "max": 3.0}
    assert s["events_per_found_visit"] == 1.5 and s["visits_with_several_events"] == 1
    assert (s["false_events"], s["raccoon_free_h"], s["false_events_per_h"]) == (1, 1.0, 1.0)


# --- CLIPS.csv ---------------------------------------------------------------------------------------


def test_read_clips_csv(tmp_path: Path) -> None:
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("clip,group,start_s,end_s\na.mp4,night,12,20\na.mp4,night,2.5,6\nb.mp4,empty,,\n"
                        "/abs/c.mp4,cat,,\n")
    a, b, c = read_clips_csv(csv_path)
    assert (a.path, a.group, a.visits) == (tmp_path / "a.mp4", "night", (V(2.5, 6), V(12, 20)))
    assert (b.path, b.visits) == (tmp_path / "b.mp4", ())
    assert c.path == Path("/abs/c.mp4")


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.mp4,night,3,\n", "both set or both empty"),
        ("a.mp4,night,5,3\n", "start_s <= end_s"),
        ("a.mp4,night,1,2\na.mp4,day,3,4\n", "in group"),
        ("a.mp4,night,,\na.mp4,night,3,4\n", "raccoon-free"),
        ("a.mp4,night,x,4\n", ":2:"),
    ],
)
def test_read_clips_csv_rejects_bad_rows(tmp_path: Path, rows: str, message: str) -> None:
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text("clip,group,start_s,end_s\n" + rows)
    with pytest.raises(ValueError, match=message):
        read_clips_csv(csv_path)


# --- the real pipeline ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.shared
def test_eval_clips_finds_the_raccoon_visit_and_no_false_event(
    tmp_path: Path, raccoon_clip_h264: Clip, shared_dir: Path
) -> None:
    """The fixture raccoon clip (a dataset raccoon 2-5 s) and an empty clip, with the shipped model."""
    from raccoon_watch.demo import empty_scene

    empty = make_clip([empty_scene(shared_dir, (640, 360))] * round(6 * CLIP_FPS), tmp_path / "empty.mp4", codec="h264")
    visit = raccoon_clip_h264.raccoon_frames
    csv_path = tmp_path / "clips.csv"
    csv_path.write_text(f"clip,group,start_s,end_s\n{raccoon_clip_h264.path},day,{visit.start / CLIP_FPS},"
                        f"{visit.stop / CLIP_FPS}\n{empty.name},empty,,\n")
    out = tmp_path / "report.json"
    args = eval_clips.get_args_parser().parse_args(["--clips", str(csv_path), "--output", str(out)])
    assert eval_clips.main(args) == 0
    report = json.loads(out.read_text())
    day, free = report["groups"]["day"], report["groups"]["empty"]
    assert (day["visits_found"], day["visits_total"], day["events_per_found_visit"]) == (1, 1, 1.0)
    assert report["overall"]["false_events"] == 0 and free["raccoon_free_h"] > 0
    clip = report["clips"][0]
    assert clip["frames_read"] == raccoon_clip_h264.frames  # drained: every frame read, none dropped
    assert 0 <= clip["visits"][0]["first_alert_s"] <= 3.0
    assert report["command"].startswith("python -m tools.eval_clips --clips")


# --- make_clips ------------------------------------------------------------------------------------------


def test_runs_of_frame_indices() -> None:
    from tools.make_clips import _runs

    assert _runs([0, 1, 2, 5, 6]) == [(0, 3), (5, 7)]
    assert _runs([]) == []


def test_night_crops_hold_out_the_classifier_training_group(shared_dir: Path) -> None:
    from tools.make_clips import TRAINING_CROP_GROUP, holdout_crops

    crops = holdout_crops(shared_dir / "data" / "night" / "positives_crops")
    assert crops and not any(p.name.startswith(TRAINING_CROP_GROUP) for p in crops)


@pytest.mark.slow
@pytest.mark.shared
def test_make_clips_small_set_frames_and_intervals_match_the_pasted_crop(tmp_path: Path, shared_dir: Path) -> None:
    """--small: a night raccoon clip's CSV visit is exactly the frames where the crop was pasted; frame
    counts of the written files match the plan; raccoon-free clips have an empty row; no test photo."""
    import csv

    import numpy as np

    from tests.fixtures.media import read_all
    from tools import make_clips as mc

    sources = mc.gather_sources(shared_dir, need_cats=False)
    test_names = {r["filename"] for r in csv.DictReader(open(shared_dir / "data/raccoon_dataset/test_labels.csv"))}
    assert not test_names & {p.name for p, _ in sources.day_photos}
    plans = mc.plan_clips(sources, 1, seed=3, small=True, groups=("night", "empty", "day"))
    csv_path = mc.write_clips(plans, tmp_path)
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["group"] for r in rows][:2] == ["night", "empty"] and rows[1]["start_s"] == rows[1]["end_s"] == ""

    night = plans[0]
    with_crop = list(mc.render_paste(night))
    without = list(mc.render_paste(night, paste=False))
    pasted = [i for i, (a, b) in enumerate(zip(with_crop, without)) if np.abs(a.astype(int) - b).max() > 0]
    assert pasted == list(range(night.spec.appear, night.spec.leave))
    assert (float(rows[0]["start_s"]), float(rows[0]["end_s"])) == (pasted[0] / mc.FPS, (pasted[-1] + 1) / mc.FPS)
    for plan in plans:
        frames = list(read_all(tmp_path / f"{plan.name}.mp4"))
        assert len(frames) == plan.spec.frames
        assert frames[0].shape == (mc.SMALL_SIZE[1], mc.SMALL_SIZE[0], 3)
    again = mc.plan_clips(sources, 1, seed=3, small=True, groups=("night", "empty", "day"))
    assert [p.spec for p in again] == [p.spec for p in plans]  # deterministic for a seed
