"""``fgdepth tune``: an Optuna study (``fgdepth.tuning``) whose trials are tracked training runs,
children of one MLflow run per study."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fgdepth import tracking as trk
from fgdepth import tuning
from fgdepth.app.datasets import is_builtin, resolve_dataset
from fgdepth.app.signals import (
    StopSignals,
    handled_signals,
    installed_signals,
    stop_on_signals,
    stopped,
)
from fgdepth.app.study import Rates, expected_seconds
from fgdepth.app.train import RunSpec, go_on, train
from fgdepth.config import Config, ConfigError
from fgdepth.data import Dataset
from fgdepth.data.builtin import builtin_folder
from fgdepth.data.disk import check_writable
from fgdepth.engine.budget import recipe_seconds
from fgdepth.engine.checks import load_experiment
from fgdepth.engine.stopping import Interrupted, StopNow


@dataclass
class TrialTrainer:
    """Trains a study's trials as child runs of its parent run (picklable: a worker process
    gets its own copy)."""

    tracking: str
    experiment_name: str | None
    parent_run_id: str
    dataset: Dataset | None = field(default=None, repr=False)  # opened once per process
    signals: StopSignals | None = field(default=None, repr=False)  # this process's, if handled

    def setup(self, own_process: bool = False) -> None:
        trk.quiet_libraries()
        trk.setup_tracking(self.tracking)
        self.signals = installed_signals() or (stop_on_signals() if own_process else None)

    def stop_requested(self) -> str | None:
        return self.signals() if self.signals is not None else None

    def train(self, config: Config, trial: tuning.TrialRun):
        spec = RunSpec(
            config,
            self.tracking,
            self.experiment_name,
            run_name=trial.name,
            entry_point="tune",
            tags=trial.tags,
            parent_run_id=self.parent_run_id,
            callbacks=trial.callbacks,
            keep_state=False,
        )
        if self.dataset is None:  # trials differ in stages and weights, never in their data
            self.dataset = resolve_dataset(config)
        result, _ = train(spec, self.dataset, stop=self.signals, on_run_start=trial.note_run)
        return result

    def end_lost_run(self, run_id: str, reason: str) -> None:
        trk.end_lost_run(run_id, reason)

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        trk.set_tags(run_id, tags)


def study_data(config: Config) -> tuning.StudyData:
    """The data a study of ``config`` tunes on: a key of the dataset and of the rows its trials
    train and are scored on (the splits, the validation rows), and where the data is. The
    built-in data is known by its settings, which give byte-identical files wherever they are
    generated: machines that share a study agree on it, and it is keyed before it is made.
    Data on disk is known by its fingerprint (manifest, and each file's size and date)."""
    data = config.data
    if is_builtin(config):
        name = builtin_folder(data.synth).name
        identity, where = f"builtin {name}", f"the built-in data {name}"
    else:
        dataset = resolve_dataset(config)
        identity, where = dataset.fingerprint(), str(Path(dataset.path).resolve())
    # eval.max_samples is left out: it caps the test rows, which never choose a trial
    rows = (float(data.test), float(data.val), data.split_seed, data.val_samples)
    key = hashlib.sha256(f"{identity} {rows}".encode()).hexdigest()[:8]
    return tuning.StudyData(key, where)


def tune(
    config: Config,
    experiment: str,
    *,
    study_name: str | None = None,
    storage: str = "",
    workers: int = 1,
    tracking: str = "local",
    experiment_name: str | None = None,
    out: Path | None = None,
    heartbeat: int = 60,
    print_fn=print,
    stop=None,
    data: tuning.StudyData | None = None,
    force_data: bool = False,
) -> tuning.TuneOutcome:
    """Run (or continue) a study over ``config``'s search space with ``workers`` processes,
    tracked as one MLflow parent run with a child run per trial. ``stop()`` names a signal
    this process got: the trials under way and the parent run end KILLED (Interrupted).
    ``data``: ``study_data(config)``, if known; a study tuned on other data is refused unless
    ``force_data``."""
    for option, value in (("--workers", workers), ("--heartbeat", heartbeat)):
        if value < 1:
            raise ConfigError(f"{option}: {value} is not allowed (1 or more)")
    start = time.time()  # a time budget counts from the command's start
    data = data or study_data(config)
    name = tuning.study_name(config, study_name, data.key)
    storage = storage or tuning.DEFAULT_STORAGE
    # every choice checked before any work: --tracking (and its server), where the study
    # writes (the summary, the trials' files), the search space and the storage
    trk.setup_tracking(tracking)
    for folder in (out or tuning.default_out(name), tuning.artifact_dir(storage)):
        check_writable(folder, "dir")
    tuning.open_study(
        config, name, storage, heartbeat, data=data, force_data=force_data, print_fn=print_fn
    )
    resolve_dataset(config)  # generated once here, before workers start
    config, trial_s = equal_time(config)
    minutes = config.tune.minutes
    confirm = confirmations(config, trial_s)
    print_fn(expectation(config, experiment, trial_s, workers, confirm))
    reruns_s = rerun_seconds(confirm, trial_s)  # the budget's last part: no trial starts in it
    deadline = start + minutes * 60 - reruns_s if minutes else None
    settings = trk.setup_tracking(tracking)
    experiment_name = experiment_name or trk.DEFAULT_EXPERIMENT
    trk.experiment_id(experiment_name, settings.get("artifact_root"))
    tags = _parent_tags(config, name, storage, deadline and deadline + reruns_s)
    with trk.tracked_run(
        experiment_name, f"tune {name}", settings.get("artifact_root"), tags=tags,
        stopped=(Interrupted,),
    ) as run:  # fmt: skip
        trainer = TrialTrainer(tracking, experiment_name, run.info.run_id)
        outcome = tuning.tune(
            config, experiment, trainer, name=name, storage=storage, workers=workers, out=out,
            heartbeat=heartbeat, print_fn=print_fn, stop=stop, deadline=deadline,
            confirm=confirm, confirm_s=reruns_s,
        )  # fmt: skip
        params = tuning.study_params(config, experiment, name, storage, workers)
        _log_outcome(outcome, params, list(tuning.objectives(config.tune.objective)))
    return outcome


def _parent_tags(config: Config, name: str, storage: str, ends: float | None) -> dict:
    """``ends``: the time budget's end (``fgdepth.deadline``), reruns included."""
    tags = {
        "fgdepth.kind": "tune", "optuna.study": name, "optuna.storage": tuning.masked(storage),
        "fgdepth.process": tuning.here(),
        "fgdepth.objective": tuning.objective_label(config.tune.objective),
    }  # fmt: skip
    if ends is not None:  # local time, as Optuna dates its trials
        tags["fgdepth.deadline"] = datetime.datetime.fromtimestamp(ends).isoformat()
    return tags


def equal_time(config: Config) -> tuple[Config, float]:
    """``config`` with every trial to train for the same minutes (``train_minutes``): those
    the experiment's own recipe takes at its profile on this machine (timed steps), unless
    it sets them, so that the best trial is a better use of the same minutes, not more
    minutes; and the seconds a trial is expected to take with its evaluation."""
    rates = Rates(steps=3)
    minutes = config.train_minutes or round(recipe_seconds(config, rates) / 60, 3)
    config = replace(config, train_minutes=minutes)
    return config, expected_seconds(tuning.trial_config(config), rates)


def confirmations(config: Config, trial_s: float) -> int:
    """How many leading trials the study trains again, with the recipe, at its budget's end
    (``tune.confirm``): none without a time budget, with several objectives, or where those
    reruns (``trial_s`` each) would take over a third of the budget."""
    tune = config.tune
    if not tune.minutes or not tune.confirm or tune.objective.multi:
        return 0
    return tune.confirm if rerun_seconds(tune.confirm, trial_s) <= tune.minutes * 60 / 3 else 0


def rerun_seconds(confirm: int, trial_s: float) -> float:
    """The part of the budget the reruns of ``confirm`` leaders and the recipe take."""
    return (confirm + 1) * trial_s if confirm else 0.0


def expectation(
    config: Config, experiment: str, trial_s: float, workers: int, confirm: int = 0
) -> str:
    """What the study expects, before its first trial."""
    each = (
        f"each trial trains for {config.train_minutes:g} min (the {experiment} recipe's time at "
        f"`{config.profile}` on this machine) and takes about {trial_s / 60:.1f} min in all"
    )
    budget = config.tune.minutes
    if budget:
        reserve = rerun_seconds(confirm, trial_s)
        n = max(1, math.floor((budget * 60 - reserve) / trial_s * workers))
        again = (f"; then, in its last {reserve / 60:.1f} min, the {confirm} best and the "
                 "recipe trained again with another seed: the best is the best mean of two runs"
                 if confirm else "")  # fmt: skip
        return (f"{each}; budget {budget:g} min: about {n} trial(s) with {workers} worker(s), "
                f"more where the pruner stops some early{again}")  # fmt: skip
    total = config.tune.trials * trial_s / 60 / workers
    ends = time.strftime("%H:%M", time.localtime(time.time() + total * 60))
    return f"{each}; {config.tune.trials} trial(s): at most about {total:.0f} min (ends by {ends})"


def _log_outcome(outcome: tuning.TuneOutcome, params: dict, objectives: list[str]) -> None:
    if isinstance(outcome.best_value, list):  # a value per objective
        best = {f"best_{n}": v for n, v in zip(objectives, outcome.best_value, strict=True)}
    else:
        best = {"best_value": outcome.best_value}
    trk.log_summary(
        outcome.parent_run_id,
        {**params, **{f"best.{k}": v for k, v in outcome.best_params.items()}},
        {**{f"trials_{k}": v for k, v in outcome.counts.items()}, **best},
        {**outcome.files, "best.yaml": outcome.best_yaml},
        {"optuna.best_trial": str(outcome.best_trial)},
    )


def tune_again(argv, experiment: str, name: str) -> str:
    """The command that continues study ``name``: this one's words, with ``--study NAME``
    where they lack it (the default name follows the experiment, the profile and the data)."""
    words = ["fgdepth", *argv] if argv else ["fgdepth", "tune", "--experiment", experiment]
    if not any(w == "--study" or w.startswith("--study=") for w in words):
        words += ["--study", name]
    return shlex.join(words)


def tune_command(
    config: Config,
    experiment: str,
    train_best: str | None,
    argv=(),
    compare: bool = False,
    **options,
) -> int:
    """``fgdepth tune``: the study, what it found, with ``compare`` the best configuration
    and the experiment trained again and compared on the test split (``app.tuned``), and
    with ``train_best`` (a profile) a normal training run of the best configuration.
    ``argv``: the command's words, to say how to continue the study after a signal."""
    trk.quiet_libraries()
    data = study_data(config)  # the built-in data is made later, in tune(), once
    name = tuning.study_name(config, options.get("study_name"), data.key)
    with handled_signals() as stop:
        try:
            outcome = tune(config, experiment, stop=stop, data=data, **options)
        except (Interrupted, StopNow) as exc:
            again = tune_again(argv, experiment, name)
            return stopped(exc, f"its runs ended KILLED; study '{name}' continues (a stopped "
                                f"trial runs again) with: {again}")  # fmt: skip
        print(f"\ntrials: {outcome.counts}")
        names = ", ".join(outcome.study.metric_names or ["value"])
        print(f"best trial {outcome.best_trial}: {names} = {outcome.best_value}")
        for key, value in outcome.best_params.items():
            print(f"  {key}: {value}")
        print(f"best configuration: {outcome.best_yaml}")
        print(f"plots and the table of trials: {outcome.best_yaml.parent}")
        if compare:
            code = _compare(outcome, options, stop)
            if code:
                return code
        return _train_best(outcome, train_best, options, stop) if train_best else 0


def _compare(outcome: tuning.TuneOutcome, options: dict, stop) -> int:
    from fgdepth.app import tuned

    name = outcome.study.study_name
    if outcome.best_params == tuning.recipe_params(outcome.config):
        print(f"\nthe best trial ({outcome.best_trial}) is the {outcome.config.name} recipe "
              "itself: the comparison measures how far two runs of one recipe differ")  # fmt: skip
    try:
        done = tuned.compare(
            outcome.config, outcome.best_params, study=name, parent_run_id=outcome.parent_run_id,
            out=outcome.best_yaml.parent, tracking=options.get("tracking", "local"),
            experiment_name=options.get("experiment_name"), stop=stop,
        )  # fmt: skip
    except (Interrupted, StopNow) as exc:
        return stopped(exc, "the comparison's run ended KILLED; the study is complete: "
                            "run the same command again to compare")  # fmt: skip
    print(f"\nbest trial {outcome.best_trial} against the default, on the test split "
          f"({len(tuned.SEEDS)} seeds each):")  # fmt: skip
    print("\n".join(tuned.lines(done.rows)))
    print(f"table and picture: {done.files[tuned.CSV_NAME]}, {done.files[tuned.PICTURE_NAME]}")
    return 0


def _train_best(outcome: tuning.TuneOutcome, profile: str, options: dict, stop) -> int:
    print("\n== training the best configuration ==", flush=True)
    best = load_experiment(outcome.best_yaml, profile)
    spec = RunSpec(
        best, options.get("tracking", "local"), options.get("experiment_name"),
        run_name=f"{best.name} ({profile})", entry_point="tune",
        tags={"optuna.study": outcome.study.study_name, "fgdepth.tuned": "best"},
    )  # fmt: skip
    started: list[str] = []
    try:
        result, run_id = train(spec, stop=stop, on_run_start=started.append)
    except (Interrupted, StopNow) as exc:
        return stopped(exc, go_on(spec, started[0] if started else None))
    print(json.dumps({"run_id": run_id, "metrics": result.metrics}, indent=2))
    return 0
