"""``fgdepth report``: which run wins, in one table, charts and one picture.

Only like is compared with like: the finished training runs of an MLflow experiment (or all)
are grouped by the test data they were scored on (the digest of the dataset and its test
rows, the number of test rows, the image size), and each group is a comparison of its own.
The newest group is reported; ``all_groups`` reports each under its own heading. Per group:
a row per run with its loss combination, model, profile, the params that differ between its
runs, the test metrics (``test_*``), minutes and samples/s; the best value per column marked.
Beside them, reference rows computed on the group's test split (background subtraction for
the mask, the dataset-mean depth map for depth, the train split's median distance and a
least-squares fit on the true silhouette for the foreground's distance), so that every number
has its floor next to it. Written as ``report.csv`` and one self-contained ``report.html``
(table, a bar chart per metric with a dashed line per reference, learning curves, the same
test samples as predicted by each run), and logged to MLflow as a run of its own. Runs that
share an experiment and a profile and differ only by the seed are also pooled: mean ± std
per metric, in ``report_spread.csv`` and a second table of the page.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from fgdepth import tracking as trk
from fgdepth.app.evaluate import ScoringData, load_model, scoring_data
from fgdepth.config import Config, build
from fgdepth.data.cache import check_cache_root
from fgdepth.data.disk import check_writable
from fgdepth.errors import ConfigError, NotFound
from fgdepth.metrics import LOWER_IS_BETTER, spread_text
from fgdepth.metrics import score as weighted_score
from fgdepth.metrics import spread as mean_std

METRICS = [
    "mask_iou", "mask_dice", "depth_rmse", "depth_absrel", "depth_delta1", "fg_distance_error",
    "depth_iou_seed",
]  # fmt: skip
EXTRA = {"minutes": "train_minutes", "samples_per_s": "train_samples_per_s"}
COVERED = ("name", "description", "loss", "model.name", "profile", "tune.", "stages.")
# fgdepth's own params beside the config's (an entry point's given params are neither)
RUN_PARAMS = ("precision_resolved", "device", "depth_encoding", "run.stages.")
GROUP_TAGS = ("tags.fgdepth.data_digest", "tags.fgdepth.test_rows", "tags.fgdepth.image_size")
MAX_PICTURE_RUNS = 8


def _rank_value(metric: str, value: float) -> float:
    return -value if metric in LOWER_IS_BETTER else value


def find_runs(experiments: list[str] | None, include_trials: bool = False) -> pd.DataFrame:
    """Finished training runs (newest first); tuning parents and reports left out."""
    client = MlflowClient()
    if experiments:
        found = [client.get_experiment_by_name(name) for name in experiments]
        missing = [n for n, e in zip(experiments, found, strict=True) if e is None]
        if missing:
            raise NotFound(f"no MLflow experiment named {', '.join(missing)}")
        ids = [e.experiment_id for e in found]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    runs = mlflow.search_runs(
        ids, filter_string="attributes.status = 'FINISHED'", order_by=["start_time DESC"]
    )
    if runs.empty or "tags.fgdepth.model" not in runs:
        return pd.DataFrame()
    runs = runs[runs["tags.fgdepth.model"].notna()]
    if not include_trials and "tags.mlflow.parentRunId" in runs:
        runs = runs[runs["tags.mlflow.parentRunId"].isna()]
    return runs.reset_index(drop=True)


def group_of(row: pd.Series) -> str:
    """The test data a run was scored on, in words: runs with the same are comparable."""
    digest, rows, size = (row.get(tag) for tag in GROUP_TAGS)
    if pd.isna(digest):  # a run logged before its test data was: its dataset and sizes
        fingerprint = row.get("tags.fgdepth.dataset_fingerprint")
        digest = f"dataset {str(fingerprint)[:12]}" if pd.notna(fingerprint) else "unknown"
        stages = sorted(k for k in row.index if k.startswith("params.run.stages.")
                        and pd.notna(row[k]))  # fmt: skip
        size = str(row[stages[-1]]).split("px")[0] if stages else "?"
        rows = "?"
    name = row.get("tags.fgdepth.dataset")
    data = f"{name} " if pd.notna(name) else ""
    return f"{data}(test data {digest}): {rows} test rows at {size} px"


def groups(runs: pd.DataFrame) -> list[str]:
    """The runs' groups, the newest run's first (``runs`` are newest first)."""
    return list(dict.fromkeys(runs.apply(group_of, axis=1))) if len(runs) else []


def _config_key(key: str) -> bool:
    """Whether a param is the config's (or fgdepth's own): an entry point's given params
    (``data``, ``workers``) are not, and say nothing that a run's config does not."""
    from fgdepth.config import Config

    defaults = Config()
    top = key.split(".")[0]
    if key.startswith(RUN_PARAMS) or not hasattr(defaults, top):
        return key.startswith(RUN_PARAMS)
    value = getattr(defaults, top)  # a section (data) is logged as its settings (data.path)
    return "." in key or not (dataclasses.is_dataclass(value) or isinstance(value, dict | list))


