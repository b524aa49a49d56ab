"""Per-stage set-up: frozen groups, optimizer and learning-rate schedule."""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch import nn

from fgdepth.config import Config, OptimizerConfig, ScheduleConfig, StageConfig
from fgdepth.models.base import DepthMaskModel
from fgdepth.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("schedule")


def freeze_groups(model: DepthMaskModel, names: list[str]) -> list[nn.Module]:
    """Stop gradients of the named groups; returns their modules (see ``set_train_mode``)."""
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = [m for name in names for m in model.group_modules(name)]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """Train mode, except frozen modules stay in eval so BatchNorm statistics stay put."""
    model.train()
    for module in frozen:
        module.eval()


@OPTIMIZERS.register("adamw")
def _adamw(params, cfg: OptimizerConfig):
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params, cfg: OptimizerConfig):
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("sgd")
def _sgd(params, cfg: OptimizerConfig):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def stage_optimizer_config(config: Config, stage: StageConfig) -> OptimizerConfig:
    return dataclasses.replace(config.optimizer, **stage.optimizer)


def stage_schedule_config(config: Config, stage: StageConfig) -> ScheduleConfig:
    return dataclasses.replace(config.schedule, **stage.schedule)


def make_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS.build(cfg.name, params=params, cfg=cfg)


class Schedule:
    """A learning-rate schedule stepped after every batch (``batch``) and epoch (``epoch``)."""

    def __init__(self, scheduler=None, per_batch: bool = True):
        self.scheduler, self.per_batch = scheduler, per_batch

    def batch(self):
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def epoch(self):
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()

    def state_dict(self) -> dict | None:
        return None if self.scheduler is None else self.scheduler.state_dict()

    def advance(self, epochs: int, batches: int, steps_per_epoch: int) -> None:
        """Step a fresh schedule to where ``epochs`` whole epochs of ``steps_per_epoch`` batches
        and ``batches`` more would have left it."""
        if self.scheduler is None:
            return
        n = epochs * steps_per_epoch + batches if self.per_batch else epochs
        with warnings.catch_warnings():  # "scheduler stepped before the optimizer": on purpose
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(n):
                self.scheduler.step()

    def load_state_dict(self, state: dict | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


@SCHEDULES.register("onecycle")
def _onecycle(opt, cfg: ScheduleConfig, lr: float, steps: int, epochs: int) -> Schedule:
    total = max(2, steps * epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=cfg.warmup, div_factor=10.0,
        final_div_factor=100.0,
    )  # fmt: skip
    return Schedule(sched, per_batch=True)


@SCHEDULES.register("cosine")
def _cosine(opt, cfg: ScheduleConfig, lr: float, steps: int, epochs: int) -> Schedule:
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps * epochs))
    return Schedule(sched, per_batch=True)


@SCHEDULES.register("step")
def _step(opt, cfg: ScheduleConfig, lr: float, steps: int, epochs: int) -> Schedule:
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    return Schedule(sched, per_batch=False)


@SCHEDULES.register("constant")
def _constant(opt, cfg: ScheduleConfig, lr: float, steps: int, epochs: int) -> Schedule:
    return Schedule(None)


def make_schedule(opt, cfg: ScheduleConfig, lr: float, steps: int, epochs: int) -> Schedule:
    return SCHEDULES.build(cfg.name, opt=opt, cfg=cfg, lr=lr, steps=steps, epochs=epochs)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, math.ceil(samples / batch_size))
