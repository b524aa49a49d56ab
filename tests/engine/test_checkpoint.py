"""Atomic writes: a failed write (a full disk) keeps the previous file and leaves no other."""

import errno

import pytest
import torch

from fgdepth.data.disk import DiskFull
from fgdepth.engine import checkpoint
from fgdepth.engine.checkpoint import atomic_save, tensor_bytes


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


def test_tensor_bytes_counts_nested_tensors():
    obj = {"a": torch.zeros(3, dtype=torch.float32), "b": [torch.zeros(2, dtype=torch.uint8)]}
    assert tensor_bytes(obj) == 14
