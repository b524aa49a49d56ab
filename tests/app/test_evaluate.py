"""``fgdepth evaluate`` scores a logged model on the split its run used."""

import json

import pytest
from mlflow.tracking import MlflowClient

from fgdepth.app.cli import main
from fgdepth.app.evaluate import model_config, with_split


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run trained with a split seed of its own, in a store of its own."""
    folder = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store is created here, from one process
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("FGDEPTH_CACHE", str(folder / "cache"))
        mp.chdir(folder)
        argv = ["train", "--config", "bce_ssim", "--profile", "smoke", "--set",
                "data.split_seed=5", "--no-system-metrics"]  # fmt: skip
        assert main(argv) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fgdepth").experiment_id])
    return folder, uri, run


def _evaluate(trained, monkeypatch, capsys, *args) -> dict:
    folder, uri, run = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("FGDEPTH_CACHE", str(folder / "cache"))
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert main(["evaluate", "--model", f"runs:/{run.info.run_id}/model", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_reproduces_the_runs_test_metrics_on_its_split(trained, monkeypatch, capsys):
    _, _, run = trained
    out = _evaluate(trained, monkeypatch, capsys, "--split", "test")
    assert out["split_seed"] == 5  # read from the run's logged config
    assert out["metrics"]["mask_iou"] == pytest.approx(run.data.metrics["mask_iou"], abs=1e-5)
    assert out["metrics"]["depth_rmse"] == pytest.approx(run.data.metrics["depth_rmse"], abs=1e-5)


def test_a_split_seed_given_on_the_command_line_wins(trained, monkeypatch, capsys):
    _, _, run = trained
    out = _evaluate(trained, monkeypatch, capsys, "--split", "test", "--split-seed", "0")
    assert out["split_seed"] == 0
    assert out["metrics"]["depth_rmse"] != pytest.approx(run.data.metrics["depth_rmse"], abs=1e-5)


def test_the_model_config_comes_from_the_run_and_splits_change_only_when_given(
    trained, monkeypatch
):
    _, uri, run = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = model_config(f"runs:/{run.info.run_id}/model")
    assert config.data.split_seed == 5 and config.name == "bce_ssim"
    assert with_split(config) is config
    assert with_split(config, seed=1, test=0.2).data.split_seed == 1
    assert with_split(config, seed=1, test=0.2).data.test == 0.2
