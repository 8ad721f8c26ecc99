"""Typed training configuration (YAML under train/configs/), extra="forbid": a typo is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raccoon_watch.config import shared_dir_from_env
from train.augment import AugmentConfig
from train.ssd.head_init import HeadInitName

LossKind = Literal["hard_negative", "focal"]
"""train.ssd.losses.multibox_loss: SSD hard-negative mining (3:1) or focal loss (RetinaNet)."""

REPO = Path(__file__).resolve().parent.parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Strict):
    shared_data: str = Field("../shared/data", description="shared data folder, relative to the repo; $RACCOON_SHARED/data wins")
    pretrained: str = Field("../shared/pretrained/coco_ssd_mobilenet_v1_0.75_quant_300.tflite", description="COCO TFLite start point")
    val_positives: int = Field(40, description="raccoon images of the train split kept for validation")
    val_negatives: int = Field(40, description="raccoon-free images kept for validation (half day, half night)")
    label: str = Field("raccoon", description="the class the daemon alerts on")
    decoys: list[str] = Field(default_factory=list, description="COCO classes also trained as outputs of their own "
                              "(train/decoys.py), labelled by the COCO model on the raccoon-free photos, e.g. [cat, dog]")
    teacher_min_score: float = Field(0.4, ge=0.0, le=1.0, description="COCO score at which a decoy box is kept")
    night_extra: bool = Field(False, description="Train the detector on night_extra's training sources too (its raccoons, "
                              "its raccoon-free photos, their IR frames as paste backgrounds; train/splits.py)")

    @property
    def labels(self) -> list[str]:
        """Class order of the model's outputs: the alert label, then the decoys (ids 1, 2, ...)."""
        return [self.label, *self.decoys]

    def shared_data_path(self) -> Path:
        env = shared_dir_from_env()
        return env / "data" if env else (REPO / self.shared_data).resolve()

    def pretrained_path(self) -> Path:
        env = shared_dir_from_env()
        return env / "pretrained" / Path(self.pretrained).name if env else (REPO / self.pretrained).resolve()


class ModelSection(_Strict):
    head_init: HeadInitName = Field("cat_dog_bear_mean", description="key of train.ssd.head_init.HEAD_INITS")
    frozen_prefixes: list[str] = Field(default_factory=lambda: ["Conv2d_0", "Conv2d_1_", "Conv2d_2_", "Conv2d_3_", "Conv2d_4_", "Conv2d_5_"],
                                       description="layers whose name starts with one of these are not trained")


class OptimSection(_Strict):
    steps: int = Field(1000, description="training steps")
    batch_size: int = Field(12, description="global batch size")
    learning_rate: float = Field(2e-4, description="Adam peak learning rate")
    warmup_steps: int = Field(100, description="linear warm-up from 0")
    final_lr_fraction: float = Field(0.02, description="cosine decays to this fraction of the peak")
    clipnorm: float = Field(10.0, description="gradient norm clip")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="exponential moving average of the weights, "
                             "validated and exported instead of the raw weights (0 = off)")


class LossConfig(_Strict):
    """train.ssd.losses.multibox_loss's settings (the config's ``loss:`` section is this class)."""

    kind: LossKind = Field("hard_negative", description="hard_negative (SSD 3:1) or focal")
    neg_pos_ratio: float = Field(3.0, gt=0.0, description="hard negatives per positive anchor")
    min_negatives_per_image: int = Field(16, ge=0, description="so raccoon-free images still teach 'no raccoon here'")
    focal_alpha: float = Field(0.25, ge=0.0, le=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    localization_weight: float = 1.0
    classification_weight: float = 1.0
    huber_delta: float = Field(1.0, gt=0.0)


class MixConfig(_Strict):
    """Share of each source in a training batch (normalised); the config's ``mix:`` section."""

    positives: float = Field(0.55, ge=0.0)
    negatives: float = Field(0.25, ge=0.0)
    copy_paste_night: float = Field(0.2, ge=0.0)


class EvalSection(_Strict):
    every_steps: int = Field(100, description="validate every N steps (and at the end)")
    max_false_alert_rate: float = Field(0.05, description="threshold: at most this share of validation negatives alert")
    min_threshold: float = Field(0.3, description="never deploy a threshold below this")


class TrainConfig(_Strict):
    seed: int = 0
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    optim: OptimSection = OptimSection()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = Field(AugmentConfig(), description="train.augment.AugmentConfig itself: its defaults "
                                   "and range checks; an unknown key is an error")
    mix: MixConfig = MixConfig()
    eval: EvalSection = EvalSection()

    @model_validator(mode="after")
    def _check(self):
        if self.data.label in self.data.decoys or len(set(self.data.decoys)) != len(self.data.decoys):
            raise ValueError(f"data.decoys must be distinct and not {self.data.label!r}, got {self.data.decoys}")
        if self.optim.warmup_steps > self.optim.steps:
            raise ValueError(f"warmup_steps {self.optim.warmup_steps} > steps {self.optim.steps}")
        return self


def load_config(path: str | Path) -> TrainConfig:
    with open(path) as handle:
        return TrainConfig.model_validate(yaml.safe_load(handle) or {})
