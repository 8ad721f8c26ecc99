"""Strict, typed configuration.

Every section is a pydantic model with ``extra="forbid"``: a typo in YAML is an error that names the
key and its line. Secrets come from ``${ENV_VAR}`` placeholders or from systemd credentials
(``${cred:NAME}`` reads ``$CREDENTIALS_DIRECTORY/NAME``) and are held as ``SecretStr`` so they never
print. ``load_config`` is the one entry point; it raises ``ConfigError`` (the CLI exits with 2).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raccoon_watch.store.retention import RetentionPolicy
from raccoon_watch.visits import VisitParams

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "raccoon"
DEFAULT_THRESHOLD = 0.5
"""The alert score threshold when neither the config nor the model card gives one (daemon, detect, evaluate)."""
SHARED_ENV = "RACCOON_SHARED"
"""Names the shared/ folder (data/, pretrained/) that the models are trained from and tested on."""


def shared_dir_from_env() -> Path | None:
    """``$RACCOON_SHARED`` when it is set (and not empty), else None."""
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value else None


def shared_dir() -> Path:
    """The shared/ folder: ``$RACCOON_SHARED``, else ``../shared`` beside the checkout.

    The one place that resolves it; the daemon, the tools, training and the tests import it."""
    return shared_dir_from_env() or REPO_ROOT.parent / "shared"

_VISIT = VisitParams()  # the visit-scoring defaults are defined once, in visits.py
_RETENTION = RetentionPolicy()  # the media caps' defaults are defined once, in store/retention.py
DEFAULT_BASE_CROPS_MB = 250.0
"""storage.base_crops_mb: about 2,300 of the shipped training crops (192 x 192 RGB); a retrain uses 1,200 + 600."""

Point = tuple[float, float]
"""A polygon vertex (x, y), normalised to [0, 1] of the frame width and height."""


class ConfigError(Exception):
    """A configuration problem; ``str()`` names the key (and line) at fault."""


class _Strict(BaseModel):
    """Unknown keys are errors; no float key takes .inf/.nan; no number key takes a boolean
    (YAML's ``yes`` would otherwise be 1.0, a threshold that never alerts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, not a boolean ({str(value).lower()})")
        return value


def _is_number(annotation: Any) -> bool:
    """int, float, or an optional/union of them (not bool, which is an int subclass)."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return bool(args) and all(a in (int, float, type(None)) for a in args) and any(a is not type(None) for a in args)


_LABEL_FORBIDDEN = "/#+"


def _check_labels(labels: list[str] | None) -> list[str] | None:
    """Labels become MQTT topic levels (``<prefix>/<camera>/<label>/...``)."""
    for label in labels or ():
        if not label.strip() or any(c in label for c in _LABEL_FORBIDDEN) or "\0" in label:
            raise ValueError(f"label {label!r} cannot be an MQTT topic level (empty, or holds '/', '#' or '+')")
    return labels


def _check_polygon(poly: list[Point]) -> list[Point]:
    if len(poly) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(poly)}")
    for x, y in poly:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"polygon points are normalised (0..1), got ({x}, {y})")
    return poly


class MotionConfig(_Strict):
    enabled: bool = Field(True, description="Run the detector only when something moves (plus a periodic check).")
    threshold: int = Field(25, ge=1, le=255, description="Per-pixel grey-level change that counts as motion.")
    min_area: float = Field(0.002, ge=0.0, le=1.0, description="Changed fraction of the frame that counts as motion.")
    recheck_s: float = Field(2.0, ge=0.0, description="Run the detector at least this often even without motion (0: never).")
    hold_s: float = Field(3.0, ge=0.0, description="Keep detecting for this long after motion stops.")
    crop: bool = Field(
        True,
        description="Frames passed for motion (or hold) run the detector on a square crop around the "
                    "motion region when it is small, so a distant raccoon is not shrunk away.",
    )
    crop_max_fraction: float = Field(
        0.5, gt=0.0, le=1.0,
        description="Crop only when the crop square's side is below this fraction of the frame's "
                    "shorter side (1080p at 0.5: a square under 540 px); larger regions use the whole frame.",
    )


def _check_review(threshold: float | None, ir_threshold: float | None, review: float | None,
                  ir_review: float | None) -> None:
    """A review threshold set above the alert threshold of its mode in the same section is a mistake.
    (One that only falls back there, e.g. review_threshold over a lower ir_threshold, gives no
    detections in that mode: ``filters.DetectionFilter.review_threshold_for``.)"""
    if review is not None and threshold is not None and review > threshold:
        raise ValueError(f"review_threshold ({review}) must not be above threshold ({threshold}): a detection "
                         "is a visit that passes the review threshold but not the alert threshold")
    ir_alert = ir_threshold if ir_threshold is not None else threshold
    if ir_review is not None and ir_alert is not None and ir_review > ir_alert:
        alert_key = "ir_threshold" if ir_threshold is not None else "threshold"
        raise ValueError(f"ir_review_threshold ({ir_review}) must not be above {alert_key} ({ir_alert})")


class CameraConfig(_Strict):
    source: str = Field(description="Webcam index ('0'), device (/dev/video0), rtsp:// or http:// URL, or a video file.")
    enabled: bool = True
    detect_fps: float = Field(5.0, gt=0, le=60, description="Detector runs per second for this camera.")
    realtime: bool = Field(True, description="Pace file sources at their native fps (false: as fast as possible).")
    loop: bool = Field(False, description="Restart a file source from the beginning when it ends.")
    drain: bool = Field(
        False,
        description="File sources only, for offline evaluation (tools/eval_clips): read the file as fast as the "
                    "detectors take frames (wait for room in the frame queue instead of dropping the oldest "
                    "frame; overrides realtime) and stamp each frame with file time (Frame.ts/mono = the time "
                    "at the first open + seq / fps), so debounce and motion timing follow the clip, not the "
                    "machine's speed. Ignored (with a warning) for live sources.",
    )
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="CAP_PROP_OPEN_TIMEOUT_MSEC, in seconds.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="CAP_PROP_READ_TIMEOUT_MSEC, in seconds.")
    reconnect_max_s: float = Field(
        5.0, gt=0, le=600,
        description="Cap of the reconnect back-off: a camera is back within this long of returning.",
    )
    labels: list[str] | None = Field(None, description="Labels to watch on this camera (default: detector.labels).")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Score threshold (default: detector.threshold).")
    ir_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Score threshold in infrared/monochrome frames (default: this camera's threshold if set, "
                    "else detector.ir_threshold).",
    )
    review_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Review threshold: a visit scoring at least this but under the alert threshold is a "
                    "detection, shown on the review page and not pushed (default: detector.review_threshold).",
    )
    ir_review_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Review threshold in infrared/monochrome frames (default: this camera's review_threshold "
                    "if set, else detector.ir_review_threshold).",
    )
    min_area: float = Field(0.0, ge=0.0, le=1.0, description="Smallest box, as a fraction of the frame area.")
    max_area: float = Field(1.0, gt=0.0, le=1.0, description="Largest box, as a fraction of the frame area.")
    zones: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (normalised x, y) a box's bottom centre must be in; empty: anywhere.",
    )
    masks: list[list[Point]] = Field(
        default_factory=list,
        description="Polygons (normalised x, y) where a box's bottom centre is ignored.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)

    _labels = field_validator("labels")(_check_labels)

    @field_validator("zones", "masks")
    @classmethod
    def _polygons(cls, value: list[list[Point]]) -> list[list[Point]]:
        return [_check_polygon(p) for p in value]

    @model_validator(mode="after")
    def _area_range(self) -> CameraConfig:
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        _check_review(self.threshold, self.ir_threshold, self.review_threshold, self.ir_review_threshold)
        return self


def _check_api_url(value: str, key: str) -> str:
    """An http(s)://host[:port]/path URL of a DeepStack-style API; ValueError saying what is wrong.
    No user:password@ part (the key goes in ``api_key``, which is never logged), no query or fragment."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{key} {value!r:.80} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be http(s)://HOST[:PORT]/v1/vision/..., got {value!r:.80}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{key} must not hold a user or password (put the key in api_key), got {redact_url(value)!r:.80}")
    if parts.query or parts.fragment or any(c.isspace() for c in value):
        raise ValueError(f"{key} must not hold spaces, a query or a fragment, got {value!r:.80}")
    if port == 0:
        raise ValueError(f"{key} has port 0, got {value!r:.80}")
    if parts.path in ("", "/"):
        raise ValueError(f"{key} must name the endpoint, e.g. http://HOST:32168/v1/vision/custom/raccoon, got {value!r:.80}")
    return value


