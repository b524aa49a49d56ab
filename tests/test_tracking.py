"""``fgdepth.tracking`` against a temporary SQLite store: runs and how they end, params,
metrics, pictures, the logged model and its config, lost runs."""

import json
import re

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from fgdepth import tracking as trk
from fgdepth.config import load_config, scaled_stages
from fgdepth.engine.callbacks import EpochResult, FitResult, StageResult
from fgdepth.engine.stopping import Interrupted
from fgdepth.errors import ConfigError


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store is created here, from one process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = trk.setup_tracking("local")
    assert settings["tracking_uri"] == uri  # the environment wins over mlruns_config
    return MlflowClient(uri), str(tmp_path / "artifacts")


def _run(root, tags=None, **kwargs):
    return trk.tracked_run("t", "r", root, tags or {}, False, **kwargs)


def test_a_run_ends_finished_failed_or_killed_with_the_reason(store):
    client, root = store
    with _run(root, {"k": "v"}) as run:
        ok = run.info.run_id
    with pytest.raises(ValueError), _run(root) as run:
        failed = run.info.run_id
        raise ValueError("bad value")
    with pytest.raises(Interrupted), _run(root, stopped=(Interrupted,)) as run:
        killed = run.info.run_id
        raise Interrupted("SIGTERM", "stage 0 epoch 1 row 8")
    assert client.get_run(ok).info.status == "FINISHED"
    assert client.get_run(ok).data.tags["k"] == "v"
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(failed).data.tags["fgdepth.failure"] == "ValueError: bad value"
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(killed).data.tags["fgdepth.stopped"].startswith("SIGTERM: stopped at")


def _images(n: int = 2, size: int = 16, rows=(3, 9)) -> list[dict]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    grey = rng.random((size, size), dtype=np.float32)
    keys = ("mask", "mask_pred", "depth", "depth_pred")
    return [{"row": rows[i % len(rows)], "fg_bg": rgb, "bg": rgb, **dict.fromkeys(keys, grey)}
            for i in range(n)]  # fmt: skip


SPLITS = {"train": np.arange(10, 30), "val": np.arange(30, 34), "test": np.arange(0, 10)}


def _info(stage) -> dict:
    """What ``fit`` tells ``on_fit_start``."""
    data = [{"mode": "stream", "size": stage.size}]
    return {"precision": "fp32", "device": "cpu", "stages": [stage], "data": data,
            "split_rows": SPLITS}  # fmt: skip


def _logged_run(root, config, images=None):
    """A run as the callback logs it: an epoch, a tested stage, the end."""
    model = torch.nn.Linear(3, 2)
    stage = scaled_stages(config)[0]  # as the profile scales it: fit tells the callback these
    with _run(root) as run:
        cb = trk.MLflowCallback(run.info.run_id, "f" * 64, "bce_ssim", source="/data/x")
        cb.on_fit_start(config, model, _info(stage))
        val = {"mask_iou": 0.5, "depth_rmse": 0.2}
        cb.on_epoch_end(EpochResult(0, "s", 0, 0, {"loss": 1.0}, val, 0.01, 1.0, 8.0), model)
        test = {"mask_iou": 0.6, "depth_rmse": 0.1, "fg_distance_error": 0.05,
                "depth_absrel": float("nan")}  # fmt: skip
        result = StageResult(0, stage, test, images if images is not None else _images())
        cb.on_stage_end(result, model)
        cb.on_fit_end(FitResult(model, config, [result], test, 60.0, 8.0))
    return run.info.run_id


