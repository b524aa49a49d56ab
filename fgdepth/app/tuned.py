"""The answer a study is run for: its best configuration beside the experiment it tuned,
trained again at the same profile and training minutes with two seeds each and scored on the
test split, which no trial ever saw (``fgdepth tune --compare``).

It writes ``tuned_vs_default.csv`` (a row per headline metric and the study's score: each
recipe's mean and standard deviation over the seeds, the seeds' spread and the verdict, better
or worse only beyond that spread) and ``tuned_vs_default.png`` beside the study's summary, and
logs both to the study's parent run; the four runs are its children."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

from fgdepth import tracking as trk
from fgdepth import tuning
from fgdepth.app.train import RunSpec, train
from fgdepth.config import Config
from fgdepth.metrics import LOWER_IS_BETTER, SCORE_TERMS, spread, verdict

SEEDS = (0, 1)
RECIPES = ("default", "tuned")
CSV_NAME, PICTURE_NAME = "tuned_vs_default.csv", "tuned_vs_default.png"
SCORE = "score"  # the study's objective, as a row of its own


@dataclass
class Comparison:
    rows: list[dict]  # a row per metric (see ``table``)
    runs: dict[str, list[str]]  # the run ids per recipe
    files: dict[str, Path]


def recipes(config: Config, best_params: dict) -> dict[str, Config]:
    """The experiment as the study tuned it and its best trial's configuration, at the
    study's profile, data and training minutes."""
    return {"default": config, "tuned": tuning.apply_params(config, best_params)}


def table(metrics: dict[str, list[dict]], config: Config) -> list[dict]:
    """A row per headline metric and the score: each recipe's values over the seeds, their
    mean and standard deviation, the spread and the verdict of tuned against default."""
    rows = []
    for name in [*SCORE_TERMS, SCORE]:
        values = {
            r: [tuning.score(m, config.tune.objective) if name == SCORE else m[name] for m in ms]
            for r, ms in metrics.items()
        }
        gap, said = verdict(values["default"], values["tuned"], name in LOWER_IS_BETTER)
        row = {
            "metric": name if name != SCORE else f"score ({tuning.formula(config.tune.objective)})"
        }
        for recipe in RECIPES:
            mean, std = spread(values[recipe])
            row |= {f"{recipe}_mean": mean, f"{recipe}_std": 0.0 if math.isnan(std) else std}
            row[f"{recipe}_seeds"] = " / ".join(f"{v:.4f}" for v in values[recipe])
        rows.append(row | {"spread": gap, "verdict": said})
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def picture(rows: list[dict], path: Path, title: str) -> Path:
    """A panel per metric: each recipe's seeds (faint) and their mean with its standard
    deviation, the verdict in the panel's title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2))
    for ax, row in zip(axes, rows, strict=True):
        for x, (recipe, colour) in enumerate(zip(RECIPES, ("#6b7785", "#2f80ed"), strict=True)):
            seeds = [float(v) for v in row[f"{recipe}_seeds"].split(" / ")]
            ax.plot([x] * len(seeds), seeds, "o", color=colour, alpha=0.4, markersize=4)
            ax.errorbar(x, row[f"{recipe}_mean"], yerr=row[f"{recipe}_std"], fmt="D",
                        color=colour, capsize=8, markersize=7)  # fmt: skip
        ax.set_xticks([0, 1], RECIPES)
        ax.set_xlim(-0.6, 1.6)
        name = row["metric"].split(" (")[0]
        better = "lower" if name in LOWER_IS_BETTER else "higher"
        ax.set_title(f"{name} ({better} is better)\ntuned: {row['verdict']}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(
    config: Config,
    best_params: dict,
    *,
    study: str,
    parent_run_id: str,
    out: Path,
    tracking: str = "local",
    experiment_name: str | None = None,
    stop=None,
    print_fn=print,
) -> Comparison:
    """Train both recipes with each of ``SEEDS`` as child runs of the study's run, then the
    table, the CSV and the picture (under ``out`` and on the parent run)."""
    metrics: dict[str, list[dict]] = {r: [] for r in RECIPES}
    runs: dict[str, list[str]] = {r: [] for r in RECIPES}
    for recipe, cfg in recipes(config, best_params).items():
        for seed in SEEDS:
            print_fn(f"\n== {recipe} recipe, seed {seed}: for the comparison ==", flush=True)
            spec = RunSpec(
                replace(cfg, seed=seed), tracking, experiment_name,
                run_name=f"{study} {recipe} seed {seed}", entry_point="tune",
                tags={"optuna.study": study, "fgdepth.compare": recipe},
                parent_run_id=parent_run_id, keep_state=False,
            )  # fmt: skip
            result, run_id = train(spec, stop=stop)
            metrics[recipe].append(result.metrics)
            runs[recipe].append(run_id)
    rows = table(metrics, config)
    out.mkdir(parents=True, exist_ok=True)
    title = (f"study '{study}': best trial against the {config.name} recipe, "
             f"{config.train_minutes:g} training min each, test split, seeds {SEEDS}")  # fmt: skip
    files = {
        CSV_NAME: write_csv(rows, out / CSV_NAME),
        PICTURE_NAME: picture(rows, out / PICTURE_NAME, title),
    }
    verdicts = {row["metric"].split(" (")[0]: row["verdict"] for row in rows}
    trk.log_summary(
        parent_run_id, {}, {}, files,
        {f"fgdepth.tuned_{name}": said for name, said in verdicts.items()},
    )  # fmt: skip
    return Comparison(rows, runs, files)


def lines(rows: list[dict]) -> list[str]:
    """The table for the console."""
    out = ["| metric | default | tuned | spread | verdict |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[f'{r}_mean']:.4f} ± {row[f'{r}_std']:.4f}" for r in RECIPES]
        out.append(f"| {row['metric']} | {cells[0]} | {cells[1]} | {row['spread']:.4f} | "
                   f"{row['verdict']} |")  # fmt: skip
    return out
