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


@pytest.mark.parametrize(
    "path, kind, message",
    [
        ("new/deeper", "dir", None),  # made with its parents
        ("folder", "dir", None),
        ("notes.txt", "file", None),  # a file there, writable: replaced
        ("new/grid.png", "file", None),
        ("notes.txt", "dir", "notes.txt: exists and is not a folder"),
        ("folder", "file", "folder: is a folder, not a file"),
        ("notes.txt/sub", "dir", "notes.txt/sub: cannot be made: {tmp}/notes.txt is a file"),
        ("notes.txt/a/b.png", "file", "b.png: cannot be made: {tmp}/notes.txt is a file"),
    ],
)
def test_check_writable_takes_the_right_kind_of_place(tmp_path, monkeypatch, path, kind, message):
    from fgdepth.data.disk import Unwritable, check_writable

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    if message is None:
        check_writable(path, kind)
        assert not (tmp_path / "new").exists()  # a check writes nothing
        return
    with pytest.raises(Unwritable) as err:
        check_writable(path, kind)
    assert message.format(tmp=tmp_path) in str(err.value)


def test_a_write_the_os_refuses_names_the_file_or_the_place(tmp_path):
    from fgdepth.data.disk import WriteFailed, write_errors_as

    with pytest.raises(WriteFailed) as err, write_errors_as(tmp_path / "out"):
        raise OSError(errno.EFBIG, "File too large")  # a write(): no file named
    assert str(err.value) == f"{tmp_path / 'out'}: file too large (over this process's file " \
        "size limit, ulimit -f)"  # fmt: skip
    with pytest.raises(WriteFailed) as err, write_errors_as(tmp_path / "out"):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "a.png"))
    assert str(err.value) == f"{tmp_path / 'out' / 'a.png'}: a read-only file system"
    with pytest.raises(OSError) as err, write_errors_as(tmp_path / "out"):
        raise OSError(errno.ECONNREFUSED, "Connection refused")  # not a write: as it was
    assert not isinstance(err.value, WriteFailed)