class RemoteConfig(_Strict):
    """``detector.backend: remote``: a DeepStack/CodeProject.AI-compatible recognizer elsewhere
    (``raccoon-watch serve`` on a stronger machine, or any compatible server)."""

    url: str = Field(description="The API's detection endpoint, e.g. http://bigbox:32168/v1/vision/custom/raccoon.")
    api_key: SecretStr | None = Field(None, description="Sent as the api_key form field (use ${ENV} or ${cred:NAME}).")
    timeout: float = Field(
        0.5, gt=0.0, le=30.0,
        description="Seconds one call may take (connect, and each read); a slower or failed call falls back to the "
                    "local models for that frame and the remote is left alone for retry_s (doubling up to retry_max_s).",
    )
    retry_s: float = Field(5.0, gt=0.0, le=3600.0, description="Back-off after the first failure before trying again.")
    retry_max_s: float = Field(120.0, gt=0.0, le=86400.0, description="Cap of the back-off while the remote keeps failing.")
    min_confidence: float = Field(
        0.1, ge=0.0, le=1.0,
        description="min_confidence sent with each call: the remote drops detections under it (the alert and review "
                    "thresholds are still applied here, as for the local models).",
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of the frames sent.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_api_url(value, "url")

    @model_validator(mode="after")
    def _retry(self) -> RemoteConfig:
        if self.retry_max_s < self.retry_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) must not be below retry_s ({self.retry_s})")
        return self


