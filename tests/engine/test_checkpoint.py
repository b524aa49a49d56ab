"""Checkpoints and training states: one line for each way a file can be wrong, no code run."""

import errno
import os

import pytest
import torch

from fgdepth.data.disk import DiskFull
from fgdepth.engine import checkpoint
from fgdepth.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    load_model,
    read_checkpoint,
    read_state,
    save_checkpoint,
    tensor_bytes,
)
from fgdepth.engine.stopping import StopNow
from fgdepth.models import build_model


class Code:
    """Unpickling this would call ``print``: a stand-in for any code a file can carry."""

    def __reduce__(self):
        return (print, ("this ran",))


class Shell:
    """Unpickling this would run a shell command (torch blocks the module ``os`` outright)."""

    def __reduce__(self):
        return (os.system, ("echo this ran",))


class Custom:
    """A class of the user's own: unpickling it would import and run its module's code."""

    def __init__(self):
        self.value = 1


def _random_bytes(path):
    path.write_bytes(os.urandom(2000))


def _other_torch_file(path):
    torch.save({"weights": torch.zeros(3)}, path)


def _code(path):
    torch.save({"format": FORMAT, "model": Code()}, path)


def _shell(path):
    torch.save({"format": FORMAT, "model": Shell()}, path)


def _custom(path):
    torch.save({"format": FORMAT, "model": Custom()}, path)


def _newer(path):
    torch.save({"format": "fgdepth-checkpoint-7", "model": "unet"}, path)


def _truncated(path):
    save_checkpoint(path, build_model("unet", width=4), "unet", {"width": 4})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _wrong_weights(path):
    save_checkpoint(path, build_model("unet", width=4), "unet", {"width": 8})


def _folder(path):
    path.mkdir()


@pytest.mark.parametrize(
    "make, message",
    [
        (_folder, "is a folder, not a checkpoint file"),
        (_random_bytes, "not a checkpoint (not a torch file)"),
        (_truncated, "not a checkpoint (not a readable torch file: cut short, corrupt"),
        (_other_torch_file, "not an fgdepth checkpoint"),
        (_code, "refused: it holds code (print), which would run when it is loaded"),
        (_shell, "refused: it holds code (posix.system), which would run when it is loaded"),
        (_custom, f"refused: it holds code ({__name__}.Custom), which would run when it"),
        (_newer, "a checkpoint of a newer fgdepth (format 7; this version reads 1)"),
        (_wrong_weights, "a checkpoint whose weights do not fit its model (unet {'width': 8})"),
    ],
)
def test_a_file_that_is_not_a_usable_checkpoint_is_one_line(tmp_path, capsys, make, message):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    assert "weights_only" not in text and "this ran" not in capsys.readouterr().out


def test_a_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt: no such checkpoint$"):
        read_checkpoint(tmp_path / "model.pt")


def test_a_state_that_cannot_be_read_names_the_file(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CheckpointError, match=r"state.pt: not a training state \(not a readable"):
        read_state(path)
    _other_torch_file(path)
    with pytest.raises(CheckpointError, match="state.pt: not an fgdepth training state"):
        read_state(path)


# --- atomic writes on a full disk ---


def test_a_full_disk_keeps_the_previous_state_and_says_so_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_save({"step": 1, "w": torch.zeros(10)}, path)
    real = torch.save

    def full(obj, f):
        real(obj, f)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(DiskFull) as exc:
        atomic_save({"step": 2, "w": torch.zeros(1000)}, path)
    assert str(exc.value).startswith(f"{path}: not enough disk space (4.0 kB needed")
    assert "\n" not in str(exc.value)
    assert torch.load(path, weights_only=True)["step"] == 1  # the earlier state, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file


def test_a_file_size_limit_keeps_the_previous_state_and_names_the_file(tmp_path):
    """torch.save reports a failed write as a RuntimeError of its own; the OS's reason (here
    EFBIG: the process's file size limit, as ``ulimit -f`` sets it) is what the user reads."""
    import resource

    path = tmp_path / "state.pt"
    atomic_save({"step": 1, "w": torch.zeros(10)}, path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OSError) as exc:
            atomic_save({"step": 2, "w": torch.zeros(100_000)}, path)  # 400 kB
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert exc.value.errno == errno.EFBIG
    assert str(exc.value) == f"{path}: file too large (over this process's file size limit, " \
        "ulimit -f)"  # fmt: skip
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_a_stop_in_the_middle_of_a_write_is_raised_as_itself(tmp_path, monkeypatch):
    """A second signal's StopNow raised while torch.save writes: torch's writer, closed on
    the way out, fails on the half-written file with a RuntimeError of its own; the caller
    gets the stop (one line, the run ended KILLED), and the earlier state is kept."""
    path = tmp_path / "state.pt"
    atomic_save({"step": 1, "w": torch.zeros(10)}, path)
    real = torch.save

    def stopped_while_writing(obj, f):
        class Stops:  # the signal arrives at the third write
            calls = 0

            def write(self, data):
                Stops.calls += 1
                if Stops.calls == 3:
                    raise StopNow("SIGTERM")
                return f.write(data)

            def flush(self):
                f.flush()

        real(obj, Stops())

    monkeypatch.setattr(checkpoint.torch, "save", stopped_while_writing)
    with pytest.raises(StopNow, match="SIGTERM again: stopped at once"):
        atomic_save({"step": 2, "w": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_tensor_bytes_counts_nested_tensors():
    obj = {"a": torch.zeros(3, dtype=torch.float32), "b": [torch.zeros(2, dtype=torch.uint8)]}
    assert tensor_bytes(obj) == 14