def test_the_callback_logs_params_metrics_pictures_and_the_summary(store):
    client, root = store
    config = load_config("bce_ssim", "smoke")
    stage = scaled_stages(config)[0]
    run_id = _logged_run(root, config)
    logged = client.get_run(run_id)
    assert logged.data.params["name"] == "bce_ssim"
    assert logged.data.params["depth_encoding"] == "none"  # the data declared none
    assert logged.data.params["device"] == "cpu"
    assert logged.data.params["run.stages.0"].startswith(f"{stage.size}px")
    assert logged.data.tags["fgdepth.parameters"] == "8"
    assert logged.data.tags["fgdepth.losses"] == trk.loss_label(config)
    assert logged.data.tags["fgdepth.data_mode"] == f"{stage.name} {stage.size}px stream"
    metrics = logged.data.metrics
    assert metrics["val_mask_iou"] == 0.5 and metrics["test_mask_iou"] == 0.6
    assert "test_depth_absrel" not in metrics  # NaN: nothing to measure, left out
    assert metrics["train_minutes"] == 1.0 and metrics["train_skipped_rows"] == 0
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json", trk.TEST_PICTURE, "eval"} <= files
    assert trk.logged_config(run_id) == config.to_dict()
    picture = trk.picture(_images(3))
    assert picture.size[0] > 6 * 16 and picture.size[1] > 3 * 16  # 6 columns, 3 rows


HEADLINE = ("mask_iou", "depth_rmse", "fg_distance_error")


def test_each_metric_is_logged_once_under_train_val_or_test(store):
    client, root = store
    run_id = _logged_run(root, load_config("bce_ssim", "smoke"))
    metrics = client.get_run(run_id).data.metrics
    assert all(name.startswith(("train_", "val_", "test_")) for name in metrics), sorted(metrics)
    exp = client.get_run(run_id).info.experiment_id
    found = mlflow.search_runs([exp], filter_string="metrics.test_mask_iou > 0.5")
    assert list(found["run_id"]) == [run_id]
    for name in HEADLINE:  # one name each: the test split's, nothing unprefixed beside it
        assert f"metrics.test_{name}" in found and f"metrics.{name}" not in found
    assert metrics["test_fg_distance_error"] == 0.05
    note = client.get_run(run_id).data.tags[trk.NOTE]
    assert note.startswith("**bce_ssim**") and "profile smoke" in note
    assert "Test (10 rows at 32 px): mask IoU 0.6000, depth RMSE 0.1000, distance error " \
        "0.0500." in note  # fmt: skip


def test_a_run_lists_its_train_and_test_data_as_datasets(store, recwarn):
    client, root = store
    config = load_config("bce_ssim", "smoke")
    run_id = _logged_run(root, config)
    # the rows' schema holds integers on purpose: no hint about missing values for it
    assert not [w for w in recwarn if "integer column" in str(w.message)]
    run = client.get_run(run_id)
    inputs = run.inputs.dataset_inputs
    contexts = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d for d in inputs}
    assert set(contexts) == {"training", "evaluation"}
    test = contexts["evaluation"]
    tags = {t.key: t.value for t in test.tags}
    assert test.dataset.name == "builtin" and "/data/x" in test.dataset.source
    assert (tags["rows.train"], tags["rows.val"], tags["rows.test"]) == ("20", "4", "10")
    assert tags["image_size"] == "32"  # the smoke profile's size
    assert test.dataset.digest == trk.data_digest("f" * 64, SPLITS["test"])
    assert run.data.tags["fgdepth.data_digest"] == test.dataset.digest
    assert trk.data_digest("f" * 64, SPLITS["test"][:5]) != test.dataset.digest  # other rows
    assert trk.data_digest("e" * 64, SPLITS["test"]) != test.dataset.digest  # other data
    assert contexts["training"].dataset.digest != test.dataset.digest


