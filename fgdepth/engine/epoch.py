"""One stage's training set-up (``StageRun``) and one pass over an epoch's rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fgdepth.config import Config, StageConfig
from fgdepth.data.augment import augment
from fgdepth.engine.checkpoint import load_weights
from fgdepth.engine.distributed import SINGLE, World, any_rank, shard, sum_dicts, wrap
from fgdepth.engine.evaluate import input_size_of, to_device
from fgdepth.engine.precision import autocast
from fgdepth.engine.stages import (
    Schedule,
    freeze_groups,
    make_optimizer,
    make_schedule,
    set_train_mode,
    stage_optimizer_config,
    stage_schedule_config,
    steps_per_epoch,
)
from fgdepth.engine.stopping import Interrupted, StopPolicy
from fgdepth.losses import HeadLoss
from fgdepth.metrics import MetricAccumulator

# Train metrics are measured on every fourth batch (the loss on every batch): the ten metrics
# of a batch (SSIM, per-image medians, ...) cost 4-9 % of a training step at 64-96 px on 2 CPU
# cores, many times more when other work shares the cores, and a quarter of the epoch's batches
# estimates its train metrics well enough for a diagnostic. Validation and test metrics are
# exact, over every row.
TRAIN_METRICS_EVERY = 4


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class StageRun:
    """What one stage trains with: built once per stage, used by every epoch."""

    model: nn.Module
    data: object  # the stage's data source: a cache or a stream (``batches``, ``raw``, ``bad``)
    stage: StageConfig
    config: Config
    losses: dict
    opt: torch.optim.Optimizer
    schedule: Schedule
    device: torch.device
    precision: str
    generator: torch.Generator
    frozen: list[nn.Module]
    world: World = SINGLE
    net: nn.Module | None = None  # what the forward pass calls: the model, or DDP around it

    @property
    def batch_size(self) -> int:
        """Rows per batch on each rank."""
        return self.stage.batch_size or self.config.batch_size

    @property
    def rows_per_step(self) -> int:
        """Rows of one optimizer step, over all ranks."""
        return self.batch_size * self.world.size


def head_losses(config: Config, stage: StageConfig):
    terms = stage.loss or config.loss
    weights = {**config.loss_weights, **(stage.loss_weights or {})}
    return {head: (HeadLoss(terms[head]), weights.get(head, 1.0)) for head in ("mask", "depth")}


def prepare_stage(
    config, stage, model, data, device, precision, generator, transfer=True, world=SINGLE
) -> StageRun:
    """The stage's start weights, frozen groups, optimizer, schedule and (on several ranks)
    the DDP wrapper, built after freezing so frozen groups stay out of it."""
    if stage.init_from and transfer:
        load_weights(model, stage.init_from)
    frozen = freeze_groups(model, stage.freeze)
    opt_cfg = stage_optimizer_config(config, stage)
    opt = make_optimizer(model, opt_cfg)
    batch_size = stage.batch_size or config.batch_size
    steps = steps_per_epoch(stage.samples, batch_size * world.size)
    schedule = make_schedule(
        opt, stage_schedule_config(config, stage), opt_cfg.lr, steps, stage.epochs
    )
    losses = head_losses(config, stage)
    unused = any(w == 0 for _, w in losses.values())  # a trainable head without a loss
    net = wrap(model, world, device, unused)
    return StageRun(
        model, data, stage, config, losses, opt, schedule, device, precision, generator,
        frozen, world, net,
    )  # fmt: skip


def step_starts(n_rows: int, offset: int, step: int, ranks: int) -> range:
    """Where each step of an epoch of ``n_rows`` starts, from row ``offset`` on. A last step
    with fewer than two rows per rank is dropped: a rank without a batch would wait for the
    others, and BatchNorm cannot train on one row where a map has one pixel (the 1/16 map of
    a 16 px stage)."""
    rest = n_rows % step
    end = n_rows if rest == 0 or rest >= 2 * ranks else n_rows - rest
    return range(offset, end, step)


def total_loss(losses: dict, outputs: dict, targets: dict) -> torch.Tensor:
    """The heads' weighted losses summed: ``losses`` as ``head_losses`` gives them, ``outputs``
    and ``targets`` by head (``targets["mask"]``, the true mask, also goes to the losses that
    weigh the object's own pixels)."""
    fg = targets["mask"]
    return sum(w * fn(outputs[h], targets[h], fg=fg) for h, (fn, w) in losses.items() if w)


def _loss(run: StageRun, mask_logits, depth_logits, batch) -> torch.Tensor:
    return total_loss(run.losses, {"mask": mask_logits, "depth": depth_logits}, batch)


def _train_step(run: StageRun, batch: dict, at: int):
    """Forward, loss, backward and optimizer step on one batch; the outputs and the loss."""
    with autocast(run.device, run.precision):
        mask_logits, depth_logits = (run.net or run.model)(batch["fg_bg"], batch["bg"])
    loss = _loss(run, mask_logits, depth_logits, batch)
    if any_rank(not torch.isfinite(loss), run.world):
        raise DivergenceError(
            f"loss became {loss.item()} in stage '{run.stage.name}' at "
            f"row {at}; try a lower learning rate"
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    run.schedule.batch()
    return mask_logits, depth_logits, loss


def _batches(run: StageRun, rows: np.ndarray, starts: range):
    """This rank's batches of the steps that start at ``starts``; asked for again after a
    validation within the epoch, which reads through the same loader (a stage's loader and
    its workers serve every pass)."""
    step = run.rows_per_step
    return run.data.batches(shard(rows[at : at + step], run.world) for at in starts)


@dataclass
class EpochOutcome:
    train: dict[str, float]  # the train metrics and loss over all ranks
    done: int  # rows done in the epoch, from its start
    deadline: bool  # the time budget ended the epoch early


def train_epoch(
    run: StageRun,
    rows: np.ndarray,
    progress: str,
    offset: int = 0,
    sums: dict | None = None,
    policy: StopPolicy | None = None,
    save: Callable[[int, dict], None] | None = None,
    where: str = "",
    report: Callable[[int], None] | None = None,
) -> EpochOutcome:
    """One pass over ``rows`` (shuffled, the same on every rank) from row ``offset`` on, with
    the metric ``sums`` of the rows before it. Each step takes the next ``batch_size x
    ranks`` rows and this rank trains on its share. After each step the ``policy`` may ask
    for a state (``save(rows_done, sums)``), a validation (``report(share)``, then training
    goes on in train mode), end the epoch (the deadline), or stop (``Interrupted``, after a
    state). A non-finite loss on any rank raises on every rank."""
    set_train_mode(run.model, run.frozen)
    policy = policy or StopPolicy(None, None, float("inf"), world=run.world)
    step, world = run.rows_per_step, run.world
    acc = MetricAccumulator()
    if sums:
        acc.sums = {k: v.clone() for k, v in sums.items()}
    starts = step_starts(len(rows), offset, step, world.size)
    size = input_size_of(run.model, run.data)
    bar = tqdm(
        starts, desc=progress, leave=False, unit="batch", disable=None if world.main else True
    )
    done, deadline = offset, False
    batches = _batches(run, rows, starts)
    for i, at in enumerate(bar):
        batch = to_device(next(batches), run.device, run.config.channels_last, size)
        if run.config.augment.enabled:
            batch = augment(batch, run.config.augment, run.generator)
        if len(batch["mask"]) == 0 and not world.distributed:
            continue  # every row of it was bad (skip_bad, streamed)
        mask_logits, depth_logits, loss = _train_step(run, batch, at)
        if (at // step) % TRAIN_METRICS_EVERY == 0:
            masks, depths = (torch.sigmoid(x.detach().float()) for x in (mask_logits, depth_logits))
            acc.update(masks, depths, batch["mask"], batch["depth"])
        acc.add_loss(loss.detach())
        bar.set_postfix(loss=f"{acc.mean_loss():.4f}")
        done = min(at + step, len(rows))
        verdict = policy.after_batch()
        if verdict.checkpoint and save is not None:
            save(done, sum_dicts(acc.sums, world))
            policy.checkpointed()
        if verdict.stop:
            raise Interrupted(verdict.stop, f"{where or progress} row {done}")
        if verdict.report and report is not None and not verdict.deadline:
            report(verdict.report)
            set_train_mode(run.model, run.frozen)
            batches = _batches(run, rows, starts[i + 1 :])
        if verdict.deadline:
            deadline = True
            break
    return EpochOutcome(MetricAccumulator.of(sum_dicts(acc.sums, world)).compute(), done, deadline)