def _param(row: pd.Series, key: str) -> str | None:
    """A run's value of ``key`` as it used it (an entry point's given value corrected)."""
    for col in (f"params.{key}.resolved", f"params.{key}"):
        value = row.get(col)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return str(value)
    return None


def _value(row: pd.Series, key: str) -> str | None:
    """``_param``, with ``none`` for a config setting the run left empty (not logged)."""
    value = _param(row, key)
    return "none" if value is None and _config_key(key) else value


def differing_params(runs: pd.DataFrame) -> list[str]:
    """Param names whose values differ between the runs (beyond the table's own columns). A
    config setting a run did not log is its empty value (``none``); an entry point's own
    param only differs between runs that have it."""
    out = []
    for col in runs.columns:
        if not col.startswith("params."):
            continue
        key = col[len("params.") :]
        if key.startswith(COVERED) or key.endswith(".resolved"):
            continue
        values = {_value(r, key) for _, r in runs.iterrows()} - {None}
        if len(values) > 1:
            out.append(key)
    return sorted(out)


def _first(row: pd.Series, *keys: str):
    """The first of ``keys`` the row has a value for, or None."""
    return next((row[k] for k in keys if pd.notna(row.get(k))), None)


def table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the report's columns."""
    params = differing_params(runs)
    rows = []
    for _, r in runs.iterrows():
        differs = ((k, _value(r, k)) for k in params)
        row = {
            "run": r.get("tags.mlflow.runName"),
            "run_id": r["run_id"],
            "group": group_of(r),
            "experiment": _first(r, "tags.fgdepth.experiment", "tags.fgdepth.entry_point"),
            "entry_point": r.get("tags.fgdepth.entry_point"),
            "losses": r.get("tags.fgdepth.losses"),
            "model": r.get("tags.fgdepth.model"),
            "profile": r.get("tags.fgdepth.profile"),
            "differs": "; ".join(f"{k}={v}" for k, v in differs if v is not None),
            "seed": _first(r, "params.seed.resolved", "params.seed"),
        }
        for m in METRICS:
            row[m] = r.get(f"metrics.test_{m}", math.nan)
        for name, metric in EXTRA.items():
            row[name] = r.get(f"metrics.{metric}", math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def best_marks(frame: pd.DataFrame) -> dict[str, float]:
    """The best value per metric column, over the runs (reference rows excluded)."""
    runs = frame[frame["kind"] == "run"] if "kind" in frame else frame
    best = {}
    for m in METRICS:
        values = runs[m].dropna()
        if len(values):
            best[m] = values.min() if m in LOWER_IS_BETTER else values.max()
    return best


def _without_seed(differs: str) -> str:
    """The table's ``differs`` text less the seed."""
    return "; ".join(p for p in differs.split("; ") if p and not p.startswith("seed="))


def _seed_order(seed) -> tuple:
    text = str(seed)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def spread_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std of each metric over the runs that differ only by the seed: a row
    per experiment, profile, losses, model and other differing params, with 2 runs or more."""
    runs = frame[frame["kind"] == "run"] if "kind" in frame else frame
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(others=runs["differs"].fillna("").map(_without_seed))
    keys = ["experiment", "profile", "losses", "model", "others"]
    rows = []
    for key, group in runs.groupby(keys, sort=False, dropna=False):
        if len(group) < 2:
            continue
        row = dict(zip(["experiment", "profile"], key[:2], strict=True))
        row["runs"] = len(group)
        row["seeds"] = ",".join(str(s) for s in sorted(group["seed"], key=_seed_order))
        for m in METRICS:
            values = group[m].dropna()
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std(values) if len(values) else (math.nan,) * 2
        row["differs"] = key[4]
        rows.append(row)
    return pd.DataFrame(rows)


# --- the references, on the test split of the runs' dataset ------------------------------------


@dataclass
class TestData:
    """The test split a run was scored on, decoded at the size of its model."""

    scoring: ScoringData
    cache: object  # the targets (and inputs) at ``size``
    train: np.ndarray
    test: np.ndarray
    size: int


def run_config(run_id: str) -> Config:
    return build(Config, trk.logged_config(run_id))


def test_data(run_id: str, size: int) -> TestData:
    """The dataset, splits and test rows a run was scored on, decoded at ``size``."""
    scoring = scoring_data(run_config(run_id))
    cache = scoring.cache(size, rows=np.union1d(scoring.rows("train"), scoring.rows("test")))
    return TestData(scoring, cache, scoring.rows("train", cache.bad),
                    scoring.rows("test", cache.bad), size)  # fmt: skip


def reference_rows(data: TestData) -> list[dict]:
    from fgdepth.baselines import reference_metrics

    refs = reference_metrics(data.cache, data.train, data.test)
    names = {
        "background_subtraction": "reference: |fg_bg − bg|, Otsu, opening/closing (mask)",
        "mean_depth": "reference: dataset-mean depth map (depth)",
        "constant_distance": "reference: train-median distance for every object (distance)",
        "silhouette_geometry": "reference: least squares on the true mask's lowest row and "
        "height (distance)",
    }
    return [
        {"run": names[key], "kind": "reference", **{m: refs[key].get(m, math.nan) for m in METRICS}}
        for key in names
    ]


def prediction_picture(frame: pd.DataFrame, data: TestData, samples: int = 4):
    """The same test samples as predicted by each run (the first runs, up to 8): rows of the
    group's test split, drawn as a run draws its pictures' rows."""
    import torch

    from fgdepth.data.preview import prediction_grid
    from fgdepth.engine.evaluate import sample_predictions
    from fgdepth.engine.plan import picture_rows

    picks = picture_rows(data.test, samples)
    rows = []
    for _, r in frame[frame["kind"] == "run"].head(MAX_PICTURE_RUNS).iterrows():
        model = load_model(f"runs:/{r['run_id']}/model")[0]
        cache = data.scoring.cache(data.size, model.input_scale, rows=picks)
        images = sample_predictions(model, cache, picks, torch.device("cpu"))
        rows.append((str(r["run"] or r["entry_point"]), images))
    return prediction_grid(rows, samples) if rows else None


# --- charts and the page ------------------------------------------------------------------------


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


REFERENCE_COLOURS = ("#c44", "#e08a1e", "#7b3fa0", "#2a9d8f")


def reference_lines(refs: pd.DataFrame, metric: str) -> list[tuple[str, float]]:
    """(label, value) of every reference row with a value for ``metric``: a metric may have
    several references (the distance has three), and each gets a line of its own."""
    rows = refs.dropna(subset=[metric])
    names = rows["run"].astype(str).str.removeprefix("reference: ")
    return list(zip(names, rows[metric].astype(float), strict=True))


def bar_charts(frame: pd.DataFrame) -> bytes:
    """A bar per run for each metric; a dashed line at each reference value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = frame[frame["kind"] == "run"]
    refs = frame[frame["kind"] == "reference"]
    cols = 4
    nrows = math.ceil(len(METRICS) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False)
    labels = [str(r) for r in runs["run"]]
    for ax, m in zip(axes.flat, METRICS, strict=False):
        ax.bar(range(len(runs)), runs[m], color="#4878a8")
        ax.set_xticks(range(len(runs)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(m + (" (lower is better)" if m in LOWER_IS_BETTER else ""), fontsize=9)
        lines = reference_lines(refs, m)
        for (label, value), colour in zip(lines, itertools.cycle(REFERENCE_COLOURS)):
            ax.axhline(value, color=colour, linestyle="--", label=label)
        if lines:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(METRICS) :]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def learning_curves(frame: pd.DataFrame) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = MlflowClient()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for _, r in frame[frame["kind"] == "run"].iterrows():
        for ax, metric in zip(axes, ("train_loss", "val_mask_iou", "val_depth_rmse"), strict=True):
            history = sorted(client.get_metric_history(r["run_id"], metric), key=lambda m: m.step)
            # marked points: a run of one epoch is a point, not an invisible line
            steps, values = [m.step for m in history], [m.value for m in history]
            ax.plot(steps, values, marker="o", markersize=3, label=str(r["run"]))
    for ax, title in zip(axes, ("train loss", "val mask_iou", "val depth_rmse"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _cell(value, metric: str | None, best: dict) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "<td>—</td>"
        text = f"{value:.4f}" if metric in METRICS else f"{value:.1f}"
        if metric in best and value == best[metric]:
            return f"<td class='best'><b>{text}</b></td>"
        return f"<td>{text}</td>"
    return f"<td class='text'>{html.escape(str(value if value is not None else ''))}</td>"


def spread_html(spread: pd.DataFrame) -> str:
    """The page's second table: mean ± std over the seeds, the best mean per metric in bold."""
    if spread is None or spread.empty:
        return ""
    best = best_marks(spread.rename(columns={f"{m}_mean": m for m in METRICS}))
    columns = ["experiment", "profile", "runs", "seeds", *METRICS, "differs"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for _, r in spread.iterrows():
        cells = []
        for c in columns:
            if c not in METRICS:
                cells.append(f"<td class='text'>{html.escape(str(r[c]))}</td>")
                continue
            text = html.escape(spread_text(r[f"{c}_mean"], r[f"{c}_std"]))
            bold = c in best and r[f"{c}_mean"] == best[c]
            cells.append(f"<td class='best'><b>{text}</b></td>" if bold else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<h2>Mean ± std over seeds</h2><p>Runs of the same experiment and profile that differ "
        "only by the seed: the mean and sample standard deviation of each metric; the best "
        "mean in bold.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def group_html(frame: pd.DataFrame, images: dict[str, bytes], spread: pd.DataFrame | None,
               heading: str | None = None) -> str:  # fmt: skip
    """One group's part of the page: its table, its spread, its pictures."""
    best = best_marks(frame)
    columns = ["run", "entry_point", "losses", "model", "profile", *METRICS, *EXTRA, "differs"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for _, r in frame.iterrows():
        cls = " class='ref'" if r.get("kind") == "reference" else ""
        body.append(f"<tr{cls}>" + "".join(_cell(r.get(c), c, best) for c in columns) + "</tr>")
    pictures = "".join(
        f"<h3>{html.escape(name)}</h3><img alt='{html.escape(name)}' "
        f"src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        for name, data in images.items()
    )
    title = f"<h2>{html.escape(heading)}</h2>" if heading else ""
    return (
        f"{title}<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{spread_html(spread)}{pictures}"
    )


def html_page(sections: list[str], title: str, others: list[str] = ()) -> str:
    """The page: a legend, then each group's section; the groups left out named."""
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:3px 7px;border-bottom:1px solid #ddd;text-align:right}"
        "td.text{text-align:left}tr.ref{color:#777;font-style:italic}td.best{background:#e6f4e6}"
        "img{max-width:100%}"
    )
    legend = (
        "<p>Test-split metrics (<code>test_*</code>) of each finished run, compared only with "
        "runs scored on the same test data (the same dataset and test rows, at the same image "
        "size); the best value of each column is in bold. Grey rows are references computed "
        "on that test split.</p>"
    )
    if others:
        left = "".join(f"<li>{html.escape(g)}</li>" for g in others)
        legend += f"<p>Other groups, not shown (<code>--all-groups</code>):</p><ul>{left}</ul>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{legend}"
        f"{''.join(sections)}</body></html>\n"
    )


@dataclass
class Report:
    frame: pd.DataFrame
    files: dict[str, Path]
    run_id: str | None
    spread: pd.DataFrame = field(default_factory=pd.DataFrame)  # mean ± std over the seeds
    others: list[str] = field(default_factory=list)  # the groups not reported


def _marked(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with the metrics each run is best in (``best_in``), within its group."""
    marked = frame.copy()
    marked["best_in"] = ""
    for _, part in frame.groupby("group", sort=False):
        best = best_marks(part)
        marked.loc[part.index, "best_in"] = [
            ",".join(m for m in best if r["kind"] == "run" and r[m] == best[m])
            for _, r in part.iterrows()
        ]
    return marked


def _pictures(frame: pd.DataFrame, data: TestData, out: Path, files: dict, suffix="") -> dict:
    """The charts and the picture of predictions, written under ``out`` (each name with
    ``suffix``: one set per group); the page's images."""
    images = {"Metrics": bar_charts(frame), "Learning curves": learning_curves(frame)}
    picture = prediction_picture(frame, data)
    if picture is not None:
        name = f"predictions{suffix}.png"
        files[name] = out / name
        picture.save(files[name])
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        images["The same test samples, predicted by each run"] = buffer.getvalue()
    for title, stem in (("Metrics", "metrics"), ("Learning curves", "curves")):
        name = f"{stem}{suffix}.png"
        (out / name).write_bytes(images[title])
        files[name] = out / name
    return images


@dataclass
class Group:
    """One group's part of the report."""

    frame: pd.DataFrame
    spread: pd.DataFrame
    html: str


def group_report(runs: pd.DataFrame, group: str, out: Path, files: dict, *, references: bool,
                 suffix: str = "", heading: str | None = None) -> Group:  # fmt: skip
    """The table, references, spread and pictures of one group's runs."""
    frame = table(runs)
    frame.insert(0, "kind", "run")
    # the references and the picture: the test split of the group's newest run
    newest = frame.iloc[0]["run_id"]
    data = test_data(newest, trk.model_size(newest))
    if references:
        refs = pd.DataFrame(reference_rows(data)).assign(group=group)
        frame = pd.concat([frame, refs], ignore_index=True)
    spread = spread_table(frame)
    images = _pictures(frame, data, out, files, suffix)
    return Group(frame, spread, group_html(frame, images, spread, heading))


def make_report(
    experiments: list[str] | None,
    out: Path,
    *,
    include_trials: bool = False,
    references: bool = True,
    log: bool = True,
    all_groups: bool = False,
) -> Report:
    """The report of the newest group of runs (``all_groups``: of every group, each under a
    heading of its own)."""
    runs = find_runs(experiments, include_trials)
    if runs.empty:
        where = ", ".join(experiments) if experiments else "any experiment"
        store = mlflow.get_tracking_uri()
        raise NotFound(f"no finished training run in {where} at {store}")
    labels = runs.apply(group_of, axis=1)
    found = groups(runs)
    shown = found if all_groups else found[:1]
    out.mkdir(parents=True, exist_ok=True)
    files = {"report.csv": out / "report.csv"}
    parts = []
    for i, group in enumerate(shown):
        heading = f"Group {i + 1}: {group}" if all_groups else f"Runs on {group}"
        parts.append(group_report(
            runs[labels == group].reset_index(drop=True), group, out, files,
            references=references, suffix=f"_{i + 1}" if i else "", heading=heading,
        ))  # fmt: skip
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    _marked(frame).to_csv(files["report.csv"], index=False)
    spreads = [p.spread.assign(group=g) for p, g in zip(parts, shown, strict=True)
               if not p.spread.empty]  # fmt: skip
    spread = pd.concat(spreads, ignore_index=True) if spreads else pd.DataFrame()
    if not spread.empty:
        files["report_spread.csv"] = out / "report_spread.csv"
        spread.to_csv(files["report_spread.csv"], index=False)
    title = f"fgdepth report: {', '.join(experiments) if experiments else 'all experiments'}"
    files["report.html"] = out / "report.html"
    others = [g for g in found if g not in shown]
    files["report.html"].write_text(html_page([p.html for p in parts], title, others))
    n_runs = int((frame["kind"] == "run").sum())
    run_id = _log(files, experiments, n_runs) if log else None
    return Report(frame, files, run_id, spread, others)


def _log(files: dict[str, Path], experiments: list[str] | None, n_runs: int) -> str:
    exp = trk.experiment_id((experiments or ["fgdepth"])[0], "mlartifacts")
    with mlflow.start_run(experiment_id=exp, run_name="report", tags={"fgdepth.kind": "report"}):
        mlflow.log_param("runs", n_runs)
        for path in files.values():
            mlflow.log_artifact(str(path), "report")
        return mlflow.active_run().info.run_id


def check_rank_by(rank_by: str) -> None:
    """``--rank-by``: the score or one of the table's metrics; ConfigError for anything else."""
    if rank_by != "score" and rank_by not in METRICS:
        raise ConfigError(f"--rank-by: unknown '{rank_by}'; valid: score, {', '.join(METRICS)}")


def register_best(frame: pd.DataFrame, name: str, alias: str, rank_by: str) -> str:
    """Register the best run's model as ``name`` and point ``alias`` at it; the model URI.
    Only runs of one group are ranked together: those of the first (the newest) group."""
    check_rank_by(rank_by)
    runs = frame[frame["kind"] == "run"].copy()
    if "group" in runs:
        runs = runs[runs["group"] == runs["group"].iloc[0]]
    if rank_by == "score":
        runs["score"] = weighted_score(runs)
    runs = runs.dropna(subset=[rank_by])
    if runs.empty:
        raise ConfigError(f"--rank-by {rank_by}: no run has this metric; nothing registered")
    best = runs.loc[runs[rank_by].map(lambda v: _rank_value(rank_by, v)).idxmax()]
    version = mlflow.register_model(f"runs:/{best['run_id']}/model", name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return f"models:/{name}@{alias}"


def spread_console(spread: pd.DataFrame) -> str:
    """The spread table as text: a line per group, three metrics as mean ± std."""
    lines = spread[["experiment", "profile"]].assign(n=spread["runs"])
    for m in ("mask_iou", "depth_rmse", "fg_distance_error"):
        pairs = zip(spread[f"{m}_mean"], spread[f"{m}_std"], strict=True)
        lines[m] = [spread_text(mean, std) for mean, std in pairs]
    lines["differs"] = spread["differs"]
    return lines.to_string(index=False)


def report_command(experiments, out, include_trials, references, tracking, register=None,
                   alias="champion", rank_by="score", all_groups=False) -> int:  # fmt: skip
    """``fgdepth report``: the report, its table on the console, and the best run registered
    (of the newest group)."""
    check_rank_by(rank_by)  # before the report is built, with or without --register
    check_writable(out, "dir")
    check_cache_root()  # the test samples are decoded into a cache there
    trk.quiet_libraries()
    trk.setup_tracking(tracking)
    report = make_report(
        experiments or None, Path(out), include_trials=include_trials, references=references,
        all_groups=all_groups,
    )  # fmt: skip
    columns = ["run", "mask_iou", "depth_rmse", "fg_distance_error", "minutes"]
    for group, part in report.frame.groupby("group", sort=False):
        print(f"runs on {group}:")
        print(part[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        spread = report.spread
        spread = spread[spread["group"] == group] if not spread.empty else spread
        if not spread.empty:
            print("\nmean ± std over seeds:")
            print(spread_console(spread))
        print()
    if report.others:
        print(f"{len(report.others)} other group(s) of runs not shown (--all-groups shows them)")
    also = " and ".join(name for name in report.files if name.endswith(".csv"))
    print(f"\nreport: {report.files['report.html']}  (and {also})")
    if report.run_id:
        print(f"logged to MLflow run {report.run_id} ({mlflow.get_tracking_uri()})")
    if register:
        uri = register_best(report.frame, register, alias, rank_by)
        print(f"registered the best run by {rank_by}: {uri}")
    return 0