class DetectorConfig(_Strict):
    model: Path | None = Field(None, description="Model directory or file; null: the bundled raccoon model.")
    backend: Literal["auto", "tflite", "tensorflow", "remote"] = Field(
        "auto", description="auto: TensorFlow when a GPU is visible, else TFLite. remote: the recognizer at "
        "detector.remote.url, with the local models (as auto) whenever it is down or slow.",
    )
    remote: RemoteConfig | None = Field(None, description="The remote recognizer (backend: remote).")
    labelmap: Path | None = Field(None, description="Label map (.pbtxt or one label per line); default: beside the model.")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Minimum final score for a detection to count (with a classifier stage: its P(raccoon)); "
        f"null: the model card's deployed threshold (else {DEFAULT_THRESHOLD}).",
    )
    ir_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Minimum final score in infrared/monochrome frames (night cameras); null: detector.threshold "
        "when that is set, else the classifier card's infrared threshold (thresholds.ir), else the same as threshold.",
    )
    review_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Review threshold: a visit scoring at least this but under the alert threshold is a "
        "detection (Frigate's term), stored with its snapshot and clip and shown on the review page, never "
        "pushed; null: the classifier card's review_thresholds.color, and without one no detections.",
    )
    ir_review_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Review threshold in infrared/monochrome frames; null: detector.review_threshold when that is "
        "set, else the classifier card's review_thresholds.ir, else the same as review_threshold.",
    )
    classifier: bool = Field(
        True, description="Use the model folder's raccoon classifier stage (classifier_card.json) when it has one: "
        "the detector proposes, the classifier decides on full-resolution crops. false: the detector alone.",
    )
    proposal_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Detector score from which a box goes to the classifier; null: the classifier card's.",
    )
    workers: int = Field(2, ge=1, le=32, description="Detector worker threads.")
    num_threads: int = Field(2, ge=1, le=64, description="TFLite interpreter threads per worker.")
    batch_size: int = Field(
        1, ge=1, le=64,
        description="Frames (the newest of as many cameras) one worker runs in one call. TFLite: an SSD whose "
        "post-processing can be cut (raccoon_watch/recognition/detectors/ssd_batch.py), else 1; TensorFlow: any.")
    batch_wait_ms: float = Field(5.0, ge=0.0, le=1000.0, description="How long a worker waits to fill a batch.")
    labels: list[str] = Field(default_factory=lambda: ["raccoon"], min_length=1, description="Labels that raise events.")
    queue_size: int = Field(
        16, ge=1, le=1000,
        description="Frames waiting for the detector, all cameras together; past it a frame of a camera without "
        "an open visit is dropped first (raccoon_watch/schedule.py).")
    frames_per_camera: int = Field(
        1, ge=1, le=1000,
        description="Frames a camera without an open visit keeps waiting: when a newer one comes, the oldest "
        "is dropped, so the detector works on the newest. A camera with an open visit keeps every frame.")

    _labels = field_validator("labels")(_check_labels)

    @model_validator(mode="after")
    def _review_below_alert(self) -> DetectorConfig:
        _check_review(self.threshold, self.ir_threshold, self.review_threshold, self.ir_review_threshold)
        return self

    @model_validator(mode="after")
    def _remote_section(self) -> DetectorConfig:
        if self.backend == "remote" and self.remote is None:
            raise ValueError("detector.remote is missing: backend remote needs remote: {url: http://HOST:PORT/v1/vision/custom/raccoon}")
        if self.backend != "remote" and self.remote is not None:
            raise ValueError(f"detector.remote is set but detector.backend is {self.backend!r}: set backend: remote to use it, "
                             "or remove the remote section")
        return self


