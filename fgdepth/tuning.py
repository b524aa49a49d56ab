"""Optuna studies over an experiment: the only module that imports optuna.

A study searches the experiment's ``tune`` block (learning rate per stage, resize schedule,
loss weights, batch size). Each trial is a normal training run, tracked as an MLflow child
run of one parent run per study; the validation score is reported every epoch so that a
pruner can stop hopeless trials early. Storage:

- ``sqlite:///optuna.db`` (the default): one machine; created by one process before any
  worker starts, since concurrent creation corrupts it;
- ``journal:PATH``: Optuna's journal file, for several processes on one machine;
- ``postgresql://user@host/db``: several machines. RDB storages (SQLite, PostgreSQL) keep a
  heartbeat per running trial: a worker that dies leaves its trial failed and retried.

Running again with the same study name continues the study up to its trial count.

Each completed trial uploads its last picture of the test samples and its metrics (JSON)
through Optuna's artifact API to a file-system store beside the study (``artifact_dir``), where
``optuna-dashboard --artifact-dir`` shows them on the trial's page.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStale
from optuna.trial import TrialState

from fgdepth.config import (
    Config,
    ConfigError,
    ObjectiveConfig,
    StageConfig,
    build,
)
from fgdepth.engine.callbacks import Callback, EpochResult
from fgdepth.engine.checks import check
from fgdepth.engine.fit import DivergenceError
from fgdepth.registry import Registry

log = logging.getLogger("fgdepth.tune")
# heartbeats, stale-trial retry and the matplotlib plots are marked experimental in Optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
DEFAULT_STORAGE = "sqlite:///optuna.db"
MAX_RETRY = 2  # a trial whose worker died is run again at most this often

PRUNERS = Registry("pruner")
SAMPLERS = Registry("sampler")


@PRUNERS.register("median")
def _median(cfg):
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_steps
    )


@PRUNERS.register("hyperband")
def _hyperband(cfg):
    return optuna.pruners.HyperbandPruner(reduction_factor=cfg.reduction_factor)


@PRUNERS.register("none")
def _no_pruning(cfg):
    return optuna.pruners.NopPruner()


@SAMPLERS.register("tpe")
def _tpe(seed):
    return optuna.samplers.TPESampler(seed=seed)


@SAMPLERS.register("random")
def _random(seed):
    return optuna.samplers.RandomSampler(seed=seed)


# --- the search space (pure: a trial's values -> a config) ----------------------------------


def schedule_label(schedule: list[dict]) -> str:
    """A schedule as one categorical choice: '64px/180000x3 > 96px/60000x2'."""
    parts = []
    for stage in schedule:
        label = f"{stage.get('size', '?')}px/{stage.get('samples', '?')}x{stage.get('epochs', '?')}"
        extra = sorted(set(stage) - {"size", "samples", "epochs", "name"})
        parts.append(label + (f"({','.join(extra)})" if extra else ""))
    return " > ".join(parts)


def _overlay(base: StageConfig, over: dict, where: str) -> StageConfig:
    merged = {**dataclasses.asdict(base), **over}
    if "name" not in over and "size" in over and base.name == f"s{base.size}":
        merged["name"] = f"s{over['size']}"
    return build(StageConfig, merged, where)


def apply_params(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with one trial's values put in, checked; raises ConfigError."""
    tune = config.tune
    stages = list(config.stages)
    if "schedule" in params:
        labels = [schedule_label(s) for s in tune.schedules]
        if params["schedule"] not in labels:
            raise ConfigError(f"schedule '{params['schedule']}' is not in tune.schedules")
        k = labels.index(params["schedule"])
        stages = [
            _overlay(config.stages[min(i, len(config.stages) - 1)], over, f"tune.schedules.{k}.{i}")
            for i, over in enumerate(tune.schedules[k])
        ]
    for i, stage in enumerate(stages):
        if f"lr_stage{i}" in params:
            stages[i] = dataclasses.replace(
                stage, optimizer={**stage.optimizer, "lr": float(params[f"lr_stage{i}"])}
            )
    loss_weights = dict(config.loss_weights)
    for head in tune.loss_weights:
        if f"loss_weight_{head}" in params:
            loss_weights[head] = float(params[f"loss_weight_{head}"])
    out = dataclasses.replace(
        config,
        stages=stages,
        loss_weights=loss_weights,
        batch_size=int(params.get("batch_size", config.batch_size)),
    )
    check(out)
    return out


