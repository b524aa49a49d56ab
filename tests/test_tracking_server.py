"""A team's setup, for real: an MLflow tracking server with sign-in on PostgreSQL, two
training processes and a two-worker study logging to it at once, then the report, the model
registry, predictions and serving through it. Started once for the module."""

import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fgdepth.serving import encode_file
from fgdepth.tracking import TEST_PICTURE
from tests.services import http_server, mlflow_server

pytestmark = pytest.mark.slow  # a tracking server on PostgreSQL, training processes

EXPERIMENT = "team"
MODEL = "fgdepth-team"
SMOKE = ["--profile", "smoke", "--experiment-name", EXPERIMENT]
DB_ERRORS = ("sqlalchemy.exc", "psycopg.errors", "OperationalError", "IntegrityError", "deadlock")


def request(base: str, path: str, user: tuple[str, str] | None = None, body: dict | None = None):
    """A JSON API call, signed in as ``user`` (name, password) when given."""
    headers = {"Content-Type": "application/json"}
    if user:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(base + path, data, headers), timeout=30):
        pass


@pytest.fixture(scope="module")
def server(postgres, synth_dir, tmp_path_factory):
    """The server, its users (admin, alice, bob) and the environment of each user's shell."""
    folder = tmp_path_factory.mktemp("team")
    passwords = {name: secrets.token_urlsafe(16) for name in ("admin", "alice", "bob")}
    backend, users = postgres.url(postgres.database()), postgres.url(postgres.database())
    with mlflow_server(backend, users, folder, passwords["admin"]) as base:
        for name in ("alice", "bob"):  # docs/team-server.md's user commands, over the REST API
            request(base, "/api/2.0/mlflow/users/create", ("admin", passwords["admin"]),
                    {"username": name, "password": passwords[name]})  # fmt: skip
        env = {
            name: {
                **os.environ, "MLFLOW_TRACKING_URI": base, "MLFLOW_TRACKING_USERNAME": name,
                "MLFLOW_TRACKING_PASSWORD": password, "OMP_NUM_THREADS": "1",
            }
            for name, password in passwords.items()
        }  # fmt: skip
        yield SimpleNamespace(
            base=base, folder=folder, passwords=passwords, env=env, data=synth_dir,
            optuna=postgres.url(postgres.database()), secrets=[*passwords.values(),
                                                                postgres.password],
        )  # fmt: skip


def client(server, user="admin") -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"] = user  # read at each request
    os.environ["MLFLOW_TRACKING_PASSWORD"] = server.passwords[user]
    return MlflowClient(server.base)


@pytest.fixture(autouse=True)
def _signed_out():
    yield
    os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
    os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)