class EventsConfig(_Strict):
    min_frames: int = Field(3, ge=1, description="Counting frames needed within the window to start an event.")
    window: int = Field(5, ge=1, description="Processed frames looked at for min_frames.")
    end_after: float = Field(10.0, gt=0, description="Seconds without a counting detection that end an event.")
    cooldown: float = Field(300.0, ge=0, description="A new event within this many seconds of the last is flagged in_cooldown.")
    update_interval: float = Field(5.0, ge=0, description="Minimum seconds between UPDATE messages of one event (0: none).")
    score_window: int = Field(
        _VISIT.window, ge=1, le=100,
        description="A detection's score is the median of its object's last this-many per-frame scores, "
                    "a frame that misses it counting 0 (1: each frame's own score); a tracked object not seen "
                    "for this many frames is forgotten.",
    )
    score_min_frames: int = Field(
        _VISIT.min_frames, ge=1,
        description="Fewer scores than this are padded with 0s before the median: one good frame never alerts.",
    )
    score_match_iou: float = Field(
        _VISIT.match_iou, ge=0.0, le=1.0,
        description="A detection continues the tracked object whose predicted box (its last box moved on at its "
                    "speed) overlaps it most, if at least this much (IoU).",
    )

    @model_validator(mode="after")
    def _window(self) -> EventsConfig:
        if self.min_frames > self.window:
            raise ValueError(f"min_frames ({self.min_frames}) cannot exceed window ({self.window})")
        if self.score_min_frames > self.score_window:
            raise ValueError(
                f"score_min_frames ({self.score_min_frames}) cannot exceed score_window ({self.score_window})"
            )
        return self


class StorageConfig(_Strict):
    """The storage folder; what it holds and how big each part grows: README, "The storage folder"."""

    path: Path = Field(Path("./var"), description="Directory for the SQLite event store and snapshots.")
    snapshot_retention_days: float = Field(
        _RETENTION.days, ge=0, description="Delete snapshots, frames and clips older than this (0: keep).")
    snapshot_retention_mb: float = Field(
        _RETENTION.snapshot_mb, ge=0,
        description="Snapshots and clean frames together stay under this size, oldest deleted first, checked at "
                    "every write (0: no limit).")
    clip_retention_mb: float = Field(
        _RETENTION.clip_mb, ge=0,
        description="Event clips stay under this size, oldest deleted first, checked at every clip (0: no limit).")
    base_crops_mb: float = Field(
        DEFAULT_BASE_CROPS_MB, ge=50,
        description="retrain/base_crops (the shipped training crops a retrain mixes in, built on the first "
                    "retrain) is cut down to this size.")
    outbox_max: int = Field(10000, ge=10, description="Pending deliveries kept; beyond this the oldest are dropped (logged).")

    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(self.snapshot_retention_days, self.snapshot_retention_mb, self.clip_retention_mb)


