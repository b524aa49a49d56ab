"""``fit``: train a model through the stages of an experiment."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

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

log = logging.getLogger("fgdepth")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Training was asked to stop (a signal); the state at that batch went to the callbacks."""

    def __init__(self, reason: str, where: str):
        super().__init__(f"{reason}: stopped at {where}")
        self.reason = reason


STATE_FORMAT = "fgdepth-state-1"


@dataclass
class Position:
    """Where training stands: what a resumable state holds besides the weights."""

    stage: int = 0
    epoch: int = 0  # epochs done in the stage
    batch: int = 0  # batches done in the epoch under way (0: none)
    step: int = 0  # epochs done in the run: the metric step
    trained: int = 0
    train_seconds: float = 0.0
    elapsed: float = 0.0  # wall seconds before this session
    rows: np.ndarray | None = None  # the rows of the epoch under way
    acc: dict | None = None  # its metric sums so far
    loss_sum: float = 0.0
    stage_tests: list = field(default_factory=list)  # test metrics of the finished stages


def _rng_state(rng: np.random.Generator, generator: torch.Generator) -> dict:
    return {
        "numpy": rng.bit_generator.state,
        "torch": generator.get_state(),
        "torch_global": torch.get_rng_state(),
        "python": random.getstate(),
    }


def _restore_rng(state: dict, rng: np.random.Generator, generator: torch.Generator) -> None:
    rng.bit_generator.state = state["numpy"]
    generator.set_state(state["torch"])
    torch.set_rng_state(state["torch_global"])
    random.setstate(state["python"])


def position_of(state: dict) -> Position:
    """The position recorded in a resumable state (see ``fit``)."""
    if state.get("format") != STATE_FORMAT:
        raise ValueError("not an fgdepth training state")
    rows = state.get("rows")
    return Position(
        state["stage"], state["epoch"], state["batch"], state["step"], state["trained"],
        state["train_seconds"], state["elapsed"], None if rows is None else rows.numpy(),
        state.get("acc"), state.get("loss_sum", 0.0), list(state["stage_tests"]),
    )  # fmt: skip


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


def without_bad_rows(splits: dict[str, np.ndarray], cache: ArrayCache) -> dict[str, np.ndarray]:
    """The splits less the rows whose images could not be decoded (``skip_bad``)."""
    if not cache.bad:
        return splits
    bad = np.array([p.row for p in cache.bad], dtype=int)
    return {k: v[~np.isin(v, bad)] for k, v in splits.items()}


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


def check_against_data(config: Config, dataset: Dataset) -> None:
    """The checks that need the dataset (empty splits, more samples than the train split):
    raise ConfigError before any run is created."""
    splits = split_indices(config, dataset)
    check_samples(config, scaled_stages(config), len(splits["train"]))


class _Deadline:
    def __init__(self, minutes: float | None, spent: float = 0.0):
        self.end = time.monotonic() + minutes * 60 - spent if minutes else math.inf

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


def train_epoch(
    run: StageRun,
    rows: np.ndarray,
    progress: str,
    start: int = 0,
    sums: dict | None = None,
    loss_sum: float = 0.0,
    after_batch=None,
) -> dict[str, float]:
    """One pass over ``rows`` (already shuffled), from batch ``start`` on (with the metric
    ``sums`` and ``loss_sum`` of the batches before it); returns the train metrics and loss.
    ``after_batch(batches_done, acc, loss_sum)`` runs after every batch."""
    model, config = run.model, run.config
    set_train_mode(model, run.frozen)
    batch_size = run.stage.batch_size or config.batch_size
    acc, batches = MetricAccumulator(), start
    if sums:
        acc.sums = {k: v.clone() for k, v in sums.items()}
    starts = range(start * batch_size, len(rows), batch_size)
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
        if after_batch is not None:
            after_batch(batches, acc, loss_sum)
    metrics = acc.compute()
    metrics["loss"] = loss_sum / max(1, batches)
    return metrics


