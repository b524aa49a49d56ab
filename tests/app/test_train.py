"""``fgdepth.app.train``: the run specification, one tracked run, resuming."""

import dataclasses
import os
import time

import pytest
from mlflow.tracking import MlflowClient

from fgdepth.app.train import (
    RunSpec,
    _state_path,
    _with_transfers,
    read_resume_state,
    resume_command,
    train,
)
from fgdepth.config import Config, ConfigError, load_config
from fgdepth.engine.callbacks import Callback
from fgdepth.engine.checkpoint import CheckpointError, StateCheckpoint, previous_state
from fgdepth.engine.stopping import Interrupted
from fgdepth.tracking import model_size


def test_a_run_spec_needs_only_a_config():
    spec = RunSpec(Config())
    assert spec.tracking == "local" and spec.keep_state and spec.resume is None
    assert spec.tags == {} and spec.callbacks == []
    assert RunSpec(Config()).tags is not spec.tags  # no shared defaults


def test_transfers_leave_the_callers_config_as_it_was(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"")
    config = load_config("bce_ssim", "smoke", [f"stages.0.init_from={path}"])
    out = _with_transfers(config)
    assert out.stages == config.stages and out.stages is not config.stages


def _state(root, run_id, name="state.pt"):
    path = root / run_id / name
    StateCheckpoint(path, {"run_id": run_id, "config": Config().to_dict()}).on_checkpoint({})
    return path


A, B, C = "a" * 32, "b" * 32, "c" * 32  # run ids as MLflow makes them: 32 hex digits


def test_resume_finds_a_run_the_latest_and_the_state_before(tmp_path):
    a = _state(tmp_path, A)
    time.sleep(0.01)
    b = _state(tmp_path, B)
    os.utime(b, (time.time() + 5, time.time() + 5))
    assert _state_path(A, tmp_path) == a
    assert _state_path("latest", tmp_path) == b
    a.replace(previous_state(a))  # stopped between keeping the last state and the new one
    assert _state_path(A, tmp_path) == previous_state(a)
    assert read_resume_state(B, tmp_path)["run_id"] == B
    with pytest.raises(FileNotFoundError, match="no training state"):
        _state_path("latest", tmp_path / "empty")


@pytest.mark.parametrize(
    "spec", ["../victim", "VICTIM", "/abs/victim", "state.pt", "", "latest/.."]
)
def test_resume_takes_a_run_id_never_a_path(tmp_path, spec):
    checkpoints = tmp_path / "checkpoints"
    victim = _state(tmp_path, "victim")  # beside the checkpoint folder: must stay untouched
    before = victim.read_bytes()
    spec = spec.replace("VICTIM", str(victim)).replace("/abs/victim", str(victim.parent))
    with pytest.raises(ConfigError, match="not a run id"):
        read_resume_state(spec, checkpoints)
    assert victim.read_bytes() == before and sorted(victim.parent.iterdir()) == [victim]


def test_an_unreadable_state_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / C).mkdir()
    (tmp_path / C / "state.pt").write_bytes(b"not a state")
    with pytest.raises(CheckpointError) as caught:
        read_resume_state(C, tmp_path)
    assert "ended FAILED" not in str(caught.value)  # no such run in the store: none was closed


class _StopAfterFirstEpoch(Callback):
    """Stops once the first state is kept (as a signal would, at a batch)."""

    def on_checkpoint(self, state):
        raise Interrupted("SIGTERM", "the first state")


@pytest.fixture
def store(tmp_path, monkeypatch, synth_dir):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    return MlflowClient(uri), load_config("bce_ssim", "smoke", [f"data.path={synth_dir}"])


def test_a_run_finishes_with_its_model_and_leaves_no_state(store, tmp_path):
    client, config = store
    started = []
    spec = RunSpec(config, run_name="r", entry_point="e", tags={"k": "v"}, system_metrics=False)
    result, run_id = train(spec, on_run_start=started.append)
    assert started == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.tags["k"] == "v" and run.data.tags["fgdepth.entry_point"] == "e"
    assert run.data.metrics["test_mask_iou"] == pytest.approx(result.metrics["mask_iou"])
    assert "checkpoint" in {a.path for a in client.list_artifacts(run_id)}
    assert model_size(run_id) == result.stages[-1].config.size  # the logged model's metadata
    assert not (tmp_path / "outputs" / "checkpoints" / run_id).exists()