class TlsConfig(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="Skip hostname verification (self-signed certs on an IP).")


class MqttConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    keepalive: int = Field(60, ge=5, le=3600)
    tls: TlsConfig | None = None
    topic_prefix: str = "raccoon_watch"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    qos: int = Field(1, ge=0, le=2)
    stats_interval: float = Field(60.0, gt=0)

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not value or any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"not a valid topic prefix: {value!r}")
        return value


class QuietHours(_Strict):
    start: str = Field(description="HH:MM local time")
    end: str = Field(description="HH:MM local time")

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"expected HH:MM, got {value!r}")
        return value


class PushoverConfig(_Strict):
    enabled: bool = True
    token: SecretStr
    user: SecretStr
    api_url: str = Field("https://api.pushover.net/1/", description="Base URL (trailing slash).")
    priority: int = Field(0, ge=-2, le=2)
    retry: int = Field(60, ge=30, description="Emergency priority: seconds between retries.")
    expire: int = Field(3600, ge=30, le=10800, description="Emergency priority: stop retrying after this.")
    sound: str | None = None
    device: str | None = None
    url: str | None = None
    url_title: str | None = None
    quiet_hours: QuietHours | None = None
    timeout_s: float = Field(10.0, gt=0, le=120)
    labels: list[str] | None = Field(None, description="Labels that push (default: all event labels).")

    _labels = field_validator("labels")(_check_labels)

    @field_validator("api_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not re.match(r"https?://", value):
            raise ValueError(f"api_url must be http(s)://..., got {value!r}")
        return value if value.endswith("/") else value + "/"


class ClipsConfig(_Strict):
    """Event clips (review/clips.py): a rolling buffer of stream-copied segments per RTSP/HTTP camera, cut per
    event; a file camera's clips are cut from its file."""

    enabled: bool = Field(True, description="Clips for RTSP/HTTP cameras (recorded) and file cameras (cut from the "
                          "file); webcams get none, said so.")
    pre_roll: float = Field(5.0, ge=0.0, le=60.0, description="Seconds of the clip before the first sighting.")
    post_roll: float = Field(5.0, ge=0.0, le=60.0, description="Seconds of the clip after the event ended.")
    segment_s: float = Field(2.0, ge=0.5, le=10.0, description="Length of one buffered segment (cut at keyframes).")
    buffer_s: float = Field(
        900.0, ge=60.0, le=86400.0,
        description="Seconds of segments kept on disk; a clip is at most this long (the start of a longer event is lost).",
    )
    ffmpeg: str = Field("ffmpeg", description="The ffmpeg binary that records and cuts (stream copy, no decode).")


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo, TCP), numeric; OSError when it does not resolve."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]


def all_loopback(addresses: Iterable[str]) -> bool:
    """True when there is at least one address and every one is loopback (127.0.0.0/8, ::1, and
    ::ffff:127.x, IPv4 127.x written as IPv6); anything unparsable counts as not loopback (pure)."""
    seen = False
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0: the zone is not the address
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_loopback:
            return False
        seen = True
    return seen


def is_loopback(host: str, resolve: Callable[[str], list[str]] = resolve_host) -> bool:
    """True for a bind address only this machine can reach: it resolves, and to loopback addresses
    only. Decided on what the name resolves to, never on how it is spelled: ``127.evil.example`` may
    resolve to 0.0.0.0 (every interface). A name that does not resolve is not loopback."""
    try:
        return all_loopback(resolve(host))
    except (OSError, UnicodeError, ValueError):
        return False


