"""``fgdepth report``: the comparison of finished runs, with references; the registry."""

import html
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fgdepth.app.report import METRICS, make_report, register_best
from fgdepth.config import load_config
from fgdepth.data.builtin import builtin_folder
from fgdepth.metrics import METRIC_NAMES

pytestmark = (
    pytest.mark.slow
)  # trained runs (the trained_store fixture), report and evaluate processes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(trained_store, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.uri)
    mlflow.set_tracking_uri(trained_store.uri)
    monkeypatch.chdir(trained_store.folder)
    return trained_store


def test_the_report_compares_the_runs_beside_their_references(store, tmp_path):
    report = make_report(["compare"], tmp_path / "out")
    frame = report.frame
    runs = frame[frame["kind"] == "run"]
    assert sorted(runs["entry_point"]) == ["bce_ssim", "ssim"]
    assert set(METRICS) | {"minutes", "samples_per_s", "differs"} <= set(frame.columns)
    client = MlflowClient()
    for _, row in runs.iterrows():
        logged = client.get_run(row["run_id"]).data.metrics
        assert row["mask_iou"] == pytest.approx(logged["test_mask_iou"])
        assert row["minutes"] == pytest.approx(logged["train_minutes"])
    assert "loss_weights" not in " ".join(runs["differs"])  # equal in both: not listed
    refs = frame[frame["kind"] == "reference"]
    assert len(refs) == 4
    assert refs["mask_iou"].notna().sum() == 1 and refs["depth_rmse"].notna().sum() == 1
    distance = refs[refs["run"].str.endswith("(distance)")]
    assert sorted(distance["run"]) == [
        "reference: least squares on the true mask's lowest row and height (distance)",
        "reference: train-median distance for every object (distance)",
    ]
    for _, row in distance.iterrows():  # the distance, and only the distance, for these two
        assert math.isfinite(row["fg_distance_error"])
        assert all(math.isnan(row[m]) for m in METRICS if m != "fg_distance_error")

    csv = pd.read_csv(report.files["report.csv"])
    best_iou = runs["mask_iou"].max()
    assert "mask_iou" in csv.loc[csv["mask_iou"] == best_iou, "best_in"].iloc[0]

    page = report.files["report.html"].read_text()
    assert page.count("<img") == 3
    assert re.findall(r"src='([^']*)'", page) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", page)
    )  # self-contained
    assert f"<b>{best_iou:.4f}</b>" in page and "reference: dataset-mean depth" in page
    for _, row in distance.iterrows():
        assert f"{html.escape(row['run'])}</td>" in page
        assert f"<td>{row['fg_distance_error']:.4f}</td>" in page
    picture = Image.open(report.files["predictions.png"])
    assert picture.width > 7 * 32  # fg_bg, mask, depth, then two columns per run
    logged = {a.path for a in client.list_artifacts(report.run_id, "report")}
    assert {"report/report.html", "report/report.csv", "report/predictions.png"} <= logged
    assert "report_spread.csv" not in report.files  # two experiments, a run each: no spread


def test_runs_that_differ_by_the_seed_are_pooled_as_mean_and_std(store, tmp_path):
    from fgdepth.app.train import RunSpec, train

    runs = {}
    for seed in (0, 1):
        config = load_config("bce_ssim", "smoke", extra={"seed": seed})
        spec = RunSpec(config, experiment_name="seeds", run_name="bce_ssim",
                       entry_point="bce_ssim", system_metrics=False)  # fmt: skip
        _, runs[seed] = train(spec)
    report = make_report(["seeds"], tmp_path / "out", references=False)
    spread = pd.read_csv(report.files["report_spread.csv"])
    assert len(spread) == 1
    row = spread.iloc[0]
    assert (row["experiment"], row["profile"], row["runs"], row["seeds"]) == (
        "bce_ssim", "smoke", 2, "0,1"
    )  # fmt: skip
    client = MlflowClient()
    logged = [client.get_run(runs[seed]).data.metrics for seed in (0, 1)]
    for metric in ("mask_iou", "depth_rmse"):
        values = [m[f"test_{metric}"] for m in logged]
        assert row[f"{metric}_mean"] == pytest.approx(sum(values) / 2)
        assert row[f"{metric}_std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    page = report.files["report.html"].read_text()
    assert "Mean ± std over seeds" in page
    assert f"{row['mask_iou_mean']:.4f} ± {row['mask_iou_std']:.4f}" in page
    artifacts = {a.path for a in client.list_artifacts(report.run_id, "report")}
    assert "report/report_spread.csv" in artifacts


def test_the_best_run_is_registered_with_an_alias_and_usable_by_it(store, tmp_path):
    report = make_report(["compare"], tmp_path / "out", log=False)
    uri = register_best(report.frame, "fgdepth-compare", "champion", "mask_iou")
    assert uri == "models:/fgdepth-compare@champion"
    client = MlflowClient()
    version = client.get_model_version_by_alias("fgdepth-compare", "champion")
    runs = report.frame[report.frame["kind"] == "run"]
    assert version.run_id == runs.loc[runs["mask_iou"].idxmax(), "run_id"]
    synth = load_config("bce_ssim", "smoke").data.synth
    dataset = builtin_folder(synth)  # what the runs trained on
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "evaluate", "--model", uri, "--data", str(dataset)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["model"], result["split"], result["size"]) == (uri, "test", 32)
    # the champion's model on the split its run was tested on: the metrics the run logged
    logged = client.get_run(version.run_id).data.metrics
    # the built-in data declares its depth encoding: the distance in metres comes beside
    metres = result["metrics"].pop("fg_distance_error_m")
    assert metres > 0 and result["depth_encoding"] == "log 1-40 m"
    assert set(result["metrics"]) == set(METRIC_NAMES)
    for name, value in result["metrics"].items():
        if math.isnan(value):  # nothing to measure: the run logged nothing either
            assert f"test_{name}" not in logged
        else:
            # the masks to 1e-5 (rounded to 6 digits, float64 sums over the same pixels); the
            # depth to 1e-3: the contact readout thresholds the mask logits at 0, and a logit
            # within float noise of 0 (this process's kernels may block the batch otherwise)
            # moves a column's lowest pixel, and with it one image's shift (8e-5 seen)
            tol = 1e-3 if name.startswith(("depth", "fg_")) else 1e-5
            assert value == pytest.approx(logged[f"test_{name}"], abs=tol), name


