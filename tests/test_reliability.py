"""Faults injected on purpose: SIGKILL mid-epoch then resume, SIGTERM / SIGINT, and several
training and tuning processes at once on one tracking store and study storage."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow  # training processes killed and resumed

# 5 epochs over 3 stages (the 192 px one is left out): 2 x 45, 45 and 2 x 15 batches at 32 px;
# a state every ~0.3 s, several within each epoch of the first stages
ARGS = [
    "train", "--config", "bce_ssim", "--profile", "smoke", "--set", "data.synth.n=200",
    "--set", "scale.max_epochs=null", "--set", "scale.samples=0.001", "--set", "batch_size=4",
    "--set", "checkpoint_minutes=0.005", "--no-system-metrics",
]  # fmt: skip
TRAINING_METRICS = ("train_loss", "val_mask_iou", "val_depth_rmse", "train_lr")


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # created once, before any process uses it
    return uri, {**os.environ, "MLFLOW_TRACKING_URI": uri}


def fgdepth(args, env, cwd, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "fgdepth", *args], env=env, cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw,
    )  # fmt: skip


def finished(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def state_file(cwd: Path) -> Path | None:
    found = list((cwd / "outputs" / "checkpoints").glob("*/state.pt"))
    return found[0] if found else None


def read_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def stop_within_an_epoch(proc, cwd: Path, timeout=300) -> dict:
    """Pause the process once its last state lies within an epoch; return that state."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        path = state_file(cwd)
        if path is not None:
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                state = read_state(path)
            except Exception:  # caught between writes: look again
                state = None
            if state is not None and state["offset"] > 0 and state["step"] > 0:
                return state
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("training never saved a state within an epoch")


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(store, tmp_path):
    uri, env = store
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, _, err = finished(fgdepth([*ARGS, "--experiment-name", "whole"], env, tmp_path / "a"))
    assert code == 0, err[-2000:]

    proc = fgdepth([*ARGS, "--experiment-name", "killed"], env, tmp_path / "b")
    state = stop_within_an_epoch(proc, tmp_path / "b")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    client = MlflowClient(uri)
    run_id = state["run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it
    code, _, err = finished(fgdepth(["train", "--resume", run_id], env, tmp_path / "b"))
    assert code == 0, err[-2000:]

    whole = client.search_runs([client.get_experiment_by_name("whole").experiment_id])[0]
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    for name in TRAINING_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert sorted(steps) == list(range(5)), (name, steps)  # none missing, none twice
    assert sorted(m.step for m in client.get_metric_history(run_id, "test_mask_iou")) == [0, 1, 2]
    for name in ("mask_iou", "depth_rmse", "fg_distance_error"):  # tolerance: 1e-3
        assert resumed.data.metrics[f"test_{name}"] == pytest.approx(
            whole.data.metrics[f"test_{name}"], abs=1e-3
        )


def test_a_two_process_run_stopped_by_sigterm_resumes_in_one_process(store, tmp_path):
    """``--workers 2`` (DDP under torchrun): SIGTERM reaches both ranks, which stop at the same
    batch; rank 0's state then resumes with one process, in the same MLflow run."""
    uri, env = store
    proc = fgdepth([*ARGS, "--workers", "2", "--experiment-name", "ddp"], env, tmp_path)
    stop_within_an_epoch(proc, tmp_path)
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    code, _, err = finished(proc)
    assert code == 143 and "SIGTERM: stopped at stage" in err, (code, err[-3000:])
    state = read_state(state_file(tmp_path))
    assert state["world"] == 2 and state["offset"] > 0
    client = MlflowClient(uri)
    run = client.get_run(state["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["fgdepth.ranks"] == "2"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # rank 1 made no run

    code, _, err = finished(fgdepth(["train", "--resume", state["run_id"]], env, tmp_path))
    assert code == 0, err[-2000:]
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["fgdepth.ranks"] == "1"
    for name in TRAINING_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == list(range(5)), (name, steps)  # none missing, none twice


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_batch_saves_the_state_and_ends_the_run_killed(
    store, tmp_path, sig, code
):
    uri, env = store
    proc = fgdepth([*ARGS, "--experiment-name", "signals"], env, tmp_path)
    stop_within_an_epoch(proc, tmp_path)
    os.kill(proc.pid, sig)
    os.kill(proc.pid, signal.SIGCONT)
    returncode, _, err = finished(proc)
    assert returncode == code, err[-2000:]
    assert f"{sig.name}: stopped at stage" in err and "fgdepth train --resume" in err
    state = read_state(state_file(tmp_path))
    run = MlflowClient(uri).get_run(state["run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["fgdepth.stopped"].startswith(f"{sig.name}: stopped at stage")
    assert f"row {state['offset']}" in run.data.tags["fgdepth.stopped"]  # the state saved then


def test_training_and_tuning_processes_share_one_store(store, tmp_path):
    uri, env = store
    smoke = ["--profile", "smoke", "--experiment-name", "load", "--no-system-metrics"]
    procs = [fgdepth(["train", "--config", name, *smoke], env, tmp_path)
             for name in ("bce", "ssim", "bce_ssim")]  # fmt: skip
    procs.append(
        fgdepth(
            [
                "tune",
                "--experiment",
                "bce_ssim",
                "--trials",
                "4",
                "--workers",
                "2",
                "--pruner",
                "none",
                "--storage",
                f"sqlite:///{tmp_path}/optuna.db",
                *smoke,
            ],
            env,
            tmp_path,
        )  # fmt: skip
    )
    results = [finished(p) for p in procs]
    assert [r[0] for r in results] == [0, 0, 0, 0], [r[2][-1500:] for r in results]
    for _, out, err in results:
        assert "database is locked" not in out + err and "Traceback" not in err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("load").experiment_id])
    statuses = Counter(r.info.status for r in runs)
    trials = sum("mlflow.parentRunId" in r.data.tags for r in runs)
    assert statuses == {"FINISHED": len(runs)} and 4 <= trials <= 5
    assert len(runs) == 3 + 1 + trials  # 3 runs, the study's parent and its trials


def tmp_folders(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*.tmp*") if p.is_dir()] if cache.is_dir() else []


def test_a_run_killed_while_its_data_is_decoded_ends_failed_process_lost(store, tmp_path):
    """SIGKILL while the cache is being built: no state to resume, so the next ``fgdepth
    train`` ends the run FAILED ("process lost") and removes the dead build's folder."""
    uri, env = store
    cache = tmp_path / "cache"
    env = {**env, "FGDEPTH_CACHE": str(cache)}
    args = ["train", "--config", "bce_ssim", "--profile", "smoke", "--no-system-metrics",
            "--experiment-name", "lost"]  # fmt: skip
    proc = fgdepth(args, env, tmp_path)
    end = time.monotonic() + 120
    while not tmp_folders(cache) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the cache folders half built: one per size and part that the build allocates, so one
    # or several, depending on how far the allocation had gone when the kill came
    left = tmp_folders(cache)
    assert left and all(folder.name.endswith(f".tmp{proc.pid}") for folder in left)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    assert run.info.status == "RUNNING"  # killed: nobody closed it

    code, out, err = finished(fgdepth(args, env, tmp_path))
    assert code == 0, err[-2000:]
    assert f"run {run.info.run_id}: its process is gone" in out
    lost = client.get_run(run.info.run_id)
    assert lost.info.status == "FAILED"
    assert lost.data.tags["fgdepth.failure"].startswith(f"process lost: pid {proc.pid} ended")
    assert tmp_folders(cache) == []


def test_a_cut_short_state_is_one_line_the_run_failed_and_the_state_before_kept(
    store, tmp_path, monkeypatch, capsys
):
    from fgdepth.app.cli import main
    from fgdepth.app.train import read_resume_state
    from fgdepth.config import Config
    from fgdepth.engine.checkpoint import StateCheckpoint, previous_state

    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("cut")).info.run_id  # RUNNING
    path = tmp_path / "outputs" / "checkpoints" / run_id / "state.pt"
    keep = StateCheckpoint(path, {"run_id": run_id, "config": Config().to_dict()})
    keep.on_checkpoint({"step": 1})
    keep.on_checkpoint({"step": 2})  # the first one is kept as state.prev.pt
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    assert main(["train", "--resume", run_id]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"fgdepth: {path.relative_to(tmp_path)}: not a training state (")
    assert err.strip().endswith(f"the state before it is kept: continue from it with "
                                f"fgdepth train --resume {run_id}")  # fmt: skip
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "state.pt: not a training state" in run.data.tags["fgdepth.failure"]
    assert path.with_name("state.bad.pt").exists() and not path.exists()  # set aside
    assert read_resume_state(run_id, "outputs/checkpoints")["step"] == 1  # the state before
    assert read_state(previous_state(path))["step"] == 1
