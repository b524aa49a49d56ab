"""``fit``: train a model through the stages of an experiment."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fgdepth.config import Config, ConfigError, StageConfig, scaled_stages
from fgdepth.data import ArrayCache, Dataset, build_cache
from fgdepth.data.augment import augment
from fgdepth.engine.callbacks import Callback, CallbackList, EpochResult, FitResult, StageResult
from fgdepth.engine.checkpoint import load_weights
from fgdepth.engine.evaluate import evaluate, sample_predictions, to_device
from fgdepth.engine.precision import autocast, resolve_precision
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
from fgdepth.losses import HeadLoss
from fgdepth.metrics import MetricAccumulator
from fgdepth.models import build_model


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_indices(config: Config, dataset: Dataset) -> dict[str, np.ndarray]:
    """Train rows, the fixed validation rows and the test rows that evaluation uses."""
    val = dataset.indices("val")[: config.data.val_samples]
    test = dataset.indices("test")
    if config.eval.max_samples:
        test = test[: config.eval.max_samples]
    out = {"train": dataset.indices("train"), "val": val, "test": test}
    for name, rows in out.items():
        if len(rows) == 0:
            raise ConfigError(f"the {name} split of {dataset.path} is empty")
    return out


def check_samples(config: Config, stages: list[StageConfig], n_train: int) -> list[StageConfig]:
    """A stage cannot draw more samples than the train split has. Profile-scaled stages are
    capped at the split; stages as written are refused."""
    out = []
    for i, stage in enumerate(stages):
        if stage.samples > n_train:
            if config.scale.samples == 1.0:
                raise ConfigError(
                    f"stages.{i}.samples: {stage.samples} is more than the "
                    f"{n_train} samples of the train split"
                )
            stage = type(stage)(**{**stage.__dict__, "samples": n_train})
        out.append(stage)
    return out


class _Deadline:
    def __init__(self, minutes: float | None):
        self.end = time.monotonic() + minutes * 60 if minutes else math.inf

    def passed(self) -> bool:
        return time.monotonic() > self.end


def _head_losses(config: Config, stage: StageConfig):
    terms = stage.loss or config.loss
    weights = {**config.loss_weights, **(stage.loss_weights or {})}
    return {head: (HeadLoss(terms[head]), weights.get(head, 1.0)) for head in ("mask", "depth")}


@dataclass
class StageRun:
    """What one stage trains with: built once per stage, used by every epoch."""

    model: nn.Module
    cache: ArrayCache
    stage: StageConfig
    config: Config
    losses: dict
    opt: torch.optim.Optimizer
    schedule: Schedule
    device: torch.device
    precision: str
    generator: torch.Generator
    frozen: list[nn.Module]


def _loss(run: StageRun, mask_logits, depth_logits, batch) -> torch.Tensor:
    outputs = {"mask": mask_logits, "depth": depth_logits}
    return sum(w * fn(outputs[head], batch[head]) for head, (fn, w) in run.losses.items() if w)


def train_epoch(run: StageRun, rows: np.ndarray, progress: str) -> dict[str, float]:
    """One pass over ``rows`` (already shuffled); returns the train metrics and loss."""
    model, config = run.model, run.config
    set_train_mode(model, run.frozen)
    batch_size = run.stage.batch_size or config.batch_size
    acc, loss_sum, batches = MetricAccumulator(), 0.0, 0
    starts = range(0, len(rows), batch_size)
    bar = tqdm(starts, desc=progress, leave=False, unit="batch", disable=None)
    for start in bar:
        batch = to_device(run.cache.batch(rows[start : start + batch_size]), run.device)
        if config.augment.enabled:
            batch = augment(batch, config.augment, run.generator)
        with autocast(run.device, run.precision):
            mask_logits, depth_logits = model(batch["fg_bg"], batch["bg"])
        loss = _loss(run, mask_logits, depth_logits, batch)
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"loss became {loss.item()} in stage '{run.stage.name}' at "
                f"batch {batches}; try a lower learning rate"
            )
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.schedule.batch()
        batches += 1
        loss_sum += loss.item()
        acc.update(
            torch.sigmoid(mask_logits.detach().float()),
            torch.sigmoid(depth_logits.detach().float()),
            batch["mask"],
            batch["depth"],
        )
        bar.set_postfix(loss=f"{loss_sum / batches:.4f}")
    metrics = acc.compute()
    metrics["loss"] = loss_sum / max(1, batches)
    return metrics


def prepare_stage(config, stage, model, dataset, device, precision, generator) -> StageRun:
    """The decoded data at the stage's size, its start weights, frozen groups and optimizer."""
    cache = build_cache(
        dataset, stage.size, workers=config.data.workers, skip_bad=config.data.skip_bad
    )
    if stage.init_from:
        load_weights(model, stage.init_from)
    frozen = freeze_groups(model, stage.freeze)
    opt_cfg = stage_optimizer_config(config, stage)
    opt = make_optimizer(model, opt_cfg)
    steps = steps_per_epoch(stage.samples, stage.batch_size or config.batch_size)
    schedule = make_schedule(
        opt, stage_schedule_config(config, stage), opt_cfg.lr, steps, stage.epochs
    )
    return StageRun(
        model,
        cache,
        stage,
        config,
        _head_losses(config, stage),
        opt,
        schedule,
        device,
        precision,
        generator,
        frozen,
    )


