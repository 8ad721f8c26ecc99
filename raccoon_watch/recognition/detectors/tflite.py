"""TFLite SSD backend (LiteRT), for models with the post-processed outputs boxes/classes/scores/count.

Model contract (the stock COCO SSD and train/'s int8 export):
- one input [1, H, W, 3]: uint8 (raw RGB pixels, as the TFLite SSD exporters quantize it), int8
  (quantized from (x - 128) / 128 with the input's scale and zero point) or float32
  ((x - 128) / 128, what the stock quantized SSD's input scale 1/128 and zero point 128 decode to,
  and what train/'s float export was trained with);
- four outputs: boxes [1, N, 4] normalised (ymin, xmin, ymax, xmax), classes [1, N] 0-based with the
  background excluded (label = labels[class + 1], see raccoon_watch.recognition.labels), scores [1, N] sorted
  descending, count [1]. Their order differs between converters, and so does the meaning of the
  names: the stock file's ``TFLite_Detection_PostProcess:1`` is classes, but in a model converted
  by the TF2 converter (train/'s export) the tensor of that name holds the scores. So boxes and count
  are found by shape, and classes vs scores by their values (classes integral, scores in [0, 1] and
  sorted) on probe frames; names only break a tie until a real frame settles it.

XNNPACK is LiteRT's default CPU delegate (OpResolverType.AUTO); the load log reports how many graph
nodes it took. An Interpreter is not thread-safe, so each calling thread gets its own (built from the
same model bytes on first use): several workers may share one detector.

Batches (``batch_size`` > 1, ``detector.batch_size``): the post-processing op of an SSD takes one
image, so the model is cut before it (``ssd_batch.cut_postprocess``): one invoke runs the network on
[N, H, W, 3] and the op's box decoding and non-max suppression run per image in numpy
(``ssd_batch.PostProcess``). Before it is used, the cut model must give the op's detections on the
probe frames; a model that cannot be cut, or whose cut version differs, runs one frame per invoke
(``max_batch`` 1, logged). ``max_batch`` is what a detector worker passes to the frame queue.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from raccoon_watch.recognition.detectors.base import (
    DEFAULT_MIN_SCORE,
    ModelError,
    detections_from_yxyx,
    input_tensor,
    to_model_rgb,
)
from raccoon_watch.recognition.detectors.ssd_batch import NotBatchable, PostProcess, cut_postprocess
from raccoon_watch.support.nativelog import routed_native_stderr
from raccoon_watch.types import Detection

log = structlog.get_logger(__name__)

CLASS_OFFSET = 1  # TFLite class k -> labels[k + 1]: the post-processing op drops the background


@dataclass(frozen=True)
class OutputMap:
    """Output tensor indices of the four post-processed outputs."""

    boxes: int
    classes: int
    scores: int
    count: int


BOX_ATOL = 1e-4  # the cut model's boxes may differ from the op's by float rounding, no more
SCORE_ATOL = 1e-5


class TFLiteDetector:
    name = "tflite"

    def __init__(self, model_path: Path, labels: tuple[str, ...], num_threads: int = 2,
                 min_score: float = DEFAULT_MIN_SCORE, threshold: float | None = None, use_xnnpack: bool = True,
                 batch_size: int = 1):
        self.model_path = Path(model_path)
        self.labels = labels
        self.num_threads = num_threads
        self.min_score = min_score
        self.threshold = threshold
        self._resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._content = read_model(self.model_path)
        self._local = threading.local()
        self._all: list[Interpreter] = []
        self._lock = threading.Lock()
        interp = self._interpreter()
        inp = interp.get_input_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4 or inp[0]["shape"][3] != 3:
            raise ModelError(f"{self.model_path}: expected one image input [1, H, W, 3], got {[list(d['shape']) for d in inp]}")
        self._input = inp[0]
        if self._input["dtype"] not in (np.uint8, np.int8, np.float32):
            raise ModelError(f"{self.model_path}: unsupported input type {self._input['dtype'].__name__}")
        self.input_size = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self._outputs, self._settled = map_outputs(interp.get_output_details(), lambda: self._probe(interp),
                                                   self.model_path)
        # (the cut model's bytes, its post-processing) when batches run; None: one frame per invoke
        self._cut: tuple[bytes, PostProcess] | None = self._batchable() if batch_size > 1 else None
        self.max_batch = batch_size if self._cut is not None else 1
        # LiteRT has no public call that says whether XNNPACK took the graph: log what was asked for
        log.info("detector_loaded", backend=self.name, model=str(self.model_path), input=list(self.input_size),
                 input_dtype=self._input["dtype"].__name__, threads=num_threads,
                 op_resolver=self._resolver.name, labels=len(labels), max_batch=self.max_batch)

    def _batchable(self) -> tuple[bytes, PostProcess] | None:
        """The model cut before its post-processing op, if it can be cut and the cut one gives the op's
        detections on the probe frames; else None (one frame per invoke), logged."""
        try:
            cut = cut_postprocess(self._content)
        except NotBatchable as exc:
            log.warning("detector_batch_unsupported", model=str(self.model_path), reason=str(exc))
            return None
        rng = np.random.default_rng(1)
        frames = [np.full((*self.input_size, 3), 128, np.uint8),  # grey, noise, a horizontal ramp
                  rng.integers(0, 256, (*self.input_size, 3), dtype=np.uint8),
                  np.tile(np.linspace(0, 255, self.input_size[1], dtype=np.uint8)[None, :, None],
                          (self.input_size[0], 1, 3))]
        single = [self._detect_one(self._interpreter(), f) for f in frames]
        batched = self._detect_batch(self._batch_interpreter(cut[0]), cut[1], frames)
        if not all(_same(a, b) for a, b in zip(single, batched)):
            log.warning("detector_batch_unsupported", model=str(self.model_path),
                        reason="the cut model's detections differ from the post-processing op's on the probe frames")
            self._local.batch_interp = None
            return None
        return cut

    def _interpreter(self) -> Interpreter:
        interp = getattr(self._local, "interp", None)
        if interp is None:
            try:
                interp = new_interpreter(self._content, self.num_threads, self._resolver)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{self.model_path}: not a usable TFLite model: {str(exc).splitlines()[0]}") from None
            self._local.interp = interp
            with self._lock:
                self._all.append(interp)
        return interp

    def _batch_interpreter(self, content: bytes) -> Interpreter:
        """This thread's interpreter of the cut model (``content``), its input's batch resized per call."""
        interp = getattr(self._local, "batch_interp", None)
        if interp is None:
            interp = new_interpreter(content, self.num_threads, self._resolver)
            self._local.batch_interp, self._local.batch = interp, int(interp.get_input_details()[0]["shape"][0])
            with self._lock:
                self._all.append(interp)
        return interp

    def _prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        rgb = to_model_rgb(image_bgr, *self.input_size)[np.newaxis]  # (1, H, W, 3)
        return input_tensor(rgb, self._input["dtype"], self._input["quantization"])

    def _run(self, interp: Interpreter, tensor: np.ndarray) -> dict[int, np.ndarray]:
        interp.set_tensor(self._input["index"], tensor)
        interp.invoke()
        return {d["index"]: _dequantize(interp.get_tensor(d["index"]), d) for d in interp.get_output_details()}

    def _probe(self, interp: Interpreter) -> list[dict[int, np.ndarray]]:
        """Outputs on a grey frame and on noise, used to tell classes from scores when names do not."""
        rng = np.random.default_rng(0)
        frames = [np.full((*self.input_size, 3), 128, np.uint8), rng.integers(0, 256, (*self.input_size, 3), dtype=np.uint8)]
        return [self._run(interp, self._prepare(f)) for f in frames]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if self._cut is not None and images:
            return self._detect_batch(self._batch_interpreter(self._cut[0]), self._cut[1], images)
        interp = self._interpreter()
        return [self._detect_one(interp, image) for image in images]

    def _detect_one(self, interp: Interpreter, image: np.ndarray) -> list[Detection]:
        """One image through the whole model, post-processing op included."""
        out = self._run(interp, self._prepare(image))
        if not self._settled:
            self._settle(out)
        m = self._outputs
        n = int(out[m.count].reshape(-1)[0])
        return detections_from_yxyx(
            out[m.boxes][0, :n],  # (N, 4) ymin, xmin, ymax, xmax -> converted inside
            out[m.classes][0, :n] + CLASS_OFFSET,
            out[m.scores][0, :n],
            self.labels, self.min_score)

    def _detect_batch(self, interp: Interpreter, post: PostProcess,
                      images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """All images in one invoke of the cut model (``interp``); ``post``, the op's work, per image."""
        rgb = np.stack([to_model_rgb(image, *self.input_size) for image in images])
        detail = interp.get_input_details()[0]
        if self._local.batch != len(images):
            interp.resize_tensor_input(detail["index"], [len(images), *self.input_size, 3], strict=False)
            interp.allocate_tensors()
            self._local.batch = len(images)
        interp.set_tensor(detail["index"], input_tensor(rgb, self._input["dtype"], self._input["quantization"]))
        interp.invoke()
        encodings, scores = (_dequantize(interp.get_tensor(d["index"]), d) for d in interp.get_output_details())
        results = []
        for enc, sc in zip(encodings, scores):
            boxes, classes, best, n = post.run(enc, sc)
            results.append(detections_from_yxyx(boxes, classes + CLASS_OFFSET, best, self.labels, self.min_score))
        return results

    def _settle(self, out: dict[int, np.ndarray]) -> None:
        """Fix classes vs scores from a real frame's values when the probe frames could not tell."""
        m = self._outputs
        verdict = _by_values([(out[m.classes], out[m.scores])])
        if verdict is not None:
            with self._lock:
                if verdict == "scores":
                    self._outputs = OutputMap(m.boxes, m.scores, m.classes, m.count)
                self._settled = True
            log.info("tflite_outputs_settled", swapped=verdict == "scores")

    def close(self) -> None:
        with self._lock:
            self._all.clear()
        self._local = threading.local()


