"""What a study leaves: each trial's picture and metrics (Optuna artifacts), the table of
trials, the plots, and the best configuration as a ready-to-run experiment YAML."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import optuna
import yaml

from fgdepth.config import Config, ObjectiveConfig, StageConfig
from fgdepth.data.preview import prediction_grid
from fgdepth.tuning.confirm import best_trial, runs_of
from fgdepth.tuning.space import (
    apply_params,
    formula,
    objective_label,
    objectives,
    score,
    tuned_keys,
)
from fgdepth.tuning.storage import DEFAULT_STORAGE

log = logging.getLogger("fgdepth.tune")


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


def upload_trial_files(trial: optuna.Trial, folder: str | Path, result, val: dict) -> None:
    """The trial's last picture of the test samples and its metrics, as Optuna artifacts."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(folder)
    with tempfile.TemporaryDirectory(prefix="fgdepth-trial-") as tmp:
        files = [Path(tmp) / "metrics.json"]
        metrics = {"validation": val, "test": result.metrics, "minutes": result.seconds / 60}
        files[0].write_text(json.dumps(metrics, indent=2))
        last = next((s for s in reversed(result.stages) if s.images), None)
        if last is not None:
            files.insert(0, Path(tmp) / f"samples_stage{last.stage}.png")
            prediction_grid([("trial", last.images)]).save(files[0])
        for path in files:
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def best_config(config: Config, study: optuna.Study) -> tuple[Config, optuna.trial.FrozenTrial]:
    """The experiment with the best trial's values (``confirm.best_trial``: where leaders were
    trained again, the best mean of their runs; for several objectives: the Pareto trial with
    the best single score)."""
    objective = config.tune.objective
    if objective.multi:
        names = list(objectives(objective))

        def weighted(t: optuna.trial.FrozenTrial) -> float:
            return score(dict(zip(names, t.values, strict=True)), objective)

        trial = max(study.best_trials, key=weighted)
    else:
        trial, _ = best_trial(study)
    return apply_params(config, trial.params), trial


def best_experiment(
    tuned: Config, params: dict, experiment_ref: str, *, trial: int, study: str
) -> dict:
    """A ready-to-run experiment YAML (as a dict): the experiment ``experiment_ref`` as written
    with a trial's values, ``tuned`` being the study's config with ``params`` applied. Only the
    keys that ``params`` set are written (stages, loss weights, batch size), at the original
    scale: a profile scales stages through ``scale`` alone, so ``config.stages`` are as written,
    and a profile's own values (its batch size, data, evaluation) are left to the profile that
    a later run names. ``--profile P`` of the result then trains what ``--profile P`` of the
    experiment would, with the tuned values."""
    doc = {
        "inherit": experiment_ref,
        "name": f"{tuned.name}_tuned",
        "description": f"best trial ({trial}) of study '{study}'",
    }
    keys = tuned_keys(params)
    if "loss_weights" in keys:
        doc["loss_weights"] = dict(tuned.loss_weights)
    if "batch_size" in keys:
        doc["batch_size"] = tuned.batch_size
    if "stages" in keys:
        defaults = StageConfig()
        doc["stages"] = [
            {
                k: v
                for k, v in dataclasses.asdict(stage).items()
                if v != getattr(defaults, k) or k in ("size", "samples", "epochs")
            }
            for stage in tuned.stages
        ]
    return doc


def experiment_ref(experiment: str) -> str:
    """How best.yaml names its parent: a shipped experiment by name, else the file's path."""
    from fgdepth.config import EXPERIMENTS_DIR, resolve_path

    path = resolve_path(experiment).resolve()
    return path.stem if path.parent == EXPERIMENTS_DIR.resolve() else str(path)


def write_best(study: optuna.Study, config: Config, experiment: str, out: Path):
    """``out/best.yaml``; returns (its path, the best trial, its value or values)."""
    best_cfg, trial = best_config(config, study)
    best_yaml = out / "best.yaml"
    doc = best_experiment(
        best_cfg, trial.params, experiment_ref(experiment), trial=trial.number,
        study=study.study_name,
    )  # fmt: skip
    objective = config.tune.objective
    value = list(trial.values) if objective.multi else best_trial(study)[1]
    what = ", ".join(objectives(objective)) if objective.multi else f"score {formula(objective)} ="
    runs = len(runs_of(study).get(trial.number, [])) if not objective.multi else 1
    if runs > 1:
        what = f"mean of {runs} runs' {what}"
    header = (
        f"# Best trial {trial.number} of study '{study.study_name}' "
        f"(validation {what} {value}, profile {config.profile}).\n"
        "# Its tuned values over the experiment as written, at the original scale: a profile\n"
        "# scales them as it scales the experiment.\n"
        f"# Run it: fgdepth train --config {best_yaml} --profile {config.profile}\n"
    )
    best_yaml.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return best_yaml, trial, value


