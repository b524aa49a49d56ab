"""Workers: processes that take trials of one study until it has its trial count.

A trial is trained by the application's ``Trainer`` (its runs tracked wherever the
application tracks them); this module knows only Optuna. The trainer crosses into worker
processes, so it must pickle (a dataclass of plain fields does).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from fgdepth.config import Config
from fgdepth.engine import DivergenceError
from fgdepth.engine.callbacks import Callback, FitResult
from fgdepth.metrics import SCORE_TERMS
from fgdepth.tuning.space import (
    PRUNERS,
    SAMPLERS,
    PruningCallback,
    apply_params,
    objective_values,
    suggest,
)
from fgdepth.tuning.storage import here, open_storage, running, trials_to_go


@dataclass
class TrialRun:
    """One trial, as the trainer sees it."""

    number: int
    name: str  # e.g. "STUDY trial 3"
    tags: dict[str, str]  # the trial's study, number and values, for its tracked run
    callbacks: list[Callback]  # the pruning callback: it raises TrialPruned
    note_run: Callable[[str], None] = field(repr=False)  # give it the tracked run's id


class Trainer(Protocol):
    """What the application gives the study (picklable)."""

    parent_run_id: str  # the study's tracked run; trial runs are its children

    def setup(self) -> None:
        """Once per worker process, before its first trial."""

    def train(self, config: Config, trial: TrialRun) -> FitResult:
        """Train one trial's config; TrialPruned passes through."""

    def end_lost_run(self, run_id: str, reason: str) -> None:
        """Close the tracked run of a trial whose worker died."""

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags on a trial's tracked run (its final state)."""


@dataclass
class Job:
    """What a worker needs (picklable, for worker processes)."""

    config: Config
    storage: str
    study_name: str
    trainer: Any  # a Trainer
    heartbeat: int
    coordinator: str = ""  # host:pid of the `fgdepth tune` process
    worker: int = 0
    artifacts: str = ""  # the trials' files (see summary.artifact_dir)


def _trial_run(job: Job, trial: optuna.Trial, config: Config, params: dict) -> TrialRun:
    tags = {
        "optuna.study": job.study_name,
        "optuna.trial": str(trial.number),
        **{f"optuna.param.{k}": str(v) for k, v in params.items()},
    }
    lost_run = trial.user_attrs.get("mlflow_run_id")  # a retry inherits its lost run's attrs
    if lost_run:
        tags["optuna.retry_of_run"] = lost_run
    return TrialRun(
        trial.number,
        f"{job.study_name} trial {trial.number}",
        tags,
        [PruningCallback(trial, config.tune.objective)],
        lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
    )


def objective(job: Job) -> Callable[[optuna.Trial], Any]:
    """The function Optuna calls per trial: train, then the validation objective."""
    from fgdepth.tuning.summary import upload_trial_files

    def run(trial: optuna.Trial):
        trial.set_user_attr("worker", here())
        trial.set_user_attr("coordinator", job.coordinator)
        trial.set_user_attr("mlflow_parent_run_id", job.trainer.parent_run_id)
        params = suggest(trial, job.config)
        config = apply_params(job.config, params)
        result = job.trainer.train(config, _trial_run(job, trial, config, params))
        val = result.stages[-1].epochs[-1].val if result.stages[-1].epochs else result.metrics
        for key in SCORE_TERMS:
            trial.set_user_attr(f"val_{key}", float(val[key]))
        if job.artifacts:
            upload_trial_files(trial, job.artifacts, result, val)
        return objective_values(val, config.tune.objective)

    return run


def _load(job: Job, storage) -> optuna.Study:
    study_id = storage.get_study_id_from_name(job.study_name)
    so_far = len(storage.get_all_trials(study_id, deepcopy=False))  # reseeds on a resume
    tune = job.config.tune
    return optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=SAMPLERS.build(
            tune.sampler, seed=job.config.seed * 7919 + job.worker * 104729 + so_far
        ),
        pruner=PRUNERS.build(tune.pruner.name, cfg=tune.pruner),
    )


def run_worker(job: Job) -> None:
    """Run trials of the study until it has its trial count."""
    trainer = job.trainer
    trainer.setup()
    storage = open_storage(job.storage, job.heartbeat, trainer.end_lost_run)
    study = _load(job, storage)
    run = objective(job)

    def tag_state(study, trial) -> None:  # the trial's final state on its tracked run
        if trial.user_attrs.get("mlflow_run_id"):
            trainer.tag_run(trial.user_attrs["mlflow_run_id"], {"optuna.state": trial.state.name})

    heartbeats = isinstance(storage, optuna.storages.RDBStorage)
    while True:
        if trials_to_go(study, job.config.tune.trials) > 0:
            study.optimize(run, n_trials=1, catch=(DivergenceError,), callbacks=[tag_state])
        elif heartbeats and running(study):
            # other workers' trials: they end, or their worker died and they come back as
            # retries once their heartbeat is stale; either way wait and look again
            time.sleep(min(job.heartbeat, 5))
        else:
            return


def _worker_process(job: Job) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_worker(job)


def run_workers(job: Job, workers: int) -> list[int]:
    """``workers`` processes on one study (in this process when 1); their exit codes."""
    if workers <= 1:
        run_worker(job)
        return [0]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process, args=(dataclasses.replace(job, worker=i),))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return [p.exitcode for p in procs]