def suggest(trial: optuna.Trial, config: Config) -> dict[str, Any]:
    """Draw one point of the experiment's search space."""
    tune = config.tune
    n_stages = len(config.stages)
    if tune.schedules:
        labels = [schedule_label(s) for s in tune.schedules]
        label = trial.suggest_categorical("schedule", labels)
        n_stages = len(tune.schedules[labels.index(label)])
    if tune.lr:
        for i in range(n_stages):
            trial.suggest_float(f"lr_stage{i}", tune.lr.low, tune.lr.high, log=tune.lr.log)
    for head, r in tune.loss_weights.items():
        trial.suggest_float(f"loss_weight_{head}", r.low, r.high, log=r.log)
    if tune.batch_size:
        trial.suggest_categorical("batch_size", tune.batch_size)
    return dict(trial.params)


def check_space(config: Config) -> None:
    """Every choice of the search space must make a valid config: fail before any work."""
    tune = config.tune
    if not (tune.lr or tune.schedules or tune.loss_weights or tune.batch_size):
        raise ConfigError(
            f"tune: experiment '{config.name}' has no search space "
            "(set tune.lr, tune.schedules, tune.loss_weights or tune.batch_size)"
        )
    if tune.trials < 1:
        raise ConfigError(f"tune.trials: must be at least 1, got {tune.trials}")
    ranges = [("lr", tune.lr), *((f"loss_weights.{h}", r) for h, r in tune.loss_weights.items())]
    for key, r in ranges:
        if r is not None and not (0 < r.low < r.high if r.log else r.low < r.high):
            raise ConfigError(f"tune.{key}: need 0 < low < high, got {r.low}..{r.high}")
    for name, registry, value in (
        ("pruner.name", PRUNERS, tune.pruner.name),
        ("sampler", SAMPLERS, tune.sampler),
    ):
        if value not in registry:
            valid = ", ".join(registry.names())
            raise ConfigError(f"tune.{name}: unknown '{value}'; valid: {valid}")
    for label in [schedule_label(s) for s in tune.schedules] or [None]:
        params: dict[str, Any] = {} if label is None else {"schedule": label}
        if tune.batch_size:
            params["batch_size"] = tune.batch_size[0]
        apply_params(config, params)


def score(metrics: dict[str, float], objective: ObjectiveConfig) -> float:
    """The single objective: higher is better."""
    return (
        objective.mask_iou_weight * metrics["mask_iou"]
        - objective.depth_rmse_weight * metrics["depth_rmse"]
    )


class PruningCallback(Callback):
    """Reports the validation score each epoch; stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, objective: ObjectiveConfig):
        self.trial = trial
        self.objective = objective

    def on_epoch_end(self, result: EpochResult, model) -> None:
        if self.objective.multi:
            return  # Optuna prunes single-objective studies only
        value = score(result.val, self.objective)
        self.trial.report(value, result.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {result.step}: validation score {value:.4f}")


# --- storage ---------------------------------------------------------------------------------


def masked(url: str) -> str:
    """A storage URL fit for logs, params and tags: the password replaced by ***."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: hide anything between ':' and '@' after the scheme
        scheme, rest = url.split("://", 1)
        if "@" in rest and ":" in rest.split("@", 1)[0]:
            user = rest.split("@", 1)[0].split(":", 1)[0]
            rest = f"{user}:***@{rest.split('@', 1)[1]}"
        return f"{scheme}://{rest}"