def write_summary(study: optuna.Study, config: Config, out: Path) -> dict[str, Path]:
    """trials.csv, trials.html and the plots; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    frame = study.trials_dataframe()
    frame.to_csv(out / "trials.csv", index=False)
    (out / "trials.html").write_text(_html_table(frame, study.study_name))
    files = {"trials.csv": out / "trials.csv", "trials.html": out / "trials.html"}
    files.update(_plots(study, config, out))
    files.update(_interactive_plots(study, config, out))
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


def _plot_makers(study: optuna.Study, objective: ObjectiveConfig) -> dict:
    from optuna.visualization import matplotlib as vis

    names = list(objectives(objective))
    multi = len(names) > 1
    target = (lambda t: t.values[0]) if multi else None  # the history of the first objective
    name = names[0]
    plots = {
        "optimization_history.png": lambda: vis.plot_optimization_history(
            study, target=target, target_name=name
        ),
        "param_importances.png": lambda: vis.plot_param_importances(
            study, target=target, target_name=name
        ),
        "intermediate_values.png": lambda: vis.plot_intermediate_values(study),
    }
    if len(names) in (2, 3):  # drawn in 2 or 3 dimensions
        plots["pareto_front.png"] = lambda: vis.plot_pareto_front(study, target_names=names)
    return plots


def _plots(study: optuna.Study, config: Config, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    for name, ax in _drawn(_plot_makers(study, config.tune.objective)):
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files[name] = out / name
    return files


def _drawn(makers: dict):
    """(name, plot) for each maker that draws: a study too small for a plot (one trial, no
    intermediate values) skips that plot with a warning."""
    for name, make in makers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                plot = make()
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.warning("%s not drawn: %s", name, exc)
                continue
        yield name, plot


def _interactive_plots(study: optuna.Study, config: Config, out: Path) -> dict[str, Path]:
    """The same plots as Optuna draws them with plotly, in one self-contained page
    (``plots.html``: zoom, hover for a trial's values) beside the pictures; none when plotly
    is not installed (``pip install plotly``)."""
    try:
        from optuna import visualization as vis
    except ImportError:
        return {}
    if not vis.is_available():
        log.warning("plots.html not written: plotly is not installed")
        return {}
    names = list(objectives(config.tune.objective))
    target = (lambda t: t.values[0]) if len(names) > 1 else None  # the first objective's
    makers = {
        "optimization history": lambda: vis.plot_optimization_history(
            study, target=target, target_name=names[0]
        ),
        "parameter importances": lambda: vis.plot_param_importances(
            study, target=target, target_name=names[0]
        ),
        "intermediate values": lambda: vis.plot_intermediate_values(study),
        "parallel coordinates": lambda: vis.plot_parallel_coordinate(
            study, target=target, target_name=names[0]
        ),
    }
    if len(names) in (2, 3):
        makers["Pareto front"] = lambda: vis.plot_pareto_front(study, target_names=names)
    parts = []
    for title, figure in _drawn(makers):
        # plotly.js once, inside the page: the UI shows it without reaching the network
        parts.append(f"<h2>{title}</h2>" + figure.to_html(
            full_html=False, include_plotlyjs=not parts
        ))  # fmt: skip
    if not parts:
        return {}
    path = out / "plots.html"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{study.study_name}</title>"
        f"</head><body><h1>Study {study.study_name}: {', '.join(names)}</h1>{''.join(parts)}"
        "</body></html>\n"
    )
    return {"plots.html": path}


def study_params(config: Config, experiment: str, name: str, storage: str, workers: int) -> dict:
    """The study's settings, as the parameters of its tracked run."""
    from fgdepth.tuning.storage import masked

    tune = config.tune
    objective = tune.objective
    budget = {"minutes": tune.minutes} if tune.minutes else {"trials": tune.trials}
    if config.train_minutes:  # each trial's training time (``app.tune``: the recipe's)
        budget["trial_train_minutes"] = config.train_minutes
    return {
        "experiment": experiment,
        "study": name,
        "storage": masked(storage),
        **budget,
        "workers": workers,
        "profile": config.profile,
        "pruner": "none (multi-objective)" if objective.multi else tune.pruner.name,
        "sampler": tune.sampler,
        "objective": objective_label(objective),
    }