def prepare_stage(
    config, stage, model, dataset, device, precision, generator, transfer: bool = True
) -> StageRun:
    """The decoded data at the stage's size, its start weights, frozen groups and optimizer."""
    cache = build_cache(
        dataset, stage.size, workers=config.data.workers, skip_bad=config.data.skip_bad
    )
    if stage.init_from and transfer:
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
    *,
    resume: dict | None = None,
    stop=None,
) -> FitResult:
    """Train through every stage; evaluate on val each epoch and on test after each stage.

    Resumable states go to the callbacks' ``on_checkpoint``: after every epoch and stage, every
    ``config.checkpoint_minutes`` within an epoch, and when ``stop()`` returns a reason (then
    Interrupted is raised). ``resume`` continues from such a state: same weights, optimizer,
    schedule, random generators and rows, so the run goes on as if it had not stopped.
    """
    device = device or default_device()
    seed_everything(config.seed, config.deterministic)
    cb = CallbackList(callbacks)
    precision = resolve_precision(config.precision, device)
    splits = split_indices(config, dataset)
    stages = check_samples(config, scaled_stages(config), len(splits["train"]))
    model = build_model(config.model.name, **config.model.options).to(device)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    pos = Position()
    if resume is not None:
        pos = position_of(resume)
        model.load_state_dict(resume["model"])
        _restore_rng(resume["rng"], rng, generator)
    deadline = _Deadline(config.max_minutes, pos.elapsed)
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
        "resumed": resume is not None,
    }
    cb.on_fit_start(config, model, info)

    start_time = time.monotonic()
    results = [StageResult(i, stages[i], test, []) for i, test in enumerate(pos.stage_tests)]
    stopped = None
    skipped = {p.row for p in dataset.skipped if p.row is not None}
    last_checkpoint = time.monotonic()
    for si in range(pos.stage, len(stages)):
        stage = stages[si]
        # a state taken within the stage continues it; one taken at its start just starts it
        resuming = resume is not None and si == pos.stage and (pos.epoch > 0 or pos.batch > 0)
        run = prepare_stage(
            config, stage, model, dataset, device, precision, generator, transfer=not resuming
        )
        if resuming:
            run.opt.load_state_dict(resume["optimizer"])
            run.schedule.load_state_dict(resume["schedule"])
        if run.cache.bad:  # rows whose images could not be decoded (skip_bad): leave them out
            log.warning(
                "%d row(s) could not be decoded at %d px and are left out (first: %s)",
                len(run.cache.bad), stage.size, run.cache.bad[0],
            )  # fmt: skip
            splits = without_bad_rows(splits, run.cache)
            skipped.update(int(p.row) for p in run.cache.bad)
        cache, opt, schedule = run.cache, run.opt, run.schedule

        def state(epoch, batch=0, rows=None, acc=None, loss_sum=0.0, stage=si, run=run):
            opt, schedule = run.opt, run.schedule
            return {
                "format": STATE_FORMAT,
                "stage": stage, "epoch": epoch, "batch": batch, "step": pos.step,
                "trained": pos.trained, "train_seconds": pos.train_seconds,
                "elapsed": pos.elapsed + time.monotonic() - start_time,
                "rows": None if rows is None else torch.from_numpy(np.asarray(rows)),
                "acc": None if acc is None else {k: v.cpu() for k, v in acc.sums.items()},
                "loss_sum": loss_sum, "stage_tests": [r.test for r in results],
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                "rng": _rng_state(rng, generator),
            }  # fmt: skip

        cb.on_stage_start(si, stage)
        epochs = []
        for epoch in range(pos.epoch if resuming else 0, stage.epochs):
            mid_epoch = resuming and epoch == pos.epoch and pos.rows is not None
            if mid_epoch:
                rows, first, sums, loss_sum = pos.rows, pos.batch, pos.acc, pos.loss_sum
            else:
                n_rows = min(stage.samples, len(splits["train"]))  # fewer once bad rows are out
                rows = rng.choice(splits["train"], size=n_rows, replace=False)
                first, sums, loss_sum = 0, None, 0.0

            def after_batch(batches, acc, loss_sum, epoch=epoch, rows=rows, si=si):
                nonlocal last_checkpoint
                reason = stop() if stop is not None else None
                due = time.monotonic() - last_checkpoint >= config.checkpoint_minutes * 60
                if reason or due:
                    cb.on_checkpoint(state(epoch, batches, rows, acc, loss_sum))
                    last_checkpoint = time.monotonic()
                if reason:
                    raise Interrupted(reason, f"stage {si} epoch {epoch} batch {batches}")

            t0 = time.monotonic()
            label = f"{stage.name or si} {epoch + 1}/{stage.epochs}"
            train = train_epoch(run, rows, label, first, sums, loss_sum, after_batch)
            seconds = time.monotonic() - t0
            pos.train_seconds += seconds
            done = len(rows) - first * (stage.batch_size or config.batch_size)
            pos.trained += done
            lr = opt.param_groups[0]["lr"]
            schedule.epoch()
            val = evaluate(model, cache, splits["val"], device, config.eval.batch_size, precision)
            result = EpochResult(
                si, stage.name, epoch, pos.step, train, val, lr, seconds, done / max(seconds, 1e-9)
            )
            pos.step += 1
            epochs.append(result)
            cb.on_epoch_end(result, model)
            cb.on_checkpoint(state(epoch + 1))
            last_checkpoint = time.monotonic()
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
        if si + 1 < len(stages):
            cb.on_checkpoint(state(0, stage=si + 1))
    result = FitResult(
        model,
        config,
        results,
        results[-1].test,
        pos.elapsed + time.monotonic() - start_time,
        pos.trained / max(pos.train_seconds, 1e-9),
        stopped,
        sorted(skipped),
    )
    cb.on_fit_end(result)
    return result
