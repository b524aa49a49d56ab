"""The main job: train every loss combination of the study and compare them."""

from __future__ import annotations

from fgdepth.data.preview import colour_depth, grid, to_rgb
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
):
    """Train each experiment in its own MLflow run; returns a row per experiment."""
    from fgdepth.runner import resolve_dataset, train_tracked

    rows = []
    configs = [load_experiment(name, profile, extra=_extra(data, seed)) for name in experiments]
    for name, config in zip(experiments, configs, strict=True):  # configs all checked first
        print(f"\n== {name} ({profile}) ==", flush=True)
        dataset = resolve_dataset(config)
        result, run_id = train_tracked(
            config,
            dataset,
            tracking=tracking,
            entry_point=name,
            experiment_name=experiment_name,
            run_name=name,
        )
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


def _extra(data, seed):
    extra = {"seed": seed}
    if data is not None:
        extra["data"] = {"path": None if data in ("", "builtin") else data}
    return extra


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
    """Per test sample: fg_bg, true mask, true depth, then each run's mask and depth."""
    pictures = []
    n = min(samples, *(len(r["images"]) for r in rows))
    for i in range(n):
        first = rows[0]["images"][i]
        line = [first["fg_bg"], to_rgb(first["mask"]), colour_depth(first["depth"])]
        for r in rows:
            s = r["images"][i]
            line += [to_rgb(s["mask_pred"]), colour_depth(s["depth_pred"])]
        pictures.append(line)
    titles = ["fg_bg", "mask", "depth"]
    for r in rows:
        titles += [r["experiment"][:9], ""]
    return grid(pictures, titles)


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (
            f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"
            "   # then open http://127.0.0.1:5000"
        )
    return f"open {tracking_uri} in a browser"