class _LostTrial(RetryStale):
    """A trial whose worker stopped beating: close its MLflow run, then run it again."""

    def __call__(self, study, trial) -> None:
        from fgdepth.tracking import end_lost_run

        attrs = trial.user_attrs
        if attrs.get("mlflow_run_id"):
            end_lost_run(
                attrs["mlflow_run_id"],
                f"worker {attrs.get('worker', '?')} lost (no heartbeat) in trial "
                f"{trial.number}; the trial is run again",
            )
        if attrs.get("mlflow_parent_run_id") and not _alive(attrs.get("coordinator", "")):
            end_lost_run(
                attrs["mlflow_parent_run_id"],
                f"tuning process {attrs.get('coordinator')} lost (killed) during the study",
            )
        super().__call__(study, trial)


def _here() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(process: str) -> bool:
    """Whether ``host:pid`` still runs; a process on another host is taken to be alive."""
    import psutil

    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def open_storage(url: str, heartbeat: int = 60):
    """An Optuna storage from ``url`` (see the module's docstring)."""
    url = os.path.expandvars(url or DEFAULT_STORAGE)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise ConfigError(
            f"storage '{masked(url)}': use sqlite:///FILE, journal:FILE or postgresql://..."
        )
    try:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat + 2,
            heartbeat_stale_trial_callback=_LostTrial(max_retry=MAX_RETRY),
        )
    except ImportError as exc:
        raise ConfigError(
            f"storage {masked(url)}: a database driver is missing ({exc}); "
            "for PostgreSQL: pip install 'fgdepth[postgres]'"
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: no password in their text
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"storage {masked(url)}: cannot open ({first})") from None


# --- counting trials across workers ----------------------------------------------------------


def superseded(trials) -> set[int]:
    """Failed trials that were retried (their worker died): the retry counts instead."""
    return {n for t in trials for n in RetryStale.retry_history(t)}