def test_a_bad_rank_metric_is_refused(store, tmp_path):
    report = make_report(["compare"], tmp_path / "out", log=False, references=False)
    with pytest.raises(ValueError, match="valid: score, mask_iou"):
        register_best(report.frame, "x", "champion", "iou")


def table_rows(page: str) -> list[dict[str, str]]:
    """The rows of report.html's table, each as {column: the cell's text}."""
    head = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    columns = [html.unescape(c) for c in re.findall(r"<th>(.*?)</th>", head)]
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S).group(1)
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c))
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row)
        ]
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def test_report_entry_point_and_an_empty_experiment(store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    out = subprocess.run(
        ["mlflow", "run", str(REPO), "-e", "report", "--env-manager", "local",
         "-P", "experiment=compare", "-P", f"out={tmp_path}/r"],
        capture_output=True, text=True, env=env, cwd=store.folder,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<title>fgdepth report: compare</title>" in page
    rows = {row["run"]: row for row in table_rows(page)}
    client = MlflowClient()
    assert len(rows) == 6 and set(store.runs) < set(rows)  # the two runs, the four references
    for name, run_id in store.runs.items():
        logged = client.get_run(run_id).data.metrics
        row = rows[name]
        assert (row["entry_point"], row["model"], row["profile"]) == (name, "unet", "smoke")
        for metric in METRICS:  # each as the page writes it: four decimals, or a dash
            key = f"test_{metric}"
            shown = f"{logged[key]:.4f}" if key in logged else "—"  # NaN is not logged
            assert row[metric] == shown, (name, metric)
        assert row["minutes"] == f"{logged['train_minutes']:.1f}"
    MlflowClient().create_experiment("empty")
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "report", "--experiment", "empty"],
        capture_output=True, text=True, env=env, cwd=store.folder,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().startswith("fgdepth: no finished training run in empty")


def test_runs_on_other_test_data_are_never_ranked_together(store, tmp_path):
    """The smoke runs of 'compare' (their whole test split) beside a run tested on fewer rows
    (as a cpu-profile run is on more, at another size): two groups, each its own comparison."""
    from fgdepth.app.report import reference_rows, test_data
    from fgdepth.app.train import RunSpec, train
    from fgdepth.tracking import model_size

    config = load_config("bce_ssim", "smoke", ["eval.max_samples=6"])
    spec = RunSpec(config, experiment_name="fewer", system_metrics=False)
    _, fewer = train(spec)
    client = MlflowClient()
    assert client.get_run(fewer).data.tags["fgdepth.test_rows"] == "6"
    assert client.get_run(store.runs["ssim"]).data.tags["fgdepth.test_rows"] != "6"

    newest = make_report(["compare", "fewer"], tmp_path / "newest", log=False)
    assert list(newest.frame.loc[newest.frame["kind"] == "run", "run_id"]) == [fewer]
    assert len(newest.others) == 1 and "Other groups, not shown" in (
        newest.files["report.html"].read_text()
    )

    report = make_report(["compare", "fewer"], tmp_path / "all", log=False, all_groups=True)
    frame = report.frame
    assert frame["group"].nunique() == 2
    for group, part in frame.groupby("group"):
        runs = part[part["kind"] == "run"]
        tags = [client.get_run(r).data.tags for r in runs["run_id"]]
        keys = {(t["fgdepth.data_digest"], t["fgdepth.test_rows"], t["fgdepth.image_size"])
                for t in tags}  # fmt: skip
        assert len(keys) == 1, (group, keys)  # one test split and size per group
        # the group's references: computed on that group's test split
        run_id = runs["run_id"].iloc[0]
        expected = pd.DataFrame(reference_rows(test_data(run_id, model_size(run_id))))
        refs = part[part["kind"] == "reference"].reset_index(drop=True)
        assert refs["depth_rmse"].equals(expected["depth_rmse"]), group
    depth = frame[frame["run"] == "reference: dataset-mean depth map (depth)"]["depth_rmse"]
    assert depth.nunique() == 2  # 6 test rows or all of them: not the same floor
    csv = pd.read_csv(report.files["report.csv"])
    lone = csv[csv["run_id"] == fewer].iloc[0]
    assert "mask_iou" in lone["best_in"]  # best of its own group of one, ranked with no other
    page = report.files["report.html"].read_text()
    assert page.count("<h2>Group ") == 2 and page.count("<table>") == 2
    uri = register_best(report.frame, "fgdepth-groups", "champion", "mask_iou")
    version = client.get_model_version_by_alias("fgdepth-groups", "champion")
    assert version.run_id == fewer and uri.endswith("@champion")  # from the newest group only
