"""The main job (``fgdepth study``): train every loss combination of the study and compare
them in one table and one picture."""

from __future__ import annotations

from pathlib import Path

from fgdepth import tracking as trk
from fgdepth.app.datasets import data_path
from fgdepth.app.train import RunSpec, train
from fgdepth.data.preview import prediction_grid
from fgdepth.engine.checks import load_experiment

STUDY = ["bce", "dice", "ssim", "bce_ssim", "dice_ssim", "staged_transfer", "default"]
TABLE_METRICS = [
    "mask_iou",
    "mask_dice",
    "depth_rmse",
    "depth_delta1",
    "fg_distance_error",
    "depth_iou_seed",
]


def run_study(
    experiments,
    profile: str,
    data: str | None,
    seed: int,
    tracking: str,
    experiment_name: str | None,
    system_metrics: bool = True,
):
    """Train each experiment in its own MLflow run; returns a row per experiment."""
    extra: dict = {"seed": seed}
    if data is not None:
        extra["data"] = {"path": data_path(data)}
    configs = [load_experiment(name, profile, extra=extra) for name in experiments]
    rows = []
    for name, config in zip(experiments, configs, strict=True):  # configs all checked first
        print(f"\n== {name} ({profile}) ==", flush=True)
        spec = RunSpec(
            config, tracking, experiment_name, run_name=name, entry_point=name,
            system_metrics=system_metrics,
        )  # fmt: skip
        result, run_id = train(spec)
        rows.append(
            {
                "experiment": name,
                "run_id": run_id,
                "minutes": result.seconds / 60,
                "metrics": result.metrics,
                "images": result.stages[-1].images,
            }
        )
    return rows


def markdown_table(rows) -> str:
    """One line per run; the best value of each metric in bold."""
    from fgdepth.metrics import LOWER_IS_BETTER

    best = {}
    for m in TABLE_METRICS:
        values = [r["metrics"][m] for r in rows]
        best[m] = min(values) if m in LOWER_IS_BETTER else max(values)
    header = ["entry point", *TABLE_METRICS, "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        cells = [r["experiment"]]
        for m in TABLE_METRICS:
            v = r["metrics"][m]
            cells.append(f"**{v:.4f}**" if v == best[m] else f"{v:.4f}")
        cells.append(f"{r['minutes']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_picture(rows, samples: int = 4):
    """Per test sample: the inputs and truth, then each run's mask and depth."""
    return prediction_grid([(r["experiment"], r["images"]) for r in rows], samples)


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (
            f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"
            "   # then open http://127.0.0.1:5000"
        )
    return f"open {tracking_uri} in a browser"


def study_command(
    names, profile, data, seed, tracking, experiment_name, out, system_metrics=True
) -> int:
    """``fgdepth study``: train, print the table, write it and the picture under ``out``."""
    trk.quiet_libraries()
    rows = run_study(
        names or STUDY, profile, data, seed or 0, tracking, experiment_name, system_metrics
    )
    table = markdown_table(rows)
    print("\n" + table)
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(table + "\n")
        comparison_picture(rows).save(out / "comparison.png")
        print(f"\ntable and picture: {out}/comparison.md, {out}/comparison.png")
    print(f"\nCompare the runs in the MLflow UI:\n  {ui_hint(trk.tracking_uri())}")
    return 0
