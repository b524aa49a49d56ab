"""The MLflow Project entry points, run as a user would: `mlflow run . -e NAME`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from fgdepth.config import load_config, scaled_stages

REPO = Path(__file__).resolve().parent.parent
ENTRY_POINTS = list(yaml.safe_load((REPO / "MLproject").read_text())["entry_points"])
TRAINING_ENTRY_POINTS = [e for e in ENTRY_POINTS if e not in ("tune", "report")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A fresh SQLite tracking store, created here before any run touches it."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(uri).search_experiments()  # creates the tables from one process
    return folder, uri


def _run(args, cwd, uri, check=True, **kw):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def test_every_loss_combination_has_an_entry_point():
    assert set(ENTRY_POINTS) == {
        "main",
        "bce",
        "dice",
        "ssim",
        "bce_ssim",
        "dice_ssim",
        "staged_transfer",
        "seed_staged",
        "tune",
        "report",
    }


def test_every_entry_point_with_a_profile_defaults_to_auto_and_passes_it_on():
    entry_points = yaml.safe_load((REPO / "MLproject").read_text())["entry_points"]
    with_profile = {n for n, e in entry_points.items() if "profile" in e["parameters"]}
    assert with_profile == {*TRAINING_ENTRY_POINTS, "tune"}
    for name in with_profile:
        assert entry_points[name]["parameters"]["profile"]["default"] == "auto", name
        assert "--profile {profile}" in entry_points[name]["command"], name


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", TRAINING_ENTRY_POINTS)
def test_entry_point_gives_a_tracked_run(entry_point, store):
    folder, uri = store
    # staged_transfer (frozen groups) with 2 data-parallel processes: still one run
    ranks = 2 if entry_point == "staged_transfer" else 1
    _run(
        [
            "mlflow",
            "run",
            str(REPO),
            "-e",
            entry_point,
            "--env-manager",
            "local",
            "--experiment-name",
            "smoke",
            "-P",
            "profile=smoke",
            "-P",
            f"workers={ranks}",
        ],
        folder,
        uri,
    )
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.`fgdepth.entry_point` = '{entry_point}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"{entry_point} seed 0"  # named as `fgdepth train` names it
    metrics = run.data.metrics
    for name in (
        "mask_iou",
        "mask_dice",
        "depth_rmse",
        "depth_absrel",
        "depth_delta1",
        "depth_ssim",
        "depth_rmse_fg",
        "fg_distance_error",
        "depth_iou_seed",
    ):
        assert 0 <= metrics[f"test_{name}"] <= 1.5, name
    # one epoch per stage at the smoke profile
    stages = len(scaled_stages(load_config("default" if entry_point == "main" else entry_point,
                                           "smoke")))  # fmt: skip
    history = client.get_metric_history(run.info.run_id, "val_mask_iou")
    assert [m.step for m in history] == list(range(stages))
    assert len(client.get_metric_history(run.info.run_id, "test_depth_rmse")) == stages
    tags = run.data.tags
    model = "seed" if entry_point == "seed_staged" else "unet"
    assert tags["fgdepth.model"] == model and "mask=" in tags["fgdepth.losses"]
    assert tags["fgdepth.ranks"] == str(ranks)
    assert len(tags["fgdepth.dataset_fingerprint"]) == 16
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    # one name in every run, at the root: the Compare page pairs it
    assert {"config.yaml", "metrics.json", "test_samples.png", "checkpoint"} <= files
    pictures = ["test_samples.png"]
    local = client.download_artifacts(run.info.run_id, pictures[0], str(folder / "dl"))
    from PIL import Image

    assert Image.open(local).size[0] > 6 * 32  # six 32 px columns: fg_bg .. depth pred
    summary = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "metrics.json", str(folder / "dl"))
        ).read_text()
    )
    assert summary["metrics"]["mask_iou"] == pytest.approx(metrics["test_mask_iou"])


@pytest.mark.slow
def test_bad_config_fails_before_any_run_is_created(store, tmp_path):
    folder, uri = store
    bad = tmp_path / "bad.yaml"
    bad.write_text("inherit: default\nstages:\n  - {size: 64, samples: 10, epochs: 0}\n")
    before = len(
        MlflowClient(uri).search_runs(
            [e.experiment_id for e in MlflowClient(uri).search_experiments()]
        )
    )
    out = _run(
        [sys.executable, "-m", "fgdepth", "train", "--config", str(bad), "--profile", "full"],
        folder, uri, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == "fgdepth: stages.0.epochs: must be at least 1, got 0"
    after = len(
        MlflowClient(uri).search_runs(
            [e.experiment_id for e in MlflowClient(uri).search_experiments()]
        )
    )
    assert after == before


@pytest.mark.slow
def test_more_samples_than_the_split_fails_before_any_run_is_created(store, tmp_path):
    folder, uri = store
    client = MlflowClient(uri)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    bad = tmp_path / "big.yaml"
    bad.write_text("inherit: bce\nstages:\n  - {size: 32, samples: 100000, epochs: 1}\n")
    out = _run(
        [sys.executable, "-m", "fgdepth", "train", "--config", str(bad), "--profile", "full",
         "--set", "data.synth.n=40", "--set", "data.synth.size=64"],
        folder, uri, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().startswith("fgdepth: stages.0.samples: 100000 is more than the")
    after = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    assert after == before


@pytest.mark.slow
def test_a_failing_run_ends_failed_with_the_reason(store):
    folder, uri = store
    out = _run(
        [
            sys.executable,
            "-m",
            "fgdepth",
            "train",
            "--profile",
            "smoke",
            "--experiment-name",
            "failing",
            "--set",
            "optimizer.lr=1e12",
            "--set",
            "optimizer.name=sgd",
            "--set",
            "schedule.name=constant",
        ],
        folder,
        uri,
        check=False,
    )
    assert out.returncode != 0
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "DivergenceError: loss became" in runs[0].data.tags["fgdepth.failure"]


@pytest.mark.slow
def test_evaluate_prints_json_metrics_for_a_logged_model(store):
    folder, uri = store
    client = MlflowClient(uri)
    # a run of its own: under xdist the entry-point tests may fill another worker's store
    train = [sys.executable, "-m", "fgdepth", "train", "--config", "bce_ssim", "--profile",
             "smoke", "--experiment-name", "evaluate", "--no-system-metrics"]  # fmt: skip
    _run(train, folder, uri)
    exp = client.get_experiment_by_name("evaluate")
    run = client.search_runs([exp.experiment_id])[0]
    data = run.data.params.get("data.path.resolved") or run.data.params.get("data.path")
    dataset = next(Path(os.environ["FGDEPTH_CACHE"], "datasets").glob("synth-n40-s64-seed0"))
    assert data in ("None", None)
    for model in (
        f"runs:/{run.info.run_id}/model",
        client.download_artifacts(run.info.run_id, "checkpoint/model.pt", str(folder / "ck")),
    ):
        out = _run(
            [sys.executable, "-m", "fgdepth", "evaluate", "--model", model, "--data", str(dataset)],
            folder,
            uri,
        )
        result = json.loads(out.stdout)
        assert result["split"] == "test" and result["size"] == 32
        # the same model on the same split gives the metrics the run logged
        assert result["metrics"]["mask_iou"] == pytest.approx(
            run.data.metrics["test_mask_iou"], abs=1e-5
        )


@pytest.mark.slow
def test_tune_entry_point_makes_the_mlflow_run_the_parent_of_its_trials(store):
    folder, uri = store
    _run(
        [
            "mlflow", "run", str(REPO), "-e", "tune", "--env-manager", "local",
            "--experiment-name", "tuning", "-P", "profile=smoke", "-P", "trials=2",
            "-P", "experiment=bce_ssim", "-P", f"storage=journal:{folder}/journal.log",
        ],
        folder,
        uri,
    )  # fmt: skip
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tuning").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert parent.data.tags["mlflow.project.entryPoint"] == "tune"  # the run MLflow created
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == 2
    for child in runs:
        if child is not parent:
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
def test_tune_refuses_a_bad_search_space_with_one_line(store):
    folder, uri = store
    out = _run(
        [sys.executable, "-m", "fgdepth", "tune", "--profile", "smoke", "--pruner", "medain"],
        folder,
        uri,
        check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "fgdepth: tune.pruner.name: unknown 'medain'; valid: hyperband, median, none"
    )
