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
from fgdepth.data import (
    ArrayCache,
    Dataset,
    ScaledInputCache,
    build_caches,
    build_model_cache,
    model_cache_keys,
)
from fgdepth.data.augment import augment
from fgdepth.engine.callbacks import Callback, CallbackList, EpochResult, FitResult, StageResult
from fgdepth.engine.checkpoint import load_weights
from fgdepth.engine.distributed import (
    SINGLE,
    World,
    agree,
    any_rank,
    current_world,
    device_for,
    largest,
    shard,
    sum_dicts,
    sync_buffers,
    wrap,
)
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


STATE_FORMAT = "fgdepth-state-2"
SIGNALS = ("SIGINT", "SIGTERM")  # stop reasons every rank can name when one rank got them


def _stop_code(reason: str | None) -> float:
    if not reason:
        return 0.0
    return float(SIGNALS.index(reason) + 2) if reason in SIGNALS else 1.0


def _stop_reason(code: float, own: str | None) -> str:
    """The reason on every rank: its own, else the signal another rank received."""
    if own:
        return own
    return SIGNALS[int(code) - 2] if code >= 2 else "stop requested on another rank"


@dataclass
class Position:
    """Where training stands: what a resumable state holds besides the weights."""

    stage: int = 0
    epoch: int = 0  # epochs done in the stage
    offset: int = 0  # rows done in the epoch under way (0: none)
    step: int = 0  # epochs done in the run: the metric step
    trained: int = 0
    train_seconds: float = 0.0
    elapsed: float = 0.0  # wall seconds before this session
    rows: np.ndarray | None = None  # the rows of the epoch under way
    acc: dict | None = None  # its metric sums so far (over all ranks)
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
        raise ValueError(
            f"not a training state of this fgdepth version ({STATE_FORMAT}): start a new run"
        )
    rows = state.get("rows")
    return Position(
        state["stage"], state["epoch"], state["offset"], state["step"], state["trained"],
        state["train_seconds"], state["elapsed"], None if rows is None else rows.numpy(),
        state.get("acc"), list(state["stage_tests"]),
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


def without_bad_rows(
    splits: dict[str, np.ndarray], cache: ArrayCache | ScaledInputCache
) -> dict[str, np.ndarray]:
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
    cache: ArrayCache | ScaledInputCache
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


def _loss(run: StageRun, mask_logits, depth_logits, batch) -> torch.Tensor:
    outputs = {"mask": mask_logits, "depth": depth_logits}
    return sum(w * fn(outputs[head], batch[head]) for head, (fn, w) in run.losses.items() if w)


def train_epoch(
    run: StageRun,
    rows: np.ndarray,
    progress: str,
    offset: int = 0,
    sums: dict | None = None,
    after_batch=None,
) -> dict[str, float]:
    """One pass over ``rows`` (already shuffled; the same on every rank), from row ``offset``
    on, with the metric ``sums`` of the rows before it; returns the train metrics and loss.

    Each step takes the next ``batch_size x ranks`` rows and this rank trains on its share.
    ``after_batch(rows_done, acc)`` runs after every step (it may raise to stop). A
    non-finite loss on any rank raises on every rank."""
    model, config, world = run.model, run.config, run.world
    net = run.net or model
    set_train_mode(model, run.frozen)
    step = run.rows_per_step
    acc = MetricAccumulator()
    if sums:
        acc.sums = {k: v.clone() for k, v in sums.items()}
    # a last step with fewer rows than ranks would leave a rank without a batch: dropped
    end = (
        len(rows)
        if len(rows) % step == 0 or len(rows) % step >= world.size
        else (len(rows) - len(rows) % step)
    )
    bar = tqdm(
        range(offset, end, step), desc=progress, leave=False, unit="batch",
        disable=None if world.main else True,
    )  # fmt: skip
    for at in bar:
        mine = shard(rows[at : at + step], world)
        batch = to_device(run.cache.batch(mine), run.device, config.channels_last)
        if config.augment.enabled:
            batch = augment(batch, config.augment, run.generator)
        with autocast(run.device, run.precision):
            mask_logits, depth_logits = net(batch["fg_bg"], batch["bg"])
        loss = _loss(run, mask_logits, depth_logits, batch)
        if any_rank(not torch.isfinite(loss), world):
            raise DivergenceError(
                f"loss became {loss.item()} in stage '{run.stage.name}' at "
                f"row {at}; try a lower learning rate"
            )
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.schedule.batch()
        acc.update(
            torch.sigmoid(mask_logits.detach().float()),
            torch.sigmoid(depth_logits.detach().float()),
            batch["mask"],
            batch["depth"],
        )
        acc.add_loss(loss.detach())
        bar.set_postfix(loss=f"{acc.mean_loss():.4f}")
        if after_batch is not None:
            after_batch(min(at + step, len(rows)), acc)
    return MetricAccumulator.of(sum_dicts(acc.sums, world)).compute()


def prepare_stage(
    config, stage, model, dataset, device, precision, generator, transfer=True, world=SINGLE
) -> StageRun:
    """The decoded data at the stage's size, its start weights, frozen groups, optimizer and
    (on several ranks) the DDP wrapper, built after freezing so frozen groups stay out of it."""
    cache = build_model_cache(
        dataset, stage.size, model.input_scale,
        workers=config.data.workers, skip_bad=config.data.skip_bad,
    )  # fmt: skip
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
    losses = _head_losses(config, stage)
    unused = any(w == 0 for _, w in losses.values())  # a trainable head without a loss
    net = wrap(model, world, device, unused)
    return StageRun(
        model, cache, stage, config, losses, opt, schedule, device, precision, generator,
        frozen, world, net,
    )  # fmt: skip


def _resume_optimizer(run: StageRun, resume: dict, pos: Position) -> None:
    """Optimizer and schedule from a state. Saved with another number of ranks, the steps per
    epoch differ: the schedule is replayed to the same share of the stage instead."""
    run.opt.load_state_dict(resume["optimizer"])
    if resume.get("world", 1) == run.world.size:
        run.schedule.load_state_dict(resume["schedule"])
        return
    step = run.rows_per_step
    run.schedule.advance(
        pos.epoch, math.ceil(pos.offset / step), steps_per_epoch(run.stage.samples, step)
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

    Under torchrun (a process group is initialised) every rank calls ``fit``: each trains on
    its share of every batch through DDP, metrics are summed over ranks, and only rank 0 runs
    the callbacks. A state saved with one number of ranks resumes with another.
    """
    world = current_world()
    device = device or (device_for(world) if world.distributed else default_device())
    seed_everything(config.seed, config.deterministic)
    cb = CallbackList(callbacks if world.main else [])
    precision = resolve_precision(config.precision, device)
    splits = split_indices(config, dataset)
    stages = check_samples(config, scaled_stages(config), len(splits["train"]))
    model = build_model(config.model.name, **config.model.options).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(config.seed)  # the epochs' rows: the same on every rank
    # augmentation: a stream per rank (rank 0's is the single-process one)
    generator = torch.Generator(device=device).manual_seed(config.seed + world.rank)
    pos = Position()
    if resume is not None:
        pos = position_of(resume)
        model.load_state_dict(resume["model"])
        _restore_rng(resume["rng"], rng, generator)
        if not world.main:
            generator.manual_seed(config.seed + world.rank + 7919 * (pos.step + 1))
            pos.acc = None  # the state's sums are over all ranks: rank 0 carries them
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
        "ranks": world.size,
    }
    cb.on_fit_start(config, model, info)

    def evaluate_on(split: str, cache) -> dict[str, float]:
        return evaluate(
            model, cache, splits[split], device, config.eval.batch_size, precision,
            config.channels_last, world,
        )  # fmt: skip

    start_time = time.monotonic()
    # every stage's data decoded up front, in one pass over the files
    scale = model.input_scale
    keys = [key for s in stages[pos.stage :] for key in model_cache_keys(s.size, scale)]
    build_caches(dataset, keys, workers=config.data.workers, skip_bad=config.data.skip_bad)
    results = [StageResult(i, stages[i], test, []) for i, test in enumerate(pos.stage_tests)]
    stopped = None
    skipped = {p.row for p in dataset.skipped if p.row is not None}
    last_checkpoint = time.monotonic()
    for si in range(pos.stage, len(stages)):
        stage = stages[si]
        # a state taken within the stage continues it; one taken at its start just starts it
        resuming = resume is not None and si == pos.stage and (pos.epoch > 0 or pos.offset > 0)
        run = prepare_stage(
            config, stage, model, dataset, device, precision, generator, not resuming, world
        )
        if resuming:
            _resume_optimizer(run, resume, pos)
        if run.cache.bad:  # rows whose images could not be decoded (skip_bad): leave them out
            log.warning(
                "%d row(s) could not be decoded at %d px and are left out (first: %s)",
                len(run.cache.bad), stage.size, run.cache.bad[0],
            )  # fmt: skip
            splits = without_bad_rows(splits, run.cache)
            skipped.update(int(p.row) for p in run.cache.bad)
        cache, opt, schedule = run.cache, run.opt, run.schedule

        def state(epoch, offset=0, rows=None, sums=None, stage=si, run=run):
            opt, schedule = run.opt, run.schedule
            return {
                "format": STATE_FORMAT, "world": world.size,
                "stage": stage, "epoch": epoch, "offset": offset, "step": pos.step,
                "trained": pos.trained, "train_seconds": pos.train_seconds,
                "elapsed": pos.elapsed + time.monotonic() - start_time,
                "rows": None if rows is None else torch.from_numpy(np.asarray(rows)),
                "acc": None if sums is None else {k: v.cpu() for k, v in sums.items()},
                "stage_tests": [r.test for r in results],
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
                "rng": _rng_state(rng, generator),
            }  # fmt: skip

        cb.on_stage_start(si, stage)
        epochs = []
        for epoch in range(pos.epoch if resuming else 0, stage.epochs):
            mid_epoch = resuming and epoch == pos.epoch and pos.rows is not None
            if mid_epoch:
                rows, first, sums = pos.rows, pos.offset, pos.acc
            else:
                n_rows = min(stage.samples, len(splits["train"]))  # fewer once bad rows are out
                rows = rng.choice(splits["train"], size=n_rows, replace=False)
                first, sums = 0, None

            def after_batch(done, acc, epoch=epoch, rows=rows, si=si):
                nonlocal last_checkpoint
                reason = stop() if stop is not None else None
                due = time.monotonic() - last_checkpoint >= config.checkpoint_minutes * 60
                code, due = largest([_stop_code(reason), float(due)], world)
                stopping = code > 0
                if stopping or due:
                    cb.on_checkpoint(state(epoch, done, rows, sum_dicts(acc.sums, world)))
                    last_checkpoint = time.monotonic()
                if stopping:
                    where = f"stage {si} epoch {epoch} row {done}"
                    raise Interrupted(_stop_reason(code, reason), where)

            t0 = time.monotonic()
            label = f"{stage.name or si} {epoch + 1}/{stage.epochs}"
            train = train_epoch(run, rows, label, first, sums, after_batch)
            seconds = time.monotonic() - t0
            pos.train_seconds += seconds
            done = len(rows) - first
            pos.trained += done
            lr = opt.param_groups[0]["lr"]
            schedule.epoch()
            sync_buffers(model, world)  # rank 0's BatchNorm statistics, as DDP's next forward
            val = evaluate_on("val", cache)
            result = EpochResult(
                si, stage.name, epoch, pos.step, train, val, lr, seconds, done / max(seconds, 1e-9)
            )
            pos.step += 1
            epochs.append(result)
            cb.on_epoch_end(result, model)
            cb.on_checkpoint(state(epoch + 1))
            last_checkpoint = time.monotonic()
            if agree([deadline.passed()], world)[0]:
                stopped = f"max_minutes={config.max_minutes} reached in stage {si} epoch {epoch}"
                break
        test = evaluate_on("test", cache)
        images = (
            sample_predictions(model, cache, picture_rows, device, precision)
            if (world.main)
            else []
        )
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
