"""Studies on a real PostgreSQL server: worker processes sharing a study, a worker killed with
SIGKILL, a killed study resumed, and the database password kept out of logs and MLflow."""

import os
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.test_tuning import check_study_data, children

pytestmark = pytest.mark.slow  # PostgreSQL and tuning worker processes

FAST = ["--profile", "smoke", "--experiment", "bce_ssim", "--pruner", "none"]
SLOWER = ["--set", "scale.max_epochs=3"]  # trials of a few seconds: time to kill one


@pytest.fixture
def env(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store is created once, before any worker
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return {**os.environ, "MLFLOW_TRACKING_URI": uri}


def start(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "fgdepth", "tune", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc, timeout=300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def wait_for_running_trial(url, study, exclude_pid=None, timeout=120):
    """The first running trial (with its worker's pid) of ``study``."""
    storage = optuna.storages.RDBStorage(url)  # one connection pool for all the polling
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            try:
                trials = optuna.load_study(study_name=study, storage=storage).get_trials()
            except KeyError:  # not created yet
                trials = []
            for t in trials:
                worker = t.user_attrs.get("worker", "")
                pid = int(worker.rpartition(":")[2] or 0)
                if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs:
                    if pid and pid != exclude_pid:
                        return t, pid
            time.sleep(0.05)
    finally:
        storage.engine.dispose()
    raise AssertionError(f"no trial of {study} started running")


def test_two_workers_share_a_postgres_study_and_the_password_stays_secret(postgres, env, tmp_path):
    db = postgres.database()
    url = postgres.url(db)
    proc = start([*FAST, "--storage", url, "--study", "pg", "--trials", "4", "--workers", "2"],
                 env, tmp_path)  # fmt: skip
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert postgres.password not in out
    assert masked_url(postgres) in out

    study = optuna.load_study(study_name="pg", storage=url)
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert 4 <= len(trials) <= 5
    assert all(t.user_attrs["worker"] != t.user_attrs["coordinator"] for t in trials)
    parent = trials[0].user_attrs["mlflow_parent_run_id"]
    runs = children(env["MLFLOW_TRACKING_URI"], parent)
    assert sorted(r.info.run_id for r in runs) == sorted(
        t.user_attrs["mlflow_run_id"] for t in trials
    )
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    for run in [client.get_run(parent), *runs]:
        assert run.info.status == "FINISHED"
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert postgres.password not in value
    assert client.get_run(parent).data.params["storage"] == masked_url(postgres, db)


def masked_url(postgres, db=None):
    return f"postgresql://{postgres.user}:***@127.0.0.1:{postgres.port}/" + (db or "")


def test_a_postgres_study_refuses_other_data_unless_forced_and_records_it(postgres):
    check_study_data(postgres.url(postgres.database()))  # as on SQLite and a journal


def test_a_worker_killed_with_sigkill_has_its_trial_failed_and_retried(postgres, env, tmp_path):
    url = postgres.url(postgres.database())
    args = [*FAST, *SLOWER, "--storage", url, "--study", "k", "--trials", "3", "--workers", "2"]
    proc = start([*args, "--heartbeat", "1"], env, tmp_path)
    trial, pid = wait_for_running_trial(url, "k", exclude_pid=proc.pid)
    assert pid in [c.pid for c in psutil.Process(proc.pid).children()]  # a worker, not the main
    os.kill(pid, signal.SIGKILL)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]

    trials = optuna.load_study(study_name="k", storage=url).get_trials()
    killed = trials[trial.number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    ended = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 3 <= len(ended) <= 4  # the study still reaches its trial count
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    lost = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert lost.info.status == "FAILED"
    assert "lost (no heartbeat)" in lost.data.tags["fgdepth.failure"]
    parent = client.get_run(killed.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"  # the study went on without that worker


def test_a_killed_study_resumes_where_it_stopped(postgres, env, tmp_path):
    url = postgres.url(postgres.database())
    args = [*FAST, *SLOWER, "--storage", url, "--study", "r", "--trials", "2", "--heartbeat", "1"]
    proc = start(args, env, tmp_path)
    trial, _ = wait_for_running_trial(url, "r")
    proc.send_signal(signal.SIGKILL)  # the whole `fgdepth tune` (one worker: itself)
    proc.wait()
    time.sleep(4.5)  # past the heartbeat's grace period
    again = start(args, env, tmp_path)
    out = finish(again)
    assert again.returncode == 0, out[-3000:]
    assert "1 trial(s) so far" in out or "0 trial(s) so far" in out

    trials = optuna.load_study(study_name="r", storage=url).get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    killed = trials[trial.number].user_attrs
    old_parent = client.get_run(killed["mlflow_parent_run_id"])
    assert old_parent.info.status == "FAILED"  # closed by the resumed study, not left RUNNING
    assert "lost (killed)" in old_parent.data.tags["fgdepth.failure"]
    assert client.get_run(killed["mlflow_run_id"]).info.status == "FAILED"
    running = client.search_runs(
        [old_parent.info.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    assert running == []
