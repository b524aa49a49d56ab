"""What the engine tells its callbacks, and the callback interface."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from fgdepth.config import Config, StageConfig
from fgdepth.data.disk import human


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
class ProgressResult:
    """A validation within training (``eval.val_reports``): the ``share``-th of ``of`` equal
    shares of the run's training time was just spent."""

    stage: int
    epoch: int
    share: int  # 1 .. of - 1 (the last share ends with the run's last epoch)
    of: int
    val: dict[str, float]


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
    skipped_rows: list[int] = field(default_factory=list)  # bad rows left out (skip_bad)
    train_seconds: float = 0.0  # in training steps (what ``train_minutes`` counts)


class Callback:
    """Override what you need. Exceptions propagate: a callback can stop training."""

    def on_fit_start(self, config: Config, model: nn.Module, info: dict) -> None: ...

    def on_stage_start(self, stage: int, config: StageConfig) -> None: ...

    def on_progress(self, result: ProgressResult, model: nn.Module) -> None: ...

    def on_epoch_end(self, result: EpochResult, model: nn.Module) -> None: ...

    def on_stage_end(self, result: StageResult, model: nn.Module) -> None: ...

    def on_fit_end(self, result: FitResult) -> None: ...

    def on_checkpoint(self, state: dict) -> None:
        """A resumable training state (see ``fgdepth.engine.fit``): after every epoch and
        stage, every ``checkpoint_minutes`` within an epoch, and when training is stopped."""


class CallbackList(Callback):
    """Forwards every hook to each callback, in order."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def _each(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def on_fit_start(self, *args):
        self._each("on_fit_start", *args)

    def on_stage_start(self, *args):
        self._each("on_stage_start", *args)

    def on_progress(self, *args):
        self._each("on_progress", *args)

    def on_epoch_end(self, *args):
        self._each("on_epoch_end", *args)

    def on_stage_end(self, *args):
        self._each("on_stage_end", *args)

    def on_fit_end(self, *args):
        self._each("on_fit_end", *args)

    def on_checkpoint(self, *args):
        self._each("on_checkpoint", *args)


def data_modes(stages, data: list[dict]) -> str:
    """Each stage's data mode in a few words: ``s64 64px cache 1.2 GB; s96 96px stream``."""
    parts = []
    for i, (stage, d) in enumerate(zip(stages, data, strict=True)):
        what = d["mode"] + (f" {human(d['cache_bytes'])}" if d["mode"] == "cache" else "")
        parts.append(f"{stage.name or i} {d['size']}px {what}")
    return "; ".join(parts)


def data_lines(stages, data: list[dict]) -> list[str]:
    """What the console says of the data: the modes, and inputs read below the model's size."""
    if not data:
        return []
    lines = [f"data: {data_modes(stages, data)}"]
    clamped = [d for d in data if d["clamped"]]
    if clamped:  # said once: the source's resolution is the same for every stage
        d = clamped[0]
        lines.append(
            f"data: inputs read at {d['input_size']} px at most (for {d['size']} px outputs "
            "and above): the source images hold no more pixels; the model's larger inputs "
            "are upsampled on its device"
        )
    return lines


class ConsoleCallback(Callback):
    """A line per epoch and per stage on the console (the progress bar shows the batches)."""

    def __init__(self, print_fn=print):
        self.print = print_fn

    def on_fit_start(self, config, model, info):
        params = sum(p.numel() for p in model.parameters())
        self.print(
            f"{config.name}: {config.model.name} ({params:,} parameters), "
            f"{info['precision']} on {info['device']}"
            + (f" ({info['precision_reason']})" if info.get("precision_reason") else "")
            + f", splits {info['splits']}"
            + (f", {info['ranks']} ranks (DDP)" if info.get("ranks", 1) > 1 else "")
            + (" (resumed)" if info.get("resumed") else "")
        )

        for line in data_lines(info.get("stages", []), info.get("data", [])):
            self.print("  " + line)

    def on_epoch_end(self, r: EpochResult, model):
        self.print(
            f"  stage {r.stage} {r.stage_name} epoch {r.epoch + 1}: "
            f"loss {r.train['loss']:.4f}  val mask_iou {r.val['mask_iou']:.4f} "
            f"depth_rmse {r.val['depth_rmse']:.4f} dist {r.val['fg_distance_error']:.4f}  "
            f"({r.samples_per_s:.0f} samples/s, {r.seconds:.0f}s)"
        )

    def on_progress(self, r: ProgressResult, model):
        self.print(
            f"    {r.share}/{r.of} of the training time: val mask_iou {r.val['mask_iou']:.4f} "
            f"depth_rmse {r.val['depth_rmse']:.4f} dist {r.val['fg_distance_error']:.4f}"
        )

    def on_stage_end(self, r: StageResult, model):
        if not r.test:  # not tested (``eval.stage_tests: false``, a stage before the last)
            return
        self.print(
            f"  stage {r.stage} test: mask_iou {r.test['mask_iou']:.4f} "
            f"depth_rmse {r.test['depth_rmse']:.4f} "
            f"fg_distance_error {r.test['fg_distance_error']:.4f}"
        )
        line = getattr(getattr(model, "module", model), "contact_line", None)
        if line is not None:  # ``contact_fit``: fitted on the validation rows before the test
            a, b = (float(v) for v in line)
            self.print(
                f"  stage {r.stage} contact readout: object depth = {a:.4f} + {b:.4f} x the "
                "depth read at its feet "
                + ("(fitted on val)" if (a, b) != (0.0, 1.0) else "(too few objects on val to fit)")
            )
