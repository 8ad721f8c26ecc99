"""Learns your porch: the pure decisions (night of an event, feedback rows, the site split, the gate)
as tables, and the feedback folder and the model links on real files."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from raccoon_watch.learning import site_models
from raccoon_watch.learning.feedback import (
    SPLIT_BY_EVENT,
    SPLIT_BY_NIGHT,
    UNKNOWN_NIGHT,
    Mix,
    SiteSample,
    choose_events,
    choose_nights,
    night_of,
    nights_needed,
    parse_rows,
    read_feedback,
    split_site,
)
from raccoon_watch.learning.promotion import PromotionMetrics, PromotionTolerance, judge_candidate

UTC = timezone.utc


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize("when, night", [
    ("2026-05-03T23:30:00", "2026-05-03"),
    ("2026-05-04T02:00:00", "2026-05-03"),  # after midnight: still the night that began on the 3rd
    ("2026-05-04T11:59:59", "2026-05-03"),
    ("2026-05-04T12:00:00", "2026-05-04"),
    ("2026-05-04T21:00:00", "2026-05-04"),
])
def test_night_of(when, night):
    assert night_of(_ts(when), UTC) == night


def _sample(event: str, night: str, label: str = "not_raccoon") -> SiteSample:
    return SiteSample(event, "porch", night, label, Path(f"/x/{event}.jpg"), 100, 100, (10, 10, 50, 50))


def _nights(*mixes: tuple[int, int]) -> list[SiteSample]:
    """Samples of whole nights 05-01, 05-02, ...: (raccoon visits, raccoon-free visits) each."""
    out = []
    for n, (raccoons, others) in enumerate(mixes):
        out += [_sample(f"n{n}r{i}", f"05-{n + 1:02d}", "raccoon") for i in range(raccoons)]
        out += [_sample(f"n{n}f{i}", f"05-{n + 1:02d}") for i in range(others)]
    return out


M = Mix


@pytest.mark.parametrize("nights, minimum, held", [
    ([M(3, 3)] * 4, 3, (3,)),                              # one night is closest to 30 %; the latest of equals
    ([M(1, 7), M(0, 8), M(7, 16)], 3, (0,)),               # the measured porch: no split reaches 3 + 3 a side;
                                                           # the smallest shortfall, then closest to 30 %
    ([M(0, 5), M(4, 4), M(0, 5), M(4, 0)], 3, (1,)),       # the latest night has no raccoon-free visit
    ([M(0, 4), M(4, 0)], 1, (1,)),                         # nothing covers both kinds: on a tie, the later night
    ([M(5, 5)] * 12, 3, (8, 9, 10, 11)),                   # 36 of 120 visits: 4 nights (40) are nearer than 3
    ([M(1, 1)] * 15, 1, (11, 12, 13, 14)),                 # 9 of 30: 4 or 5 nights are as near; the fewer
    ([M(0, 1)] * 4, 0, (3,)),                              # minimum 0: the share alone
    ([M(3, 3)], 3, ()),                                    # one night: no night split
])
def test_choose_nights(nights, minimum, held):
    assert choose_nights(nights, 0.3, minimum) == held


@pytest.mark.parametrize("labels, held", [
    (["raccoon", "not_raccoon"] * 6, (6, 7, 8, 9, 10, 11)),  # the latest 3 of each kind, 3 of each left to train
    (["raccoon"] * 3 + ["not_raccoon"] * 10, (2, 10, 11, 12)),  # 3 raccoons cannot give 3 a side: 1 held, 2 train
    (["raccoon"] + ["not_raccoon"] * 2, (2,)),             # a lone raccoon trains; one of two others is held out
    ([], ()),
])
def test_choose_events(labels, held):
    assert choose_events(labels, 0.3, 3) == held


@pytest.mark.parametrize("nights, ahead", [
    ([M(3, 3), M(3, 3)], 0),                 # enough now
    ([M(1, 7), M(0, 8), M(7, 16)], 1),       # the measured porch: one more night like its average one
    ([M(1, 1)], 5),                          # 6 raccoons are needed, one a night: five more nights
    ([M(0, 5), M(0, 9)], None),              # no raccoon marked yet: no pace to count by
    ([], None),
])
def test_nights_needed(nights, ahead):
    assert nights_needed(nights, 0.3, 3) == ahead


@pytest.mark.parametrize("samples, minimum, by, held, train_n", [
    # four nights: the latest one (0.3 * 4 = 1.2 -> 1) is held out, whole
    ([_sample("a", "05-01"), _sample("b", "05-02"), _sample("c", "05-02"), _sample("d", "05-03"),
      _sample("e", "05-04"), _sample("f", "05-04")], 0, SPLIT_BY_NIGHT, ("05-04",), 4),
    # two nights: one each side
    ([_sample("a", "05-01"), _sample("b", "05-02")], 0, SPLIT_BY_NIGHT, ("05-02",), 1),
    # one night only: the latest whole events instead (3 events -> 1 held out)
    ([_sample("a", "05-01"), _sample("b", "05-01"), _sample("c", "05-01")], 0, SPLIT_BY_EVENT, ("c",), 2),
    # an event with two frames stays on one side
    ([_sample("a", "05-01"), _sample("b", "05-01"), _sample("b", "05-01")], 0, SPLIT_BY_EVENT, ("b",), 1),
    # a night unknown (hand-made folder without events.csv): by event
    ([_sample("a", "05-01"), _sample("b", UNKNOWN_NIGHT), _sample("c", "05-02")], 0, SPLIT_BY_EVENT, ("c",), 2),
    # one event: nothing can be held out, everything trains (the gate then cannot judge)
    ([_sample("a", "05-01")], 0, SPLIT_BY_EVENT, (), 1),
    # stratified: the latest night has raccoons only, so the one before is held out with it
    (_nights((3, 3), (0, 3), (3, 0)), 3, SPLIT_BY_NIGHT, ("05-02", "05-03"), 6),
    # one night, both kinds: the latest 3 of each kind held out
    (_nights((6, 6)), 3, SPLIT_BY_EVENT, ("n0r3", "n0r4", "n0r5", "n0f3", "n0f4", "n0f5"), 6),
])
def test_split_site(samples, minimum, by, held, train_n):
    split = split_site(samples, minimum=minimum)
    assert (split.by, split.holdout_groups, len(split.train)) == (by, held, train_n)
    key = (lambda s: s.night) if by == SPLIT_BY_NIGHT else (lambda s: s.event_id)
    assert not {key(s) for s in split.train} & {key(s) for s in split.holdout}  # never both sides
    assert len(split.train) + len(split.holdout) == len(samples)
    assert split.train_mix.total + split.holdout_mix.total == len({s.event_id for s in samples})


@pytest.mark.parametrize("samples, enough, message", [
    (_nights((3, 3), (3, 3)), True, ""),
    # the measured porch: 39 visits over three nights, 8 of them raccoons, 7 on the last night
    (_nights((1, 7), (0, 8), (7, 16)), False, "need 2 more raccoon visits marked (from 1 more night)"),
    (_nights((1, 2)), False, "need 5 more raccoon visits and 4 more raccoon-free visits marked (from 5 more nights)"),
    (_nights((0, 4), (0, 5)), False, "need 6 more raccoon visits marked (no raccoon visit is marked yet, so no pace "
                                     "to count nights by)"),
    ([_sample("a", UNKNOWN_NIGHT, "raccoon"), _sample("b", UNKNOWN_NIGHT)], False,
     "need 5 more raccoon visits and 5 more raccoon-free visits marked (how many nights is unknown: the feedback "
     "does not say when its events were (events.csv))"),
])
def test_split_says_what_it_needs_to_judge(samples, enough, message):
    split = split_site(samples)
    assert split.enough is enough
    assert split.need_more_message() == message
    shown = split.to_dict()
    assert shown["enough"] is enough and shown["message"] == message
    assert (shown["need_more"] is None) is enough


def test_split_site_refuses_a_silly_share_or_minimum():
    with pytest.raises(ValueError, match="holdout_share"):
        split_site([_sample("a", "05-01")], holdout_share=1.0)
    with pytest.raises(ValueError, match="minimum"):
        split_site([_sample("a", "05-01")], minimum=-1)


ROW = {"filename": "porch_e1.jpg", "width": "640", "height": "360", "class": "not_raccoon",
       "xmin": "10", "ymin": "20", "xmax": "110", "ymax": "220"}
EVENTS = {"porch_e1.jpg": {"filename": "porch_e1.jpg", "event_id": "e1", "camera": "porch",
                           "start_time": str(_ts("2026-05-03T23:30:00"))}}


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"class": "cat"}, "class 'cat' is not one of raccoon, not_raccoon"),
    ({"xmax": "700"}, "empty or outside the 640x360 image"),
    ({"xmin": "110"}, "empty or outside"),
    ({"ymin": "twenty"}, "whole pixels"),
    ({"width": ""}, "missing width"),
    ({"filename": "porch_gone.jpg"}, "is gone"),
    ({"filename": "../etc/passwd"}, "plain file name"),
    ({None: ["extra"]}, "9 fields, expected 8"),
])
def test_parse_row(change, reason, tmp_path):
    samples, problems = parse_rows([{**ROW, **change}], EVENTS, frozenset({"porch_e1.jpg"}), tmp_path, UTC)
    if reason is None:
        assert problems == [] and len(samples) == 1
        s = samples[0]
        assert (s.event_id, s.night, s.label, s.box_px) == ("e1", "2026-05-03", "not_raccoon", (10, 20, 110, 220))
        assert s.box == pytest.approx((10 / 640, 20 / 360, 110 / 640, 220 / 360))
    else:
        assert samples == [] and len(problems) == 1 and reason in problems[0].reason


def test_a_frame_labelled_both_ways_is_skipped_and_named_duplicates_count_once(tmp_path):
    rows = [ROW, {**ROW, "class": "raccoon"}, {**ROW, "filename": "porch_e2.jpg"}, {**ROW, "filename": "porch_e2.jpg"}]
    events = {**EVENTS, "porch_e2.jpg": {**EVENTS["porch_e1.jpg"], "filename": "porch_e2.jpg", "event_id": "e2"}}
    samples, problems = parse_rows(rows, events, frozenset({"porch_e1.jpg", "porch_e2.jpg"}), tmp_path, UTC)
    assert [s.event_id for s in samples] == ["e2"]
    assert [(p.where, "labelled both raccoon and not_raccoon" in p.reason) for p in problems] == [("event e1", True)]


def test_a_hand_edited_folder_is_reported_row_by_row_and_left_as_it_was(tmp_path):
    folder = tmp_path / "feedback"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "porch_e1.jpg").write_bytes(b"jpeg")
    (folder / "labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "porch_e1.jpg,640,360,not_raccoon,10,20,110,220\n"
        "porch_e1.jpg,640,360,not_raccoon,10,20\n"            # cut short by an editor
        "\x00\xff garbage line\n"
        "porch_e9.jpg,640,360,raccoon,1,1,5,5\n")              # its frame was swept
    (folder / "events.csv").write_text("filename,event_id,camera,start_time\nporch_e1.jpg,e1,porch,not-a-time\n")
    before = sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    samples, problems = read_feedback(folder, UTC)
    assert samples == []
    reasons = [p.reason for p in problems]
    assert len(problems) == 4
    assert any("start_time 'not-a-time' is not a time" in r for r in reasons)
    assert any("missing xmax" in r for r in reasons)
    assert any("porch_e9.jpg is gone" in r for r in reasons)
    assert sorted((p, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before  # nothing changed or deleted


@pytest.mark.parametrize("header", ["file,w,h,label\n", ""])
def test_a_folder_without_the_train_csv_header_is_a_clear_error(tmp_path, header):
    (tmp_path / "labels.csv").write_text(header)
    with pytest.raises(ValueError, match="expected filename,width,height,class"):
        read_feedback(tmp_path)


def test_no_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match="export-feedback"):
        read_feedback(tmp_path / "nowhere")


def _m(recall=0.9, false_alerts=1, site_errors=3, negatives=41, site_events=3, nr=0.8, r=None) -> PromotionMetrics:
    return PromotionMetrics(recall, false_alerts, negatives, site_errors, site_events, nr, r)


@pytest.mark.parametrize("deployed, candidate, promote, why", [
    (_m(), _m(site_errors=0), True, ""),
    (_m(), _m(recall=0.875, site_errors=0), True, ""),                    # within the 0.03 recall tolerance
    (_m(), _m(recall=0.86, site_errors=0), False, "test-split recall 0.860"),
    (_m(), _m(false_alerts=2, site_errors=0), False, "2 of 41 held-out raccoon-free photos alert"),
    (_m(), _m(false_alerts=0, site_errors=3), False, "not better on the held-out site feedback"),
    (_m(), _m(site_errors=4), False, "not better"),
    (_m(site_events=0, site_errors=0), _m(site_events=0, site_errors=0), False, "no held-out site feedback"),
    # as many errors (the stored frames scored under the threshold already) but clearly lower scores
    (_m(site_errors=0, nr=0.69), _m(site_errors=0, nr=0.40), True, ""),
    (_m(site_errors=0, nr=0.69), _m(site_errors=0, nr=0.66), False, "not better"),        # within the margin
    (_m(site_errors=0, nr=0.69, r=0.9), _m(site_errors=0, nr=0.40, r=0.7), False, "raccoon 0.700 vs 0.900"),
    (_m(site_errors=0, nr=0.69, r=0.9), _m(site_errors=0, nr=0.40, r=0.88), True, ""),
    (_m(site_errors=1, nr=None, r=0.5), _m(site_errors=1, nr=None, r=0.9), False, "not better"),  # no not-raccoon frames
    (_m(), _m(negatives=40, site_errors=0), False, "different sets"),
])
def test_gate(deployed, candidate, promote, why):
    decision = judge_candidate(deployed, candidate)
    assert decision.promote is promote
    assert (decision.reasons == ()) is promote
    assert all(why in r for r in decision.reasons[:1]) if why else True


def test_gate_names_every_failed_check_and_honours_its_tolerance():
    decision = judge_candidate(_m(), _m(recall=0.5, false_alerts=9, site_errors=5))
    assert len(decision.reasons) == 3
    assert judge_candidate(_m(), _m(false_alerts=2, site_errors=0), PromotionTolerance(extra_false_alerts=1)).promote
    with pytest.raises(ValueError, match="recall_drop"):
        PromotionTolerance(recall_drop=-0.1)


def _candidate(root: Path, name: str, payload: bytes) -> Path:
    staged = site_models.staging_dir(root, name)
    (staged / site_models.CLASSIFIER_FILE).write_bytes(payload)
    (staged / site_models.CLASSIFIER_CARD).write_text("{}")
    return site_models.install_candidate(root, staged, name)


def test_promote_and_roll_back_move_links_and_delete_nothing(tmp_path):
    root = site_models.models_root(tmp_path)
    a, b = _candidate(root, "a", b"first"), _candidate(root, "b", b"second")
    assert site_models.current(root) is None
    assert site_models.promote(root, a) is None  # the shipped one ran before
    assert site_models.promote(root, b) == a.resolve()
    assert (site_models.current(root), site_models.previous(root)) == (b.resolve(), a.resolve())
    assert not os.path.isabs(os.readlink(root / site_models.CURRENT))  # relative: the state dir may move
    assert site_models.roll_back(root) == (a.resolve(), b.resolve())
    assert site_models.current(root) == a.resolve()
    site_models.roll_back(root)  # twice undoes it
    assert site_models.current(root) == b.resolve()
    assert site_models.list_candidates(root) == [a, b]
    assert site_models.model_version(b / site_models.CLASSIFIER_FILE) == "16367aacb67a"  # sha256(b"second")[:12]
    with pytest.raises(FileExistsError):
        _candidate(root, "a", b"again")
    assert (a / site_models.CLASSIFIER_FILE).read_bytes() == b"first"


def test_roll_back_from_the_first_promotion_returns_to_the_shipped_classifier(tmp_path):
    root = site_models.models_root(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothing to roll back"):
        site_models.roll_back(root)
    a = _candidate(root, "a", b"first")
    site_models.promote(root, a)
    assert site_models.roll_back(root) == (None, a.resolve())
    assert site_models.current(root) is None and site_models.previous(root) == a.resolve()
    with pytest.raises(FileNotFoundError, match="not a classifier folder"):
        site_models.promote(root, tmp_path)