def trials_to_go(study: optuna.Study, target: int) -> int:
    """How many more trials to start so that ``target`` end (complete, pruned or failed)."""
    optuna.storages.fail_stale_trials(study)  # RDB: trials whose worker died -> failed, retried
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    ended = sum(t.state.is_finished() and t.number not in gone for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return target - ended - running


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    gone = superseded(trials)
    out = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in trials:
        if t.state.is_finished():
            key = "retried" if t.number in gone else t.state.name.lower()
            out[key] = out.get(key, 0) + 1
    return out


# --- one worker -------------------------------------------------------------------------------


@dataclass
class Job:
    """What a worker needs (picklable, for worker processes)."""

    config: Config
    storage: str
    study_name: str
    parent_run_id: str
    tracking: str
    heartbeat: int
    coordinator: str = ""  # host:pid of the `fgdepth tune` process
    worker: int = 0
    artifacts: str = ""  # the trials' files (see artifact_dir)


def _objective(job: Job, dataset) -> Callable[[optuna.Trial], Any]:
    from fgdepth.runner import train_tracked

    def objective(trial: optuna.Trial):
        lost_run = trial.user_attrs.get("mlflow_run_id")  # a retry inherits its lost run's attrs
        trial.set_user_attr("worker", _here())
        trial.set_user_attr("coordinator", job.coordinator)
        trial.set_user_attr("mlflow_parent_run_id", job.parent_run_id)
        params = suggest(trial, job.config)
        config = apply_params(job.config, params)
        tags = {
            "optuna.study": job.study_name,
            "optuna.trial": str(trial.number),
            **{f"optuna.param.{k}": str(v) for k, v in params.items()},
        }
        if lost_run:
            tags["optuna.retry_of_run"] = lost_run
        result, _ = train_tracked(
            config,
            dataset,
            tracking=job.tracking,
            run_name=f"{job.study_name} trial {trial.number}",
            entry_point="tune",
            callbacks=[PruningCallback(trial, config.tune.objective)],
            parent_run_id=job.parent_run_id,
            tags=tags,
            stopped=(optuna.TrialPruned,),
            on_run_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        val = result.stages[-1].epochs[-1].val if result.stages[-1].epochs else result.metrics
        for key in ("mask_iou", "depth_rmse", "fg_distance_error"):
            trial.set_user_attr(f"val_{key}", float(val[key]))
        if job.artifacts:
            upload_trial_files(trial, Path(job.artifacts), result, val)
        if config.tune.objective.multi:
            return val["mask_iou"], val["depth_rmse"]
        return score(val, config.tune.objective)

    return objective


def artifact_dir(storage_url: str) -> Path:
    """Where a study's trial files go: beside the SQLite or journal file (``optuna.db`` ->
    ``optuna-artifacts/``); for a database server, ``optuna-artifacts/`` here (give every
    machine the same shared folder)."""
    url = os.path.expandvars(storage_url or DEFAULT_STORAGE)
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix) and url[len(prefix) :] not in ("", ":memory:"):
            path = Path(url[len(prefix) :]).expanduser()
            return path.parent / f"{path.stem}-artifacts"
    return Path("optuna-artifacts")


def upload_trial_files(trial: optuna.Trial, folder: Path, result, val: dict) -> None:
    """The trial's last picture of the test samples and its metrics, as Optuna artifacts."""
    import json
    import tempfile

    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from fgdepth.tracking import picture

    folder.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(folder)
    with tempfile.TemporaryDirectory(prefix="fgdepth-trial-") as tmp:
        files = [Path(tmp) / "metrics.json"]
        metrics = {"validation": val, "test": result.metrics, "minutes": result.seconds / 60}
        files[0].write_text(json.dumps(metrics, indent=2))
        last = next((s for s in reversed(result.stages) if s.images), None)
        if last is not None:
            files.insert(0, Path(tmp) / f"samples_stage{last.stage}.png")
            picture(last.images).save(files[0])
        for path in files:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def _tag_state(study, trial) -> None:
    """The trial's final state on its MLflow run."""
    from fgdepth.tracking import set_tags

    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        set_tags(run_id, {"optuna.state": trial.state.name})


def run_worker(job: Job) -> None:
    """Run trials of the study until it has its trial count."""
    from fgdepth.runner import resolve_dataset
    from fgdepth.tracking import setup_tracking

    setup_tracking(job.tracking)
    dataset = resolve_dataset(job.config)
    storage = open_storage(job.storage, job.heartbeat)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=SAMPLERS.build(
            job.config.tune.sampler,
            seed=job.config.seed * 7919 + job.worker * 104729 + len(study_trials(storage, job)),
        ),
        pruner=PRUNERS.build(job.config.tune.pruner.name, cfg=job.config.tune.pruner),
    )
    objective = _objective(job, dataset)
    heartbeats = isinstance(storage, optuna.storages.RDBStorage)
    while True:
        if trials_to_go(study, job.config.tune.trials) > 0:
            study.optimize(objective, n_trials=1, catch=(DivergenceError,), callbacks=[_tag_state])
        elif heartbeats and _running(study):
            # other workers' trials: they end, or their worker died and they come back as
            # retries once their heartbeat is stale; either way wait and look again
            time.sleep(min(job.heartbeat, 5))
        else:
            return


def _running(study: optuna.Study) -> bool:
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def study_trials(storage, job: Job) -> list:
    """The study's trials so far (seeds each worker's sampler differently on a resume)."""
    study_id = storage.get_study_id_from_name(job.study_name)
    return storage.get_all_trials(study_id, deepcopy=False)


def _worker_process(job: Job) -> None:
    from fgdepth.runner import quiet_libraries

    quiet_libraries()
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


# --- the study --------------------------------------------------------------------------------


