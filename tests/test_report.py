"""``fgdepth report``: the comparison of finished runs, with references; the registry."""

import json
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
        assert row["mask_iou"] == pytest.approx(logged["mask_iou"])
        assert row["minutes"] == pytest.approx(logged["train_minutes"])
    assert "loss_weights" not in " ".join(runs["differs"])  # equal in both: not listed
    refs = frame[frame["kind"] == "reference"]
    assert len(refs) == 2
    assert refs["mask_iou"].notna().sum() == 1 and refs["depth_rmse"].notna().sum() == 1

    csv = pd.read_csv(report.files["report.csv"])
    best_iou = runs["mask_iou"].max()
    assert "mask_iou" in csv.loc[csv["mask_iou"] == best_iou, "best_in"].iloc[0]

    page = report.files["report.html"].read_text()
    assert page.count("<img") == 3
    assert re.findall(r"src='([^']*)'", page) and all(
        src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", page)
    )  # self-contained
    assert f"<b>{best_iou:.4f}</b>" in page and "reference: dataset-mean depth" in page
    picture = Image.open(report.files["predictions.png"])
    assert picture.width > 7 * 32  # fg_bg, mask, depth, then two columns per run
    logged = {a.path for a in client.list_artifacts(report.run_id, "report")}
    assert {"report/report.html", "report/report.csv", "report/predictions.png"} <= logged


def test_the_best_run_is_registered_with_an_alias_and_usable_by_it(store, tmp_path, synth_dir):
    report = make_report(["compare"], tmp_path / "out", log=False)
    uri = register_best(report.frame, "fgdepth-compare", "champion", "mask_iou")
    assert uri == "models:/fgdepth-compare@champion"
    version = MlflowClient().get_model_version_by_alias("fgdepth-compare", "champion")
    runs = report.frame[report.frame["kind"] == "run"]
    assert version.run_id == runs.loc[runs["mask_iou"].idxmax(), "run_id"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "evaluate", "--model", uri, "--data", str(synth_dir)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["size"] == 32


def test_a_bad_rank_metric_is_refused(store, tmp_path):
    report = make_report(["compare"], tmp_path / "out", log=False, references=False)
    with pytest.raises(ValueError, match="valid: score, mask_iou"):
        register_best(report.frame, "x", "champion", "iou")


def test_report_entry_point_and_an_empty_experiment(store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    out = subprocess.run(
        ["mlflow", "run", str(REPO), "-e", "report", "--env-manager", "local",
         "-P", "experiment=compare", "-P", f"out={tmp_path}/r"],
        capture_output=True, text=True, env=env, cwd=store.folder,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "r" / "report.html").exists()
    MlflowClient().create_experiment("empty")
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "report", "--experiment", "empty"],
        capture_output=True, text=True, env=env, cwd=store.folder,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().startswith("fgdepth: no finished training run in empty")
