"""The logged model as an MLflow pyfunc: loaded in-process and served over HTTP."""

import json
import os
import sys
import urllib.request

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from fgdepth.serving import decode_png, encode_file
from tests.services import http_server

pytestmark = pytest.mark.slow  # trained runs (the trained_store fixture) and a model server


@pytest.fixture
def pairs(synth_dir):
    rows = pd.read_csv(synth_dir / "manifest.csv").iloc[:2]
    return pd.DataFrame(
        {
            "bg": [encode_file(synth_dir / r) for r in rows["bg"]],
            "fg_bg": [encode_file(synth_dir / r) for r in rows["fg_bg"]],
        }
    )


@pytest.fixture
def model_uri(trained_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained_store.uri)
    mlflow.set_tracking_uri(trained_store.uri)
    return f"runs:/{trained_store.runs['bce_ssim']}/model"


def test_the_pyfunc_predicts_image_pairs(model_uri, pairs):
    out = mlflow.pyfunc.load_model(model_uri).predict(pairs)
    assert list(out.columns) == ["distance", "mask", "depth"] and len(out) == 2
    mask, depth = decode_png(out["mask"][0]), decode_png(out["depth"][0])
    assert mask.shape == depth.shape == (64, 64)  # the input images' size
    assert set(np.unique(mask)) <= {0, 255} and depth.dtype == np.uint16


def test_mlflow_models_serve_answers_over_http(model_uri, pairs, trained_store, tmp_path):
    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
            "--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained_store.uri}
    with http_server(args, "/ping", tmp_path / "serve.log", env=env, cwd=tmp_path) as base:
        body = json.dumps({"dataframe_split": pairs.to_dict(orient="split", index=False)})
        request = urllib.request.Request(
            f"{base}/invocations", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = pd.DataFrame(json.load(response)["predictions"])
    local = mlflow.pyfunc.load_model(model_uri).predict(pairs)
    assert list(served["mask"]) == list(local["mask"])
    np.testing.assert_allclose(served["distance"].astype(float), local["distance"], equal_nan=True)