def fgdepth(*args, env, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fgdepth", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen, timeout: int = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def team_runs(server, tmp_path_factory):
    """Two `fgdepth train` (alice, bob) and a two-worker `fgdepth tune` (alice), at once."""
    cwd = tmp_path_factory.mktemp("clients")
    data = ["--data", str(server.data)]
    procs = [
        fgdepth("train", "--config", "bce_ssim", *SMOKE, *data, "--run-name", "alice",
                env=server.env["alice"], cwd=cwd),
        fgdepth("train", "--config", "ssim", *SMOKE, *data, "--run-name", "bob",
                env=server.env["bob"], cwd=cwd),
        fgdepth("tune", "--experiment", "bce_ssim", *SMOKE, *data, "--trials", "2",
                "--workers", "2", "--pruner", "none", "--storage", server.optuna,
                "--study", "team", env=server.env["alice"], cwd=cwd),
    ]  # fmt: skip
    outputs = [finish(p) for p in procs]
    admin = client(server)
    exp = admin.get_experiment_by_name(EXPERIMENT)
    runs = admin.search_runs([exp.experiment_id])
    return SimpleNamespace(outputs=outputs, runs=runs, cwd=cwd)


def test_a_client_without_credentials_is_refused(server, tmp_path):
    with pytest.raises(urllib.error.HTTPError) as refused:
        request(server.base, "/api/2.0/mlflow/experiments/search?max_results=1")
    assert refused.value.code == 401
    anonymous = {k: v for k, v in server.env["alice"].items() if not k.startswith("MLFLOW_TRACK")}
    anonymous["MLFLOW_TRACKING_URI"] = server.base
    proc = fgdepth("train", *SMOKE, "--data", str(server.data), env=anonymous, cwd=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out[-3000:]
    assert "refused this client without credentials" in out
    assert "MLFLOW_TRACKING_USERNAME" in out.splitlines()[-1]


def test_a_wrong_password_is_refused_in_one_line_without_the_password(server, monkeypatch):
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from fgdepth.config import ConfigError
    from fgdepth.tracking import setup_tracking

    wrong = "not-" + server.passwords["alice"]
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.setenv(key, server.env["alice"][key])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", wrong)
    with (
        _use_tracking_uri(server.base),  # the process-wide URI is put back after
        pytest.raises(ConfigError, match="refused this client as user 'alice'") as refused,
    ):
        setup_tracking()
    assert wrong not in str(refused.value)


def test_concurrent_writers_all_finish_without_a_database_error(server, team_runs):
    by_name = {r.info.run_name: r for r in team_runs.runs}
    assert {"alice", "bob", "tune team", "team trial 0", "team trial 1"} <= set(by_name)
    assert len(team_runs.runs) == 5
    assert [r.info.run_id for r in team_runs.runs if r.info.status != "FINISHED"] == []
    assert by_name["alice"].data.tags["mlflow.user"] == "alice"
    assert by_name["bob"].data.tags["mlflow.user"] == "bob"
    log = (server.folder / "server.log").read_text()
    assert not [e for e in DB_ERRORS if e in log], log[-3000:]


def test_every_artifact_comes_back_through_the_servers_proxy(server, team_runs, tmp_path):
    from mlflow.artifacts import download_artifacts

    admin = client(server)
    for run in team_runs.runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    train = next(r for r in team_runs.runs if r.info.run_name == "alice")
    run_id = train.info.run_id
    top = {a.path for a in admin.list_artifacts(run_id)}
    assert {"config.yaml", "metrics.json", TEST_PICTURE, "images", "checkpoint"} <= top
    (model,) = admin.search_logged_models(
        [train.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert model.artifact_location.startswith("mlflow-artifacts:/")
    wanted = {  # the pictures, the checkpoint, the model: path on the server -> artifact URI
        f"{run_id}/artifacts/{path}": f"{train.info.artifact_uri}/{path}"
        for path in (
            TEST_PICTURE,
            next(a.path for a in admin.list_artifacts(run_id, "images")),
            "checkpoint/model.pt",
        )
    }
    for path in ("MLmodel", "artifacts/model.pt"):
        wanted[f"{model.model_id}/artifacts/{path}"] = f"{model.artifact_location}/{path}"
    stored = server.folder / "artifacts"
    for on_server, uri in wanted.items():
        local = Path(download_artifacts(uri, dst_path=str(tmp_path), tracking_uri=server.base))
        assert local.stat().st_size > 0
        assert [p.read_bytes() for p in stored.rglob(on_server)] == [local.read_bytes()], uri


def test_no_password_in_the_console_params_tags_or_artifacts(server, team_runs, tmp_path):
    admin = client(server)
    for out in team_runs.outputs:
        assert not [s for s in server.secrets if s in out]
    for run in team_runs.runs:
        fields = [*run.data.params.values(), *run.data.tags.values(), *run.data.params]
        assert not [s for s in server.secrets if any(s in f for f in fields)], run.info.run_name
        run_id = run.info.run_id
        folder = Path(admin.download_artifacts(run_id, "", str(tmp_path / run_id)))
        for file in (f for f in folder.rglob("*") if f.is_file()):
            content = file.read_bytes()
            assert not [s for s in server.secrets if s.encode() in content], file


def test_report_registers_the_best_model_that_predict_and_serve_use(server, team_runs, tmp_path):
    env, cwd = server.env["alice"], team_runs.cwd
    out = finish(fgdepth("report", "--experiment", EXPERIMENT, "--register", MODEL,
                         "--out", str(tmp_path / "report"), env=env, cwd=cwd))  # fmt: skip
    assert f"models:/{MODEL}@champion" in out
    rows = pd.read_csv(server.data / "manifest.csv").iloc[:2]
    bg, fg = (str(server.data / rows[c][0]) for c in ("bg", "fg_bg"))
    predict = ["predict", "--model", f"models:/{MODEL}@champion", "--bg", bg, "--fgbg", fg]
    out = finish(fgdepth(*predict, "--out", str(tmp_path / "pred"), env=env, cwd=cwd))
    assert "foreground distance" in out and (tmp_path / "pred").is_dir()

    args = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", "{port}"]  # fmt: skip
    pairs = pd.DataFrame({"bg": [encode_file(bg)], "fg_bg": [encode_file(fg)]})
    with http_server(args, "/ping", tmp_path / "serve.log", env=env, cwd=tmp_path) as base:
        body = {"dataframe_split": pairs.to_dict(orient="split", index=False)}
        reply = urllib.request.Request(
            f"{base}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(reply, timeout=120) as response:
            served = pd.DataFrame(json.load(response)["predictions"])
    assert list(served.columns) == ["distance", "mask", "depth"] and len(served) == 1
    admin = client(server)
    report_runs = admin.search_runs(
        [admin.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string="attributes.status != 'FINISHED'",
    )
    assert report_runs == []  # the report's own run too
