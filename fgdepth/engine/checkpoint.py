"""Model checkpoints: written atomically, read with ``weights_only=True`` (no code runs)."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
from torch import nn

from fgdepth.data.disk import disk_full_as
from fgdepth.data.units import DepthEncoding, parse
from fgdepth.engine.callbacks import Callback
from fgdepth.errors import DataError, NotFound
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


class _KeepsWriteErrors:
    """A file whose failed write is kept: torch.save reports one as a RuntimeError of its
    own ("unexpected pos"), without the OS's reason (a full disk, the file size limit)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def _save(obj, file) -> None:
    """torch.save, raising the OS's error when a write fails, and an interrupt that came in
    while it wrote as itself (torch's writer, closed on the way out, fails on the half-written
    file: "unexpected pos")."""
    kept = _KeepsWriteErrors(file)
    try:
        torch.save(obj, kept)
    except RuntimeError as exc:
        interrupt = exc.__context__
        if isinstance(interrupt, KeyboardInterrupt):
            raise interrupt from None
        if kept.error is None:
            raise
        raise kept.error from None


def atomic_save(obj, path: str | Path, previous: str | Path | None = None) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``;
    with ``previous``, the file that was at ``path`` is first renamed to it. An interrupted
    or failed write (a full disk: DiskFull; the file size limit, a read-only disk:
    WriteFailed; one line each) leaves ``path`` as it was and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with disk_full_as(path, tensor_bytes(obj)), os.fdopen(fd, "wb") as f:
            _save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
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


class CheckpointError(DataError):
    """A file that cannot be used as a checkpoint or training state; one line for the user."""


# how torch's weights-only loader (2.13) names code it refuses to run while unpickling: a
# function or class it does not allow, or one of a module it blocks (os, sys: e.g. os.system)
_CODE = (
    re.compile(r"GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
)


def _code_named(message: str) -> str | None:
    """What code an unpickling error names (``print``, ``posix.system``), else None."""
    for pattern in _CODE:
        found = pattern.search(message)
        if found:
            return found.group(1).strip()
    return None


def _torch_load(path: str | Path, what: str):
    """``torch.load(weights_only=True)`` with one line for each way the file can be wrong;
    never the advice to load it with ``weights_only=False``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NotFound(f"{path}: no such {what}") from None
    except pickle.UnpicklingError as exc:
        code = _code_named(str(exc))
        if code:
            raise CheckpointError(
                f"{path}: refused: it holds code ({code}), which would run when it is "
                f"loaded; a {what} holds only tensors and plain data"
            ) from None
        raise CheckpointError(f"{path}: not a {what} (not a torch file)") from None
    except Exception:  # an unpickler fed other bytes can raise almost anything
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # torch files are zips (maybe cut short)
        if not is_zip:
            raise CheckpointError(f"{path}: not a {what} (not a torch file)") from None
        raise CheckpointError(
            f"{path}: not a {what} (not a readable torch file: cut short, corrupt or another kind)"
        ) from None


def _newer(data) -> int | None:
    """The format number of a checkpoint from a newer fgdepth, else None."""
    stem, _, number = str(data.get("format", "")).rpartition("-")
    if stem == FORMAT.rpartition("-")[0] and number.isdigit():
        if int(number) > int(FORMAT.rpartition("-")[2]):
            return int(number)
    return None


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents; CheckpointError (one line) for anything else."""
    data = _torch_load(path, "checkpoint")
    if isinstance(data, dict) and _newer(data):
        raise CheckpointError(
            f"{path}: a checkpoint of a newer fgdepth (format {_newer(data)}; this version reads "
            f"{FORMAT.rpartition('-')[2]}): update fgdepth to load it"
        )
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an fgdepth checkpoint")
    return data


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """The model stored in a checkpoint (eval mode), and the checkpoint's other contents."""
    data = read_checkpoint(path)
    try:
        model = build_model(data["model"], **data["options"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: a checkpoint whose model cannot be built ({exc})") from None
    try:
        model.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError):
        raise CheckpointError(
            f"{path}: a checkpoint whose weights do not fit its model "
            f"({data['model']} {data['options']})"
        ) from None
    return model.eval(), data


def depth_encoding(data: dict) -> DepthEncoding | None:
    """The depth encoding of the data a checkpoint's model was trained on (``data``: its
    contents); None when that data declared none, and for a checkpoint written before the
    encoding was kept."""
    declared = data.get("depth_encoding")
    return parse(declared) if declared else None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Start from another run's weights (transfer): same architecture required."""
    model.load_state_dict(read_checkpoint(path)["state_dict"])


def previous_state(path: str | Path) -> Path:
    """Where the state before ``path`` is kept: ``state.pt`` -> ``state.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


class StateCheckpoint(Callback):
    """Writes each resumable training state to ``path`` atomically, with ``extra`` (e.g. the
    run id and config); the state before it is kept as ``previous_state(path)``, so a write
    that goes wrong never loses the last good one."""

    def __init__(self, path: str | Path, extra: dict):
        self.path = Path(path)
        self.extra = extra

    def on_checkpoint(self, state: dict) -> None:
        atomic_save({**state, **self.extra}, self.path, previous_state(self.path))


def read_state(path: str | Path) -> dict:
    """A training state written by StateCheckpoint (``weights_only``: no code runs);
    CheckpointError (one line, naming the file) when it cannot be read."""
    data = _torch_load(path, "training state")
    if not isinstance(data, dict) or not {"run_id", "config"} <= set(data):
        raise CheckpointError(f"{path}: not an fgdepth training state")
    return data
