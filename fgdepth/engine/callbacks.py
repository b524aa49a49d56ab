"""What the engine tells its callbacks, and the callback interface."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from fgdepth.config import Config, StageConfig


@dataclass
class EpochResult:
    stage: int  # index of the stage
    stage_name: str
    epoch: int  # epoch within the stage
    step: int  # epochs done so far in the whole run (the metric step)
    train: dict[str, float]
    val: dict[str, float]
    lr: float
    seconds: float
    samples_per_s: float


@dataclass
class StageResult:
    stage: int
    config: StageConfig
    test: dict[str, float]
    images: list[dict[str, np.ndarray]]  # fixed test samples with predictions, for pictures
    epochs: list[EpochResult] = field(default_factory=list)


@dataclass
class FitResult:
    model: nn.Module
    config: Config
    stages: list[StageResult]
    metrics: dict[str, float]  # the last stage's test metrics
    seconds: float
    train_samples_per_s: float
    stopped_early: str | None = None  # why training stopped before its end, if it did


class Callback:
    """Override what you need. Exceptions propagate: a callback can stop training."""

    def on_fit_start(self, config: Config, model: nn.Module, info: dict) -> None: ...

    def on_stage_start(self, stage: int, config: StageConfig) -> None: ...

    def on_epoch_end(self, result: EpochResult, model: nn.Module) -> None: ...

    def on_stage_end(self, result: StageResult, model: nn.Module) -> None: ...

    def on_fit_end(self, result: FitResult) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_fit_start(self, *args):
        for cb in self.callbacks:
            cb.on_fit_start(*args)

    def on_stage_start(self, *args):
        for cb in self.callbacks:
            cb.on_stage_start(*args)

    def on_epoch_end(self, *args):
        for cb in self.callbacks:
            cb.on_epoch_end(*args)

    def on_stage_end(self, *args):
        for cb in self.callbacks:
            cb.on_stage_end(*args)

    def on_fit_end(self, *args):
        for cb in self.callbacks:
            cb.on_fit_end(*args)
