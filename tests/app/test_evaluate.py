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
    assert out["metrics"]["mask_iou"] == pytest.approx(run.data.metrics["test_mask_iou"], abs=1e-5)
    assert out["metrics"]["depth_rmse"] == pytest.approx(
        run.data.metrics["test_depth_rmse"], abs=1e-5
    )


def test_a_split_seed_given_on_the_command_line_wins(trained, monkeypatch, capsys):
    _, _, run = trained
    out = _evaluate(trained, monkeypatch, capsys, "--split", "test", "--split-seed", "0")
    assert out["split_seed"] == 0
    assert out["metrics"]["depth_rmse"] != pytest.approx(
        run.data.metrics["test_depth_rmse"], abs=1e-5
    )


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


def test_the_built_in_datas_encoding_travels_to_the_run_the_model_and_predict(
    trained, monkeypatch, capsys, tmp_path
):
    """The built-in data declares log depth 1-40 m: the run records it, the logged model keeps
    it, evaluate adds the distance error in metres and predict tells the distance in metres."""
    import pandas as pd

    from fgdepth.app.evaluate import load_model
    from fgdepth.config import load_config
    from fgdepth.data.builtin import builtin_folder
    from fgdepth.data.synth import DEPTH_ENCODING

    _, _, run = trained
    model = f"runs:/{run.info.run_id}/model"
    assert run.data.params["depth_encoding"] == "log 1-40 m"
    out = _evaluate(trained, monkeypatch, capsys, "--split", "test")  # in the fixture's store
    assert out["depth_encoding"] == "log 1-40 m"
    assert 0 < out["metrics"]["fg_distance_error_m"] < 40
    assert load_model(model)[2] == DEPTH_ENCODING
    data = builtin_folder(load_config("bce_ssim", "smoke").data.synth)  # the run's data
    row = pd.read_csv(data / "manifest.csv").iloc[0]
    bg, fg_bg = str(data / row["bg"]), str(data / row["fg_bg"])
    argv = ["predict", "--model", model, "--bg", bg, "--fgbg", fg_bg, "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    if result["distance"] is None:  # a smoke model may find no foreground: nothing to convert
        assert printed.startswith(f"{fg_bg}: foreground distance no foreground found\n")
        assert result["distance_m"] is None
    else:
        metres = DEPTH_ENCODING.to_metres(result["distance"])
        assert result["distance_m"] == pytest.approx(metres, abs=1e-4)
        assert printed.startswith(f"{fg_bg}: foreground distance {metres:.2f} m\n")
    assert "0..1 depth units" not in printed