def test_a_dataset_another_run_inserted_at_the_same_moment_is_linked_on_a_second_try(
    store, monkeypatch
):
    client, root = store
    real, calls = MlflowClient.log_inputs, []

    def racing(self, run_id, datasets=None, models=None):  # the server's unique key, once
        calls.append(run_id)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                "(psycopg.errors.UniqueViolation) duplicate key value violates unique "
                'constraint "dataset_pk"'
            )
        return real(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    run_id = _logged_run(root, load_config("bce_ssim", "smoke"))
    assert len(calls) == 2
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 2


def test_the_final_test_samples_are_one_picture_and_a_table_of_rows(store, tmp_path):
    from PIL import Image

    client, root = store
    run_id = _logged_run(root, load_config("bce_ssim", "smoke"), _images(2, 16, rows=(4, 7)))
    assert trk.TEST_PICTURE in [a.path for a in client.list_artifacts(run_id)]
    picture = Image.open(client.download_artifacts(run_id, trk.TEST_PICTURE, str(tmp_path)))
    assert picture.size == trk.picture(_images(2, 16, rows=(4, 7))).size
    exp = client.get_run(run_id).info.experiment_id
    table = client.load_table(exp, trk.TEST_TABLE, [run_id])
    assert list(table["row"]) == [4, 7]
    images = {"fg_bg", "mask", "mask_pred", "depth", "depth_pred"}
    assert images | {"mask_iou", "depth_rmse", "fg_distance_error"} <= set(table.columns)
    for column in images:  # stored as image artifacts, as the evaluation view reads them
        assert all(cell["type"] == "image" for cell in table[column]), column
    # mask_pred is mask in _images: a perfect mask, depth_pred is depth: no error
    assert list(table["mask_iou"]) == [1.0, 1.0] and list(table["depth_rmse"]) == [0.0, 0.0]
    logged = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": trk.TEST_TABLE, "type": "table"} in logged


@pytest.mark.parametrize(
    ("sets", "kept", "left_out"),
    [
        ([], {"schedule.name", "schedule.warmup"},
         {"schedule.step_size", "schedule.gamma", "optimizer.momentum"}),
        (["schedule.name=step"], {"schedule.step_size", "schedule.gamma"}, {"schedule.warmup"}),
        (["optimizer.name=sgd"], {"optimizer.momentum"}, set()),
        (["stages.0.schedule={name: step}"], {"schedule.step_size", "schedule.warmup"}, set()),
        ([], {"augment.flip", "data.synth.n"},
         {"augment.cutout_size", "max_minutes", "data.path", "stages.0.freeze", "tune.trials"}),
        (["data.path=/somewhere", "augment.cutout=0.5"], {"data.path", "augment.cutout_size"},
         {"data.synth.n"}),
    ],
)  # fmt: skip
def test_a_run_logs_only_the_settings_it_uses(sets, kept, left_out):
    params = trk.run_params(load_config("bce_ssim", "smoke", sets))
    assert kept <= params.keys() and not left_out & params.keys()
    assert not {k for k, v in params.items() if v in ("None", "{}", "[]", "")}


def test_runs_are_named_by_recipe_and_seed_and_mlflows_own_names_are_known():
    assert trk.run_name("bce_ssim", 3) == "bce_ssim seed 3"
    from mlflow.utils.name_utils import _generate_random_name

    assert all(trk.generated_name(_generate_random_name()) for _ in range(20))
    for name in ("bce_ssim seed 0", "my-run", "brave-fox", None, "abc-def-12"):
        assert not trk.generated_name(name), name


def test_a_logged_model_loads_back_with_its_size(store, tmp_path):
    from fgdepth.engine.checkpoint import save_checkpoint
    from fgdepth.models import build_model
    from fgdepth.serving import MODEL_CODE

    client, root = store
    model = build_model("unet", width=8)
    path = save_checkpoint(tmp_path / "model.pt", model, "unet", {"width": 8}, size=32)
    with _run(root) as run:
        trk.log_model(run.info.run_id, path, 32, MODEL_CODE)
    run_id = run.info.run_id
    assert "checkpoint/model.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    loaded, size, encoding = trk.load_logged_model(f"runs:/{run_id}/model")
    assert size == 32 and trk.model_size(run_id) == 32
    assert encoding is None  # its data declared none (or it was logged before encodings)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(loaded(x, x), model.eval()(x, x), strict=True):
            assert torch.equal(a, b)
    assert trk.run_of_model(f"runs:/{run_id}/model") == run_id
    assert trk.download_checkpoint(run_id).name == "model.pt"
    with pytest.raises(FileNotFoundError, match="no such checkpoint file or MLflow model URI"):
        trk.load_logged_model("nowhere.pt")


def test_a_logged_model_keeps_its_datas_depth_encoding(store, tmp_path):
    from fgdepth.data.units import DepthEncoding
    from fgdepth.engine.checkpoint import save_checkpoint
    from fgdepth.models import build_model
    from fgdepth.serving import MODEL_CODE

    client, root = store
    enc = DepthEncoding("inverse", 0.5, 80.0)
    path = save_checkpoint(tmp_path / "model.pt", build_model("unet", width=8), "unet",
                           {"width": 8}, size=32, depth_encoding=enc.to_dict())  # fmt: skip
    config = load_config("bce_ssim", "smoke")
    stage = config.stages[0]
    data = [{"mode": "stream", "size": stage.size}]
    info = {"precision": "fp32", "device": "cpu", "stages": [stage], "data": data}
    with _run(root) as run:
        cb = trk.MLflowCallback(run.info.run_id, "f" * 64, "bce_ssim", enc)
        cb.on_fit_start(config, torch.nn.Linear(3, 2), info)
        trk.log_model(run.info.run_id, path, 32, MODEL_CODE, enc)
    assert client.get_run(run.info.run_id).data.params["depth_encoding"] == "inverse 0.5-80 m"
    _, size, encoding = trk.load_logged_model(f"runs:/{run.info.run_id}/model")
    assert size == 32 and encoding == enc


def test_lost_runs_are_found_by_tag_and_ended_failed_with_the_reason(store):
    client, _ = store
    exp = client.create_experiment("lost")
    running = client.create_run(exp, tags={"fgdepth.process": "host/1/2"}).info.run_id
    untagged = client.create_run(exp).info.run_id
    finished = client.create_run(exp, tags={"fgdepth.process": "host/1/2"}).info.run_id
    client.set_terminated(finished, "FINISHED")
    assert [r.info.run_id for r in trk.running_runs_tagged("fgdepth.process")] == [running]
    trk.end_lost_run(running, "process lost")
    trk.end_lost_run(finished, "process lost")  # not RUNNING: left as it is
    trk.end_lost_run("no-such-run", "process lost")  # nothing to close: no error
    assert client.get_run(running).info.status == "FAILED"
    assert client.get_run(running).data.tags["fgdepth.failure"] == "process lost"
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(untagged).info.status == "RUNNING"


def test_flatten_and_masked_uri():
    assert trk.flatten({"a": {"b": 1, "c": [{"d": 2}]}, "e": []}) == {
        "a.b": "1",
        "a.c.0.d": "2",
        "e": "[]",
    }
    assert trk.masked_uri("http://u:secret@host:5000/x") == "http://u:***@host:5000/x"
    assert trk.masked_uri("sqlite:///a.db") == "sqlite:///a.db"


def test_a_bare_tracking_name_is_the_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "local").write_text("a file that happens to be called local\n")
    assert trk.read_tracking_config("local")["tracking_uri"] == "sqlite:///mlflow.db"
    (tmp_path / "mine.yaml").write_text("tracking_uri: sqlite:///mine.db\n")
    assert trk.read_tracking_config("mine.yaml") == {
        "tracking_uri": "sqlite:///mine.db",
        "artifact_root": None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tracking_uri: [sqlite:///a.db, sqlite:///b.db]\n", "tracking_uri: expected a string"),
        ("just a sentence\n", "a tracking config is a mapping of tracking_uri, artifact_root"),
        ("tracking_url: sqlite:///a.db\n", "unknown key 'tracking_url'"),
        ("artifact_root: art\n", "no tracking_uri (nor MLFLOW_TRACKING_URI in the environment)"),
    ],
)
def test_a_bad_tracking_config_is_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        trk.read_tracking_config(str(tmp_path / "t.yaml"))
