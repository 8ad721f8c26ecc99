"""A contact sheet of what a model folder finds on night photos: the pictures in README / train/README.

    python -m tools.night_sheet --model models/raccoon --out docs/night-detections.png IMAGE ...

Each image goes through the daemon's one inference path (``Recognizer.recognize``, as ``detect``
and the daemon run it); every detection scoring at least the review threshold of its image mode is
drawn with its final score, in amber when it reaches the alert threshold of that mode and grey when
it is only a detection. Each tile is captioned with the image's mode and the thresholds that applied.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from raccoon_watch.config import DetectorConfig
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.recognition.detectors.factory import find_model
from raccoon_watch.recognition.imagemode import image_mode
from raccoon_watch.snapshot import draw_detections

TILE = (480, 320)  # (width, height) of one tile
GREY = (170, 170, 170)


def review_thresholds(model: Path) -> dict[str, float]:
    card = find_model(model).classifier_card or {}
    return {k: float(v) for k, v in (card.get("review_thresholds") or {}).items()}


def tile(image: np.ndarray, caption: str) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(TILE[0] / w, (TILE[1] - 24) / h)
    small = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    out = np.zeros((TILE[1], TILE[0], 3), np.uint8)
    out[24:24 + small.shape[0], :small.shape[1]] = small
    cv2.putText(out, caption, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main(args: argparse.Namespace) -> int:
    recognizer = create_recognizer(DetectorConfig(model=args.model, backend="tflite"))
    review = review_thresholds(args.model)
    tiles = []
    try:
        for path in args.images:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise SystemExit(f"night_sheet: cannot read {path}")
            mode = image_mode(image)
            alert = recognizer.threshold_for(mode) or 0.5
            shown = review.get(mode, alert)
            dets = [d for d in recognizer.recognize([image])[0] if d.score >= shown]
            drawn = draw_detections(image, [d for d in dets if d.score < alert], color=GREY)
            drawn = draw_detections(drawn, [d for d in dets if d.score >= alert])
            caption = f"{path.name[:28]}  {mode}: alert {alert:.2f}" + (f", review {shown:.2f}" if mode in review else "")
            tiles.append(tile(drawn, caption))
    finally:
        recognizer.close()
    columns = args.columns
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows))
    print(args.out)
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/raccoon"))
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("images", type=Path, nargs="+")
    return parser


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