class HttpConfig(_Strict):
    enabled: bool = False
    host: str = Field("127.0.0.1", description="Bind address; another than loopback needs password_hash or token.")
    port: int = Field(8765, ge=1, le=65535)
    review: bool = Field(True, description="Serve the review page (events, clips, live view, feedback) at /.")
    public_url: str | None = Field(
        None, description="How a phone reaches the page (https://cams.example.net/raccoon): pushes link to the event.",
    )
    password_hash: SecretStr | None = Field(
        None, description="argon2 hash of the page password (raccoon-watch hash-password prints one).",
    )
    token: SecretStr | None = Field(None, description="A bearer token (Authorization: Bearer ...) or login password.")
    session_ttl_s: float = Field(43200.0, ge=60.0, le=30 * 86400.0, description="A login lasts this long.")
    live_fps: float = Field(5.0, gt=0.0, le=5.0, description="Live view frames per second per viewer (at most 5).")
    page_size: int = Field(50, ge=5, le=500, description="Events per page of the event list.")
    frame_ancestors: list[str] = Field(
        default_factory=list,
        description="Origins allowed to frame the page (Home Assistant panel_iframe), e.g. https://ha.example.net.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Peers whose X-Forwarded-For names the client (login rate limits count per client, not per proxy).",
    )

    @property
    def login_required(self) -> bool:
        """Off loopback, behind a proxy that serves another host (``public_url``), or with a password
        or token configured, the page asks who you are; bound to loopback and used there, it does not."""
        public_host = urlsplit(self.public_url).hostname or "" if self.public_url else ""
        return (not is_loopback(self.host) or (bool(public_host) and not is_loopback(public_host))
                or self.password_hash is not None or self.token is not None)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^\s/]+", value):
            raise ValueError(f"public_url must be http(s)://host[/path], got {value!r}")
        return value.rstrip("/") if value else value

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash ($argon2id$...): raccoon-watch hash-password")
        return value

    @field_validator("frame_ancestors")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d+)?", origin):
                raise ValueError(f"frame_ancestors holds origins (https://host[:port]), got {origin!r}")
        return value

    @model_validator(mode="after")
    def _login_off_loopback(self) -> HttpConfig:
        if self.enabled and self.review and self.password_hash is None and self.token is None:
            if not is_loopback(self.host):
                raise ValueError(f"host {self.host!r} is reachable from other machines (it does not resolve to "
                                 "loopback addresses only): set http.password_hash or http.token (or bind 127.0.0.1)")
            if self.login_required:  # loopback, but a proxy serves it to others at public_url
                raise ValueError(f"public_url {self.public_url!r} serves the page to other machines through a "
                                 "proxy: set http.password_hash or http.token")
        return self


DEFAULT_SERVE_PORT = 32168
"""CodeProject.AI Server's port, which Blue Iris and Agent DVR fill in by default."""


class ServeConfig(_Strict):
    """``raccoon-watch serve``: the recognizer as a DeepStack/CodeProject.AI-compatible HTTP API
    (raccoon_watch.api). The models are ``detector``'s: the same folder, cards and thresholds."""

    host: str = Field("127.0.0.1", description="Bind address; any other than loopback needs serve.api_key.")
    port: int = Field(DEFAULT_SERVE_PORT, ge=1, le=65535)
    api_key: SecretStr | None = Field(
        None, description="Required from every client (form field api_key, or Authorization: Bearer); "
        "use ${ENV} or ${cred:NAME}. At least 16 characters.",
    )
    keyless_clients: list[str] = Field(
        default_factory=list,
        description="Client networks (CIDR, e.g. 192.168.1.20/32) allowed in without the key: an NVR that has no "
                    "field for one. Everyone else still needs serve.api_key.",
    )
    max_upload_mb: float = Field(10.0, gt=0.0, le=200.0, description="Largest request body, in MB (413 beyond).")
    max_megapixels: float = Field(50.0, gt=0.0, le=500.0, description="Largest image, read from its header before decoding.")
    workers: int = Field(2, ge=1, le=32, description="Inference threads (each runs one request at a time).")
    num_threads: int = Field(1, ge=1, le=64, description="TFLite threads per inference thread.")
    queue_size: int = Field(
        8, ge=0, le=1000,
        description="Requests that may wait for an inference thread; beyond workers + queue_size the answer is 503.",
    )
    min_confidence: float = Field(0.4, ge=0.0, le=1.0, description="Default min_confidence (DeepStack's 0.4).")
    detection_animals: bool = Field(
        False,
        description="/v1/vision/detection also reports the proposer's other animals without being asked (animals=1), "
                    "for clients that cannot send the field. /v1/vision/custom/raccoon never does.",
    )

    @field_validator("api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("an API key needs at least 16 characters (e.g. openssl rand -hex 16)")
        return value

    @field_validator("keyless_clients")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"keyless_clients holds networks (192.168.1.20/32, 10.0.0.0/24), got {text!r:.60}") from None
        return value

    @model_validator(mode="after")
    def _key_off_loopback(self) -> ServeConfig:
        if self.api_key is None and not is_loopback(self.host):
            raise ValueError(f"api_key is required: host {self.host!r} is reachable from other machines (it does not "
                             "resolve to loopback addresses only); set serve.api_key (or bind 127.0.0.1)")
        return self


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Strict):
    cameras: dict[str, CameraConfig] = Field(min_length=1)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    mqtt: MqttConfig | None = None
    pushover: PushoverConfig | None = None
    http: HttpConfig = Field(default_factory=HttpConfig)
    clips: ClipsConfig = Field(default_factory=ClipsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, value: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9_]{1,64}", name):
                raise ValueError(f"camera name {name!r} must be lowercase letters, digits and _")
        return value


