"""How fast this machine trains a model: a few timed steps on random inputs."""

from __future__ import annotations

import time

import torch

from fgdepth.config import Config, StageConfig
from fgdepth.engine.epoch import head_losses, total_loss
from fgdepth.engine.precision import autocast
from fgdepth.engine.stages import (
    freeze_groups,
    make_optimizer,
    set_train_mode,
    stage_optimizer_config,
)
from fgdepth.models import build_model


def training_rate(
    config: Config,
    stage: StageConfig,
    device: torch.device,
    precision: str,
    steps: int = 3,
    warmup: int = 1,
) -> float:
    """Training samples per second of ``config``'s model at ``stage``'s size and batch size:
    forward, loss, backward and optimizer step, timed over ``steps`` steps after ``warmup``
    (data loading excluded: see ``fgdepth.data.stream`` for that side). The stage's frozen
    groups are frozen, as in training."""
    model = build_model(config.model.name, **config.model.options).to(device)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    set_train_mode(model, freeze_groups(model, list(stage.freeze)))  # frozen: no backward
    batch = stage.batch_size or config.batch_size
    side, inputs = stage.size, stage.size * model.input_scale
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(2, batch, 3, inputs, inputs, generator=gen, device=device)
    fg_bg, bg = (t.contiguous(memory_format=fmt) for t in x)
    targets = {
        "mask": (torch.rand(batch, 1, side, side, generator=gen, device=device) > 0.9).float(),
        "depth": torch.rand(batch, 1, side, side, generator=gen, device=device),
    }
    losses = head_losses(config, stage)
    opt = make_optimizer(model, stage_optimizer_config(config, stage))

    def step() -> None:
        with autocast(device, precision):
            outputs = dict(zip(("mask", "depth"), model(fg_bg, bg), strict=True))
        loss = total_loss(losses, outputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):  # the first steps allocate and pick kernels: slower
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch / (time.perf_counter() - start)
