"""A tracking server that does not answer: one line naming it, within seconds, before any work
(MLflow alone retries for about four minutes, then prints a traceback); one that stops
answering while a run is under way: one line too, without another round of retries."""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from fgdepth import tracking as trk
from fgdepth.app.cli import main

REPO = Path(__file__).resolve().parents[1]
# the check waits 5 s at most (trk.SERVER_TIMEOUT_S) and a refused connection takes none of
# it; the bound leaves room for a loaded machine, far below the 252 s of MLflow's own retries
WITHIN_S = 30


@pytest.fixture
def nothing_listening(monkeypatch) -> str:
    """The URI of a port that nothing listens on (bound, then closed), with MLflow's retry
    settings left as fgdepth finds them (it sets its own where the environment has none)."""
    for key in trk.HTTP_RETRIES:
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def answers_401():
    """A server that asks every request for a sign-in, as a tracking server with basic-auth."""

    class SignIn(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), SignIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://user:secret@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_check_reachable_names_the_server_and_what_failed(nothing_listening):
    with pytest.raises(trk.ServerUnreachable) as err:
        trk.check_reachable(nothing_listening)
    assert str(err.value).startswith(
        f"tracking server {nothing_listening} does not answer (Connection refused)"
    )


def test_a_server_that_asks_for_a_sign_in_answers(answers_401):
    trk.check_reachable(answers_401)  # 401 is an answer; check_access tells the rest
    assert trk.unanswered(answers_401) is None


COMMANDS = {
    "train": "train --profile smoke --no-system-metrics --data {ds}",
    "study": "study --profile smoke --experiments bce --data {ds}",
    "tune": "tune --profile smoke --data {ds} --storage sqlite:///{tmp}/optuna.db",
    "report": "report",
    "evaluate": "evaluate --model runs:/0123456789abcdef0123456789abcdef/model",
    "predict": "predict --model runs:/0123456789abcdef0123456789abcdef/model --bg a --fgbg a "
    "--out {tmp}/out",
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_that_tracks_says_in_one_line_that_the_server_does_not_answer(
    command, nothing_listening, synth_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nothing_listening)
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    argv = COMMANDS[command].format(ds=synth_dir, tmp=tmp_path).split()
    start = time.monotonic()
    code = main(argv)
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"tracking server {nothing_listening} does not answer" in err
    assert took < WITHIN_S, f"{took:.0f} s"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow  # a process of its own: the user's view, start-up included
def test_fgdepth_train_against_a_port_with_nothing_listening_ends_in_seconds(
    nothing_listening, synth_dir, tmp_path
):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": nothing_listening}
    for key in trk.HTTP_RETRIES:
        env.pop(key, None)
    argv = [sys.executable, "-m", "fgdepth", "train", "--profile", "smoke", "--data", synth_dir]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"tracking server {nothing_listening} does not answer" in done.stderr
    assert took < 30 + WITHIN_S, f"{took:.0f} s"  # 30 s more for the interpreter and imports


def test_a_server_lost_during_a_run_is_one_line_not_another_round_of_retries(
    tmp_path, monkeypatch, nothing_listening
):
    """The run starts on a store that answers; then every request goes to one that does not
    (as when the server stops): ending the run is tried once, and the line says what
    happened."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        with (
            pytest.raises(trk.ServerLost) as err,
            trk.tracked_run("t", "r", str(tmp_path / "art"), {}, False) as run,
        ):
            mlflow.set_tracking_uri(nothing_listening)
            raise ConnectionError("Max retries exceeded")  # what MLflow's client raises then
    finally:
        mlflow.set_tracking_uri(uri)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"  # one try, here and at exit
    assert str(err.value) == (
        f"tracking server {nothing_listening} stopped answering (Connection refused) during "
        f"run {run.info.run_id}, which could not be ended FAILED"
    )
    assert mlflow.active_run() is None
    assert MlflowClient(uri).get_run(run.info.run_id).info.status == "RUNNING"  # as it was