def create_study(config: Config, name: str, storage_url: str, heartbeat: int) -> optuna.Study:
    """Create (or load, to continue) the study: from this one process, before any worker."""
    tune = config.tune
    storage = open_storage(storage_url, heartbeat)
    directions = ["maximize", "minimize"] if tune.objective.multi else ["maximize"]
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=directions, load_if_exists=True
        )
    except ValueError as exc:
        raise ConfigError(f"study '{name}': {exc}") from None
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(
            f"study '{name}' exists with directions {[d.name.lower() for d in study.directions]}; "
            f"this objective needs {directions}: choose another --study name"
        )
    return study


def best_config(config: Config, study: optuna.Study) -> tuple[Config, optuna.trial.FrozenTrial]:
    """The experiment with the best trial's values (for two objectives: the Pareto trial
    with the best single score)."""
    if config.tune.objective.multi:
        front = study.best_trials
        trial = max(
            front,
            key=lambda t: score(
                {"mask_iou": t.values[0], "depth_rmse": t.values[1]}, config.tune.objective
            ),
        )
    else:
        trial = study.best_trial
    return apply_params(config, trial.params), trial


def best_experiment(config: Config, experiment_ref: str, trial_number: int, study: str) -> dict:
    """A ready-to-run experiment YAML (as a dict) holding the best trial's values."""
    defaults = StageConfig()
    stages = []
    for stage in config.stages:
        d = {
            k: v
            for k, v in dataclasses.asdict(stage).items()
            if v != getattr(defaults, k) or k in ("size", "samples", "epochs")
        }
        stages.append(d)
    return {
        "inherit": experiment_ref,
        "name": f"{config.name}_tuned",
        "description": f"best trial ({trial_number}) of study '{study}'",
        "loss_weights": dict(config.loss_weights),
        "batch_size": config.batch_size,
        "stages": stages,
    }


def experiment_ref(experiment: str) -> str:
    """How best.yaml names its parent: a shipped experiment by name, else the file's path."""
    from fgdepth.config import EXPERIMENTS_DIR, resolve_path

    path = resolve_path(experiment).resolve()
    return path.stem if path.parent == EXPERIMENTS_DIR.resolve() else str(path)


