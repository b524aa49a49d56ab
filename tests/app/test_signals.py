"""``fgdepth.app.signals``: SIGTERM and SIGINT the same way for every command that opens MLflow
runs; ``fgdepth tune`` and ``fgdepth study`` stopped by them (``train``'s own are in
tests/test_reliability.py)."""

import os
import signal
import threading
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from fgdepth import tracking as trk
from fgdepth.app.signals import handled_signals, installed_signals, stopped
from fgdepth.app.tune import study_data
from fgdepth.config import load_config
from fgdepth.engine.stopping import Interrupted, StopNow, exit_code
from tests.test_reliability import fgdepth


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_the_first_signal_asks_to_stop_and_a_second_stops_at_once(sig, code, capfd):
    before = signal.getsignal(sig)
    with handled_signals() as stop:
        assert installed_signals() is stop and stop() is None
        signal.raise_signal(sig)  # Python runs its handler before raise_signal returns
        assert stop() == sig.name
        with pytest.raises(StopNow) as caught:
            signal.raise_signal(sig)
    assert caught.value.reason == sig.name
    assert str(caught.value) == f"{sig.name} again: stopped at once"
    assert exit_code(caught.value.reason) == code
    assert signal.getsignal(sig) is before and installed_signals() is None  # as they were
    said = capfd.readouterr().err
    assert f"fgdepth: {sig.name} received: stopping after the current batch" in said


def _store_call(sig):
    """A function as a tracking store's module would hold it: a second signal comes while it
    works; it returns what it did."""
    namespace = {"__name__": "mlflow.store.tracking.sqlalchemy_store", "signal": signal}
    exec("def call(sig):\n    signal.raise_signal(sig)\n    return 'written'", namespace)
    return namespace["call"](sig)


def test_a_second_signal_inside_a_store_call_stops_once_the_call_has_returned():
    with handled_signals():
        signal.raise_signal(signal.SIGTERM)
        assert _store_call(signal.SIGTERM) == "written"  # not stopped inside it
        start = time.monotonic()
        with pytest.raises(StopNow):
            time.sleep(30)  # the stop comes within moments of the call's return
    assert time.monotonic() - start < 10


def test_a_signal_after_the_stop_was_said_is_ignored(capfd):
    with handled_signals():
        signal.raise_signal(signal.SIGTERM)
        code = stopped(Interrupted("SIGTERM", "stage 0 epoch 0 row 2"), "go on with: x")
        signal.raise_signal(signal.SIGTERM)  # would raise StopNow before the stop was said
        time.sleep(0.1)
    assert code == 143
    err = capfd.readouterr().err
    said = "fgdepth: SIGTERM: stopped at stage 0 epoch 0 row 2; go on with: x"
    assert err.splitlines()[-1] == said


