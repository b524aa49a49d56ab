"""Workers: processes that take trials of one study until it has its trial count.

A trial is trained by the application's ``Trainer`` (its runs tracked wherever the
application tracks them); this module knows only Optuna. The trainer crosses into worker
processes, so it must pickle (a dataclass of plain fields does).

A signal stops a worker as it stops training (``Interrupted``, or ``StopNow`` for a second
one): the trial under way ends FAIL and is queued to run again with the same values, so that
the same ``fgdepth tune`` command continues the study where it stopped. The process that
started the workers passes its signals on to them, and a worker whose starter is gone stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import TrialState

from fgdepth.config import Config
from fgdepth.engine import DivergenceError
from fgdepth.engine.budget import reports_within
from fgdepth.engine.callbacks import Callback, FitResult
from fgdepth.engine.stopping import SIGNALS, Interrupted, exit_code
from fgdepth.metrics import SCORE_TERMS
from fgdepth.parallel import WorkerGuard
from fgdepth.tuning.confirm import (
    RERUN_OF,
    SEED_OFFSET,
    best_trial,
    leaders,
    queue_reruns,
    queued,
    rerun_of,
    runs_of,
)
from fgdepth.tuning.space import (
    PRUNERS,
    SAMPLERS,
    PruningCallback,
    apply_params,
    objective_values,
    suggest,
    trial_config,
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

    def setup(self, own_process: bool = False) -> None:
        """Once per worker, before its first trial; ``own_process``: a process of its own,
        which then handles its signals itself."""

    def stop_requested(self) -> str | None:
        """The signal that asked this process to stop, if one came (checked between trials;
        the trial under way is stopped by its training)."""

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
    deadline: float | None = None  # no trial starts after it (``time.time()``), if a budget
    workers: int = 1  # processes on the study: for the time left
    after: float = 0.0  # seconds of the budget after ``deadline``: the leaders' reruns


def _trial_run(job: Job, trial: optuna.Trial, config: Config, params: dict) -> TrialRun:
    tags = {
        "optuna.study": job.study_name,
        "optuna.trial": str(trial.number),
        **{f"optuna.param.{k}": str(v) for k, v in params.items()},
    }
    lost_run = trial.user_attrs.get("mlflow_run_id")  # a retry inherits its lost run's attrs
    if lost_run:
        tags["optuna.retry_of_run"] = lost_run
    first = rerun_of(trial)
    name = f"{job.study_name} trial {trial.number}"
    if first is not None:  # a leader's second run: never pruned, nor stopped by the budget
        tags[RERUN_OF] = str(first)
        return TrialRun(trial.number, f"{name} (trial {first} again)", tags, [], _note(trial))
    pruning = PruningCallback(
        trial, config.tune.objective, job.deadline, reports_within(config) > 0
    )
    return TrialRun(trial.number, name, tags, [pruning], _note(trial))


def _note(trial: optuna.Trial) -> Callable[[str], None]:
    return lambda run_id: trial.set_user_attr("mlflow_run_id", run_id)


class TrialFailed(RuntimeError):
    """A trial's training raised (not a stop, not a divergence): the trial fails, the study
    goes on, unless ``MAX_FAILED_IN_A_ROW`` of a worker's trials fail one after another."""


MAX_FAILED_IN_A_ROW = 3  # then the cause is not the values tried: no more trials are started


def objective(job: Job, numbers: list[int] | None = None) -> Callable[[optuna.Trial], Any]:
    """The function Optuna calls per trial: train, then the validation objective;
    ``numbers`` gets each trial's number as it starts."""
    from fgdepth.tuning.summary import upload_trial_files

    def run(trial: optuna.Trial):
        if numbers is not None:
            numbers.append(trial.number)
        trial.set_user_attr("worker", here())
        trial.set_user_attr("coordinator", job.coordinator)
        trial.set_user_attr("mlflow_parent_run_id", job.trainer.parent_run_id)
        params = suggest(trial, job.config)
        config = apply_params(job.config, params)
        if rerun_of(trial) is None:
            config = trial_config(config)
        else:  # another seed; no validations within training: nothing prunes it
            config = dataclasses.replace(config, seed=config.seed + SEED_OFFSET)
        try:
            result = job.trainer.train(config, _trial_run(job, trial, config, params))
        except (Interrupted, DivergenceError, optuna.TrialPruned):
            raise
        except Exception as exc:  # this trial's values, a bug they reach: the trial fails
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from exc
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