class ServeFileConfig(Config):
    """A config for ``raccoon-watch serve`` alone: the daemon's sections, cameras optional (a machine
    that only answers other programs has none)."""

    cameras: dict[str, CameraConfig] = Field(default_factory=dict)


# --- loading -----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def _substitute(text: str, where: str) -> str:
    """Replace ``${NAME}`` with the environment and ``${cred:NAME}`` with a systemd credential."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name.startswith("cred:"):
            return _read_credential(name[5:], where)
        default = None
        if ":-" in name:
            name, default = name.split(":-", 1)
        value = os.environ.get(name, default)
        if value is None:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return value

    return _PLACEHOLDER.sub(repl, text)


def _read_credential(name: str, where: str) -> str:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(f"{where}: ${{cred:{name}}} needs $CREDENTIALS_DIRECTORY (systemd LoadCredential=)")
    path = Path(directory) / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read credential {name!r}: {exc.strerror}") from None


MAX_CONFIG_NODES = 10_000  # far above any real config; stops alias "billion laughs" blow-ups


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
          active: frozenset[int] = frozenset()) -> Any:
    """Turn a composed YAML node into Python values, recording each key path's line (1-based).

    ``active``: ids of the collection nodes enclosing this one; meeting one again means a
    recursive alias (``&a [*a]``), which has no finite value."""
    lines[path] = node.start_mark.line + 1
    if len(lines) > MAX_CONFIG_NODES:
        raise ConfigError(f"{_fmt(path)}: more than {MAX_CONFIG_NODES} values (runaway YAML aliases?)")
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        if id(node) in active:
            raise ConfigError(f"{_fmt(path)} (line {node.start_mark.line + 1}): a YAML alias refers to itself")
        active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{_fmt(path)} (line {key_node.start_mark.line + 1}): a key must be a plain value, "
                                  "not a list or mapping")
            key = _scalar(key_node, path)
            if key in out:
                raise ConfigError(f"{_fmt(path + (key,))} (line {key_node.start_mark.line + 1}): duplicate key")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, path + (key,), lines, active)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, path + (i,), lines, active) for i, item in enumerate(node.value)]
    value = _scalar(node, path)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, _fmt(path))
    return value


def _scalar(node: yaml.Node, path: tuple[Any, ...]) -> Any:
    """One scalar's value; a tag PyYAML cannot construct (``!!int ''``, ``!!python/...``) is a ConfigError."""
    try:
        return yaml.safe_load(yaml.serialize(node))
    except (yaml.YAMLError, ValueError, TypeError, IndexError, OverflowError) as exc:
        raise ConfigError(f"{_fmt(path)} (line {node.start_mark.line + 1}): not a valid value: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _fmt(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def parse_config(text: str, source: str = "<config>", schema: type[Config] = Config) -> Config:
    """Parse and validate YAML text; raise ConfigError naming the key and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if root is None and schema is Config:
        raise ConfigError(f"{source}: the file is empty; at least 'cameras' is required")
    lines: dict[tuple[Any, ...], int] = {}
    try:
        data = _walk(root, (), lines) if root is not None else {}
    except yaml.YAMLError as exc:  # e.g. an unknown tag (!!python/object) met while building a value
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, lines, source)) from None


def _explain(exc: ValidationError, lines: dict[tuple[Any, ...], int], source: str) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = _nearest_line(loc, lines)
        where = f"{_fmt(loc)}" + (f" (line {line})" if line else "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(loc)
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{where}: {msg}")
    return f"{source}: invalid configuration:\n  " + "\n  ".join(problems)


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> X (a union of several types is left as it is)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def section_at(loc: tuple[Any, ...], root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The config model (section) that holds the keys at ``loc``: ``("cameras", "porch")`` ->
    CameraConfig, ``("mqtt", "tls")`` -> TlsConfig, ``()`` -> Config; None when ``loc`` does not
    lead to a section (pure; walks the field annotations: a dict's key and a list's index are skipped)."""
    annotation: Any = root or Config
    for part in loc:
        annotation = _unwrap(annotation)
        if _is_section(annotation):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) in (list, tuple):
            annotation = get_args(annotation)[0]
        else:
            return None
    annotation = _unwrap(annotation)
    return annotation if _is_section(annotation) else None