def test_a_run_stopped_at_once_ends_killed_with_the_signal(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    trk.setup_tracking("local")
    with pytest.raises(StopNow), trk.tracked_run("t", "r", str(tmp_path), {}, False) as run:
        raise StopNow("SIGTERM")
    ended = MlflowClient(uri).get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["fgdepth.stopped"] == "SIGTERM again: stopped at once"


# --- the commands, stopped while their first run trains ------------------------------------------

# more batches per epoch than the smoke profile's: the first run is still training when it is seen
LONGER = ["--set", "batch_size=2", "--no-system-metrics"]
SIGNALS = [  # the signals sent, the exit status, the start of the line that says what stopped
    ([signal.SIGTERM], 143, "fgdepth: SIGTERM: stopped at "),
    ([signal.SIGINT], 130, "fgdepth: SIGINT: stopped at "),
    ([signal.SIGTERM, signal.SIGTERM], 143, "fgdepth: SIGTERM again: stopped at once"),
]


class Output:
    """A running process's stdout and stderr, read as they come, so that a test can wait for
    a line (and the pipes never fill up)."""

    def __init__(self, proc):
        self.proc, self.out, self.err = proc, [], []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in ((proc.stdout, self.out), (proc.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in self.err):
            assert self.proc.poll() is None and time.monotonic() < end, "".join(self.err)[-3000:]
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        for reader in self.readers:
            reader.join(30)
        return code, "".join(self.out), "".join(self.err)


def runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def wait_for_a_run(proc, uri: str, child: bool, timeout: float = 600) -> None:
    """Until a run trains: any, or a child run (a trial) when ``child``."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if any(r.info.status == "RUNNING" and (not child or "mlflow.parentRunId" in r.data.tags)
               for r in runs(uri)):  # fmt: skip
            return
        time.sleep(0.2)
    raise AssertionError(f"no run started (exit status {proc.poll()})")


def stop(proc, output: Output, signals: list) -> tuple[int, str, str]:
    os.kill(proc.pid, signals[0])
    if len(signals) > 1:  # the second once the first was taken in: not merged into one
        output.wait_for(f"{signals[0].name} received")
        os.kill(proc.pid, signals[1])
    return output.finish()


def stop_line(returncode: int, err: str, signals: list, code: int, said: str) -> str:
    """The one line that says what stopped, its exit status checked. A second signal can come
    after the first stop was complete and said (the test sees "received" late on a loaded
    machine): then the first's line is the only one, and the second is ignored or, once the
    command has given the handlers back, ends the process by its default action."""
    lines = [line for line in err.splitlines() if line.startswith(said)]
    late = len(signals) > 1 and not lines
    if late:
        first = f"fgdepth: {signals[0].name}: stopped at "
        lines = [line for line in err.splitlines() if line.startswith(first)]
    assert len(lines) == 1, err[-3000:]
    assert returncode in ((code, -signals[-1]) if late else (code,)), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # created once, before any process uses it
    return uri, {**os.environ, "MLFLOW_TRACKING_URI": uri}


@pytest.mark.slow
@pytest.mark.parametrize(("signals", "code", "said"), SIGNALS)
def test_tune_stopped_by_a_signal_ends_its_runs_killed_and_says_how_to_continue(
    store, tmp_path, synth_dir, signals, code, said
):
    uri, env = store
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = ["tune", "--experiment", "bce_ssim", "--profile", "smoke", "--data", str(synth_dir),
            "--trials", "2", "--pruner", "none", "--storage", storage, *LONGER]  # fmt: skip
    proc = fgdepth(args, env, tmp_path)
    output = Output(proc)
    wait_for_a_run(proc, uri, child=True)
    returncode, _, err = stop(proc, output, signals)
    line = stop_line(returncode, err, signals, code, said)
    config = load_config("bce_ssim", "smoke", ["batch_size=2", f"data.path={synth_dir}"])
    name = f"bce_ssim-smoke-{study_data(config).key}"  # the default name, of this data
    again = f"fgdepth tune {' '.join(args[1:])} --study {name}"
    assert line.endswith(f"study '{name}' continues (a stopped trial runs again) with: {again}")
    opened = runs(uri)
    assert len(opened) == 2 and {r.info.status for r in opened} == {"KILLED"}  # parent, trial
    study = optuna.load_study(study_name=name, storage=storage)
    stopped, retry = study.get_trials()  # the stopped trial, and the same values queued again
    assert stopped.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == stopped.params


@pytest.mark.slow
@pytest.mark.parametrize(("signals", "code", "said"), SIGNALS)
def test_a_study_stopped_by_a_signal_ends_its_run_killed_and_says_how_to_go_on(
    store, tmp_path, synth_dir, signals, code, said
):
    uri, env = store
    args = ["study", "--profile", "smoke", "--experiments", "bce", "--seeds", "0,1",
            "--data", str(synth_dir), *LONGER]  # fmt: skip
    proc = fgdepth(args, env, tmp_path)
    output = Output(proc)
    wait_for_a_run(proc, uri, child=False)
    returncode, _, err = stop(proc, output, signals)
    line = stop_line(returncode, err, signals, code, said)
    (run,) = runs(uri)  # the second run never started
    # a second signal stops at once, wherever the work is: also in the last moments of the
    # run, after it closed; never left RUNNING
    assert run.info.status in (("KILLED",) if len(signals) == 1 else ("KILLED", "FINISHED"))
    assert f"the study has no resume: fgdepth {' '.join(args)} starts it again" in line
    if len(signals) == 1:  # stopped after a batch, with its state: resumable
        resume = f"fgdepth train --resume {run.info.run_id}"
        assert f"run 1/2 ended KILLED (continue with: {resume})" in line