class _NoTracebackForStops(logging.Filter):
    """Optuna logs a trial that a signal stopped as failed, with a traceback: the line stays
    (the trial did fail), the traceback goes (a stop is not a bug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], Interrupted | KeyboardInterrupt):
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_NoTracebackForStops())


def _retry_stopped(study: optuna.Study, number: int, trainer) -> None:
    """Trial ``number``, which a signal stopped: FAIL (Optuna's doing, or here when the signal
    came before Optuna could record it), and queued to run again with the same values."""
    try:
        trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if trial.state == TrialState.RUNNING:
            study.tell(number, state=TrialState.FAIL)
            trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        if trial.state != TrialState.FAIL:
            return
        Retry(max_retry=None)(study, trial)  # as for a lost worker: retry_history
        if trial.user_attrs.get("mlflow_run_id"):
            trainer.tag_run(trial.user_attrs["mlflow_run_id"], {"optuna.state": "FAIL"})
    except Exception as exc:  # the stop goes on; the study's next run finds the trial stale
        logging.getLogger("fgdepth").warning("trial %d: not queued again (%s)", number, exc)


def run_worker(job: Job, own_process: bool = False) -> None:
    """Run trials of the study until it has its trial count, or until a signal stops this
    process (Interrupted, StopNow): the trial under way then ends FAIL, queued to run again."""
    trainer = job.trainer
    trainer.setup(own_process)
    storage = open_storage(job.storage, job.heartbeat, trainer.end_lost_run)
    study = _load(job, storage)
    numbers: list[int] = []
    run = objective(job, numbers)

    heartbeats = isinstance(storage, optuna.storages.RDBStorage)
    # with a time budget, trials start until it is spent, however many that makes
    target = job.config.tune.trials if job.deadline is None else math.inf
    callbacks = [_tag_state(trainer), progress(job, target)]
    failed = 0  # this worker's trials that failed one after another
    while True:
        reason = trainer.stop_requested()
        if reason:
            raise Interrupted(reason, "the start of a trial")
        if job.deadline is not None and time.time() >= job.deadline:
            return
        if trials_to_go(study, target) > 0:
            _one_trial(study, run, numbers, callbacks, trainer)
            failed = _failed_in_a_row(study, failed, numbers)
            if failed >= MAX_FAILED_IN_A_ROW:
                logging.getLogger("fgdepth").warning(
                    "%d trials in a row failed: no more trials are started (see the trials' "
                    "errors above)", failed,
                )  # fmt: skip
                return
        elif heartbeats and running(study):
            # other workers' trials: they end, or their worker died and they come back as
            # retries once their heartbeat is stale; either way wait and look again
            time.sleep(min(job.heartbeat, 5))
        else:
            return


def _tag_state(trainer) -> Callable[[optuna.Study, Any], None]:
    def tag(study, trial) -> None:  # the trial's final state on its tracked run
        if trial.user_attrs.get("mlflow_run_id"):
            trainer.tag_run(trial.user_attrs["mlflow_run_id"], {"optuna.state": trial.state.name})

    return tag


def _one_trial(study, run, numbers: list[int], callbacks, trainer) -> None:
    """The study's next trial (a queued one first); one a signal stops is queued again."""
    numbers.clear()
    try:
        study.optimize(run, n_trials=1, catch=(DivergenceError, TrialFailed), callbacks=callbacks)
    except (Interrupted, KeyboardInterrupt):
        if numbers:
            _retry_stopped(study, numbers[-1], trainer)
        raise


def confirm_leaders(job: Job, n: int, print_fn=print) -> None:
    """Train the study's ``n`` leading trials and its recipe once more, in this process, with
    another seed (``confirm``); a line before and one after each rerun."""
    trainer = job.trainer
    trainer.setup()
    study = _load(job, open_storage(job.storage, job.heartbeat, trainer.end_lost_run))
    chosen = leaders(study, n)
    if not chosen:
        return
    queue_reruns(study, chosen)
    listed = ", ".join(f"{t.number} ({t.value:.4f})" for t in chosen)
    print_fn(f"trained again with seed {job.config.seed + SEED_OFFSET}, the best being the best "
             f"mean of two runs: trials {listed}")  # fmt: skip
    sys.stdout.flush()  # before the reruns' training output, in a pipe too
    numbers: list[int] = []
    run = objective(job, numbers)
    callbacks = [_tag_state(trainer), _rerun_line(len(chosen))]
    # until none of them waits: a trial queued before them (a lost one's retry) goes first
    while queued(study, {t.number for t in chosen}):
        reason = trainer.stop_requested()
        if reason:
            raise Interrupted(reason, "the start of a trial")
        _one_trial(study, run, numbers, callbacks, trainer)