def _sections(annotation: Any = None, path: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every section of the config as (its key path, written ``cameras.<name>.motion``, its model)."""
    model = _unwrap(annotation) if annotation is not None else Config
    if not _is_section(model):
        return []
    out = [(path, model)]
    for name, field in model.model_fields.items():
        ann = _unwrap(field.annotation)
        if get_origin(ann) is dict:
            out += _sections(get_args(ann)[1], f"{path}{name}.<name>.")
        else:
            out += _sections(ann, f"{path}{name}.")
    return [(p.rstrip("."), m) for p, m in out]


def did_you_mean(loc: tuple[Any, ...]) -> str:
    """For an unknown key at ``loc``: '; did you mean `detect_fps`?' (a near miss of a key of the same
    section, difflib), or '; `threshold` is a key of detector, cameras.<name>' (a known key in the
    wrong section), else '' (pure)."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    key = loc[-1]
    section = section_at(loc[:-1])
    if section is not None:
        fields = list(section.model_fields)
        by_lower = {f.lower(): f for f in fields}
        close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.75)
        if close:
            return f"; did you mean `{by_lower[close[0]]}`?"
    elsewhere = [path or "the top level" for path, model in _sections() if key in model.model_fields]
    if elsewhere:
        return f"; `{key}` is a key of {', '.join(elsewhere)}"
    return ""


def _nearest_line(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines and (end > 0 or loc == ()):
            return lines[loc[:end]]
    return None


def load_config(path: str | os.PathLike[str], schema: type[Config] = Config) -> Config:
    """Read, substitute secrets, validate. Relative storage/model paths stay relative to the CWD.
    ``schema``: ``ServeFileConfig`` for ``raccoon-watch serve`` (cameras optional)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from None
    return parse_config(text, str(p), schema)


# Linear time on any input (it runs on every log value): a scheme may only start where a run of
# scheme characters starts (the look-behind), so a long run of letters is scanned once, not once per
# position (the old pattern was quadratic: 16,000 letters took 2 s). The authority ends at the first
# '/', '?', '#' or space, and its credentials run to its LAST '@', as FFmpeg's av_url_split reads
# them, so a password holding '@' is hidden whole.
_URL_PASSWORD = re.compile(
    r"(?<![a-z0-9+.-])(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/?#\s]*):(?P<pw>[^/?#\s]*)@", re.I,
)


def redact_url(url: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/...; anything else unchanged."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def effective_config(cfg: Config) -> dict[str, Any]:
    """The validated config as plain data, with every secret masked (for check-config)."""
    data = cfg.model_dump(mode="json")  # SecretStr dumps as '**********'
    for cam in data["cameras"].values():
        cam["source"] = redact_url(cam["source"])
    return data
