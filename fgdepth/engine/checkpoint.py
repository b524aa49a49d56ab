"""Model checkpoints: written atomically, read with ``weights_only=True`` (no code runs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from fgdepth.data.disk import disk_full_as
from fgdepth.engine.callbacks import Callback
from fgdepth.models import build_model

FORMAT = "fgdepth-checkpoint-1"


def tensor_bytes(obj) -> int:
    """The bytes of the tensors in ``obj`` (nested dicts, lists and tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_save(obj, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``:
    an interrupted or failed write (a full disk: DiskFull, one line) leaves ``path`` as it
    was and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with disk_full_as(path, tensor_bytes(obj)), os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path, model: nn.Module, model_name: str, options: dict, **extra) -> Path:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save(
        {
            "format": FORMAT,
            "model": model_name,
            "options": dict(options),
            "state_dict": state,
            **extra,
        },
        path,
    )


def read_checkpoint(path: str | Path) -> dict:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an fgdepth checkpoint")
    return data


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model stored in a checkpoint (eval mode), and the checkpoint's other contents."""
    data = read_checkpoint(path)
    model = build_model(data["model"], **data["options"])
    model.load_state_dict(data["state_dict"])
    return model.eval(), data


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Start from another run's weights (transfer): same architecture required."""
    model.load_state_dict(read_checkpoint(path)["state_dict"])


class StateCheckpoint(Callback):
    """Writes each resumable training state to ``path`` atomically (the previous one stays
    whole until the new one is complete), with ``extra`` (e.g. the run id and config)."""

    def __init__(self, path: str | Path, extra: dict):
        self.path = Path(path)
        self.extra = extra

    def on_checkpoint(self, state: dict) -> None:
        atomic_save({**state, **self.extra}, self.path)


def read_state(path: str | Path) -> dict:
    """A training state written by StateCheckpoint (``weights_only``: no code runs)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such training state") from None