def write_summary(study: optuna.Study, config: Config, out: Path) -> dict[str, Path]:
    """trials.csv, trials.html and the plots; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    frame = study.trials_dataframe()
    frame.to_csv(out / "trials.csv", index=False)
    files["trials.csv"] = out / "trials.csv"
    (out / "trials.html").write_text(_html_table(frame, study.study_name))
    files["trials.html"] = out / "trials.html"
    for name, path in _plots(study, config, out).items():
        files[name] = path
    return files


def _html_table(frame, title: str) -> str:
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.5g}", border=0)
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>Study {title}</h1>{table}</body></html>\n"
    )


def _plots(study: optuna.Study, config: Config, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    multi = config.tune.objective.multi
    target = (lambda t: t.values[0]) if multi else None
    plots = {
        "optimization_history.png": lambda: vis.plot_optimization_history(
            study, target=target, target_name="mask_iou" if multi else "score"
        ),
        "param_importances.png": lambda: vis.plot_param_importances(
            study, target=target, target_name="mask_iou" if multi else "score"
        ),
        "intermediate_values.png": lambda: vis.plot_intermediate_values(study),
    }
    if multi:
        plots["pareto_front.png"] = lambda: vis.plot_pareto_front(
            study, target_names=["mask_iou", "depth_rmse"]
        )
    files = {}
    for name, make in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.warning("%s not drawn: %s", name, exc)
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files[name] = out / name
    return files


# --- the command ------------------------------------------------------------------------------


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
) -> TuneOutcome:
    """Run (or continue) a study over ``config``'s search space with ``workers`` processes,
    tracked as one MLflow parent run with a child run per trial."""
    from fgdepth import tracking as trk
    from fgdepth.runner import resolve_dataset

    check_space(config)  # every choice checked before any work
    storage = storage or DEFAULT_STORAGE
    name = study_name or f"{config.name}-{config.profile}"
    resolve_dataset(config)  # generated once here, before workers start
    settings = trk.setup_tracking(tracking)
    trk.experiment_id(experiment_name or trk.DEFAULT_EXPERIMENT, settings.get("artifact_root"))
    study = create_study(config, name, storage, heartbeat)
    tune_cfg = config.tune
    params = {
        "experiment": experiment,
        "study": name,
        "storage": masked(storage),
        "trials": tune_cfg.trials,
        "workers": workers,
        "profile": config.profile,
        "pruner": "none (two objectives)" if tune_cfg.objective.multi else tune_cfg.pruner.name,
        "sampler": tune_cfg.sampler,
        "objective": "mask_iou up, depth_rmse down"
        if tune_cfg.objective.multi
        else f"{tune_cfg.objective.mask_iou_weight} * mask_iou - "
        f"{tune_cfg.objective.depth_rmse_weight} * depth_rmse (validation)",
    }
    out = Path(out or Path("outputs") / "tune" / name)
    with trk.tracked_run(
        experiment_name or trk.DEFAULT_EXPERIMENT,
        f"tune {name}",
        settings.get("artifact_root"),
        tags={
            "fgdepth.kind": "tune",
            "optuna.study": name,
            "optuna.storage": masked(storage),
            "fgdepth.process": _here(),
        },
    ) as run:
        parent = run.info.run_id
        before = counts(study)
        print_fn(
            f"study '{name}' on {masked(storage)}: {sum(before.values())} trial(s) so far, "
            f"target {tune_cfg.trials}; {workers} worker(s); MLflow parent run {parent}"
        )
        artifacts = artifact_dir(storage).resolve()
        print_fn(
            f"each trial's picture and metrics: {artifacts} (see them with: optuna-dashboard "
            f"{masked(storage)} --artifact-dir {artifacts})"
        )
        job = Job(config, storage, name, parent, tracking, heartbeat, _here(), 0, str(artifacts))
        codes = run_workers(job, workers)
        if any(codes):  # a worker died: finish its part here (its trial comes back as a retry)
            print_fn(f"worker exit codes {codes}: finishing the study in this process")
            run_worker(job)
        outcome = _finish(study, config, experiment, parent, out, codes)
        trk.log_summary(
            parent,
            {**params, **{f"best.{k}": v for k, v in outcome.best_params.items()}},
            {
                **{f"trials_{k}": v for k, v in outcome.counts.items()},
                **_best_metrics(outcome.best_value, tune_cfg.objective.multi),
            },
            {**outcome.files, "best.yaml": outcome.best_yaml},
            {"optuna.best_trial": str(outcome.best_trial)},
        )
    return outcome


def _best_metrics(value, multi: bool) -> dict[str, float]:
    if multi:
        return {"best_mask_iou": value[0], "best_depth_rmse": value[1]}
    return {"best_value": value}


def _finish(study, config, experiment, parent, out, codes) -> TuneOutcome:
    finished = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not finished:
        raise RuntimeError(f"study '{study.study_name}': no trial completed")
    best_cfg, trial = best_config(config, study)
    files = write_summary(study, config, out)
    best_yaml = out / "best.yaml"
    doc = best_experiment(best_cfg, experiment_ref(experiment), trial.number, study.study_name)
    value = list(trial.values) if config.tune.objective.multi else trial.value
    header = (
        f"# Best trial {trial.number} of study '{study.study_name}' "
        f"(validation {'mask_iou, depth_rmse' if config.tune.objective.multi else 'score'} "
        f"{value}, profile {config.profile}).\n"
        f"# Run it: fgdepth train --config {best_yaml} --profile {config.profile}\n"
    )
    best_yaml.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return TuneOutcome(
        study, parent, counts(study), value, dict(trial.params), trial.number, best_yaml, files,
        codes,
    )  # fmt: skip