def test_an_interrupted_run_ends_killed_and_keeps_its_state_to_resume(store, tmp_path):
    client, config = store
    spec = RunSpec(config, callbacks=[_StopAfterFirstEpoch()], system_metrics=False)
    started = []
    with pytest.raises(Interrupted):
        train(spec, on_run_start=started.append)
    assert client.get_run(started[0]).info.status == "KILLED"
    state = read_resume_state("latest", tmp_path / "outputs" / "checkpoints")
    assert state["run_id"] == started[0]
    # a spec that keeps no state (a tuning trial) leaves nothing behind
    with pytest.raises(Interrupted):
        train(dataclasses.replace(spec, keep_state=False, checkpoint_dir=tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_the_resume_hint_names_the_state_folder_and_tracking_it_was_started_with(tmp_path):
    run_id = "a" * 32
    assert resume_command(RunSpec(None), run_id) == f"fgdepth train --resume {run_id}"
    states, settings = tmp_path / "my states", tmp_path / "team.yaml"
    spec = RunSpec(None, tracking=str(settings), checkpoint_dir=states)
    # quoted for a shell: the folder's name has a space
    assert resume_command(spec, run_id) == (
        f"fgdepth train --resume {run_id} --checkpoint-dir '{states}' --tracking {settings}"
    )


# --- one process per run; no process outlives a killed run ------------------------------------


@pytest.mark.slow
def test_a_second_process_that_would_train_a_run_is_refused_naming_the_one_that_does(tmp_path):
    """A fresh run and a resume of it, then two resumes of it at once: the second of each pair
    is refused in one line before it writes anything; the first goes on to the end."""
    import signal
    import socket

    from tests.test_reliability import ARGS, TRAINING_METRICS, fgdepth, finished
    from tests.test_reliability import stop_within_an_epoch as pause_within_an_epoch

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.search_experiments()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    first = fgdepth([*ARGS, "--experiment-name", "one"], env, tmp_path)
    run_id = pause_within_an_epoch(first, tmp_path)["run_id"]  # paused, holding the run
    lock = tmp_path / "outputs" / "checkpoints" / run_id / "state.lock"
    for holder in (first, None):
        if holder is None:  # now a resume holds it: stop the first, resume, pause at a state
            os.kill(first.pid, signal.SIGTERM)
            os.kill(first.pid, signal.SIGCONT)
            assert finished(first)[0] == 143
            holder = fgdepth(["train", "--resume", run_id], env, tmp_path)
            end = time.monotonic() + 300
            while lock.read_text() != f"pid {holder.pid} on {socket.gethostname()}":
                assert holder.poll() is None and time.monotonic() < end
                time.sleep(0.05)
            os.kill(holder.pid, signal.SIGSTOP)
        code, out, err = finished(fgdepth(["train", "--resume", run_id], env, tmp_path))
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err[-2000:]
        assert err.startswith(f"fgdepth: run {run_id} is being trained by pid {holder.pid} on "
                              f"{socket.gethostname()} (it holds ")  # fmt: skip
    os.kill(holder.pid, signal.SIGCONT)
    code, _, err = finished(holder)
    assert code == 0, err[-2000:]
    assert client.get_run(run_id).info.status == "FINISHED"
    for name in TRAINING_METRICS:  # trained by one process at a time: no step twice
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert sorted(steps) == list(range(5)), (name, steps)
    assert not lock.parent.exists()  # finished: its states and lock are gone


@pytest.fixture(scope="module")
def rows_to_decode(tmp_path_factory):
    """Enough rows that decoding them keeps two workers busy for a while."""
    from fgdepth.config import SynthConfig
    from fgdepth.data.synth import generate

    out = tmp_path_factory.mktemp("many") / "ds"
    generate(SynthConfig(n=600, size=64, seed=3, backgrounds=5), out, quiet=True)
    return out


@pytest.mark.slow
def test_a_run_killed_while_its_cache_is_built_leaves_no_process_behind(tmp_path, rows_to_decode):
    """SIGKILL during the decode: its workers, their fork server and the resource tracker all
    end by themselves (each worker watches the run's process)."""
    import signal

    from tests.test_parallel import descendants, grandchildren, wait_until_gone
    from tests.test_reliability import fgdepth

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "FGDEPTH_CACHE": str(tmp_path / "cache")}
    args = ["train", "--config", "bce_ssim", "--profile", "smoke", "--data", str(rows_to_decode),
            "--set", "data.workers=2", "--set", "scale.min_samples=2000",  # every row decoded
            "--no-system-metrics"]  # fmt: skip
    proc = fgdepth(args, env, tmp_path)
    end = time.monotonic() + 600  # a bound for a loaded machine, not a speed
    while not grandchildren(proc.pid) and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGSTOP)  # the workers stay, waiting for their next rows
    left = descendants(proc.pid)
    assert grandchildren(proc.pid), left  # the decode workers under their fork server
    assert any((tmp_path / "cache").glob("*.tmp*"))  # a cache half built
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_until_gone(left) == []
