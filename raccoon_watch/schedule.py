"""Which frames the detector gets next, and which it loses, when cameras send more than it can run.

Pure functions over a frozen ``QueueState``; ``framequeue.FrameQueue`` holds the frames and calls
them under its lock. Frames wait in one lane per camera, in capture order.

``admit`` (after a frame joined its camera's lane) says which frames are dropped, first rule first:

==========================================================  =============================================
when                                                        dropped
==========================================================  =============================================
the camera has no open visit and more than ``lane_depth``   its oldest frames beyond ``lane_depth``: the
frames wait (``lane_depth`` None: no per-camera bound)      detector works on the newest ("superseded")
more than ``maxsize`` frames wait in all                    one frame of a camera WITHOUT an open visit:
                                                            the longest lane's oldest; ties: the camera
                                                            served most recently, then the oldest frame
... and every waiting frame is of a camera with an open     the longest visiting lane's oldest (counted:
visit                                                       the queue is too small for the visits)
==========================================================  =============================================

``pick`` (a detector worker asks for up to ``max_n`` frames) goes round the cameras:

* cameras with an open visit first, every frame of theirs before any other camera's; within each
  group, the camera served longest ago first (never served: first of all), ties by the oldest
  waiting frame;
* each round takes one frame per camera of the group (its oldest waiting one; a camera without a
  visit only keeps its newest, ``lane_depth``), then the next round, until ``max_n`` frames or
  nothing is left.

So under overload every camera gets its turn (round robin), each works on its newest frame, and a camera
whose visit is open (an event running, a frame counted toward one, or a moving track the classifier
scored: ``EventRouter.visit_open``) loses none of its frames while the others still fit in the queue.
The frames come back in the order they were put (a batch is delivered in that order). Two workers
may hold frames of one camera at once (a single busy camera still gets both); the tracker and the
debounce go by each frame's own capture time, so a result that arrives after a newer one is folded in
as it is (``tracking``: a frame older than a track's last is not a step back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NEVER = float("-inf")
"""``last_served`` of a camera that has not been served yet: before everyone else."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A frame waiting in the queue, as the scheduler sees it: its camera and capture number, and its
    put number (``order``, unique and increasing across all cameras)."""

    camera: str
    seq: int
    order: int


@dataclass(frozen=True, slots=True)
class QueueState:
    """The queue at one moment.

    lanes: camera -> its waiting frames, oldest first (cameras with none may be absent).
    visiting: cameras with an open visit now.
    last_served: camera -> monotonic time its last frame was taken (absent: never).
    """

    lanes: Mapping[str, tuple[Waiting, ...]] = field(default_factory=dict)
    visiting: frozenset[str] = frozenset()
    last_served: Mapping[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(lane) for lane in self.lanes.values())


def admit(state: QueueState, maxsize: int, lane_depth: int | None) -> tuple[Waiting, ...]:
    """The frames to drop now, in the order the rules pick them (see the module table).

    ``state`` already holds the new frame at the end of its camera's lane."""
    lanes = {camera: list(lane) for camera, lane in state.lanes.items() if lane}
    dropped: list[Waiting] = []
    if lane_depth is not None:
        for camera, lane in lanes.items():
            if camera not in state.visiting and len(lane) > lane_depth:
                cut = len(lane) - lane_depth
                dropped.extend(lane[:cut])
                del lane[:cut]
    while sum(len(lane) for lane in lanes.values()) > maxsize:
        others = [c for c, lane in lanes.items() if lane and c not in state.visiting]
        pool = others or [c for c, lane in lanes.items() if lane]
        victim = min(pool, key=lambda c: (-len(lanes[c]), -state.last_served.get(c, NEVER), lanes[c][0].order))
        dropped.append(lanes[victim].pop(0))
    return tuple(dropped)


def service_order(state: QueueState) -> list[str]:
    """The cameras that may be served now, first first: open visits, then the others; the one served
    longest ago first; ties by the oldest waiting frame."""
    ready = [c for c, lane in state.lanes.items() if lane]
    return sorted(ready, key=lambda c: (c not in state.visiting, state.last_served.get(c, NEVER),
                                        state.lanes[c][0].order))


def pick(state: QueueState, max_n: int) -> tuple[Waiting, ...]:
    """Up to ``max_n`` frames for one detector call, in put order (see the module text): rounds over
    the cameras with an open visit until their frames are all taken, then rounds over the others."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    order = service_order(state)
    taken: list[Waiting] = []
    for group in ([c for c in order if c in state.visiting], [c for c in order if c not in state.visiting]):
        depth = 0
        while len(taken) < max_n:
            row = [state.lanes[c][depth] for c in group if depth < len(state.lanes[c])]
            if not row:
                break
            taken.extend(row[: max_n - len(taken)])
            depth += 1
    return tuple(sorted(taken, key=lambda w: w.order))
