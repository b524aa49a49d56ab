"""Optuna studies over an experiment: the only package that imports optuna.

A study searches the experiment's ``tune`` block (learning rate per stage, resize schedule,
loss weights, batch size). Each trial is a normal training run, trained and tracked by the
application's ``Trainer``; the validation score is reported at each tenth of a trial's
training time (or every epoch) so that a pruner can stop hopeless trials early
(``TrialPruned``: to Optuna a pruned trial, to the engine a stop).
Running again with the same study name continues the study up to its trial count; the
default name holds a key of the data (``study_name``), so that each dataset and split has a
study of its own.

- ``space``: the search space, pruners and samplers by name, the pruning callback;
- ``storage``: storage URLs, lost-trial recovery, counting trials across workers;
- ``workers``: the processes that take trials;
- ``confirm``: the leading trials trained again with another seed, and the best of them;
- ``summary``: each trial's files, the table of trials, the plots, the best YAML.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from fgdepth.config import Config
from fgdepth.engine.stopping import Interrupted
from fgdepth.errors import UserError
from fgdepth.tuning.confirm import RECIPE, RERUN_OF, best_trial, runs_of
from fgdepth.tuning.space import (
    PRUNERS,
    SAMPLERS,
    PruningCallback,
    TrialPruned,
    apply_params,
    check_space,
    formula,
    objective_label,
    objective_values,
    objectives,
    recipe_params,
    schedule_label,
    score,
    suggest,
    trial_config,
    tuned_keys,
)
from fgdepth.tuning.storage import (
    DEFAULT_STORAGE,
    StudyData,
    check_data,
    counts,
    create_study,
    here,
    masked,
    open_storage,
    trials_to_go,
)
from fgdepth.tuning.summary import (
    artifact_dir,
    best_config,
    best_experiment,
    study_params,
    write_best,
    write_summary,
)
from fgdepth.tuning.workers import (
    Job,
    Trainer,
    TrialRun,
    confirm_leaders,
    run_worker,
    run_workers,
)

# heartbeats, stale-trial retry and the matplotlib plots are marked experimental in Optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = [
    "DEFAULT_STORAGE", "PRUNERS", "RECIPE", "RERUN_OF", "SAMPLERS", "Job", "NoTrialCompleted",
    "PruningCallback", "StudyData", "Trainer", "TrialPruned", "TrialRun", "TuneOutcome",
    "apply_params", "artifact_dir", "best_config", "best_experiment", "best_trial",
    "check_data", "check_space", "counts",
    "create_study", "formula", "masked", "objective_label", "objective_values", "objectives",
    "open_storage", "open_study", "recipe_params", "runs_of", "schedule_label", "score",
    "study_params",
    "suggest", "trial_config", "trials_to_go", "tune", "tuned_keys",
]  # fmt: skip


@dataclass
class TuneOutcome:
    study: optuna.Study
    parent_run_id: str
    counts: dict[str, int]
    best_value: Any
    best_params: dict[str, Any]
    best_trial: int
    best_yaml: Path
    files: dict[str, Path]
    exit_codes: list[int]
    config: Config | None = None  # the study's: every trial is it with the trial's values


def study_name(config: Config, name: str | None, data_key: str) -> str:
    """``name``, or EXPERIMENT-PROFILE-KEY: ``data_key`` (the application's) stands for the
    data and splits, so that tuning on other data starts a study of its own instead of
    learning from, and ranking against, trials on other rows."""
    return name or f"{config.name}-{config.profile}-{data_key}"


def default_out(name: str) -> Path:
    """Where study ``name`` writes its summary when no folder is given."""
    return Path("outputs") / "tune" / name


def open_study(
    config: Config,
    name: str,
    storage: str = "",
    heartbeat: int = 60,
    *,
    data: StudyData | None = None,
    force_data: bool = False,
    print_fn=print,
):
    """Check the search space, then create (or load) the study, and check (or record) the
    ``data`` it tunes on (see ``check_data``): before any run or worker."""
    check_space(config)
    study = create_study(config, name, storage or DEFAULT_STORAGE, heartbeat)
    note = check_data(study, data, force_data) if data is not None else None
    if note:
        print_fn(note)
    if not study.get_trials(deepcopy=False) and (own := recipe_params(config)):
        study.enqueue_trial(own, user_attrs={RECIPE: config.name})
        print_fn(f"trial 0 is the {config.name} recipe itself: {own}")
    return study


def tune(
    config: Config,
    experiment: str,
    trainer: Trainer,
    *,
    name: str,
    storage: str = "",
    workers: int = 1,
    out: Path | None = None,
    heartbeat: int = 60,
    print_fn=print,
    stop=None,
    deadline: float | None = None,
    confirm: int = 0,
    confirm_s: float = 0.0,
) -> TuneOutcome:
    """Run (or continue) study ``name`` over ``config``'s search space with ``workers``
    processes, each trial trained by ``trainer``; then write the summary and best.yaml.
    ``stop()`` names a signal this process got: the workers' trials stop (each FAIL, queued
    to run again) and Interrupted says so. ``deadline`` (``time.time()``): no trial starts
    after it. ``confirm``: then this many leading trials and the recipe are trained again
    in this process (``confirm``), in about ``confirm_s`` seconds after the deadline, which
    the application kept of the budget for them."""
    storage = storage or DEFAULT_STORAGE
    study = create_study(config, name, storage, heartbeat, trainer.end_lost_run)
    before = counts(study)
    if deadline is None:
        target = f"target {config.tune.trials}"
    else:
        target = f"trials start until {time.strftime('%H:%M:%S', time.localtime(deadline))}"
    print_fn(
        f"study '{name}' on {masked(storage)}: {sum(before.values())} trial(s) so far, "
        f"{target}; {workers} worker(s); parent run {trainer.parent_run_id}"
    )
    artifacts = artifact_dir(storage).resolve()
    print_fn(
        f"each trial's picture and metrics: {artifacts} (see them with: optuna-dashboard "
        f"{masked(storage)} --artifact-dir {artifacts})"
    )
    job = Job(
        config, storage, name, trainer, heartbeat, here(), 0, str(artifacts), deadline, workers,
        confirm_s if confirm else 0.0,
    )  # fmt: skip
    codes = run_workers(job, workers, stop)
    reason = stop() if stop is not None else None
    if reason:
        raise Interrupted(reason, f"the next batch of each of its {workers} workers")
    if any(codes):  # a worker died: finish its part here (its trial comes back as a retry)
        print_fn(f"worker exit codes {codes}: finishing the study in this process")
        run_worker(job)
    if confirm and not config.tune.objective.multi:
        confirm_leaders(job, confirm, print_fn)
    return _finish(study, config, experiment, trainer.parent_run_id, out, codes)


class NoTrialCompleted(UserError):
    """A study none of whose trials completed (each failed, diverged or was pruned): there is
    no best trial to summarise; one line for the user."""


def _finish(study, config, experiment, parent, out, codes) -> TuneOutcome:
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials()):
        states = ", ".join(f"{n} {state}" for state, n in counts(study).items() if n)
        raise NoTrialCompleted(
            f"study '{study.study_name}': no trial completed ({states or 'no trials'}); "
            "no best configuration"
        )
    out = Path(out or default_out(study.study_name))
    files = write_summary(study, config, out)
    best_yaml, trial, value = write_best(study, config, experiment, out)
    return TuneOutcome(
        study, parent, counts(study), value, dict(trial.params), trial.number, best_yaml, files,
        codes, config,
    )  # fmt: skip
