"""``fit``: train a model through the stages of an experiment.

``fit`` plans the run (``plan``), then trains stage by stage (``_Fit.stage``) and epoch by
epoch (``_Fit.epoch``, over ``epoch.train_epoch``). The resumable state is ``state``'s, and
when to stop early is ``stopping``'s. Every stage reads its data from a cache or a stream
(``fgdepth.data.modes``) through the same interface.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from fgdepth.config import Config
from fgdepth.data import Dataset, build_caches
from fgdepth.data.modes import decode_workers, open_stage_data
from fgdepth.engine.budget import TrainingBudget, reports_within
from fgdepth.engine.calibrate import fit_readout, reset_readout
from fgdepth.engine.callbacks import (
    Callback,
    CallbackList,
    EpochResult,
    FitResult,
    ProgressResult,
    StageResult,
)
from fgdepth.engine.distributed import current_world, device_for, share, sync_buffers
from fgdepth.engine.epoch import DivergenceError, StageRun, prepare_stage, train_epoch
from fgdepth.engine.evaluate import evaluate, sample_predictions
from fgdepth.engine.plan import RunPlan, check_against_data, plan_run, without_bad_rows
from fgdepth.engine.precision import training_precision
from fgdepth.engine.stages import freeze_groups, steps_per_epoch
from fgdepth.engine.state import Generators, Position, capture, position_of
from fgdepth.engine.stopping import Interrupted, StopPolicy
from fgdepth.engine.timing import training_rate
from fgdepth.models import build_model

__all__ = ["DivergenceError", "Interrupted", "check_against_data", "fit", "position_of"]

log = logging.getLogger("fgdepth")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    ``config.max_minutes`` ends training within a batch of the limit; the stage under way is
    then tested and the run ends as usual, with the reason in ``FitResult.stopped_early``.

    Under torchrun (a process group is initialised) every rank calls ``fit``: each trains on
    its share of every batch through DDP, metrics are summed over ranks, and only rank 0 runs
    the callbacks. A state saved with one number of ranks resumes with another.
    """
    return _Fit(config, dataset, callbacks, device, resume, stop).run()


