"""A full disk during a run: one line, the run FAILED with the reason, the last state whole."""

import errno

import pytest
import torch
from mlflow.tracking import MlflowClient

from fgdepth.app.cli import main
from fgdepth.data.disk import DiskFull, human
from fgdepth.engine import checkpoint


def test_human_bytes():
    assert [human(n) for n in (12, 4096, 3.2e9)] == ["12 B", "4.1 kB", "3.2 GB"]
    assert str(DiskFull("/x", 2000, 10)) == "/x: not enough disk space (2.0 kB needed, 10 B free)"


@pytest.mark.slow  # a tracked training run
def test_a_full_disk_at_a_state_write_fails_the_run_in_one_line(
    synth_dir, tmp_path, monkeypatch, capsys
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    real, writes = torch.save, []

    def save(obj, f):  # the second state write finds the disk full
        writes.append(obj.get("format"))
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    code = main(["train", "--profile", "smoke", "--data", str(synth_dir), "--no-system-metrics",
                 "--checkpoint-dir", str(tmp_path / "states")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("fgdepth: ") and "state.pt: not enough disk space" in err[0]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fgdepth").experiment_id])
    assert run.info.status == "FAILED"
    assert "not enough disk space" in run.data.tags["fgdepth.failure"]
    (state,) = (tmp_path / "states").glob("*/state.pt")  # the first state, whole
    assert torch.load(state, weights_only=True)["format"] == writes[0]
    assert not list((tmp_path / "states").glob("*/.*tmp"))