def fit(
    config: Config,
    dataset: Dataset,
    callbacks: Iterable[Callback] = (),
    device: torch.device | None = None,
) -> FitResult:
    """Train through every stage; evaluate on val each epoch and on test after each stage."""
    device = device or default_device()
    seed_everything(config.seed, config.deterministic)
    cb = CallbackList(callbacks)
    precision = resolve_precision(config.precision, device)
    splits = split_indices(config, dataset)
    stages = check_samples(config, scaled_stages(config), len(splits["train"]))
    model = build_model(config.model.name, **config.model.options).to(device)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    deadline = _Deadline(config.max_minutes)
    # the picture's samples: spread over the test split (so over several backgrounds)
    picture_rows = splits["test"][
        np.linspace(0, len(splits["test"]) - 1, min(config.eval.images, len(splits["test"])))
        .round()
        .astype(int)
    ]
    info = {
        "precision": precision,
        "device": str(device),
        "stages": stages,
        "splits": {k: len(v) for k, v in splits.items()},
    }
    cb.on_fit_start(config, model, info)

    start_time, trained, train_seconds, step = time.monotonic(), 0, 0.0, 0
    results: list[StageResult] = []
    stopped = None
    skipped = {p.row for p in dataset.skipped if p.row is not None}
    for si, stage in enumerate(stages):
        run = prepare_stage(config, stage, model, dataset, device, precision, generator)
        if run.cache.bad:  # rows whose images could not be decoded (skip_bad): leave them out
            bad = np.array([p.row for p in run.cache.bad])
            splits = {k: v[~np.isin(v, bad)] for k, v in splits.items()}
            skipped.update(int(r) for r in bad)
        cache, opt, schedule = run.cache, run.opt, run.schedule
        cb.on_stage_start(si, stage)
        epochs = []
        for epoch in range(stage.epochs):
            n_rows = min(stage.samples, len(splits["train"]))  # fewer once bad rows are out
            rows = rng.choice(splits["train"], size=n_rows, replace=False)
            t0 = time.monotonic()
            train = train_epoch(run, rows, f"{stage.name or si} {epoch + 1}/{stage.epochs}")
            seconds = time.monotonic() - t0
            train_seconds += seconds
            trained += len(rows)
            lr = opt.param_groups[0]["lr"]
            schedule.epoch()
            val = evaluate(model, cache, splits["val"], device, config.eval.batch_size, precision)
            result = EpochResult(
                si, stage.name, epoch, step, train, val, lr, seconds, len(rows) / max(seconds, 1e-9)
            )
            step += 1
            epochs.append(result)
            cb.on_epoch_end(result, model)
            if deadline.passed():
                stopped = f"max_minutes={config.max_minutes} reached in stage {si} epoch {epoch}"
                break
        test = evaluate(model, cache, splits["test"], device, config.eval.batch_size, precision)
        images = sample_predictions(model, cache, picture_rows, device, precision)
        stage_result = StageResult(si, stage, test, images, epochs)
        results.append(stage_result)
        cb.on_stage_end(stage_result, model)
        freeze_groups(model, [])
        if stopped:
            break
    result = FitResult(
        model,
        config,
        results,
        results[-1].test,
        time.monotonic() - start_time,
        trained / max(train_seconds, 1e-9),
        stopped,
        sorted(skipped),
    )
    cb.on_fit_end(result)
    return result
