"""App observer hooks: every router callback reaches every observer; a failing one hurts nobody."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raccoon_watch.app import App, Observer
from raccoon_watch.config import Config
from raccoon_watch.types import Detection, Event, EventKind, Frame, FrameResult


def _app(tmp_path: Path, observers: list[Observer]) -> App:
    cfg = Config.model_validate({"cameras": {"cam": {"source": "missing.mp4"}}, "storage": {"path": str(tmp_path)}})
    return App(cfg, observers=observers)


def _result() -> FrameResult:
    frame = Frame(camera="cam", seq=3, ts=100.0, mono=5.0, image=np.zeros((4, 4, 3), np.uint8))
    return FrameResult(frame=frame, detections=(), inference_ms=1.0)


def _event() -> Event:
    return Event(id="e1", kind=EventKind.START, camera="cam", label="raccoon", start_time=100.0, end_time=None,
                 score=0.9, top_score=0.9, box=(0.1, 0.1, 0.2, 0.2))


def test_constructor_and_added_observers_all_see_results_and_events(tmp_path: Path) -> None:
    seen: list[str] = []
    app = _app(tmp_path, [Observer(on_result=lambda r, h: seen.append(f"a:result:{r.frame.seq}"))])
    app.add_observer(on_event=lambda e: seen.append(f"b:event:{e.kind.value}"))
    app.add_observer(on_result=lambda r, h: seen.append(f"c:result:{len(h)}"), on_event=lambda e: seen.append("c:event"))
    hit = Detection("raccoon", 0.9, (0.1, 0.1, 0.2, 0.2))
    app._on_result(_result(), (hit,))
    app._on_event(_event())
    assert seen == ["a:result:3", "c:result:1", "b:event:new", "c:event"]


def test_a_raising_observer_is_logged_and_the_next_one_still_runs(tmp_path: Path) -> None:
    seen: list[str] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("observer bug")

    app = _app(tmp_path, [Observer(on_event=broken), Observer(on_event=lambda e: seen.append(e.id))])
    app._on_event(_event())
    assert seen == ["e1"]