def _rerun_line(total: int) -> Callable[[optuna.Study, Any], None]:
    done: list[int] = []

    def line(study: optuna.Study, trial) -> None:
        done.append(trial.number)
        first = rerun_of(trial)
        values = runs_of(study).get(first, [])
        said = (f"{trial.values[0]:.4f}, mean of its runs {statistics.fmean(values):.4f}"
                if trial.values and len(values) > 1 else trial.state.name.lower())  # fmt: skip
        print(f"trial {first} again ({len(done)}/{total}): {said}; best {_best(study)}",
              flush=True)  # fmt: skip

    return line


def _failed_in_a_row(study: optuna.Study, failed: int, numbers: list[int]) -> int:
    """``failed`` one more if this worker's last trial failed, else 0."""
    if not numbers:
        return failed
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == numbers[-1])
    return failed + 1 if trial.state == TrialState.FAIL else 0


def progress(job: Job, target: float) -> Callable[[optuna.Study, Any], None]:
    """After each trial, one line on the console (flushed, so that it shows when piped): how
    the trial ended, the best so far, and the time left: to the budget, or the trials to go
    at the mean time of those that ended."""

    def line(study: optuna.Study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        ended = [t for t in trials if t.state.is_finished() and t.datetime_complete]
        minutes = [(t.datetime_complete - t.datetime_start).total_seconds() / 60 for t in ended]
        took = minutes[-1] if ended and ended[-1].number == trial.number else math.nan
        value = f" {trial.values[0]:.4f}" if trial.values and len(trial.values) == 1 else ""
        if job.deadline is not None:  # the budget's end: the reruns' part included
            left = max(job.deadline + job.after - time.time(), 0.0) / 60
        else:
            to_go = max(trials_to_go(study, target), 0)
            left = to_go * (sum(minutes) / len(minutes)) / job.workers if minutes else 0.0
        ends = time.strftime("%H:%M", time.localtime(time.time() + left * 60))
        print(
            f"trial {trial.number} {trial.state.name.lower()}{value} after {took:.1f} min; "
            f"{len(ended)} ended, best {_best(study)}; about {left:.1f} min left "
            f"(ends about {ends})",
            flush=True,
        )

    return line


def _best(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    try:
        trial, value = best_trial(study)
    except ValueError:  # none completed yet
        return "none yet"
    return f"{value:.4f} (trial {trial.number})"


def _worker_process(job: Job) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    WorkerGuard(os.getppid())()  # its starter gone, a worker stops as on SIGTERM
    try:
        run_worker(job, own_process=True)
    except (Interrupted, KeyboardInterrupt) as exc:  # said by the starter, which passed it on
        sys.exit(exit_code(getattr(exc, "reason", "SIGINT")))


def _pass_on(procs, reason: str) -> None:
    for p in procs:
        if p.is_alive() and reason in SIGNALS:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.Signals[reason])


def _wait_for(procs, stop) -> None:
    """Until every worker ended; the first signal this process gets goes on to each."""
    passed = False
    while alive := [p for p in procs if p.is_alive()]:
        wait([p.sentinel for p in alive], timeout=0.5)
        reason = stop() if stop is not None else None
        if reason and not passed:
            _pass_on(alive, reason)
            passed = True
    for p in procs:
        p.join()


def run_workers(job: Job, workers: int, stop=None) -> list[int]:
    """``workers`` processes on one study (in this process when 1); their exit codes.
    ``stop()`` names the signal this process got, if any: each worker gets it too."""
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
    try:
        _wait_for(procs, stop)
    except BaseException as exc:  # a second signal (StopNow), or a failure here: the workers
        _pass_on(procs, getattr(exc, "reason", "SIGTERM"))  # stop, at once for a second one
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
        raise
    return [p.exitcode for p in procs]