class _Fit:
    """One call of ``fit``: the run's context, shared by its stages and epochs."""

    def __init__(self, config, dataset, callbacks, device, resume, stop):
        self.world = world = current_world()
        self.device = device or (device_for(world) if world.distributed else default_device())
        seed_everything(config.seed, config.deterministic)
        self.config, self.dataset, self.resume = config, dataset, resume
        self.cb = CallbackList(callbacks if world.main else [])
        self.model = _build_model(config, self.device)
        self.plan: RunPlan = plan_run(config, dataset, self.model.input_scale)
        # timed (where ``auto`` needs it) on rank 0 alone, so that every rank trains in the same
        # precision
        chosen = (
            training_precision(config, self.plan.stages, self.device, training_rate)
            if world.main
            else None
        )
        self.precision, self.precision_reason = share(chosen, world)
        self.splits = self.plan.splits
        # the epochs' rows: the same on every rank; augmentation: a stream per rank
        self.gens = Generators(
            np.random.default_rng(config.seed),
            torch.Generator(device=self.device).manual_seed(config.seed + world.rank),
        )
        self.pos = self._restore(resume) if resume is not None else Position()
        self.budget = self._fit_to_budget() if config.train_minutes else None
        self.policy = StopPolicy(
            stop, config.max_minutes, config.checkpoint_minutes, self.pos.elapsed, world
        )
        self.start = time.monotonic()
        self.skipped = {p.row for p in dataset.skipped if p.row is not None}
        self.results = [
            StageResult(i, self.plan.stages[i], test, [])
            for i, test in enumerate(self.pos.stage_tests)
        ]
        self.stopped: str | None = None
        self.budget_spent = False

    def _restore(self, resume: dict) -> Position:
        pos = position_of(resume)
        self.model.load_state_dict(resume["model"])
        self.gens.restore(resume["rng"])
        if not self.world.main:
            self.gens.augment.manual_seed(
                self.config.seed + self.world.rank + 7919 * (pos.step + 1)
            )
            pos.acc = None  # the state's sums are over all ranks: rank 0 carries them
        return pos

    def _fit_to_budget(self) -> TrainingBudget:
        """``train_minutes``: the stages' samples fitted to it by timed steps of this run's
        model (on rank 0, shared), or those a resumed state was fitted to."""
        rates: dict = {}

        def rate(stage) -> float:
            key = (stage.size, stage.batch_size, tuple(stage.freeze))
            if key not in rates:  # a few steps after warm-up: the first ones are slower
                rates[key] = training_rate(
                    self.config, stage, self.device, self.precision, steps=5, warmup=2
                )
            return rates[key]

        budget = TrainingBudget(self.config.train_minutes * 60, rate, self.config.batch_size)
        if self.pos.samples is None:
            stages = budget.plan(self.plan.stages) if self.world.main else None
            self.pos.samples = [s.samples for s in share(stages, self.world)]
        self._set_samples(self.pos.samples)
        return budget

    def _set_samples(self, samples: list[int]) -> None:
        self.plan.stages = [
            dataclasses.replace(s, samples=int(n))
            for s, n in zip(self.plan.stages, samples, strict=True)
        ]

    def _refit(self, si: int) -> None:
        """Before a later stage of a run with a training budget: its stages from here on
        fitted again, by the rate the run has trained at so far."""
        stages = None
        if self.world.main:
            stages = self.budget.refit(self.plan.stages, si, self.pos.train_seconds)
        self.pos.samples = [s.samples for s in share(stages, self.world)]
        self._set_samples(self.pos.samples)

    def run(self) -> FitResult:
        plan, config = self.plan, self.config
        info = {
            "precision": self.precision, "precision_reason": self.precision_reason,
            "device": str(self.device), "stages": plan.stages,
            "splits": {k: len(v) for k, v in self.splits.items()}, "split_rows": self.splits,
            "ranks": self.world.size,
            "resumed": self.resume is not None, "data": [d.to_dict() for d in plan.data],
        }  # fmt: skip
        self.cb.on_fit_start(config, self.model, info)
        # the cached stages' data decoded up front, in one pass over the files
        workers = decode_workers(config.data.workers)
        build_caches(self.dataset, plan.cached_keys(self.pos.stage), workers=workers,
                     skip_bad=config.data.skip_bad, rows=plan.rows)  # fmt: skip
        for si in range(self.pos.stage, len(plan.stages)):
            self.stage(si)
            if self.stopped or self.budget_spent:
                break
        elapsed = self.pos.elapsed + time.monotonic() - self.start
        result = FitResult(
            self.model, config, self.results, self.results[-1].test, elapsed,
            self.pos.trained / max(self.pos.train_seconds, 1e-9), self.stopped,
            sorted(self.skipped), self.pos.train_seconds,
        )  # fmt: skip
        self.cb.on_fit_end(result)
        return result

    def stage(self, si: int) -> None:
        stage, config = self.plan.stages[si], self.config
        data = open_stage_data(
            self.dataset, self.plan.data[si], config.data.workers, config.data.skip_bad,
            pin_memory=self.device.type == "cuda", rows=self.plan.rows,
        )  # fmt: skip
        # a state taken within the stage continues it; one taken at its start just starts it
        resuming = self.resume is not None and self.pos.within_stage(si)
        if self.budget is not None and si > 0 and not resuming:
            self._refit(si)
            stage = self.plan.stages[si]
        run = prepare_stage(
            config, stage, self.model, data, self.device, self.precision, self.gens.augment,
            not resuming, self.world,
        )  # fmt: skip
        if resuming:
            self._resume_optimizer(run)
        else:  # a line fitted before an earlier stage's test reads that stage's model
            reset_readout(self.model)
        self._note_bad(data, stage.size)
        self.cb.on_stage_start(si, stage)
        epochs = []
        first = self.pos.epoch if resuming else 0
        for epoch in range(first, stage.epochs):
            epochs.append(self.epoch(run, si, epoch, resuming and epoch == first))
            if self.stopped or self.budget_spent:
                break
        self._finish_stage(run, si, epochs)
        data.close()

    def epoch(self, run: StageRun, si: int, epoch: int, mid_epoch: bool) -> EpochResult:
        pos, stage = self.pos, run.stage
        if mid_epoch and pos.rows is not None:
            rows, first, sums = pos.rows, pos.offset, pos.acc
        else:
            rows, first, sums = self._epoch_rows(stage.samples), 0, None

        t0 = time.monotonic()
        paused = 0.0  # in validations within the epoch

        def save(done: int, sums: dict) -> None:  # with the training so far: seconds, rows
            so_far = (
                pos.train_seconds + time.monotonic() - t0 - paused,
                pos.trained + done - first,
            )
            self.cb.on_checkpoint(self._state(run, si, epoch, done, rows, sums, so_far))

        def report(share: int) -> None:
            nonlocal paused
            paused += self._report(run, si, epoch, share)

        label = f"{stage.name or si} {epoch + 1}/{stage.epochs}"
        where = f"stage {si} epoch {epoch}"
        within = self.budget is not None and reports_within(self.config) > 0
        if self.budget is not None:
            self.policy.train_for(self.budget.left(pos.train_seconds), self._report_times())
        out = train_epoch(  # ``report`` on every rank: the policy's agreed verdict decides
            run, rows, label, first, sums, self.policy, save, where, report if within else None
        )
        seconds = time.monotonic() - t0 - paused
        self.policy.train_for(math.inf)
        pos.train_seconds += seconds
        pos.trained += out.done - first
        lr = run.opt.param_groups[0]["lr"]
        run.schedule.epoch()
        sync_buffers(self.model, self.world)  # rank 0's BatchNorm statistics, as DDP's next forward
        self._note_bad(run.data, stage.size)
        val = self._evaluate(run.data, "val")
        speed = (out.done - first) / max(seconds, 1e-9)
        result = EpochResult(si, stage.name, epoch, pos.step, out.train, val, lr, seconds, speed)
        pos.step += 1
        self.cb.on_epoch_end(result, self.model)
        self.cb.on_checkpoint(self._state(run, si, epoch + 1))
        self.policy.checkpointed()
        if self.policy.deadline_passed():
            self.stopped = (
                f"max_minutes={self.config.max_minutes} reached in stage {si} epoch {epoch}"
            )
        elif out.deadline:  # the training budget: the run's planned end, unless stages remain
            last = si + 1 == len(self.plan.stages) and epoch + 1 == stage.epochs
            self.stopped = (
                None
                if last
                else (
                    f"train_minutes={self.config.train_minutes} spent in stage {si} epoch {epoch}"
                )
            )
            self.budget_spent = True
        return result

    def _report(self, run: StageRun, si: int, epoch: int, share: int) -> float:
        """The validation within training at ``share`` of its time, to the callbacks; the
        seconds it took, which the policy's clock and the epoch's time leave out."""
        start = time.monotonic()
        n = self.config.eval.val_reports
        sync_buffers(self.model, self.world)
        val = self._evaluate(run.data, "val")
        self.cb.on_progress(ProgressResult(si, epoch, share, n, val), self.model)
        took = time.monotonic() - start
        self.policy.paused(took)
        return took

    def _report_times(self) -> dict[int, float]:
        """Share -> in how many seconds of training from now its validation is due, for the
        validations within training still to come (``eval.val_reports`` equal shares of
        ``train_minutes``; the last share ends with the last epoch)."""
        n = reports_within(self.config)
        if self.budget is None or not n:
            return {}
        total, spent = self.budget.seconds, self.pos.train_seconds
        return {k: k * total / n - spent for k in range(1, n) if k * total / n > spent}

    def _epoch_rows(self, samples: int) -> np.ndarray:
        """An epoch's rows, shuffled: ``samples`` of the train split (fewer once bad rows are
        out), or, where a training budget asks for more, the split over and over."""
        train = self.splits["train"]
        if samples <= len(train) or self.budget is None:
            return self.gens.rows.choice(train, size=min(samples, len(train)), replace=False)
        rounds = -(-samples // len(train))
        return np.concatenate([self.gens.rows.permutation(train) for _ in range(rounds)])[:samples]

    def _finish_stage(self, run: StageRun, si: int, epochs: list[EpochResult]) -> None:
        last = self.stopped or self.budget_spent or si + 1 == len(self.plan.stages)
        test = {}
        if last or self.config.eval.stage_tests:
            self._fit_readout(run.data)
            test = self._evaluate(run.data, "test")
        images = []
        if self.world.main:
            images = sample_predictions(
                self.model, run.data, self.plan.picture_rows, self.device, self.precision
            )
        result = StageResult(si, run.stage, test, images, epochs)
        self.results.append(result)
        self.cb.on_stage_end(result, self.model)
        freeze_groups(self.model, [])
        if not (self.stopped or self.budget_spent) and si + 1 < len(self.plan.stages):
            self.cb.on_checkpoint(self._state(run, si + 1, 0))

    def _fit_readout(self, data) -> None:
        """Before a test: the contact readout's line (``contact_fit``) fitted on val. Only
        then, and set back at the next stage's start: no validation metric is read through a
        line fitted on the same rows."""
        config = self.config
        fit_readout(
            self.model, data, self.splits["val"], self.device, config.eval.batch_size,
            self.precision, config.channels_last,
        )  # fmt: skip

    def _evaluate(self, data, split: str) -> dict[str, float]:
        config = self.config
        return evaluate(
            self.model, data, self.splits[split], self.device, config.eval.batch_size,
            self.precision, config.channels_last, self.world,
        )  # fmt: skip

    def _note_bad(self, data, size: int) -> None:
        """Rows that could not be decoded (``skip_bad``) leave every split from now on."""
        new = [p for p in data.bad if p.row not in self.skipped]
        if not new:
            return
        log.warning(
            "%d row(s) could not be decoded at %d px and are left out (first: %s)",
            len(new), size, new[0],
        )  # fmt: skip
        self.splits = without_bad_rows(self.splits, new)
        self.skipped.update(int(p.row) for p in new)

    def _state(self, run, stage, epoch, offset=0, rows=None, sums=None, so_far=None) -> dict:
        """The resumable state; ``so_far``: within an epoch, the training seconds and rows
        up to its ``offset`` (a resumed epoch adds those after it)."""
        seconds, trained = so_far or (self.pos.train_seconds, self.pos.trained)
        pos = Position(
            stage, epoch, offset, self.pos.step, trained, seconds,
            rows=rows, acc=sums, stage_tests=[r.test for r in self.results],
            samples=self.pos.samples,
        )  # fmt: skip
        return capture(
            pos, model=self.model, optimizer=run.opt, schedule=run.schedule,
            generators=self.gens, world_size=self.world.size,
            elapsed=self.pos.elapsed + time.monotonic() - self.start,
        )  # fmt: skip

    def _resume_optimizer(self, run: StageRun) -> None:
        """Optimizer and schedule from the state. Saved with another number of ranks, the
        steps per epoch differ: the schedule is replayed to the same share of the stage."""
        resume, pos = self.resume, self.pos
        run.opt.load_state_dict(resume["optimizer"])
        if resume.get("world", 1) == run.world.size:
            run.schedule.load_state_dict(resume["schedule"])
            return
        step = run.rows_per_step
        batches = -(-pos.offset // step)
        run.schedule.advance(pos.epoch, batches, steps_per_epoch(run.stage.samples, step))


def _build_model(config: Config, device: torch.device) -> nn.Module:
    model = build_model(config.model.name, **config.model.options).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
