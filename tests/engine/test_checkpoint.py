"""Checkpoints and training states: one line for each way a file can be wrong, no code run."""

import os

import pytest
import torch

from fgdepth.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    load_model,
    read_checkpoint,
    read_state,
    save_checkpoint,
)
from fgdepth.models import build_model


class Code:
    """Unpickling this would call ``print``: a stand-in for any code a file can carry."""

    def __reduce__(self):
        return (print, ("this ran",))


def _random_bytes(path):
    path.write_bytes(os.urandom(2000))


def _other_torch_file(path):
    torch.save({"weights": torch.zeros(3)}, path)


def _code(path):
    torch.save({"format": FORMAT, "model": Code()}, path)


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