_xnnpack_announced = False  # LiteRT prints its XNNPACK line once per process, at the first such interpreter


def new_interpreter(content: bytes, num_threads: int, resolver: OpResolverType) -> Interpreter:
    """An Interpreter with its tensors allocated. The first one with the default delegates
    (XNNPACK) in this process is built with fd 2 routed into the log (``nativelog``): LiteRT's C++
    logger prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` there, once, and no
    setting silences it. Later ones are built as they are (nothing is printed, no redirect)."""
    global _xnnpack_announced
    if resolver != OpResolverType.AUTO or _xnnpack_announced:
        interp = Interpreter(model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        return interp
    with routed_native_stderr("litert"):
        interp = Interpreter(model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()  # the delegate is applied (and announced) here
        _xnnpack_announced = True
    return interp


def _same(a: list[Detection], b: list[Detection]) -> bool:
    """The same detections, up to float rounding of boxes and scores."""
    return len(a) == len(b) and all(
        x.label == y.label and abs(x.score - y.score) <= SCORE_ATOL
        and max(abs(p - q) for p, q in zip(x.box, y.box)) <= BOX_ATOL for x, y in zip(a, b))


def read_model(path: Path) -> bytes:
    """The model file's bytes; ModelError when it is missing or not a TFLite FlatBuffer."""
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: expected a .tflite file, got a directory")
    content = path.read_bytes()
    if content[4:8] != b"TFL3":  # FlatBuffer file identifier of every TFLite model
        raise ModelError(f"{path}: not a TFLite model (no 'TFL3' identifier; {len(content)} bytes)")
    return content


def _dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


def map_outputs(details: list[dict[str, Any]], probe, model_path: Path) -> tuple[OutputMap, bool]:
    """Find boxes, classes, scores and count among the output details, whatever their order.

    boxes: the [1, N, 4] output; count: the one-element output; of the two [1, N] outputs, classes
    and scores are told apart by the values ``probe()`` returns (classes integral, scores in [0, 1]
    and sorted descending). Returns (map, settled); when no probe frame tells them apart (e.g. no
    detections at all) the names decide provisionally and settled is False.
    """
    shapes = [(d["name"], list(d["shape"])) for d in details]
    problem = f"{model_path}: expected the 4 post-processed SSD outputs (boxes [1,N,4], classes, scores, count), got {shapes}"
    if len(details) != 4:
        raise ModelError(problem)
    boxes = [d for d in details if len(d["shape"]) == 3 and d["shape"][-1] == 4]
    count = [d for d in details if int(np.prod(d["shape"])) == 1]
    pair = [d for d in details if len(d["shape"]) == 2 and d["shape"][1] > 1]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        raise ModelError(problem)
    a, b = pair
    first = _by_values([(o[a["index"]], o[b["index"]]) for o in probe()])
    settled = first is not None
    if first is None:
        first = _by_name(a["name"], b["name"]) or "classes"
        log.warning("tflite_output_order_provisional", model=str(model_path), classes=(a if first == "classes" else b)["name"])
    classes, scores = (a, b) if first == "classes" else (b, a)
    return OutputMap(boxes[0]["index"], classes["index"], scores["index"], count[0]["index"]), settled


def _by_name(a: str, b: str) -> str | None:
    """'classes' if a is the classes output by name, 'scores' if a is scores, None if names do not say."""
    if a.endswith("PostProcess:1") and b.endswith("PostProcess:2"):
        return "classes"
    if a.endswith("PostProcess:2") and b.endswith("PostProcess:1"):
        return "scores"
    if "class" in a.lower() and "score" in b.lower():
        return "classes"
    if "score" in a.lower() and "class" in b.lower():
        return "scores"
    return None


def _by_values(samples: list[tuple[np.ndarray, np.ndarray]]) -> str | None:
    """'classes' if the first array of a sample is the classes, 'scores' if it is the scores, None if no sample tells."""
    for a, b in samples:
        a_classes, b_classes = _looks_like_classes(a), _looks_like_classes(b)
        a_scores, b_scores = _looks_like_scores(a), _looks_like_scores(b)
        if a_classes and b_scores and not (b_classes and a_scores):
            return "classes"
        if b_classes and a_scores and not (a_classes and b_scores):
            return "scores"
    return None


def _looks_like_classes(values: np.ndarray) -> bool:
    return bool(np.all(values == np.round(values)) and np.all(values >= 0))


def _looks_like_scores(values: np.ndarray) -> bool:
    v = values.reshape(-1)
    return bool(np.all((v >= 0) & (v <= 1)) and np.all(np.diff(v) <= 1e-6))
